/**
 * Storage of workspaces, root keys, identities, ratelimits and the audit log. One interface, several
 * layers: `layerMemory` (tests, host apps' own tests), `layerSql` (any `SqlClient`: PostgreSQL via
 * `@effect/sql-pg`, or PGlite). All of them pass the same contract suite (`test/storage-contract.ts`).
 */
import { Context, type Effect } from "effect"
import type { IdentityConflict, IdentityNotFound, StorageError } from "../Errors.js"
import type { JsonObject } from "../domain/Json.js"
import type {
  AuditLogEntry,
  Identity,
  IdentityUpdate,
  RatelimitInput,
  RootKey,
  RootKeyLookup,
  Workspace
} from "../domain/Model.js"

/** An identity to create (admin operation). */
export interface NewIdentity {
  readonly workspaceId: string
  readonly externalId: string
  readonly environment?: string | undefined
  readonly meta?: JsonObject | undefined
  readonly ratelimits?: ReadonlyArray<RatelimitInput> | undefined
}

/** What `updateRootKey` may change; a field left out keeps its value. */
export interface RootKeyPatch {
  readonly enabled?: boolean | undefined
  readonly permissions?: ReadonlyArray<string> | undefined
  /** Epoch ms, or `null` for "never expires". */
  readonly expiresAt?: number | null | undefined
  /** Epoch ms of the deletion (a deleted key is answered as unknown), or `null` to restore it. */
  readonly deletedAt?: number | null | undefined
}

/** What a storage layer implements. Every method is atomic; failures are `StorageError`s. */
export interface IdentityStoreService {
  /** The root key with this hash (deleted ones included: the caller decides), with its workspace. */
  readonly findRootKey: (hash: string) => Effect.Effect<RootKeyLookup | null, StorageError>
  /**
   * The write of spec §5, in one transaction with the identity locked: meta, ratelimit set (kept ids
   * for kept names), audit entries. Answers the identity as committed. Ratelimits come back by name.
   */
  readonly updateIdentity: (update: IdentityUpdate) => Effect.Effect<Identity, IdentityNotFound | StorageError>

  // Admin operations: for host apps, seeds and tests. Not reachable over HTTP.

  /** Inserts a workspace (or replaces the one with the same id). */
  readonly putWorkspace: (workspace: Workspace) => Effect.Effect<Workspace, StorageError>
  /** Inserts a root key (already hashed). Fails on a duplicate hash or id. */
  readonly putRootKey: (key: RootKey) => Effect.Effect<RootKey, StorageError>
  /** Changes a root key's state in one step; `null` when there is no key with this id. */
  readonly updateRootKey: (id: string, patch: RootKeyPatch) => Effect.Effect<RootKey | null, StorageError>
  /** Creates an identity with its ratelimits. Fails if a live identity has this externalId. */
  readonly createIdentity: (
    identity: NewIdentity & { readonly now: number }
  ) => Effect.Effect<Identity, IdentityConflict | StorageError>
  /** The live identity with this id or externalId in the workspace, ratelimits by name. */
  readonly getIdentity: (workspaceId: string, identity: string) => Effect.Effect<Identity | null, StorageError>
  /** Soft-deletes the live identity with this id or externalId; false when there was none. */
  readonly deleteIdentity: (
    workspaceId: string,
    identity: string,
    now: number
  ) => Effect.Effect<boolean, StorageError>
  /** The workspace's audit entries, oldest first. */
  readonly listAuditLog: (workspaceId: string) => Effect.Effect<ReadonlyArray<AuditLogEntry>, StorageError>
}

/** The storage service. */
export class IdentityStore extends Context.Tag("identity-kit/IdentityStore")<IdentityStore, IdentityStoreService>() {}
