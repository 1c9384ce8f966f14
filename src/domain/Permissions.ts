/**
 * The permission strings of the identities API and how they are matched: exact string membership,
 * case-sensitive, `*` a literal character (identities contract §0.2).
 */

/** Every permission string the API checks, by operation. */
export const permissions = {
  createIdentity: "identity.*.create_identity",
  readIdentity: "identity.*.read_identity",
  updateIdentity: "identity.*.update_identity",
  deleteIdentity: "identity.*.delete_identity"
} as const

/** `identity.<id>.read_identity`: read access to one identity, by its internal id. */
export const readOne = (identityId: string): string => `identity.${identityId}.read_identity`
