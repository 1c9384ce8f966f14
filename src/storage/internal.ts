/**
 * The replace-set rule of spec §5.2, the audit entries of §5.3 and of create/delete, shared by
 * storage layers that compute the change in JavaScript; and the rule of `listIdentities`' cursor
 * and search, shared by every layer; and the SQLSTATE a failure carries.
 */
import { newId } from "../domain/Ids.js"
import type {
  AuditContext,
  AuditEvent,
  AuditLogEntry,
  IdentityUpdate,
  Ratelimit,
  RatelimitInput
} from "../domain/Model.js"

/** What replacing an identity's ratelimit set does. */
export interface RatelimitPlan {
  /** The set after the change, in request order. */
  readonly result: ReadonlyArray<Ratelimit>
  readonly created: ReadonlyArray<Ratelimit>
  readonly updated: ReadonlyArray<Ratelimit>
  readonly deleted: ReadonlyArray<Ratelimit>
}

/** Kept names keep their id and get the new values; new names get a new id; the rest go. */
export const planRatelimitChanges = (
  current: ReadonlyArray<Ratelimit>,
  requested: ReadonlyArray<RatelimitInput>,
  now: number
): RatelimitPlan => {
  const existing = new Map(current.map((rl) => [rl.name, rl]))
  const created: Array<Ratelimit> = []
  const updated: Array<Ratelimit> = []
  const result = requested.map((input): Ratelimit => {
    const old = existing.get(input.name)
    if (old === undefined) {
      const rl: Ratelimit = {
        id: newId("rl", now),
        name: input.name,
        limit: input.limit,
        duration: input.duration,
        autoApply: input.autoApply,
        createdAt: now,
        updatedAt: null
      }
      created.push(rl)
      return rl
    }
    const rl: Ratelimit = {
      id: old.id,
      name: input.name,
      limit: input.limit,
      duration: input.duration,
      autoApply: input.autoApply,
      createdAt: old.createdAt,
      updatedAt: now
    }
    updated.push(rl)
    return rl
  })
  const kept = new Set(requested.map((rl) => rl.name))
  const deleted = current.filter((rl) => !kept.has(rl.name))
  return { result, created, updated, deleted }
}

/** Who wrote it and when: the fields every audit entry of one request shares. */
interface AuditBase {
  readonly workspaceId: string
  readonly audit: AuditContext
  readonly time: number
}

type Resource = AuditLogEntry["resources"][number]

/**
 * One audit entry, every field written out in one literal: entries all share one shape (no object
 * spread per entry), which keeps the memory layer's audit log cheap to build and to keep.
 */
const auditEntry = (
  base: AuditBase,
  event: AuditEvent,
  display: string,
  resources: ReadonlyArray<Resource>
): AuditLogEntry => ({
  id: newId("log", base.time),
  workspaceId: base.workspaceId,
  event,
  display,
  actorType: "rootkey",
  actorId: base.audit.actorId,
  actorName: base.audit.actorName,
  remoteIp: base.audit.remoteIp,
  userAgent: base.audit.userAgent,
  requestId: base.audit.requestId ?? "",
  hostRequestId: base.audit.hostRequestId ?? "",
  time: base.time,
  resources
})

const identityResource = (identity: { readonly id: string; readonly externalId: string }): Resource => ({
  type: "identity",
  id: identity.id,
  name: identity.externalId
})

const ratelimitResource = (rl: { readonly id: string; readonly name: string }): Resource => ({
  type: "ratelimit",
  id: rl.id,
  name: rl.name
})

/** The audit entries of one update: `identity.update`, then one per ratelimit touched. */
export const updateAuditEntries = (
  identity: { readonly id: string; readonly externalId: string },
  plan: RatelimitPlan | undefined,
  update: IdentityUpdate
): Array<AuditLogEntry> => {
  const base: AuditBase = { workspaceId: update.workspaceId, audit: update.audit, time: update.now }
  const target = identityResource(identity)
  const entries = [auditEntry(base, "identity.update", `Updated identity ${identity.id}`, [target])]
  if (plan === undefined) return entries
  const touched = (event: AuditEvent, verb: string, rls: ReadonlyArray<Ratelimit>) => {
    for (const rl of rls) entries.push(auditEntry(base, event, `${verb} ratelimit ${rl.id}`, [target, ratelimitResource(rl)]))
  }
  touched("ratelimit.create", "Created", plan.created)
  touched("ratelimit.update", "Updated", plan.updated)
  touched("ratelimit.delete", "Deleted", plan.deleted)
  return entries
}

/**
 * The audit entries of a create or a delete (identities contract §1 step 4, §4): the identity's
 * entry, then one per ratelimit — in request order on create; on delete (whose ratelimit rows stay)
 * in the order the set was last given, as updateIdentity's deletions. Displays end with a period,
 * as the reference's.
 */
const lifecycleAuditEntries = (
  change: "create" | "delete",
  identity: { readonly id: string; readonly workspaceId: string; readonly externalId: string },
  ratelimits: ReadonlyArray<{ readonly id: string; readonly name: string }>,
  audit: AuditContext,
  now: number
): Array<AuditLogEntry> => {
  const base: AuditBase = { workspaceId: identity.workspaceId, audit, time: now }
  const verb = change === "create" ? "Created" : "Deleted"
  const target = identityResource(identity)
  const entries = [auditEntry(base, `identity.${change}`, `${verb} identity ${identity.id}.`, [target])]
  for (const rl of ratelimits) {
    entries.push(auditEntry(base, `ratelimit.${change}`, `${verb} ratelimit ${rl.id}.`, [target, ratelimitResource(rl)]))
  }
  return entries
}

/** The audit entries of a create: `identity.create`, then one `ratelimit.create` per ratelimit. */
export const createAuditEntries = (
  identity: { readonly id: string; readonly workspaceId: string; readonly externalId: string },
  ratelimits: ReadonlyArray<{ readonly id: string; readonly name: string }>,
  audit: AuditContext,
  now: number
): Array<AuditLogEntry> => lifecycleAuditEntries("create", identity, ratelimits, audit, now)

/** The audit entries of a delete: `identity.delete`, then one `ratelimit.delete` per ratelimit. */
export const deleteAuditEntries = (
  identity: { readonly id: string; readonly workspaceId: string; readonly externalId: string },
  ratelimits: ReadonlyArray<{ readonly id: string; readonly name: string }>,
  audit: AuditContext,
  now: number
): Array<AuditLogEntry> => lifecycleAuditEntries("delete", identity, ratelimits, audit, now)

// --- listIdentities: one rule for every layer -------------------------------------------------

// PostgreSQL text is UTF-8 and cannot hold a lone UTF-16 surrogate: drivers turn one in a text
// parameter into U+FFFD. Doing the same here, on every layer, makes that explicit.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g

/** `text` with each lone surrogate replaced by U+FFFD, as a PostgreSQL driver sends it. */
export const wellFormed = (text: string): string => text.replace(LONE_SURROGATE, "\uFFFD")

/**
 * ASCII-only lower case: `A`–`Z` become `a`–`z`, every other character stays. This is exactly
 * PostgreSQL's `lower(x COLLATE "C")`, whatever the database's locale; `lower()` under a locale
 * (and JavaScript's `toLowerCase`) fold other letters too, and each its own way (`İ`: PostgreSQL
 * C.UTF-8 gives `i`, JavaScript `i̇`), so no other rule gives the same answers on every layer.
 */
export const asciiLower = (text: string): string =>
  /[A-Z]/.test(text) ? text.replace(/[A-Z]+/g, (upper) => upper.toLowerCase()) : text

/** A `listIdentities` query as every layer applies it (see `listBounds`). */
export interface ListBounds {
  /** Ids `>=` this, in code-unit order ("" = from the start). Never contains NUL. */
  readonly from: string
  /** `asciiLower` of the search text, matched as a substring; `undefined` = no filter. */
  readonly needle: string | undefined
  /** The search contains NUL: no stored id or externalId can (PostgreSQL text cannot hold it). */
  readonly matchesNothing: boolean
}

/**
 * The bounds of a page, from client strings that may hold anything:
 * - a cursor with NUL is cut at its first NUL `p`, and `id >= cursor` becomes `id >= p + "\u0001"`,
 *   which is exactly `id > p`: for strings without NUL (every id) both select the same ids;
 * - a search with NUL matches nothing; otherwise its ASCII letters are folded (`asciiLower`), and
 *   it matches an id or externalId whose `asciiLower` contains it as a literal substring (`%`,
 *   `_`, `\` are plain characters);
 * - lone surrogates in either become U+FFFD (`wellFormed`).
 */
export const listBounds = (cursor: string | undefined, search: string | undefined): ListBounds => {
  let from = cursor === undefined ? "" : wellFormed(cursor)
  const nul = from.indexOf("\u0000")
  if (nul >= 0) from = from.slice(0, nul) + "\u0001"
  if (search === undefined) return { from, needle: undefined, matchesNothing: false }
  return search.includes("\u0000")
    ? { from, needle: undefined, matchesNothing: true }
    : { from, needle: asciiLower(wellFormed(search)), matchesNothing: false }
}

/**
 * Whether a storage failure's chain of causes (`StorageError` → `SqlError` → the driver's error, or
 * deeper through the migrator's wrapping) carries one of these SQLSTATE `codes`.
 */
export const hasSqlState = (error: { readonly cause: unknown }, codes: ReadonlySet<string>): boolean => {
  let cause: unknown = error.cause
  for (let depth = 0; depth < 6 && typeof cause === "object" && cause !== null; depth++) {
    const code: unknown = Reflect.get(cause, "code")
    if (typeof code === "string" && codes.has(code)) return true
    cause = Reflect.get(cause, "cause")
  }
  return false
}
