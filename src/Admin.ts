/**
 * Admin operations for host apps, seeds, tests and the CLI: create and list workspaces, issue, list,
 * change and revoke root keys (the plaintext is returned once and never stored), create, read, list
 * and soft-delete identities (without audit entries: the HTTP endpoints write those), page through
 * the audit log. Workspaces and root keys are not reachable over HTTP.
 *
 * Every operation checks its input as the HTTP API checks a body (src/domain/AdminInput.ts): an
 * invalid call fails with `InvalidInput` whose `errors` name each field (`input.ratelimits[0].limit`,
 * `query.cursor`). A root key or an identity for a workspace that does not exist fails with
 * `WorkspaceNotFound`. Lists are keyset-paginated: `{ items, cursor? }`, `cursor` only when there is
 * a next page, to be passed back as the query's `cursor`.
 */
import { randomBytes } from "node:crypto"
import { Clock, Effect, Either, Redacted } from "effect"
import type { IdentityConflict, InvalidInput, RootKeyConflict, StorageError, WorkspaceNotFound } from "./Errors.js"
import {
  adminLimits,
  type Checked,
  checker,
  collect,
  CreateIdentityInput,
  CreateWorkspaceInput,
  decodeCursor,
  encodeCursor,
  IdentityPageQueryInput,
  issueAt,
  IssueRootKeyInput,
  PageQueryInput,
  Reference,
  RootKeyPlaintext,
  RootKeyUpdateInput,
  WorkspaceUpdateInput
} from "./domain/AdminInput.js"
import { GetIdentityRequest } from "./domain/Identities.js"
import { base58, newId } from "./domain/Ids.js"
import type { JsonObject } from "./domain/Json.js"
import type {
  AuditLogEntry,
  Identity,
  IdentityPageQuery,
  Page,
  PageQuery,
  RatelimitInput,
  RootKey,
  RootKeyInfo,
  Workspace
} from "./domain/Model.js"
import { permissions } from "./domain/Permissions.js"
import { hashRootKey } from "./services/Authorization.js"
import { IdentityStore, type NewIdentity } from "./services/IdentityStore.js"

const checkWorkspaceInput = checker(CreateWorkspaceInput, "input")
const checkIssueInput = checker(IssueRootKeyInput, "input")
const checkKeyText = checker(RootKeyPlaintext, "input.key")
const checkRootKeyUpdate = checker(RootKeyUpdateInput, "patch")
const checkWorkspaceUpdate = checker(WorkspaceUpdateInput, "patch")
const checkIdentityInput = checker(CreateIdentityInput, "input")
const checkPageQuery = checker(PageQueryInput, "query")
const checkIdentityPageQuery = checker(IdentityPageQueryInput, "query")
const checkWorkspaceId = checker(Reference, "workspaceId")
const checkKeyId = checker(Reference, "keyId")
// As over HTTP: any non-empty string; one that could never be stored is simply not found.
const checkIdentityRef = checker(GetIdentityRequest.fields.identity, "identity")

/** The checked values, or the `InvalidInput` naming every issue. */
const valid = <const T extends ReadonlyArray<Checked<unknown>>>(operation: string, checks: T) =>
  Either.match(collect(operation, checks), { onLeft: Effect.fail, onRight: Effect.succeed })

/** What `createWorkspace` takes. */
export interface CreateWorkspace {
  /** Default: a new `ws_…` id. 1–128 of `a–z A–Z 0–9 _ . -`. */
  readonly id?: string
  /** Default: `"default"`. 1–255 characters. */
  readonly name?: string
  /** Default: `true`. */
  readonly enabled?: boolean
}

/** Creates (or replaces) a workspace. Enabled unless `enabled: false`. */
export const createWorkspace: (
  input?: CreateWorkspace
) => Effect.Effect<Workspace, InvalidInput | StorageError, IdentityStore> = Effect.fn("Admin.createWorkspace")(
  function*(input: CreateWorkspace = {}) {
    const [checked] = yield* valid("createWorkspace", [checkWorkspaceInput(input)])
    const store = yield* IdentityStore
    const now = yield* Clock.currentTimeMillis
    const workspace: Workspace = {
      id: checked.id ?? newId("ws", now),
      name: checked.name ?? "default",
      enabled: checked.enabled ?? true,
      createdAt: now
    }
    return yield* store.putWorkspace(workspace)
  }
)

/** What `updateWorkspace` may change; a field left out keeps its value. */
export interface WorkspaceUpdate {
  /** 1–255 characters. */
  readonly name?: string
  /** `false`: every key of the workspace is answered 403 (workspace disabled) until it is `true` again. */
  readonly enabled?: boolean
}

/**
 * Changes a workspace's name or state in one step, keeping the rest (unlike `createWorkspace` with
 * its id, which sets both). Answers the workspace, or `null` when there is none with this id.
 */
export const updateWorkspace: (
  workspaceId: string,
  patch: WorkspaceUpdate
) => Effect.Effect<Workspace | null, InvalidInput | StorageError, IdentityStore> = Effect.fn("Admin.updateWorkspace")(
  function*(workspaceId: string, patch: WorkspaceUpdate) {
    const [id, checked] = yield* valid("updateWorkspace", [checkWorkspaceId(workspaceId), checkWorkspaceUpdate(patch)])
    const store = yield* IdentityStore
    return yield* store.updateWorkspace(id, checked)
  }
)

/** What `issueRootKey` takes. */
export interface IssueRootKey {
  /** The workspace the key acts on; it must exist (else `WorkspaceNotFound`). */
  readonly workspaceId: string
  /** Default: `["identity.*.update_identity"]`. Each a non-empty string (at most 1000). */
  readonly permissions?: ReadonlyArray<string>
  /** Default: `"root key"`. */
  readonly name?: string
  readonly enabled?: boolean
  /** Epoch ms; `undefined` never expires. */
  readonly expiresAt?: number
  /**
   * Use this plaintext instead of a random one (e.g. `ROOT_KEY` in scripts): 16–256 visible ASCII
   * characters (only its unsalted SHA-256 hash is stored: a short key is guessable from it).
   */
  readonly key?: Redacted.Redacted<string>
}

/** What `kit.admin.issueRootKey` takes: `IssueRootKey` with `key` as a plain string or a `Redacted`. */
export interface IssueRootKeyPlain extends Omit<IssueRootKey, "key"> {
  readonly key?: string | Redacted.Redacted<string>
}

/** `key` of an `IssueRootKey`: `undefined`, or a `Redacted` whose value is a valid plaintext. */
const checkGivenKey = (key: unknown): Checked<string | undefined> => {
  if (key === undefined) return Either.right(undefined)
  if (!Redacted.isRedacted(key)) {
    return issueAt("input.key", `got ${key === null ? "null" : typeof key}, want a Redacted string`, "Pass Redacted.make(key)")
  }
  let value: unknown
  try {
    value = Redacted.value(key)
  } catch {
    // A `Redacted` of another copy of `effect` (a host on Effect 4): its value is out of reach.
    return issueAt(
      "input.key",
      "got a Redacted this copy of effect cannot read (another version of effect?)",
      "Pass the key as a plain string to kit.admin.issueRootKey"
    )
  }
  return checkKeyText(value)
}

/**
 * Issues a root key: stores its hash, returns the plaintext once as `key`. Fails with
 * `WorkspaceNotFound` for a workspace that does not exist, `RootKeyConflict` for a `key` of your
 * own that is stored already.
 */
export const issueRootKey: (
  input: IssueRootKey
) => Effect.Effect<
  { readonly rootKey: RootKey; readonly key: Redacted.Redacted<string> },
  InvalidInput | WorkspaceNotFound | RootKeyConflict | StorageError,
  IdentityStore
> = Effect.fn("Admin.issueRootKey")(function*(input: IssueRootKey) {
  const [checked, given] = yield* valid("issueRootKey", [
    checkIssueInput(input),
    checkGivenKey(typeof input === "object" && input !== null ? input.key : undefined)
  ])
  const store = yield* IdentityStore
  const now = yield* Clock.currentTimeMillis
  const key = Redacted.make(given ?? `unkey_${base58(randomBytes(24))}`)
  const rootKey: RootKey = {
    id: newId("key", now),
    workspaceId: checked.workspaceId,
    hash: hashRootKey(Redacted.value(key)),
    name: checked.name ?? "root key",
    permissions: checked.permissions ?? [permissions.updateIdentity],
    enabled: checked.enabled ?? true,
    expiresAt: checked.expiresAt ?? null,
    deletedAt: null,
    createdAt: now
  }
  return { rootKey: yield* store.putRootKey(rootKey), key }
})

/** What `updateRootKey` may change; a field left out keeps its value. */
export interface RootKeyUpdate {
  readonly enabled?: boolean
  readonly permissions?: ReadonlyArray<string>
  /** Epoch ms, or `null` for "never expires". */
  readonly expiresAt?: number | null
}

/**
 * Changes a root key: `enabled`, `permissions`, `expiresAt` (`null`: never). Answers the key, or
 * `null` when there is none with this id or it is revoked (a revoked key stays as it was revoked).
 * Storage that reports changes (memory, PGlite, PostgreSQL with its listener) evicts the key from
 * every kit's root-key cache at once; with a TTL-only cache
 * (`rootKeyCache: { ttl }` on other storage) a kit sees the change once the entry expires.
 */
export const updateRootKey: (
  keyId: string,
  patch: RootKeyUpdate
) => Effect.Effect<RootKey | null, InvalidInput | StorageError, IdentityStore> = Effect.fn("Admin.updateRootKey")(
  function*(keyId: string, patch: RootKeyUpdate) {
    const [id, checked] = yield* valid("updateRootKey", [checkKeyId(keyId), checkRootKeyUpdate(patch)])
    const store = yield* IdentityStore
    return yield* store.updateRootKey(id, checked)
  }
)

/**
 * Revokes (soft-deletes) a root key: it is then answered as unknown (401). `false` when there was
 * none. Revoking it again answers `true` and keeps the first revocation time.
 */
export const revokeRootKey: (keyId: string) => Effect.Effect<boolean, InvalidInput | StorageError, IdentityStore> = Effect
  .fn("Admin.revokeRootKey")(function*(keyId: string) {
    const [id] = yield* valid("revokeRootKey", [checkKeyId(keyId)])
    const store = yield* IdentityStore
    const now = yield* Clock.currentTimeMillis
    return (yield* store.updateRootKey(id, { deletedAt: now })) !== null
  })

/** What `createIdentity` takes; `autoApply` defaults to false. */
export interface CreateIdentity {
  /** It must exist (else `WorkspaceNotFound`). */
  readonly workspaceId: string
  /** As over HTTP: 1–255 of `a–z A–Z 0–9 _ . -`. */
  readonly externalId: string
  /** Default: `"default"`. */
  readonly environment?: string
  /** As over HTTP: a JSON object, at most 100 keys, nesting 100, 1 MiB as compact JSON. */
  readonly meta?: JsonObject
  /** As over HTTP: at most 50, names 3–128 characters and unique, `limit` ≥ 1, `duration` ≥ 1000 ms. */
  readonly ratelimits?: ReadonlyArray<Omit<RatelimitInput, "autoApply"> & { readonly autoApply?: boolean }>
}

/**
 * Creates an identity with its ratelimits. Fails with `IdentityConflict` on a live duplicate
 * externalId, `WorkspaceNotFound` when the workspace does not exist.
 */
export const createIdentity: (
  input: CreateIdentity
) => Effect.Effect<
  Identity,
  InvalidInput | IdentityConflict | WorkspaceNotFound | StorageError,
  IdentityStore
> = Effect.fn("Admin.createIdentity")(function*(input: CreateIdentity) {
  const [checked] = yield* valid("createIdentity", [checkIdentityInput(input)])
  const store = yield* IdentityStore
  const identity: NewIdentity & { now: number } = {
    workspaceId: checked.workspaceId,
    externalId: checked.externalId,
    environment: checked.environment,
    meta: checked.meta,
    ratelimits: checked.ratelimits?.map((rl) => ({
      name: rl.name,
      limit: rl.limit,
      duration: rl.duration,
      autoApply: rl.autoApply ?? false
    })),
    now: yield* Clock.currentTimeMillis
  }
  return yield* store.createIdentity(identity)
})

/** The live identity with this id or externalId, or `null`. */
export const getIdentity: (
  workspaceId: string,
  identity: string
) => Effect.Effect<Identity | null, InvalidInput | StorageError, IdentityStore> = Effect.fn("Admin.getIdentity")(
  function*(workspaceId: string, identity: string) {
    const [ws, ref] = yield* valid("getIdentity", [checkWorkspaceId(workspaceId), checkIdentityRef(identity)])
    const store = yield* IdentityStore
    return yield* store.getIdentity(ws, ref)
  }
)

/** Soft-deletes an identity; `false` when there was no live one. */
export const deleteIdentity: (
  workspaceId: string,
  identity: string
) => Effect.Effect<boolean, InvalidInput | StorageError, IdentityStore> = Effect.fn("Admin.deleteIdentity")(
  function*(workspaceId: string, identity: string) {
    const [ws, ref] = yield* valid("deleteIdentity", [checkWorkspaceId(workspaceId), checkIdentityRef(identity)])
    const store = yield* IdentityStore
    const now = yield* Clock.currentTimeMillis
    return yield* store.deleteIdentity(ws, ref, now)
  }
)

// --- lists --------------------------------------------------------------------------------------

/** A store's page as the admin API answers it: its cursor made opaque, left out on the last page. */
const toPage = <A, C extends string | number>(
  kind: Parameters<typeof encodeCursor>[0],
  page: { readonly items: ReadonlyArray<A>; readonly cursor?: C | undefined }
): Page<A> => page.cursor === undefined ? { items: page.items } : { items: page.items, cursor: encodeCursor(kind, page.cursor) }

/** Workspaces by id, `limit` (default 100, at most 1000) a page. */
export const listWorkspaces: (
  query?: PageQuery
) => Effect.Effect<Page<Workspace>, InvalidInput | StorageError, IdentityStore> = Effect.fn("Admin.listWorkspaces")(
  function*(query: PageQuery = {}) {
    const checkedQuery = checkPageQuery(query)
    const [q, cursor] = yield* valid("listWorkspaces", [
      checkedQuery,
      Either.isRight(checkedQuery) ? decodeCursor("workspaces", checkedQuery.right.cursor) : Either.right(undefined)
    ])
    const store = yield* IdentityStore
    const page = yield* store.listWorkspaces({ limit: q.limit ?? adminLimits.defaultPageLimit, cursor })
    return toPage("workspaces", page)
  }
)

/** The workspace's root keys by id, revoked ones included (`deletedAt` set), never their hash. */
export const listRootKeys: (
  workspaceId: string,
  query?: PageQuery
) => Effect.Effect<Page<RootKeyInfo>, InvalidInput | StorageError, IdentityStore> = Effect.fn("Admin.listRootKeys")(
  function*(workspaceId: string, query: PageQuery = {}) {
    const checkedQuery = checkPageQuery(query)
    const [ws, q, cursor] = yield* valid("listRootKeys", [
      checkWorkspaceId(workspaceId),
      checkedQuery,
      Either.isRight(checkedQuery) ? decodeCursor("rootKeys", checkedQuery.right.cursor) : Either.right(undefined)
    ])
    const store = yield* IdentityStore
    const page = yield* store.listRootKeys(ws, { limit: q.limit ?? adminLimits.defaultPageLimit, cursor })
    return toPage("rootKeys", page)
  }
)

/**
 * The workspace's live identities by id, each with its ratelimits, as the HTTP `listIdentities`
 * reads them (the same store operation); `search` (trimmed) keeps those whose id or externalId
 * contains it, ASCII letters in any case.
 */
export const listIdentities: (
  workspaceId: string,
  query?: IdentityPageQuery
) => Effect.Effect<Page<Identity>, InvalidInput | StorageError, IdentityStore> = Effect.fn("Admin.listIdentities")(
  function*(workspaceId: string, query: IdentityPageQuery = {}) {
    const checkedQuery = checkIdentityPageQuery(query)
    const [ws, q, cursor] = yield* valid("listIdentities", [
      checkWorkspaceId(workspaceId),
      checkedQuery,
      Either.isRight(checkedQuery) ? decodeCursor("identities", checkedQuery.right.cursor) : Either.right(undefined)
    ])
    const store = yield* IdentityStore
    const search = q.search?.trim() ?? ""
    const page = yield* store.listIdentities({
      workspaceId: ws,
      limit: q.limit ?? adminLimits.defaultPageLimit,
      cursor,
      search: search === "" ? undefined : search
    })
    return toPage("identities", { items: page.identities, cursor: page.cursor })
  }
)

/**
 * The workspace's audit entries, oldest first, a page at a time. Entries written while you page
 * come on a later page, never twice (on SQL storage, one whose transaction commits after a later
 * entry was already read can be passed over by that reading: see the README).
 */
export const listAuditLog: (
  workspaceId: string,
  query?: PageQuery
) => Effect.Effect<Page<AuditLogEntry>, InvalidInput | StorageError, IdentityStore> = Effect.fn("Admin.listAuditLog")(
  function*(workspaceId: string, query: PageQuery = {}) {
    const checkedQuery = checkPageQuery(query)
    const [ws, q, cursor] = yield* valid("listAuditLog", [
      checkWorkspaceId(workspaceId),
      checkedQuery,
      Either.isRight(checkedQuery) ? decodeCursor("auditLog", checkedQuery.right.cursor) : Either.right(undefined)
    ])
    const store = yield* IdentityStore
    const page = yield* store.listAuditLog(ws, { limit: q.limit ?? adminLimits.defaultPageLimit, cursor })
    return toPage("auditLog", page)
  }
)
