/**
 * In-memory storage with the same semantics as the SQL layer: each operation runs as one
 * synchronous step (JavaScript runs one at a time, so it is atomic and serialised per identity),
 * meta is kept as JSON text (so what comes back is what PostgreSQL would give), audit entries are
 * written with the change. For host apps' own tests and for this package's unit tests.
 */
import { Context, Effect, Layer } from "effect"
import { IdentityConflict, IdentityNotFound, RootKeyConflict, StorageError, WorkspaceNotFound } from "../Errors.js"
import { newId } from "../domain/Ids.js"
import type { JsonObject } from "../domain/Json.js"
import type { AuditLogEntry, Identity, Ratelimit, RootKey, RootKeyInfo, Workspace } from "../domain/Model.js"
import { IdentityStore, type IdentityStoreService, type KeysetPage } from "../services/IdentityStore.js"
import {
  makeRootKeyEventHub,
  type RootKeyEvent,
  RootKeyEvents,
  type RootKeyEventsService
} from "../services/RootKeyEvents.js"
import {
  asciiLower,
  createAuditEntries,
  deleteAuditEntries,
  listBounds,
  planRatelimitChanges,
  updateAuditEntries,
  wellFormed
} from "./internal.js"

interface StoredIdentity extends Omit<Identity, "meta" | "ratelimits"> {
  readonly metaJson: string
}

const parseMeta = (json: string): JsonObject => JSON.parse(json)

/** The first index of `sorted` whose value is `>= value` (code-unit order), `sorted.length` if none. */
const lowerBound = (sorted: ReadonlyArray<string>, value: string): number => {
  let low = 0
  let high = sorted.length
  while (low < high) {
    const middle = (low + high) >>> 1
    if ((sorted[middle] ?? "") < value) low = middle + 1
    else high = middle
  }
  return low
}

// What `search` is matched against: id and externalId as SQL stores and folds them (see
// `listBounds`), joined by NUL, which no needle contains, so a match never straddles the two.
const searchText = (id: string, externalId: string) =>
  `${asciiLower(wellFormed(id))}\u0000${asciiLower(wellFormed(externalId))}`

/** Adds `id` to a sorted array of ids (code-unit order), unless it is there. */
const insertSorted = (ids: Array<string>, id: string): void => {
  const at = lowerBound(ids, id)
  if (ids[at] !== id) ids.splice(at, 0, id)
}

/** Removes `id` from a sorted array of ids, if it is there. */
const removeSorted = (ids: Array<string>, id: string): void => {
  const at = lowerBound(ids, id)
  if (ids[at] === id) ids.splice(at, 1)
}

/**
 * A page of a sorted array of ids from the first id `>= cursor`, as SQL reads it (`limit + 1` ids,
 * the last one only says where the next page starts). `cursor` is any string: `listBounds` makes
 * it what PostgreSQL would compare.
 */
const idPage = <A>(
  sorted: ReadonlyArray<string>,
  cursor: string | undefined,
  limit: number,
  item: (id: string) => A
): KeysetPage<A, string> => {
  const from = lowerBound(sorted, listBounds(cursor, undefined).from)
  const ids = sorted.slice(from, from + limit + 1)
  const next = ids[limit]
  const items = ids.slice(0, limit).map(item)
  return next === undefined ? { items } : { items, cursor: next }
}

/** A root key as listed: every field but the hash. */
const keyInfo = (key: RootKey): RootKeyInfo => ({
  id: key.id,
  workspaceId: key.workspaceId,
  name: key.name,
  permissions: key.permissions,
  enabled: key.enabled,
  expiresAt: key.expiresAt,
  deletedAt: key.deletedAt,
  createdAt: key.createdAt
})

/** A fresh, empty in-memory store (each call has its own data); `publish` hears root-key and workspace changes. */
const makeStore = (publish: (event: RootKeyEvent) => void): IdentityStoreService => {
  const workspaces = new Map<string, Workspace>()
  const workspaceIds: Array<string> = [] // sorted, for listWorkspaces
  const keysByHash = new Map<string, RootKey>()
  const hashById = new Map<string, string>()
  const keyIds = new Map<string, Array<string>>() // by workspace: sorted, for listRootKeys
  const identities = new Map<string, StoredIdentity>()
  const ratelimits = new Map<string, Array<Ratelimit>>() // by identity id
  // By workspace, oldest first: an entry's position in its workspace's array is listAuditLog's cursor.
  const audit = new Map<string, Array<AuditLogEntry>>()

  const byName = (a: Ratelimit, b: Ratelimit) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)

  // Every field written out: the stored record's own fields (`metaJson`) must not reach callers.
  const view = (stored: StoredIdentity): Identity => ({
    id: stored.id,
    workspaceId: stored.workspaceId,
    externalId: stored.externalId,
    environment: stored.environment,
    meta: parseMeta(stored.metaJson),
    deleted: stored.deleted,
    createdAt: stored.createdAt,
    updatedAt: stored.updatedAt,
    ratelimits: [...(ratelimits.get(stored.id) ?? [])].sort(byName)
  })

  const appendAudit = (workspaceId: string, entries: ReadonlyArray<AuditLogEntry>) => {
    if (entries.length === 0) return
    let log = audit.get(workspaceId)
    if (log === undefined) audit.set(workspaceId, log = [])
    for (const entry of entries) log.push(entry)
  }

  const keysOf = (workspaceId: string): Array<string> => {
    let ids = keyIds.get(workspaceId)
    if (ids === undefined) keyIds.set(workspaceId, ids = [])
    return ids
  }

  // Live identities by (workspace, externalId): one live identity per pair, as the SQL index.
  const liveByExternal = new Map<string, string>()
  const externalKey = (workspaceId: string, externalId: string) => `${workspaceId}\u0000${externalId}`

  // Live ids by workspace, sorted (code-unit order, as SQL's `COLLATE "C"` on these ASCII ids):
  // a page is a binary search and a walk of the rows it reads. Insert and delete move the tail of
  // the array (a memmove, fine for the workspaces a test or a small host keeps in memory).
  const liveIds = new Map<string, Array<string>>()
  const searchTexts = new Map<string, string>() // by identity id

  const addLive = (stored: StoredIdentity) => {
    liveByExternal.set(externalKey(stored.workspaceId, stored.externalId), stored.id)
    searchTexts.set(stored.id, searchText(stored.id, stored.externalId))
    let ids = liveIds.get(stored.workspaceId)
    if (ids === undefined) liveIds.set(stored.workspaceId, ids = [])
    insertSorted(ids, stored.id)
  }

  const removeLive = (stored: StoredIdentity) => {
    liveByExternal.delete(externalKey(stored.workspaceId, stored.externalId))
    searchTexts.delete(stored.id)
    const ids = liveIds.get(stored.workspaceId)
    if (ids !== undefined) removeSorted(ids, stored.id)
  }

  // Spec §1: an id match wins over an externalId match. A string with NUL names nothing, as on
  // SQL, where no text can hold it.
  const find = (workspaceId: string, identity: string): StoredIdentity | undefined => {
    if (identity.includes("\u0000")) return undefined
    const byId = identities.get(identity)
    if (byId !== undefined && byId.workspaceId === workspaceId && !byId.deleted) return byId
    const id = liveByExternal.get(externalKey(workspaceId, identity))
    return id === undefined ? undefined : identities.get(id)
  }

  // Guards against bugs in this file turning into half-applied writes: every throw becomes a
  // StorageError, and writes below only mutate after everything that can throw has run.
  const attempt = <A>(operation: string, run: () => A) =>
    Effect.try({ try: run, catch: (cause) => new StorageError({ operation, cause }) })

  const service: IdentityStoreService = {
    // Nothing to migrate: the maps are the schema.
    probe: Effect.void,
    findRootKey: (hash) =>
      attempt("findRootKey", () => {
        const key = keysByHash.get(hash)
        return key === undefined ? null : { key, workspace: workspaces.get(key.workspaceId) ?? null }
      }),

    updateIdentity: (update) =>
      attempt("updateIdentity", () => {
        const stored = find(update.workspaceId, update.identity)
        if (stored === undefined) return null
        const current = ratelimits.get(stored.id) ?? []
        const plan = update.ratelimits === undefined ? undefined : planRatelimitChanges(current, update.ratelimits, update.now)
        const next: StoredIdentity = update.meta === undefined
          ? stored
          : { ...stored, metaJson: update.meta, updatedAt: update.now }
        const entries = updateAuditEntries(next, plan, update)
        identities.set(next.id, next)
        if (plan !== undefined) ratelimits.set(next.id, [...plan.result])
        appendAudit(next.workspaceId, entries)
        return view(next)
      }).pipe(
        Effect.flatMap((identity) => identity === null ? Effect.fail(new IdentityNotFound()) : Effect.succeed(identity))
      ),

    putWorkspace: (workspace) =>
      attempt("putWorkspace", () => {
        // A replaced workspace keeps the time it was first created.
        const createdAt = workspaces.get(workspace.id)?.createdAt ?? workspace.createdAt
        const stored = createdAt === workspace.createdAt ? workspace : { ...workspace, createdAt }
        workspaces.set(workspace.id, stored)
        insertSorted(workspaceIds, workspace.id)
        publish({ _tag: "InvalidateWorkspace", workspaceId: workspace.id })
        return stored
      }),

    updateWorkspace: (id, patch) =>
      attempt("updateWorkspace", () => {
        const workspace = workspaces.get(id)
        if (workspace === undefined) return null
        const next: Workspace = { ...workspace, name: patch.name ?? workspace.name, enabled: patch.enabled ?? workspace.enabled }
        workspaces.set(id, next)
        publish({ _tag: "InvalidateWorkspace", workspaceId: id })
        return next
      }),

    listWorkspaces: (query) =>
      attempt("listWorkspaces", () =>
        idPage(workspaceIds, query.cursor, query.limit, (id): Workspace => {
          const workspace = workspaces.get(id)
          if (workspace === undefined) throw new Error(`workspace ${id} is listed but not stored`)
          return workspace
        })),

    // As SQL's foreign key (migration 0009): a key of a workspace that does not exist is refused.
    putRootKey: (key) =>
      attempt("putRootKey", () => {
        // In PostgreSQL's order: the unique hash is checked before the foreign key.
        if (keysByHash.has(key.hash)) return "duplicate hash" as const
        if (!workspaces.has(key.workspaceId)) return "no workspace" as const
        if (hashById.has(key.id)) throw new Error("duplicate root key id")
        keysByHash.set(key.hash, key)
        hashById.set(key.id, key.hash)
        insertSorted(keysOf(key.workspaceId), key.id)
        publish({ _tag: "Invalidate", hash: key.hash })
        return key
      }).pipe(
        Effect.flatMap((stored): Effect.Effect<RootKey, WorkspaceNotFound | RootKeyConflict> =>
          stored === "no workspace"
            ? Effect.fail(new WorkspaceNotFound({ workspaceId: key.workspaceId }))
            : stored === "duplicate hash"
            ? Effect.fail(new RootKeyConflict())
            : Effect.succeed(stored)
        )
      ),

    listRootKeys: (workspaceId, query) =>
      attempt("listRootKeys", () =>
        idPage(keyIds.get(workspaceId) ?? [], query.cursor, query.limit, (id) => {
          const key = keysByHash.get(hashById.get(id) ?? "")
          if (key === undefined) throw new Error(`root key ${id} is listed but not stored`)
          return keyInfo(key)
        })),

    updateRootKey: (id, patch) =>
      attempt("updateRootKey", () => {
        const hash = hashById.get(id)
        const key = hash === undefined ? undefined : keysByHash.get(hash)
        // A revoked key is changed only by a patch of `deletedAt` (revoked again, or restored).
        if (key === undefined || (key.deletedAt !== null && patch.deletedAt === undefined)) return null
        const next: RootKey = {
          ...key,
          enabled: patch.enabled ?? key.enabled,
          permissions: patch.permissions ?? key.permissions,
          expiresAt: patch.expiresAt === undefined ? key.expiresAt : patch.expiresAt,
          // A key deleted again keeps its first deletion time; `null` restores it.
          deletedAt: patch.deletedAt === undefined ? key.deletedAt : patch.deletedAt === null ? null : key.deletedAt ?? patch.deletedAt
        }
        keysByHash.set(key.hash, next)
        publish({ _tag: "Invalidate", hash: key.hash })
        return next
      }),

    createIdentity: (input) =>
      attempt("createIdentity", () => {
        // As SQL's foreign key (migration 0009).
        if (!workspaces.has(input.workspaceId)) return "no workspace" as const
        if (liveByExternal.has(externalKey(input.workspaceId, input.externalId))) return null
        const stored: StoredIdentity = {
          id: newId("id", input.now),
          workspaceId: input.workspaceId,
          externalId: input.externalId,
          environment: input.environment ?? "default",
          metaJson: JSON.stringify(input.meta ?? {}),
          deleted: false,
          createdAt: input.now,
          updatedAt: null
        }
        // Request order: ids are made in it, and the set keeps it (deletions are audited in it).
        const created = (input.ratelimits ?? []).map((rl): Ratelimit => ({
          id: newId("rl", input.now),
          name: rl.name,
          limit: rl.limit,
          duration: rl.duration,
          autoApply: rl.autoApply,
          createdAt: input.now,
          updatedAt: null
        }))
        const entries = input.audit === undefined ? [] : createAuditEntries(stored, created, input.audit, input.now)
        identities.set(stored.id, stored)
        addLive(stored)
        ratelimits.set(stored.id, created)
        appendAudit(stored.workspaceId, entries)
        return view(stored)
      }).pipe(
        Effect.flatMap((identity): Effect.Effect<Identity, IdentityConflict | WorkspaceNotFound> =>
          identity === null
            ? Effect.fail(new IdentityConflict({ workspaceId: input.workspaceId, externalId: input.externalId }))
            : identity === "no workspace"
            ? Effect.fail(new WorkspaceNotFound({ workspaceId: input.workspaceId }))
            : Effect.succeed(identity)
        )
      ),

    getIdentity: (workspaceId, identity) =>
      attempt("getIdentity", () => {
        const stored = find(workspaceId, identity)
        return stored === undefined ? null : view(stored)
      }),

    // `updatedAt` is left as it was, as the reference's soft delete does; the audit entry has the time.
    // Calls run one at a time, so a "concurrent" second delete finds nothing live and answers false.
    deleteIdentity: (workspaceId, identity, now, context) =>
      attempt("deleteIdentity", () => {
        const stored = find(workspaceId, identity)
        if (stored === undefined) return false
        const kept = ratelimits.get(stored.id) ?? []
        const entries = context === undefined ? [] : deleteAuditEntries(stored, kept, context, now)
        identities.set(stored.id, { ...stored, deleted: true })
        removeLive(stored)
        appendAudit(stored.workspaceId, entries)
        return true
      }),

    listIdentities: (query) =>
      attempt("listIdentities", () => {
        const bounds = listBounds(query.cursor, query.search)
        const ids = liveIds.get(query.workspaceId)
        if (ids === undefined || bounds.matchesNothing) return { identities: [] }
        const { needle } = bounds
        const page: Array<StoredIdentity> = []
        // `limit + 1` rows read, as SQL: the last one only says where the next page starts.
        for (let at = lowerBound(ids, bounds.from); at < ids.length && page.length <= query.limit; at++) {
          const id = ids[at] ?? ""
          if (needle !== undefined && !(searchTexts.get(id) ?? "").includes(needle)) continue
          const stored = identities.get(id)
          if (stored !== undefined) page.push(stored)
        }
        const next = page.length > query.limit ? page[query.limit] : undefined
        return {
          identities: page.slice(0, query.limit).map(view),
          ...(next === undefined ? {} : { cursor: next.id })
        }
      }),

    listAuditLog: (workspaceId, query) =>
      attempt("listAuditLog", (): KeysetPage<AuditLogEntry, number> => {
        const log = audit.get(workspaceId) ?? []
        const from = query.cursor ?? 0
        const items = log.slice(from, from + query.limit)
        const next = from + query.limit
        return next < log.length ? { items, cursor: next } : { items }
      })
  }
  return service
}

const ignore = () => {}

/** A fresh, empty in-memory store (each call has its own data). Reports no changes: see `layerMemory`. */
export const makeMemory: Effect.Effect<IdentityStoreService> = Effect.sync(() => makeStore(ignore))

/**
 * A fresh, empty in-memory store that reports its root-key and workspace changes in process, so
 * the root-key cache is on and a change is honoured by the next request.
 */
export const makeMemoryWithEvents: Effect.Effect<{
  readonly store: IdentityStoreService
  readonly events: RootKeyEventsService
}> = Effect.sync(() => {
  // Always "connected": every change goes through `publish`, synchronously, before it returns.
  const hub = makeRootKeyEventHub({ connected: true })
  return { store: makeStore(hub.publish), events: hub.service }
})

/** In-memory storage: a fresh, empty store each time the layer is built, with `RootKeyEvents`. */
export const layerMemory: Layer.Layer<IdentityStore | RootKeyEvents> = Layer.effectContext(
  Effect.map(makeMemoryWithEvents, ({ events, store }) => Context.make(IdentityStore, store).pipe(Context.add(RootKeyEvents, events)))
)
