/**
 * `updateIdentity`: validation → authorization → request-level checks → the write, in the order of
 * spec §2, answering the body of spec §3.
 */
import { Clock, Effect } from "effect"
import { InvalidInput } from "../Errors.js"
import { type JsonObject, utf8Length } from "../domain/Json.js"
import type { Identity, RatelimitInput } from "../domain/Model.js"
import { limits, UpdateIdentityRequest, type UpdateIdentityResponseData } from "../domain/UpdateIdentity.js"
import { type HandlerRequest, makeEndpoint } from "../http/endpoint.js"
import { annotate } from "../internal/trace.js"
import { Authorization, UPDATE_IDENTITY_PERMISSION } from "../services/Authorization.js"
import { IdentityStore } from "../services/IdentityStore.js"
import { RequestContext } from "../services/RequestContext.js"
import { type RawRequest, RequestValidator, type ValidatedRequest } from "../services/RequestValidator.js"

/** The first name that repeats, in array order (spec §2 H4). */
export const firstDuplicate = (names: ReadonlyArray<string>): string | undefined => {
  const seen = new Set<string>()
  for (const name of names) {
    if (seen.has(name)) return name
    seen.add(name)
  }
  return undefined
}

/** H4: the first repeated ratelimit name, in array order, is a 400. */
export const checkUniqueNames = (ratelimits: ReadonlyArray<RatelimitInput> | undefined): Effect.Effect<void, InvalidInput> => {
  const duplicate = ratelimits && firstDuplicate(ratelimits.map((rl) => rl.name))
  return duplicate === undefined ? Effect.void : Effect.fail(
    new InvalidInput({ detail: `Ratelimit with name '${duplicate}' is already defined in the request`, errors: [] })
  )
}

/** H5: meta (as compact JSON) larger than 1 MiB is a 400. */
export const checkMetaSize = (metaJson: string | undefined): Effect.Effect<void, InvalidInput> => {
  if (metaJson === undefined) return Effect.void
  const size = utf8Length(metaJson)
  return size <= limits.maxMetaBytes ? Effect.void : Effect.fail(
    new InvalidInput({
      detail: `Metadata is too large, it must be less than 1MB, got: ${(size / limits.maxMetaBytes).toFixed(2)}`,
      errors: []
    })
  )
}

/** The success `data`: ratelimits in request order when sent (else by name), left out when empty. */
export const toResponseData = (
  identity: Identity,
  requestOrder: ReadonlyArray<RatelimitInput> | undefined,
  sentMeta?: JsonObject
): UpdateIdentityResponseData => {
  let ordered = identity.ratelimits
  if (requestOrder !== undefined) {
    const byName = new Map(identity.ratelimits.map((rl) => [rl.name, rl]))
    ordered = requestOrder.flatMap((input) => byName.get(input.name) ?? [])
  }
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
    // The meta the request sent is what was stored: answered as is, never parsed back.
    meta: sentMeta ?? identity.meta,
    ...(ratelimits.length > 0 ? { ratelimits } : {})
  }
}

/**
 * Handles a valid body: authorization (H1, H3), duplicate names (H4), meta size (H5), then the write
 * (H6, H7). Answers the success `data` or a typed error.
 */
export const handle = Effect.fnUntraced(function*(body: UpdateIdentityRequest, request: HandlerRequest) {
  const authorization = yield* Authorization
  const store = yield* IdentityStore

  const key = yield* authorization.authorize(request.authorization, UPDATE_IDENTITY_PERMISSION)
  yield* annotate({ "workspace.id": key.workspaceId })

  const ratelimits = body.ratelimits?.map((rl): RatelimitInput => ({
    name: rl.name,
    limit: rl.limit,
    duration: rl.duration,
    autoApply: rl.autoApply ?? false
  }))
  yield* checkUniqueNames(ratelimits)
  const meta = body.meta === undefined ? undefined : JSON.stringify(body.meta)
  yield* checkMetaSize(meta)

  const identity = yield* store.updateIdentity({
    workspaceId: key.workspaceId,
    identity: body.identity,
    meta,
    ratelimits,
    audit: {
      actorId: key.keyId,
      actorName: "root key",
      remoteIp: request.remoteIp,
      userAgent: request.userAgent
    },
    now: yield* Clock.currentTimeMillis
  })
  return toResponseData(identity, ratelimits, body.meta)
})

/** `POST /v2/identities.updateIdentity` in the route table. */
export const endpoint = makeEndpoint({
  name: "updateIdentity",
  path: "/v2/identities.updateIdentity",
  body: UpdateIdentityRequest,
  unknownKeys: "reject",
  storageFailure: { detail: "We're unable to update the identity." },
  handle: (body, request) => Effect.map(handle(body, request), (data) => ({ data }))
})

/** Handles a request that passed validation, with the request facts from `RequestContext`. */
export const handleValidated = ({ authorization, body }: ValidatedRequest) =>
  Effect.flatMap(RequestContext, (context) => handle(body, { ...context, authorization }))

/** Handles one request, from raw headers and body to the success `data` or a typed error (spec §2 order). */
export const updateIdentity = (raw: RawRequest) =>
  Effect.flatMap(RequestValidator, (validator) => validator.validate(raw)).pipe(Effect.flatMap(handleValidated))
