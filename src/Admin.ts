/**
 * Admin operations for host apps, seeds and tests: create workspaces, issue root keys (the
 * plaintext is returned once and never stored), create, read and soft-delete identities (without
 * audit entries: the HTTP endpoints write those), read the audit log. Workspaces and root keys are
 * not reachable over HTTP.
 */
import { randomBytes } from "node:crypto"
import { Clock, Effect, Redacted } from "effect"
import { InvalidInput } from "./Errors.js"
import { base58, newId } from "./domain/Ids.js"
import type { JsonObject } from "./domain/Json.js"
import type { RatelimitInput, RootKey, Workspace } from "./domain/Model.js"
import { permissions } from "./domain/Permissions.js"
import { hashRootKey } from "./services/Authorization.js"
import { IdentityStore, type NewIdentity } from "./services/IdentityStore.js"

/** Creates (or replaces) a workspace. Enabled unless `enabled: false`. */
export const createWorkspace = Effect.fn("Admin.createWorkspace")(function*(
  input: { readonly id?: string; readonly name?: string; readonly enabled?: boolean } = {}
) {
  const store = yield* IdentityStore
  const now = yield* Clock.currentTimeMillis
  const workspace: Workspace = {
    id: input.id ?? newId("ws", now),
    name: input.name ?? "default",
    enabled: input.enabled ?? true,
    createdAt: now
  }
  return yield* store.putWorkspace(workspace)
})

/** What `issueRootKey` takes. */
export interface IssueRootKey {
  readonly workspaceId: string
  /** Default: `["identity.*.update_identity"]`. */
  readonly permissions?: ReadonlyArray<string>
  readonly name?: string
  readonly enabled?: boolean
  /** Epoch ms; `undefined` never expires. */
  readonly expiresAt?: number
  /** Use this plaintext instead of a random one (e.g. `ROOT_KEY` in scripts). */
  readonly key?: Redacted.Redacted<string>
}

/** Issues a root key: stores its hash, returns the plaintext once as `key`. */
export const issueRootKey = Effect.fn("Admin.issueRootKey")(function*(input: IssueRootKey) {
  const store = yield* IdentityStore
  const now = yield* Clock.currentTimeMillis
  const key = input.key ?? Redacted.make(`unkey_${base58(randomBytes(24))}`)
  const rootKey: RootKey = {
    id: newId("key", now),
    workspaceId: input.workspaceId,
    hash: hashRootKey(Redacted.value(key)),
    name: input.name ?? "root key",
    permissions: input.permissions ?? [permissions.updateIdentity],
    enabled: input.enabled ?? true,
    expiresAt: input.expiresAt ?? null,
    deletedAt: null,
    createdAt: now
  }
  return { rootKey: yield* store.putRootKey(rootKey), key }
})

/**
 * Changes a root key: `enabled`, `permissions`, `expiresAt` (`null`: never). Answers the key, or
 * `null` when there is none with this id. Storage that reports changes (memory, PGlite, PostgreSQL
 * with its listener) evicts the key from every kit's root-key cache at once; with a TTL-only cache
 * (`rootKeyCache: { ttl }` on other storage) a kit sees the change once the entry expires.
 */
export const updateRootKey = (
  keyId: string,
  patch: { readonly enabled?: boolean; readonly permissions?: ReadonlyArray<string>; readonly expiresAt?: number | null }
) => Effect.flatMap(IdentityStore, (store) => store.updateRootKey(keyId, patch))

/** Revokes (soft-deletes) a root key: it is then answered as unknown (401). `false` when there was none. */
export const revokeRootKey = (keyId: string) =>
  Effect.flatMap(IdentityStore, (store) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) => store.updateRootKey(keyId, { deletedAt: now }))).pipe(
      Effect.map((key) => key !== null)
    )

/** What `createIdentity` takes; `autoApply` defaults to false. */
export interface CreateIdentity {
  readonly workspaceId: string
  readonly externalId: string
  readonly environment?: string
  readonly meta?: JsonObject
  readonly ratelimits?: ReadonlyArray<Omit<RatelimitInput, "autoApply"> & { readonly autoApply?: boolean }>
}

/** Creates an identity with its ratelimits. Fails with `IdentityConflict` on a live duplicate externalId. */
export const createIdentity = Effect.fn("Admin.createIdentity")(function*(input: CreateIdentity) {
  const store = yield* IdentityStore
  const ratelimits = (input.ratelimits ?? []).map((rl) => ({ ...rl, autoApply: rl.autoApply ?? false }))
  const names = new Set(ratelimits.map((rl) => rl.name))
  if (names.size !== ratelimits.length) {
    return yield* new InvalidInput({ detail: "Ratelimit names must be unique", errors: [] })
  }
  const identity: NewIdentity & { now: number } = {
    workspaceId: input.workspaceId,
    externalId: input.externalId,
    environment: input.environment,
    meta: input.meta,
    ratelimits,
    now: yield* Clock.currentTimeMillis
  }
  return yield* store.createIdentity(identity)
})

/** The live identity with this id or externalId, or `null`. */
export const getIdentity = (workspaceId: string, identity: string) =>
  Effect.flatMap(IdentityStore, (store) => store.getIdentity(workspaceId, identity))

/** Soft-deletes an identity; `false` when there was no live one. */
export const deleteIdentity = (workspaceId: string, identity: string) =>
  Effect.flatMap(IdentityStore, (store) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) => store.deleteIdentity(workspaceId, identity, now)))

/** The workspace's audit entries, oldest first. */
export const listAuditLog = (workspaceId: string) =>
  Effect.flatMap(IdentityStore, (store) => store.listAuditLog(workspaceId))
