/**
 * What several endpoints' handlers share: the request-level checks (duplicate ratelimit names, meta
 * size), the read permissions, and the identity as a response body.
 */
import { Effect } from "effect"
import { InsufficientPermissions, InvalidInput } from "../Errors.js"
import { type JsonObject, utf8Length } from "../domain/Json.js"
import type { AuditContext, Identity, RatelimitInput } from "../domain/Model.js"
import { permissions, readOne } from "../domain/Permissions.js"
import { limits, type UpdateIdentityResponseData } from "../domain/UpdateIdentity.js"
import type { HandlerRequest } from "../http/endpoint.js"
import type { AuthorizedKey } from "../services/Authorization.js"

/** The first name that repeats, in array order (spec §2 H4). */
/** Who did it, from where, and which request: what every audit entry of a write records. */
export const auditContext = (key: AuthorizedKey, request: HandlerRequest): AuditContext => ({
  actorId: key.keyId,
  actorName: "root key",
  remoteIp: request.remoteIp,
  userAgent: request.userAgent,
  requestId: request.requestId,
  hostRequestId: request.hostRequestId
})

export const firstDuplicate = (names: ReadonlyArray<string>): string | undefined => {
  const seen = new Set<string>()
  for (const name of names) {
    if (seen.has(name)) return name
    seen.add(name)
  }
  return undefined
}

/** The request's ratelimits as the store takes them: `autoApply` false when left out (spec §1). */
export const toRatelimitInputs = (
  ratelimits: ReadonlyArray<{ readonly name: string; readonly limit: number; readonly duration: number; readonly autoApply?: boolean }> | undefined
): ReadonlyArray<RatelimitInput> | undefined =>
  ratelimits?.map((rl) => ({ name: rl.name, limit: rl.limit, duration: rl.duration, autoApply: rl.autoApply ?? false }))

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

const READ_ONE = /^identity\..*\.read_identity$/

/**
 * Decision (contract §2, §3 "P0"): a key that holds no read permission at all is refused before
 * any lookup, so it cannot learn whether an identity exists.
 */
export const requireSomeRead = (key: AuthorizedKey): Effect.Effect<void, InsufficientPermissions> =>
  key.permissions.some((permission) => READ_ONE.test(permission))
    ? Effect.void
    : Effect.fail(new InsufficientPermissions({ required: [permissions.readIdentity], have: key.permissions }))

/** Read access to one identity: the wildcard or its own permission; `required` lists them in the order given. */
export const requireRead = (
  key: AuthorizedKey,
  identityId: string,
  order: "wildcard-first" | "own-first"
): Effect.Effect<void, InsufficientPermissions> => {
  const own = readOne(identityId)
  if (key.permissions.includes(permissions.readIdentity) || key.permissions.includes(own)) return Effect.void
  const required = order === "wildcard-first" ? [permissions.readIdentity, own] : [own, permissions.readIdentity]
  return Effect.fail(new InsufficientPermissions({ required, have: key.permissions }))
}
