/**
 * Storage of workspaces, root keys, identities, ratelimits and the audit log. One interface, several
 * layers: `layerMemory` (tests, host apps' own tests), `layerSql` (any `SqlClient`: PostgreSQL via
 * `@effect/sql-pg`, or PGlite). All of them pass the same contract suite (`test/storage-contract.ts`).
 */
import { Context, type Effect } from "effect"
import type { IdentityConflict, IdentityNotFound, RootKeyConflict, StorageError, WorkspaceNotFound } from "../Errors.js"
import type { JsonObject } from "../domain/Json.js"
import type {
  AuditContext,
  AuditLogEntry,
  Identity,
  IdentityUpdate,
  RatelimitInput,
  RootKey,
  RootKeyInfo,
  RootKeyLookup,
  Workspace
} from "../domain/Model.js"

/** An identity to create (createIdentity, or the admin API). */
export interface NewIdentity {
  readonly workspaceId: string
  readonly externalId: string
  readonly environment?: string | undefined
  readonly meta?: JsonObject | undefined
  readonly ratelimits?: ReadonlyArray<RatelimitInput> | undefined
}

/** A page of `listIdentities`. */
export interface IdentityListQuery {
  readonly workspaceId: string
  /** Most identities on the page (1..1000: the HTTP endpoint asks at most 100, the admin API 1000). */
  readonly limit: number
  /** Only identities whose id is ≥ this (code-unit order); `undefined` from the start. Any string. */
  readonly cursor?: string | undefined
  /**
   * Only identities whose id or externalId contains this as a literal (`%`, `_` and `\` match
   * themselves): ASCII letters A–Z case-insensitively, every other character exactly (what
   * PostgreSQL's `lower(… COLLATE "C")` does on any locale). Already trimmed; `undefined` for no
   * filter. Any string.
   */
  readonly search?: string | undefined
}

/** One page of live identities, by id ascending, each with its ratelimits (by name). */
export interface IdentityPage {
  readonly identities: ReadonlyArray<Identity>
  /** The id of the first identity of the next page; `undefined` on the last page. */
  readonly cursor?: string | undefined
}

/**
 * A page of an admin list (`listWorkspaces`, `listRootKeys`, `listAuditLog`): at most `limit` items
 * (1..1000) from the keyset position `cursor` (that of a previous page's `cursor`; `undefined`:
 * from the start).
 */
export interface KeysetQuery<C> {
  readonly limit: number
  readonly cursor?: C | undefined
}

/** One page: `cursor` is the position of the next page's first item, `undefined` on the last page. */
export interface KeysetPage<A, C> {
  readonly items: ReadonlyArray<A>
  readonly cursor?: C | undefined
}

/** What `updateWorkspace` may change; a field left out keeps its value. */
export interface WorkspacePatch {
  readonly name?: string | undefined
  readonly enabled?: boolean | undefined
}

/** What `updateRootKey` may change; a field left out keeps its value. */
export interface RootKeyPatch {
  readonly enabled?: boolean | undefined
  readonly permissions?: ReadonlyArray<string> | undefined
  /** Epoch ms, or `null` for "never expires". */
  readonly expiresAt?: number | null | undefined
  /**
   * Epoch ms of the deletion (a deleted key is answered as unknown), or `null` to restore it. A key
   * already deleted keeps its first deletion time: it is when the key stopped working. A patch
   * without `deletedAt` leaves a deleted key alone and answers `null`, as for no key.
   */
  readonly deletedAt?: number | null | undefined
}

/** What a storage layer implements. Every method is atomic; failures are `StorageError`s. */
export interface IdentityStoreService {
  /**
   * Readiness: one cheap round trip that succeeds when the storage answers and its schema is at
   * (or past) the newest migration this version ships. Fails with a `StorageError` whose cause is
   * an `Error` saying what to run when the migrations never ran or are behind.
   */
  readonly probe: Effect.Effect<void, StorageError>
  /** The root key with this hash (deleted ones included: the caller decides), with its workspace. */
  readonly findRootKey: (hash: string) => Effect.Effect<RootKeyLookup | null, StorageError>
  /**
   * The write of spec §5, in one transaction with the identity locked: meta, ratelimit set (kept ids
   * for kept names), audit entries. Answers the identity as committed. Ratelimits come back by name.
   */
  readonly updateIdentity: (update: IdentityUpdate) => Effect.Effect<Identity, IdentityNotFound | StorageError>

  // Workspaces and root keys: admin operations for host apps, seeds and tests, not reachable over HTTP.

  /**
   * Inserts a workspace, or replaces the name and `enabled` of the one with the same id, which keeps
   * its `createdAt`. Answers the workspace as stored.
   */
  readonly putWorkspace: (workspace: Workspace) => Effect.Effect<Workspace, StorageError>
  /**
   * Changes only what the patch names, in one step (a concurrent change of another field is kept).
   * Answers the workspace, or `null` when there is none with this id.
   */
  readonly updateWorkspace: (id: string, patch: WorkspacePatch) => Effect.Effect<Workspace | null, StorageError>
  /**
   * Workspaces by id (code-unit order): `cursor` is an id, the page starts at the first id `>=` it
   * (any string; `limit + 1` rows read to know whether there is a next page).
   */
  readonly listWorkspaces: (query: KeysetQuery<string>) => Effect.Effect<KeysetPage<Workspace, string>, StorageError>
  /**
   * Inserts a root key (already hashed). Fails with `WorkspaceNotFound` when its workspace does not
   * exist, `RootKeyConflict` when a key with the same hash exists, a `StorageError` on a duplicate id.
   */
  readonly putRootKey: (key: RootKey) => Effect.Effect<RootKey, WorkspaceNotFound | RootKeyConflict | StorageError>
  /**
   * The workspace's root keys by id (code-unit order), revoked ones included (`deletedAt` set),
   * without their hash; the cursor as `listWorkspaces`'.
   */
  readonly listRootKeys: (
    workspaceId: string,
    query: KeysetQuery<string>
  ) => Effect.Effect<KeysetPage<RootKeyInfo, string>, StorageError>
  /** Changes a root key's state in one step; `null` when there is no key with this id. */
  readonly updateRootKey: (id: string, patch: RootKeyPatch) => Effect.Effect<RootKey | null, StorageError>
  /**
   * Creates an identity with its ratelimits (ids in request order), in one transaction; with
   * `audit`, also its audit entries (`identity.create`, then one `ratelimit.create` per ratelimit).
   * Fails with `IdentityConflict` if a live identity of the workspace has this externalId, with
   * `WorkspaceNotFound` when the workspace does not exist.
   */
  readonly createIdentity: (
    identity: NewIdentity & { readonly now: number; readonly audit?: AuditContext | undefined }
  ) => Effect.Effect<Identity, IdentityConflict | WorkspaceNotFound | StorageError>
  /** The live identity with this id or externalId in the workspace, ratelimits by name. */
  readonly getIdentity: (workspaceId: string, identity: string) => Effect.Effect<Identity | null, StorageError>
  /**
   * Soft-deletes the live identity with this id or externalId (an id match wins); its ratelimit rows
   * stay and its `updatedAt` is left as it was (as the reference does). With `audit`, writes
   * `identity.delete` and one `ratelimit.delete` per ratelimit in the same transaction. `false` when
   * there was no live one. When a concurrent delete of the same identity won, answers `true` and
   * writes no audit entry.
   */
  readonly deleteIdentity: (
    workspaceId: string,
    identity: string,
    now: number,
    audit?: AuditContext | undefined
  ) => Effect.Effect<boolean, StorageError>
  /**
   * One page of the workspace's live identities by id (keyset: `id >= cursor`, `limit + 1` rows
   * read to know whether there is a next page), filtered by `search`.
   */
  readonly listIdentities: (query: IdentityListQuery) => Effect.Effect<IdentityPage, StorageError>
  /**
   * The workspace's audit entries, oldest first, a page at a time: `cursor` is a position in the
   * workspace's log (a non-negative integer a previous page answered; 0: from the start), the page
   * starts at the first entry at or after it. Entries written between two pages come on a later
   * page, never twice.
   */
  readonly listAuditLog: (
    workspaceId: string,
    query: KeysetQuery<number>
  ) => Effect.Effect<KeysetPage<AuditLogEntry, number>, StorageError>
}

/** The storage service. */
export class IdentityStore extends Context.Tag("identity-kit/IdentityStore")<IdentityStore, IdentityStoreService>() {}
