/**
 * `updateIdentity`: validation → authorization → request-level checks → the write, in the order of
 * spec §2, answering the body of spec §3.
 */
import { Clock, Effect } from "effect"
import { InvalidInput } from "../Errors.js"
import { utf8Length } from "../domain/Json.js"
import type { Identity, RatelimitInput } from "../domain/Model.js"
import { limits, type UpdateIdentityResponseData } from "../domain/UpdateIdentity.js"
import { Authorization, UPDATE_IDENTITY_PERMISSION } from "../services/Authorization.js"
import { IdentityStore } from "../services/IdentityStore.js"
import { RequestContext } from "../services/RequestContext.js"
import { type RawRequest, RequestValidator, type ValidatedRequest } from "../services/RequestValidator.js"

/** The first name that repeats, in array order (spec §2 H4). */
const firstDuplicate = (names: ReadonlyArray<string>): string | undefined => {
  const seen = new Set<string>()
  for (const name of names) {
    if (seen.has(name)) return name
    seen.add(name)
  }
  return undefined
}

/** The success `data`: ratelimits in request order when sent (else by name), left out when empty. */
export const toResponseData = (
  identity: Identity,
  requestOrder: ReadonlyArray<RatelimitInput> | undefined
): UpdateIdentityResponseData => {
  const byName = new Map(identity.ratelimits.map((rl) => [rl.name, rl]))
  const ordered = requestOrder === undefined
    ? identity.ratelimits
    : requestOrder.flatMap((input) => byName.get(input.name) ?? [])
  const ratelimits = ordered.map((rl) => ({
    id: rl.id,
    name: rl.name,
    limit: rl.limit,
    duration: rl.duration,
    autoApply: rl.autoApply
  }))
  return {
    id: identity.id,
    externalId: identity.externalId,
    meta: identity.meta,
    ...(ratelimits.length > 0 ? { ratelimits } : {})
  }
}

/**
 * Handles a request that passed validation: authorization (H1, H3), duplicate names (H4), meta size
 * (H5), then the write (H6, H7). Answers the success `data` or a typed error.
 */
export const handleValidated = Effect.fn("updateIdentity")(function*({ authorization: header, body }: ValidatedRequest) {
  const authorization = yield* Authorization
  const store = yield* IdentityStore
  const context = yield* RequestContext

  const key = yield* authorization.authorize(header, UPDATE_IDENTITY_PERMISSION)
  yield* Effect.annotateCurrentSpan({ "workspace.id": key.workspaceId })

  const ratelimits = body.ratelimits?.map((rl): RatelimitInput => ({
    name: rl.name,
    limit: rl.limit,
    duration: rl.duration,
    autoApply: rl.autoApply ?? false
  }))
  const duplicate = ratelimits && firstDuplicate(ratelimits.map((rl) => rl.name))
  if (duplicate !== undefined) {
    return yield* new InvalidInput({
      detail: `Ratelimit with name '${duplicate}' is already defined in the request`,
      errors: []
    })
  }

  const meta = body.meta === undefined ? undefined : JSON.stringify(body.meta)
  if (meta !== undefined && utf8Length(meta) > limits.maxMetaBytes) {
    const mib = (utf8Length(meta) / limits.maxMetaBytes).toFixed(2)
    return yield* new InvalidInput({
      detail: `Metadata is too large, it must be less than 1MB, got: ${mib}`,
      errors: []
    })
  }

  const identity = yield* store.updateIdentity({
    workspaceId: key.workspaceId,
    identity: body.identity,
    meta,
    ratelimits,
    audit: {
      actorId: key.keyId,
      actorName: "root key",
      remoteIp: context.remoteIp,
      userAgent: context.userAgent
    },
    now: yield* Clock.currentTimeMillis
  })
  return toResponseData(identity, ratelimits)
})

/** Handles one request, from raw headers and body to the success `data` or a typed error (spec §2 order). */
export const updateIdentity = (raw: RawRequest) =>
  Effect.flatMap(RequestValidator, (validator) => validator.validate(raw)).pipe(Effect.flatMap(handleValidated))
