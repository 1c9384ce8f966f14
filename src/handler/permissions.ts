/**
 * The permission strings of the identities API and how they are matched: exact string membership,
 * case-sensitive, `*` a literal character (identities contract §0.2).
 */
import { Effect } from "effect"
import { InsufficientPermissions } from "../Errors.js"
import type { AuthorizedKey } from "../services/Authorization.js"

/** Every permission string the API checks, by operation. */
export const permissions = {
  createIdentity: "identity.*.create_identity",
  readIdentity: "identity.*.read_identity",
  updateIdentity: "identity.*.update_identity",
  deleteIdentity: "identity.*.delete_identity"
} as const

/** `identity.<id>.read_identity`: read access to one identity, by its internal id. */
export const readOne = (identityId: string): string => `identity.${identityId}.read_identity`

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
