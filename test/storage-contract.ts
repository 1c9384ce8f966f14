/**
 * The storage contract: one suite, a function of a layer, run on memory, PGlite and PostgreSQL
 * (`test/storage.*.test.ts`). Every store must pass it unchanged; the memory layer is the reference.
 * `sqlFailureSuite` adds what only a SQL store can be made to do: fail half-way through the write.
 */
import { SqlClient } from "@effect/sql"
import { assert, expect, layer, type Vitest } from "@effect/vitest"
import { Deferred, Effect, Fiber, Layer, Redacted } from "effect"
import {
  Admin,
  type AuditContext,
  type AuditEvent,
  type AuditLogEntry,
  type Identity,
  IdentityStore,
  type IdentityStoreService,
  makeIdentityKit,
  newId,
  type RatelimitInput,
  type RootKey,
  ROUTE
} from "identity-kit"
import { storeAuditLog } from "./support/audit.js"

// --- helpers --------------------------------------------------------------------------------

const T0 = 1_750_000_000_000
const ID = (prefix: string) => new RegExp(`^${prefix}_[1-9A-HJ-NP-Za-km-z]+$`)

const audit = { actorId: "key_contract", actorName: "root key", remoteIp: "203.0.113.7", userAgent: "contract/1.0" }

const rl = (name: string, limit = 10, duration = 60_000, autoApply = false): RatelimitInput => ({
  name,
  limit,
  duration,
  autoApply
})

/** The fields of the `Identity` model, as a plain object (SQL's `updateIdentity` reads `meta` lazily). */
const fields = (identity: Identity) => ({
  id: identity.id,
  workspaceId: identity.workspaceId,
  externalId: identity.externalId,
  environment: identity.environment,
  meta: identity.meta,
  deleted: identity.deleted,
  createdAt: identity.createdAt,
  updatedAt: identity.updatedAt,
  ratelimits: identity.ratelimits
})

const names = (identity: Identity) => identity.ratelimits.map((r) => r.name)
const jsOrder = (items: ReadonlyArray<string>) => [...items].sort()

/** A fresh workspace (tests share one store, so each works in its own workspace). */
const workspace = Effect.gen(function*() {
  const store = yield* IdentityStore
  const workspaceId = newId("ws")
  yield* store.putWorkspace({ id: workspaceId, name: "contract", enabled: true, createdAt: T0 })
  return { store, workspaceId }
})

/** A fresh workspace with one identity `user_1` created at T0. */
const seeded = (ratelimits: ReadonlyArray<RatelimitInput> = [rl("alpha"), rl("beta")], meta = { plan: "free" }) =>
  Effect.gen(function*() {
    const { store, workspaceId } = yield* workspace
    const identity = yield* store.createIdentity({ workspaceId, externalId: "user_1", meta, ratelimits, now: T0 })
    return { store, workspaceId, identity }
  })

/** A root key record of the workspace with a fresh id and hash (created at T0, live, enabled). */
const rootKeyIn = (workspaceId: string, fields: Partial<RootKey> = {}): RootKey => ({
  id: newId("key"),
  workspaceId,
  hash: `hash-${newId("key")}`,
  name: "root key",
  permissions: ["identity.*.update_identity"],
  enabled: true,
  expiresAt: null,
  deletedAt: null,
  createdAt: T0,
  ...fields
})

interface Patch {
  readonly meta?: string
  readonly ratelimits?: ReadonlyArray<RatelimitInput>
}

/** The live identity, or a test failure. */
const found = (store: IdentityStoreService, workspaceId: string, identity: string) =>
  Effect.flatMap(store.getIdentity(workspaceId, identity), (result) =>
    result === null ? Effect.dieMessage(`identity ${identity} not found`) : Effect.succeed(result))

const update = (store: IdentityStoreService, workspaceId: string, identity: string, patch: Patch, now: number) =>
  store.updateIdentity({ workspaceId, identity, meta: patch.meta, ratelimits: patch.ratelimits, audit, now })

/** The audit entries (without their ids) `audit` writes about `identity` at `time`: no request ids. */
const entriesOf = (identity: Identity, time: number) => {
  const identityResource = { type: "identity" as const, id: identity.id, name: identity.externalId }
  return (event: AuditEvent, display: string, rl?: { readonly id: string; readonly name: string }): Omit<AuditLogEntry, "id"> => ({
    workspaceId: identity.workspaceId,
    actorType: "rootkey",
    actorId: audit.actorId,
    actorName: audit.actorName,
    remoteIp: audit.remoteIp,
    userAgent: audit.userAgent,
    requestId: "",
    hostRequestId: "",
    time,
    event,
    display,
    resources: rl === undefined ? [identityResource] : [identityResource, { type: "ratelimit", id: rl.id, name: rl.name }]
  })
}

/** The ratelimit of `identity` named `name`, or a test failure. */
const ratelimitOf = (identity: Identity, name: string) => {
  const found = identity.ratelimits.find((r) => r.name === name)
  assert.isDefined(found, name)
  return found ?? { id: "?", name }
}

/** Every live identity of the workspace, page after page of `limit`; checks each page's cursor. */
const allPages = (store: IdentityStoreService, workspaceId: string, limit: number, search?: string) =>
  Effect.gen(function*() {
    const pages: Array<ReadonlyArray<Identity>> = []
    let cursor: string | undefined
    for (;;) {
      const page = yield* store.listIdentities({ workspaceId, limit, cursor, search })
      assert.isAtMost(page.identities.length, limit)
      pages.push(page.identities)
      if (page.cursor === undefined) return pages
      // A cursor only with a full page, and it is past every id of that page.
      assert.strictEqual(page.identities.length, limit)
      assert.isTrue((page.identities.at(-1)?.id ?? "") < page.cursor)
      cursor = page.cursor
      assert.isBelow(pages.length, 100, "pagination ends")
    }
  })

const ids = (identities: ReadonlyArray<Identity>) => identities.map((identity) => identity.id)
const byCodeUnits = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0)

// --- the contract ---------------------------------------------------------------------------

/** Runs the storage contract on `storage`; `more` adds tests that share the same built layer. */
export const storageContract = <R, E>(
  name: string,
  storage: Layer.Layer<R | IdentityStore, E>,
  more?: (it: Vitest.MethodsNonLive<R | IdentityStore, true>) => void
): void =>
  layer(storage, { excludeTestServices: true })(`storage contract: ${name}`, (it) => {
    it.effect("probe: a store built with its migrations is ready, again and again", () =>
      Effect.gen(function*() {
        const store = yield* IdentityStore
        yield* store.probe
        yield* store.probe
      }))

    // --- admin operations -------------------------------------------------------------------

    it.effect("root keys: found by hash with their workspace; unknown hash is null", () =>
      Effect.gen(function*() {
        const { store, workspaceId } = yield* workspace
        const key = rootKeyIn(workspaceId, {
          name: "ci key",
          permissions: ["identity.*.update_identity", "api.*.read"],
          expiresAt: T0 + 5
        })
        assert.deepStrictEqual(yield* store.putRootKey(key), key)
        assert.deepStrictEqual(yield* store.findRootKey(key.hash), {
          key,
          workspace: { id: workspaceId, name: "contract", enabled: true, createdAt: T0 }
        })
        assert.isNull(yield* store.findRootKey(`missing-${key.hash}`))

        // putWorkspace replaces the name and `enabled`; the creation time stays the first one.
        const replaced = yield* store.putWorkspace({ id: workspaceId, name: "renamed", enabled: false, createdAt: T0 + 1 })
        assert.deepStrictEqual(replaced, { id: workspaceId, name: "renamed", enabled: false, createdAt: T0 })
        assert.deepStrictEqual((yield* store.findRootKey(key.hash))?.workspace, replaced)

        // A key of a workspace that does not exist is refused (migration 0009's foreign key), and
        // nothing is stored. (Such keys stored before 0009 are still found: `sqlLegacySuite`.)
        const missing = newId("ws")
        const orphan = { ...key, id: newId("key"), hash: `${key.hash}-orphan`, workspaceId: missing, permissions: [] }
        const refused = yield* Effect.flip(store.putRootKey(orphan))
        assert.strictEqual(refused._tag, "WorkspaceNotFound")
        if (refused._tag === "WorkspaceNotFound") assert.strictEqual(refused.workspaceId, missing)
        assert.isNull(yield* store.findRootKey(orphan.hash))
        assert.deepStrictEqual(yield* store.listRootKeys(missing, { limit: 10 }), { items: [] })

        // The hash is unique: a second key with it is a conflict, not a storage failure.
        const duplicate = yield* Effect.flip(store.putRootKey({ ...key, id: newId("key") }))
        assert.strictEqual(duplicate._tag, "RootKeyConflict")
        // Both wrong at once: the conflict, as PostgreSQL checks the unique hash before the foreign key.
        const both = yield* Effect.flip(store.putRootKey({ ...key, id: newId("key"), workspaceId: missing }))
        assert.strictEqual(both._tag, "RootKeyConflict")
      }))

    it.effect("updateWorkspace changes only what the patch names, in one step; unknown id is null", () =>
      Effect.gen(function*() {
        const { store, workspaceId } = yield* workspace
        const disabled = yield* store.updateWorkspace(workspaceId, { enabled: false })
        assert.deepStrictEqual(disabled, { id: workspaceId, name: "contract", enabled: false, createdAt: T0 })
        // Concurrent changes of different fields both stay.
        yield* Effect.all([store.updateWorkspace(workspaceId, { name: "renamed" }), store.updateWorkspace(workspaceId, { enabled: true })], {
          concurrency: 2
        })
        const both = { id: workspaceId, name: "renamed", enabled: true, createdAt: T0 }
        assert.deepStrictEqual((yield* store.listWorkspaces({ limit: 1, cursor: workspaceId })).items, [both])
        assert.deepStrictEqual(yield* store.updateWorkspace(workspaceId, {}), both)
        assert.isNull(yield* store.updateWorkspace(`${workspaceId}_missing`, { enabled: false }))
      }))

    it.effect("updateRootKey changes only what the patch names, in one step; unknown id is null", () =>
      Effect.gen(function*() {
        const { store, workspaceId } = yield* workspace
        const key = rootKeyIn(workspaceId, { name: "patched" })
        yield* store.putRootKey(key)
        const disabled = yield* store.updateRootKey(key.id, { enabled: false })
        assert.deepStrictEqual(disabled, { ...key, enabled: false })
        const changed = yield* store.updateRootKey(key.id, { permissions: ["a", "b"], expiresAt: T0 + 60_000 })
        assert.deepStrictEqual(changed, { ...key, enabled: false, permissions: ["a", "b"], expiresAt: T0 + 60_000 })
        const revoked = yield* store.updateRootKey(key.id, { enabled: true, expiresAt: null, deletedAt: T0 + 1 })
        assert.deepStrictEqual(revoked, { ...key, permissions: ["a", "b"], deletedAt: T0 + 1 })
        assert.deepStrictEqual((yield* store.findRootKey(key.hash))?.key, revoked)
        // Deleted again: the first time stays (it is when the key stopped working); null restores it.
        assert.strictEqual((yield* store.updateRootKey(key.id, { deletedAt: T0 + 5 }))?.deletedAt, T0 + 1)
        assert.strictEqual((yield* store.findRootKey(key.hash))?.key.deletedAt, T0 + 1)
        // Any other change leaves a deleted key alone: as for no key.
        assert.isNull(yield* store.updateRootKey(key.id, { enabled: false, permissions: [] }))
        assert.deepStrictEqual((yield* store.findRootKey(key.hash))?.key, revoked)
        assert.isNull((yield* store.updateRootKey(key.id, { deletedAt: null }))?.deletedAt)
        assert.strictEqual((yield* store.updateRootKey(key.id, { deletedAt: T0 + 7 }))?.deletedAt, T0 + 7)
        assert.isNull(yield* store.updateRootKey(newId("key"), { enabled: false }))
      }))

    it.effect("createIdentity answers what getIdentity finds, by id and by externalId", () =>
      Effect.gen(function*() {
        const { store, workspaceId } = yield* workspace
        const created = yield* store.createIdentity({
          workspaceId,
          externalId: "user_42",
          meta: { plan: "pro", nested: { list: [1, "two", null, true] } },
          ratelimits: [rl("tokens", 5, 1000, true), rl("requests", 100)],
          now: T0
        })
        assert.match(created.id, ID("id"))
        assert.strictEqual(created.workspaceId, workspaceId)
        assert.strictEqual(created.externalId, "user_42")
        assert.strictEqual(created.environment, "default")
        assert.deepStrictEqual(created.meta, { plan: "pro", nested: { list: [1, "two", null, true] } })
        assert.isFalse(created.deleted)
        assert.strictEqual(created.createdAt, T0)
        assert.isNull(created.updatedAt)
        assert.deepStrictEqual(names(created), ["requests", "tokens"])
        for (const r of created.ratelimits) {
          assert.match(r.id, ID("rl"))
          assert.strictEqual(r.createdAt, T0)
          assert.isNull(r.updatedAt)
        }
        assert.deepStrictEqual(created.ratelimits.map(({ id: _, ...rest }) => rest), [
          { name: "requests", limit: 100, duration: 60_000, autoApply: false, createdAt: T0, updatedAt: null },
          { name: "tokens", limit: 5, duration: 1000, autoApply: true, createdAt: T0, updatedAt: null }
        ])

        const byId = yield* store.getIdentity(workspaceId, created.id)
        const byExternalId = yield* store.getIdentity(workspaceId, "user_42")
        assert.isNotNull(byId)
        assert.isNotNull(byExternalId)
        if (byId === null || byExternalId === null) return
        assert.deepStrictEqual(fields(byId), fields(created))
        assert.deepStrictEqual(fields(byExternalId), fields(created))
        assert.isNull(yield* store.getIdentity(workspaceId, "nobody"))

        const other = yield* store.createIdentity({ workspaceId, externalId: "user_43", environment: "staging", now: T0 })
        assert.strictEqual(other.environment, "staging")
        assert.deepStrictEqual(other.meta, {})
        assert.deepStrictEqual(other.ratelimits, [])
        assert.strictEqual((yield* store.getIdentity(workspaceId, "user_43"))?.environment, "staging")
      }))

    it.effect("an id match wins over an externalId match (get, update, delete)", () =>
      Effect.gen(function*() {
        const { store, workspaceId } = yield* workspace
        const a = yield* store.createIdentity({ workspaceId, externalId: "ext_a", now: T0 })
        // b's externalId is a's id.
        const b = yield* store.createIdentity({ workspaceId, externalId: a.id, now: T0 })
        assert.strictEqual((yield* store.getIdentity(workspaceId, a.id))?.id, a.id)

        const updated = yield* update(store, workspaceId, a.id, { meta: `{"who":"a"}` }, T0 + 1)
        assert.strictEqual(updated.id, a.id)
        assert.deepStrictEqual((yield* store.getIdentity(workspaceId, b.id))?.meta, {})

        assert.isTrue(yield* store.deleteIdentity(workspaceId, a.id, T0 + 2))
        // Now only b answers to that string (as its externalId).
        assert.strictEqual((yield* store.getIdentity(workspaceId, a.id))?.id, b.id)
        assert.strictEqual((yield* update(store, workspaceId, a.id, {}, T0 + 3)).id, b.id)
      }))

    it.effect("soft delete: gone for reads and writes; externalId reusable only once deleted", () =>
      Effect.gen(function*() {
        const { identity, store, workspaceId } = yield* seeded()
        const conflict = yield* Effect.flip(store.createIdentity({ workspaceId, externalId: "user_1", now: T0 + 1 }))
        assert.strictEqual(conflict._tag, "IdentityConflict")
        if (conflict._tag === "IdentityConflict") {
          assert.strictEqual(conflict.workspaceId, workspaceId)
          assert.strictEqual(conflict.externalId, "user_1")
        }

        assert.isTrue(yield* store.deleteIdentity(workspaceId, "user_1", T0 + 2))
        assert.isFalse(yield* store.deleteIdentity(workspaceId, "user_1", T0 + 3))
        assert.isFalse(yield* store.deleteIdentity(workspaceId, identity.id, T0 + 3))
        assert.isNull(yield* store.getIdentity(workspaceId, "user_1"))
        assert.isNull(yield* store.getIdentity(workspaceId, identity.id))
        const notFound = yield* Effect.flip(update(store, workspaceId, identity.id, { meta: "{}" }, T0 + 4))
        assert.strictEqual(notFound._tag, "IdentityNotFound")

        const again = yield* store.createIdentity({ workspaceId, externalId: "user_1", now: T0 + 5 })
        assert.notStrictEqual(again.id, identity.id)
        assert.strictEqual((yield* store.getIdentity(workspaceId, "user_1"))?.id, again.id)
        assert.deepStrictEqual(again.ratelimits, [])
        assert.deepStrictEqual(yield* storeAuditLog(store, workspaceId), [])
      }))

    it.effect("workspaces are isolated", () =>
      Effect.gen(function*() {
        const { identity, store, workspaceId } = yield* seeded()
        const { workspaceId: otherId } = yield* workspace
        assert.isNull(yield* store.getIdentity(otherId, identity.id))
        assert.isNull(yield* store.getIdentity(otherId, "user_1"))
        for (const ref of [identity.id, "user_1"]) {
          const error = yield* Effect.flip(update(store, otherId, ref, { meta: `{"x":1}`, ratelimits: [] }, T0 + 1))
          assert.strictEqual(error._tag, "IdentityNotFound")
        }
        assert.isFalse(yield* store.deleteIdentity(otherId, "user_1", T0 + 1))
        // The same externalId is free in another workspace.
        const twin = yield* store.createIdentity({ workspaceId: otherId, externalId: "user_1", now: T0 })
        yield* update(store, otherId, "user_1", { meta: `{"twin":true}` }, T0 + 2)

        const original = yield* store.getIdentity(workspaceId, "user_1")
        assert.deepStrictEqual(original && fields(original), fields(identity))
        assert.deepStrictEqual((yield* storeAuditLog(store, workspaceId)), [])
        const otherLog = yield* storeAuditLog(store, otherId)
        assert.deepStrictEqual(otherLog.map((e) => [e.workspaceId, e.display]), [[otherId, `Updated identity ${twin.id}`]])
      }))

    it.effect("createIdentity in a workspace that does not exist is WorkspaceNotFound; nothing written", () =>
      Effect.gen(function*() {
        const store = yield* IdentityStore
        const missing = newId("ws")
        const refused = yield* Effect.flip(
          store.createIdentity({ workspaceId: missing, externalId: "nowhere", ratelimits: [rl("alpha")], now: T0, audit })
        )
        assert.strictEqual(refused._tag, "WorkspaceNotFound")
        if (refused._tag === "WorkspaceNotFound") assert.strictEqual(refused.workspaceId, missing)
        assert.isNull(yield* store.getIdentity(missing, "nowhere"))
        assert.deepStrictEqual((yield* store.listIdentities({ workspaceId: missing, limit: 10 })).identities, [])
        assert.deepStrictEqual(yield* storeAuditLog(store, missing), [])
        // Once the workspace exists, the same call succeeds.
        yield* store.putWorkspace({ id: missing, name: "late", enabled: true, createdAt: T0 })
        const created = yield* store.createIdentity({ workspaceId: missing, externalId: "nowhere", now: T0 })
        assert.strictEqual(created.workspaceId, missing)
      }))

    it.effect("identities answered carry exactly the model's fields (no stored internals)", () =>
      Effect.gen(function*() {
        const { identity, store, workspaceId } = yield* seeded()
        const keys = ["createdAt", "deleted", "environment", "externalId", "id", "meta", "ratelimits", "updatedAt", "workspaceId"]
        const updated = yield* update(store, workspaceId, "user_1", { meta: `{"plan":"pro"}` }, T0 + 1)
        const got = yield* found(store, workspaceId, "user_1")
        const listed = (yield* store.listIdentities({ workspaceId, limit: 10 })).identities
        for (const answered of [identity, updated, got, ...listed]) {
          assert.deepStrictEqual(Object.keys(answered).sort(), keys)
          assert.notProperty(answered, "metaJson")
        }
        assert.deepStrictEqual(JSON.parse(JSON.stringify(got)), { ...fields(got) })
      }))

    it.effect("listWorkspaces: by id (code units), pages of limit, cursor = next page's first id; a replace is listed once", () =>
      Effect.gen(function*() {
        const store = yield* IdentityStore
        // The store is shared: this test's workspaces share a prefix no other test's ids have.
        const prefix = `wl${newId("ws").slice(3)}_`
        const made = ["b", "a", "B", "z", "_", "0", "-", "aa", "a_", "y"].map((suffix) => `${prefix}${suffix}`)
        for (const id of made) yield* store.putWorkspace({ id, name: `name ${id}`, enabled: id.endsWith("z"), createdAt: T0 })
        yield* store.putWorkspace({ id: `${prefix}a`, name: "replaced", enabled: false, createdAt: T0 + 1 })
        const expected = [...made].sort(byCodeUnits)

        const listed: Array<string> = []
        let cursor: string | undefined = prefix
        for (let pages = 0; cursor !== undefined && cursor.startsWith(prefix); pages++) {
          assert.isBelow(pages, 20, "pagination ends")
          const page: { readonly items: ReadonlyArray<{ readonly id: string }>; readonly cursor?: string | undefined } =
            yield* store.listWorkspaces({ limit: 3, cursor })
          assert.isAtMost(page.items.length, 3)
          if (page.cursor !== undefined) {
            assert.strictEqual(page.items.length, 3)
            assert.isTrue((page.items.at(-1)?.id ?? "") < page.cursor)
          }
          listed.push(...page.items.map((w) => w.id).filter((id) => id.startsWith(prefix)))
          cursor = page.cursor
        }
        assert.deepStrictEqual(listed, expected)
        const first = yield* store.listWorkspaces({ limit: 1, cursor: prefix })
        assert.deepStrictEqual(first.items, [{ id: expected[0] ?? "", name: `name ${expected[0]}`, enabled: false, createdAt: T0 }])
        const replaced = yield* store.listWorkspaces({ limit: 1, cursor: `${prefix}a` })
        assert.deepStrictEqual(replaced.items, [{ id: `${prefix}a`, name: "replaced", enabled: false, createdAt: T0 }])

        // From the start, everything, each once, in order, the last page without a cursor.
        const all: Array<string> = []
        let next: string | undefined
        do {
          const page: { readonly items: ReadonlyArray<{ readonly id: string }>; readonly cursor?: string | undefined } =
            yield* store.listWorkspaces({ limit: 1000, cursor: next })
          all.push(...page.items.map((w) => w.id))
          next = page.cursor
        } while (next !== undefined)
        assert.deepStrictEqual(all, [...all].sort(byCodeUnits))
        assert.strictEqual(new Set(all).size, all.length)
        assert.includeMembers(all, made)
        // Past the end: an empty page, no cursor.
        assert.deepStrictEqual(yield* store.listWorkspaces({ limit: 5, cursor: "\u{10FFFF}" }), { items: [] })
      }))

    it.effect("listRootKeys: the workspace's keys by id, revoked ones too, never the hash", () =>
      Effect.gen(function*() {
        const { store, workspaceId } = yield* workspace
        const { workspaceId: otherId } = yield* workspace
        const keys: Array<RootKey> = []
        for (let i = 0; i < 7; i++) {
          keys.push(yield* store.putRootKey(rootKeyIn(workspaceId, { name: `key ${i}`, expiresAt: i === 2 ? T0 + 5 : null, enabled: i !== 3 })))
        }
        yield* store.putRootKey(rootKeyIn(otherId))
        const revoked = yield* store.updateRootKey(keys[4]?.id ?? "", { deletedAt: T0 + 9 })
        const expected = keys.map((key) => key.id === revoked?.id ? revoked : key).sort((a, b) => byCodeUnits(a.id, b.id))
          .map(({ hash: _, ...info }) => info)

        const listed: Array<unknown> = []
        let cursor: string | undefined
        for (let pages = 0;; pages++) {
          assert.isBelow(pages, 10, "pagination ends")
          const page = yield* store.listRootKeys(workspaceId, { limit: 3, cursor })
          for (const item of page.items) assert.notProperty(item, "hash")
          listed.push(...page.items)
          if (page.cursor === undefined) break
          assert.strictEqual(page.items.length, 3)
          cursor = page.cursor
        }
        assert.deepStrictEqual(listed, expected)
        assert.strictEqual((yield* store.listRootKeys(otherId, { limit: 10 })).items.length, 1)
        // Exactly a page: no cursor, no empty page after it.
        const whole = yield* store.listRootKeys(workspaceId, { limit: 7 })
        assert.strictEqual(whole.items.length, 7)
        assert.isUndefined(whole.cursor)
        assert.deepStrictEqual(yield* store.listRootKeys(newId("ws"), { limit: 10 }), { items: [] })
      }))

    it.effect("listAuditLog: oldest first, pages of limit; entries written between pages come later, never twice", () =>
      Effect.gen(function*() {
        const { store, workspaceId } = yield* workspace
        const { workspaceId: otherId } = yield* workspace
        const created = yield* store.createIdentity({
          workspaceId,
          externalId: "paged",
          ratelimits: [rl("a_1"), rl("a_2"), rl("a_3"), rl("a_4")],
          now: T0,
          audit
        })
        yield* store.createIdentity({ workspaceId: otherId, externalId: "elsewhere", now: T0, audit })
        const whole = yield* storeAuditLog(store, workspaceId)
        assert.strictEqual(whole.length, 5)

        const first = yield* store.listAuditLog(workspaceId, { limit: 2 })
        assert.deepStrictEqual(first.items, whole.slice(0, 2))
        assert.isDefined(first.cursor)
        assert.isTrue(Number.isSafeInteger(first.cursor) && (first.cursor ?? -1) >= 0)
        // Written now: after what was read, so on a later page.
        yield* update(store, workspaceId, created.id, { meta: `{"x":1}` }, T0 + 1)
        const second = yield* store.listAuditLog(workspaceId, { limit: 2, cursor: first.cursor })
        assert.deepStrictEqual(second.items, whole.slice(2, 4))
        const third = yield* store.listAuditLog(workspaceId, { limit: 2, cursor: second.cursor })
        assert.deepStrictEqual(third.items.map((e) => e.event), ["ratelimit.create", "identity.update"])
        assert.deepStrictEqual(third.items[0], whole[4])
        // Exactly the last page: no cursor.
        assert.isUndefined(third.cursor)
        const ids = [...first.items, ...second.items, ...third.items].map((e) => e.id)
        assert.strictEqual(new Set(ids).size, 6)
        assert.deepStrictEqual(ids, (yield* storeAuditLog(store, workspaceId)).map((e) => e.id))
        assert.deepStrictEqual(yield* store.listAuditLog(newId("ws"), { limit: 10 }), { items: [] })
      }))

    // --- updateIdentity -----------------------------------------------------------------------

    it.effect("meta: replaced when sent (updatedAt = now), kept when omitted, cleared by {}", () =>
      Effect.gen(function*() {
        const { identity, store, workspaceId } = yield* seeded()
        const replaced = yield* update(store, workspaceId, "user_1", { meta: `{"plan":"premium","seats":3}` }, T0 + 10)
        assert.deepStrictEqual(replaced.meta, { plan: "premium", seats: 3 })
        assert.strictEqual(replaced.updatedAt, T0 + 10)
        assert.deepStrictEqual(replaced.ratelimits, identity.ratelimits)

        const kept = yield* update(store, workspaceId, identity.id, { ratelimits: [rl("alpha", 1)] }, T0 + 20)
        assert.deepStrictEqual(kept.meta, { plan: "premium", seats: 3 })
        assert.strictEqual(kept.updatedAt, T0 + 10, "updatedAt only moves when meta is sent")

        const cleared = yield* update(store, workspaceId, "user_1", { meta: "{}" }, T0 + 30)
        assert.deepStrictEqual(cleared.meta, {})
        assert.strictEqual(cleared.updatedAt, T0 + 30)

        const read = yield* store.getIdentity(workspaceId, "user_1")
        assert.deepStrictEqual(read && fields(read), fields(cleared))
      }))

    it.effect("ratelimits: the set is replaced; kept names keep their id; [] deletes all", () =>
      Effect.gen(function*() {
        const { identity, store, workspaceId } = yield* seeded([rl("alpha", 1), rl("beta", 2, 2000, true)])
        const beta = identity.ratelimits.find((r) => r.name === "beta")
        assert.isDefined(beta)
        if (beta === undefined) return

        const next = yield* update(store, workspaceId, "user_1", { ratelimits: [rl("gamma", 3, 3000, true), rl("beta", 20, 20_000)] }, T0 + 5)
        assert.deepStrictEqual(names(next), ["beta", "gamma"])
        const [keptBeta, gamma] = next.ratelimits
        assert.deepStrictEqual(keptBeta, { id: beta.id, name: "beta", limit: 20, duration: 20_000, autoApply: false, createdAt: T0, updatedAt: T0 + 5 })
        assert.match(gamma?.id ?? "", ID("rl"))
        assert.notInclude(identity.ratelimits.map((r) => r.id), gamma?.id)
        assert.deepStrictEqual(gamma && { ...gamma, id: "" }, { id: "", name: "gamma", limit: 3, duration: 3000, autoApply: true, createdAt: T0 + 5, updatedAt: null })
        assert.isNull(next.updatedAt, "meta not sent: updatedAt unchanged")

        const read = yield* store.getIdentity(workspaceId, "user_1")
        assert.deepStrictEqual(read?.ratelimits, next.ratelimits)

        const untouched = yield* update(store, workspaceId, "user_1", { meta: `{"a":1}` }, T0 + 6)
        assert.deepStrictEqual(untouched.ratelimits, next.ratelimits)

        const none = yield* update(store, workspaceId, "user_1", { ratelimits: [] }, T0 + 7)
        assert.deepStrictEqual(none.ratelimits, [])
        assert.deepStrictEqual((yield* store.getIdentity(workspaceId, "user_1"))?.ratelimits, [])

        // A name deleted and sent again is a new ratelimit.
        const back = yield* update(store, workspaceId, "user_1", { ratelimits: [rl("beta")] }, T0 + 8)
        assert.notStrictEqual(back.ratelimits[0]?.id, beta.id)
        assert.strictEqual(back.ratelimits[0]?.createdAt, T0 + 8)
      }))

    it.effect("the same request twice gives the same ids and rows", () =>
      Effect.gen(function*() {
        const { store, workspaceId } = yield* seeded([rl("alpha")])
        const patch = { meta: `{"plan":"x"}`, ratelimits: [rl("alpha", 7), rl("delta", 8, 8000, true)] }
        const first = yield* update(store, workspaceId, "user_1", patch, T0 + 1)
        const second = yield* update(store, workspaceId, "user_1", patch, T0 + 2)
        // A repeat keeps every id and value; only `updatedAt` says it happened again.
        assert.deepStrictEqual(second.ratelimits.map((r) => r.id), first.ratelimits.map((r) => r.id))
        assert.deepStrictEqual(
          second.ratelimits.map(({ updatedAt: _, ...rest }) => rest),
          first.ratelimits.map(({ updatedAt: _, ...rest }) => rest)
        )
        assert.deepStrictEqual(second.ratelimits.map((r) => r.updatedAt), [T0 + 2, T0 + 2])
        // A third time at the same instant changes nothing at all.
        const third = yield* update(store, workspaceId, "user_1", patch, T0 + 2)
        assert.deepStrictEqual(fields(third), fields(second))
        assert.deepStrictEqual(fields(yield* found(store, workspaceId, "user_1")), fields(second))
      }))

    it.effect("64-bit limits and durations up to 2^53−1 come back exactly", () =>
      Effect.gen(function*() {
        const max = Number.MAX_SAFE_INTEGER
        const { store, workspaceId } = yield* seeded([rl("huge", max, max, true)])
        const created = yield* store.getIdentity(workspaceId, "user_1")
        assert.deepStrictEqual(created?.ratelimits.map((r) => [r.limit, r.duration]), [[max, max]])
        const updated = yield* update(store, workspaceId, "user_1", { ratelimits: [rl("huge", max - 1, max), rl("other", 2 ** 40, 2 ** 45)] }, T0 + 1)
        assert.deepStrictEqual(updated.ratelimits.map((r) => [r.name, r.limit, r.duration]), [["huge", max - 1, max], ["other", 2 ** 40, 2 ** 45]])
        assert.deepStrictEqual((yield* store.getIdentity(workspaceId, "user_1"))?.ratelimits, updated.ratelimits)
      }))

    it.effect("meta comes back literally: unicode, emoji, NUL escapes, __proto__ keys; no pollution", () =>
      Effect.gen(function*() {
        const text = JSON.stringify(JSON.parse(
          `{"__proto__":{"polluted":true},"z":1,"a":{"constructor":{"prototype":{"polluted":true}}},` +
            `"emoji":"😀 \\ud83d\\ude00","ключ":"值","nul":"a\\u0000b","ctl":"\\u0001\\n\\"","big":1e300,"neg":-0.5,` +
            `"deep":[[[{"x":[]}]]],"empty":{}}`
        ))
        const { identity, store, workspaceId } = yield* seeded()
        for (const result of [
          yield* update(store, workspaceId, "user_1", { meta: text }, T0 + 1),
          yield* store.getIdentity(workspaceId, identity.id)
        ]) {
          assert.isNotNull(result)
          if (result === null) return
          assert.strictEqual(JSON.stringify(result.meta), text, "same keys, same order, same values")
          assert.isTrue(Object.hasOwn(result.meta, "__proto__"))
          assert.strictEqual(Object.getPrototypeOf(result.meta), Object.prototype)
          assert.strictEqual(result.meta["nul"], "a\u0000b")
        }
        assert.isUndefined(Reflect.get({}, "polluted"))
        assert.isFalse(Object.hasOwn(Object.prototype, "polluted"))

        // The same through createIdentity.
        const created = yield* store.createIdentity({ workspaceId, externalId: "user_2", meta: JSON.parse(text), now: T0 })
        assert.strictEqual(JSON.stringify(created.meta), text)
        assert.strictEqual(JSON.stringify((yield* store.getIdentity(workspaceId, "user_2"))?.meta), text)
      }))

    it.effect("ratelimits come back in JavaScript string order, whatever the characters", () =>
      Effect.gen(function*() {
        // UTF-16 order puts "😀" (a surrogate pair, 0xD83D…) before "\uFFFF"; UTF-8 byte order does not.
        const all = ["\uFFFFzz", "😀aa", "Zed", "abc", "ábc", "a_c", "A-c", "名前"]
        const { identity, store, workspaceId } = yield* seeded(all.slice(0, 4).map((n) => rl(n)))
        assert.deepStrictEqual(names(identity), jsOrder(all.slice(0, 4)))
        assert.deepStrictEqual(names(yield* found(store, workspaceId, "user_1")), jsOrder(all.slice(0, 4)))
        const updated = yield* update(store, workspaceId, "user_1", { ratelimits: all.map((n) => rl(n)) }, T0 + 1)
        assert.deepStrictEqual(names(updated), jsOrder(all))
        assert.deepStrictEqual(names(yield* found(store, workspaceId, "user_1")), jsOrder(all))
      }))

    it.effect("a lone surrogate in a ratelimit name is never a storage failure", () =>
      Effect.gen(function*() {
        // PostgreSQL text cannot hold it: SQL stores keep U+FFFD in its place, memory keeps it as is.
        const { store, workspaceId } = yield* seeded([rl("lone_\ud800")])
        const updated = yield* update(store, workspaceId, "user_1", { ratelimits: [rl("lone_\udc00_x")] }, T0 + 1)
        assert.strictEqual(updated.ratelimits.length, 1)
        assert.include(["lone_\udc00_x", "lone_\ufffd_x"], updated.ratelimits[0]?.name)
      }))

    it.effect("audit: identity.update, then one entry per ratelimit created, updated, deleted", () =>
      Effect.gen(function*() {
        const { identity, store, workspaceId } = yield* seeded([rl("zulu"), rl("alpha"), rl("mike")])
        const id = (name: string) => identity.ratelimits.find((r) => r.name === name)?.id ?? "?"
        const next = yield* update(store, workspaceId, "user_1", {
          meta: `{"v":2}`,
          ratelimits: [rl("new_b"), rl("mike", 5), rl("new_a")]
        }, T0 + 100)
        const created = (name: string) => next.ratelimits.find((r) => r.name === name)?.id ?? "?"

        const log = yield* storeAuditLog(store, workspaceId)
        const entryIds = log.map((e) => e.id)
        for (const entryId of entryIds) assert.match(entryId, ID("log"))
        assert.strictEqual(new Set(entryIds).size, entryIds.length, "entry ids are unique")

        const identityResource = { type: "identity" as const, id: identity.id, name: "user_1" }
        const base = { workspaceId, actorType: "rootkey" as const, actorId: "key_contract", actorName: "root key", remoteIp: "203.0.113.7", userAgent: "contract/1.0", requestId: "", hostRequestId: "", time: T0 + 100 }
        const entry = (event: AuditEvent, display: string, rl?: readonly [id: string, name: string]): Omit<AuditLogEntry, "id"> => ({
          ...base,
          event,
          display,
          resources: rl === undefined ? [identityResource] : [identityResource, { type: "ratelimit", id: rl[0], name: rl[1] }]
        })
        assert.deepStrictEqual(log.map(({ id: _, ...rest }) => rest), [
          entry("identity.update", `Updated identity ${identity.id}`),
          // created, in request order
          entry("ratelimit.create", `Created ratelimit ${created("new_b")}`, [created("new_b"), "new_b"]),
          entry("ratelimit.create", `Created ratelimit ${created("new_a")}`, [created("new_a"), "new_a"]),
          entry("ratelimit.update", `Updated ratelimit ${id("mike")}`, [id("mike"), "mike"]),
          // deleted, in the order the previous set was given
          entry("ratelimit.delete", `Deleted ratelimit ${id("zulu")}`, [id("zulu"), "zulu"]),
          entry("ratelimit.delete", `Deleted ratelimit ${id("alpha")}`, [id("alpha"), "alpha"])
        ])

        // Without ratelimits: one entry; with [] every ratelimit is deleted, in the last set's order.
        yield* update(store, workspaceId, identity.id, {}, T0 + 200)
        yield* update(store, workspaceId, identity.id, { ratelimits: [] }, T0 + 300)
        const tail = (yield* storeAuditLog(store, workspaceId)).slice(log.length)
        assert.deepStrictEqual(tail.map((e) => [e.event, e.time, e.resources.at(-1)?.name]), [
          ["identity.update", T0 + 200, "user_1"],
          ["identity.update", T0 + 300, "user_1"],
          ["ratelimit.delete", T0 + 300, "new_b"],
          ["ratelimit.delete", T0 + 300, "mike"],
          ["ratelimit.delete", T0 + 300, "new_a"]
        ])
      }))

    it.effect("audit entries carry the request ids given (the kit's, the host's), \"\" for one not given", () =>
      Effect.gen(function*() {
        const { store, workspaceId } = yield* workspace
        // The host's id may be any 200 visible ASCII characters: quotes, backslashes, braces, commas.
        const hostId = Array.from({ length: 200 }, (_, i) => String.fromCharCode(0x21 + (i % 94))).join("")
        const [create, meta, set, remove] = Array.from({ length: 4 }, () => newId("req"))
        const given = (requestId?: string, hostRequestId?: string): AuditContext => ({ ...audit, requestId, hostRequestId })
        const write = (identity: string, patch: Patch, now: number, context: AuditContext) =>
          store.updateIdentity({ workspaceId, identity, meta: patch.meta, ratelimits: patch.ratelimits, audit: context, now })

        yield* store.createIdentity({ workspaceId, externalId: "traced", ratelimits: [rl("alpha"), rl("beta")], now: T0, audit: given(create, "host-create-1") })
        // Without a set (one entry), then with one (created, updated, deleted), then without ids.
        yield* write("traced", { meta: `{"v":1}` }, T0 + 1, given(meta, hostId))
        yield* write("traced", { ratelimits: [rl("beta", 2), rl("gamma")] }, T0 + 2, given(set))
        yield* write("traced", { meta: `{"v":2}` }, T0 + 3, audit)
        assert.isTrue(yield* store.deleteIdentity(workspaceId, "traced", T0 + 4, given(remove, "host-delete-1")))
        // Only the host's id; and nothing at all.
        yield* store.createIdentity({ workspaceId, externalId: "hosted", now: T0 + 5, audit: given(undefined, "host-only") })
        yield* store.createIdentity({ workspaceId, externalId: "plain", ratelimits: [rl("alpha")], now: T0 + 6, audit })
        assert.isTrue(yield* store.deleteIdentity(workspaceId, "plain", T0 + 7, audit))

        const log = yield* storeAuditLog(store, workspaceId)
        assert.deepStrictEqual(log.map((e) => [e.event, e.requestId, e.hostRequestId]), [
          ["identity.create", create, "host-create-1"],
          ["ratelimit.create", create, "host-create-1"],
          ["ratelimit.create", create, "host-create-1"],
          ["identity.update", meta, hostId],
          ["identity.update", set, ""],
          ["ratelimit.create", set, ""],
          ["ratelimit.update", set, ""],
          ["ratelimit.delete", set, ""],
          ["identity.update", "", ""],
          ["identity.delete", remove, "host-delete-1"],
          ["ratelimit.delete", remove, "host-delete-1"],
          ["ratelimit.delete", remove, "host-delete-1"],
          ["identity.create", "", "host-only"],
          ["identity.create", "", ""],
          ["ratelimit.create", "", ""],
          ["identity.delete", "", ""],
          ["ratelimit.delete", "", ""]
        ])
      }))

    it.effect("IdentityNotFound for unknown, deleted and other-workspace identities; nothing written", () =>
      Effect.gen(function*() {
        const { identity, store, workspaceId } = yield* seeded()
        const { workspaceId: otherId } = yield* workspace
        const deleted = yield* store.createIdentity({ workspaceId, externalId: "gone", ratelimits: [rl("x_1")], now: T0 })
        yield* store.deleteIdentity(workspaceId, "gone", T0 + 1)
        for (const [ws, ref] of [[workspaceId, "nobody"], [workspaceId, "gone"], [workspaceId, deleted.id], [otherId, identity.id]] as const) {
          const error = yield* Effect.flip(update(store, ws, ref, { meta: `{"x":1}`, ratelimits: [rl("y_1")] }, T0 + 2))
          assert.strictEqual(error._tag, "IdentityNotFound", `${ws}/${ref}`)
        }
        assert.deepStrictEqual(yield* storeAuditLog(store, workspaceId), [])
        assert.deepStrictEqual(yield* storeAuditLog(store, otherId), [])
        const live = yield* store.getIdentity(workspaceId, "user_1")
        assert.deepStrictEqual(live && fields(live), fields(identity))
      }))

    it.effect("a NUL or a lone surrogate names no identity: get null, delete false, update IdentityNotFound", () =>
      Effect.gen(function*() {
        const { store, workspaceId } = yield* workspace
        // What a PostgreSQL driver would turn a lone surrogate into (U+FFFD), and a NUL's neighbour.
        const replaced = yield* store.createIdentity({ workspaceId, externalId: "x\uFFFD", now: T0 })
        const plain = yield* store.createIdentity({ workspaceId, externalId: "x", now: T0 })
        for (const ref of ["x\uD800", "x\uDC00", "\uDFFFx", "x\uDC00\uD800", `${replaced.id}\uD800`, "x\u0000", `${plain.id}\u0000`]) {
          const label = JSON.stringify(ref)
          assert.isNull(yield* store.getIdentity(workspaceId, ref), label)
          const error = yield* Effect.flip(update(store, workspaceId, ref, { meta: `{"x":1}`, ratelimits: [rl("y_1")] }, T0 + 1))
          assert.strictEqual(error._tag, "IdentityNotFound", label)
          assert.isFalse(yield* store.deleteIdentity(workspaceId, ref, T0 + 2, audit), label)
        }
        // Nothing written: both identities as created, no audit entry.
        assert.deepStrictEqual(fields(yield* found(store, workspaceId, "x\uFFFD")), fields(replaced))
        assert.deepStrictEqual(fields(yield* found(store, workspaceId, "x")), fields(plain))
        assert.deepStrictEqual(yield* storeAuditLog(store, workspaceId), [])
        // A well-formed pair is an ordinary character.
        const pair = yield* store.createIdentity({ workspaceId, externalId: "x\uD83D\uDE00", now: T0 })
        assert.strictEqual((yield* found(store, workspaceId, "x\uD83D\uDE00")).id, pair.id)
      }))

    it.effect("20 concurrent updates of one identity serialise: one request's state, exact audit", () =>
      Effect.gen(function*() {
        const size = 4
        const set = (tag: string) => [rl("shared", 1), ...Array.from({ length: size - 1 }, (_, i) => rl(`${tag}_${i}`, i + 2))]
        const { identity, store, workspaceId } = yield* seeded(set("initial"))
        const shared = identity.ratelimits.find((r) => r.name === "shared")?.id
        const requests = Array.from({ length: 20 }, (_, i) => ({
          meta: JSON.stringify({ request: i }),
          ratelimits: set(`req${i}`).map((r) => ({ ...r, limit: r.limit * 100 + i }))
        }))
        const results = yield* Effect.all(
          requests.map((patch, i) => update(store, workspaceId, i % 2 === 0 ? "user_1" : identity.id, patch, T0 + 1 + i)),
          { concurrency: "unbounded" }
        )
        const state = (ratelimits: ReadonlyArray<{ readonly name: string; readonly limit: number }>) =>
          ratelimits.map((r) => [r.name, r.limit] as const).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        // Each answer is the state its own request left.
        results.forEach((result, i) => {
          assert.deepStrictEqual(result.meta, { request: i })
          assert.deepStrictEqual(state(result.ratelimits), state(requests[i]?.ratelimits ?? []))
        })

        const final = yield* found(store, workspaceId, "user_1")
        const winner = requests.find((_, i) => JSON.stringify(final.meta) === JSON.stringify({ request: i }))
        assert.isDefined(winner, JSON.stringify(final.meta))
        assert.deepStrictEqual(state(final.ratelimits), state(winner?.ratelimits ?? []), "meta and set of one request")
        assert.strictEqual(new Set(names(final)).size, final.ratelimits.length, "no duplicate names")
        assert.strictEqual(final.ratelimits.find((r) => r.name === "shared")?.id, shared, "kept name kept its id")

        // Whatever the order: each update = 1 identity + 1 kept + (size−1) created + (size−1) deleted.
        const log = yield* storeAuditLog(store, workspaceId)
        const count = (event: string) => log.filter((e) => e.event === event).length
        assert.strictEqual(count("identity.update"), 20)
        assert.strictEqual(count("ratelimit.update"), 20)
        assert.strictEqual(count("ratelimit.create"), 20 * (size - 1))
        assert.strictEqual(count("ratelimit.delete"), 20 * (size - 1))
        assert.strictEqual(log.length, 20 * 2 * size)
      }))

    // --- createIdentity, deleteIdentity, listIdentities (identities contract §1, §3, §4) ----------

    it.effect("createIdentity with audit: identity.create, then ratelimit.create per item in request order", () =>
      Effect.gen(function*() {
        const { store, workspaceId } = yield* workspace
        const created = yield* store.createIdentity({
          workspaceId,
          externalId: "audited",
          meta: { plan: "pro" },
          ratelimits: [rl("zulu"), rl("alpha", 5, 1000, true), rl("mike")],
          now: T0 + 7,
          audit
        })
        assert.deepStrictEqual(names(created), ["alpha", "mike", "zulu"])
        assert.deepStrictEqual(fields(yield* found(store, workspaceId, "audited")), fields(created))
        const log = yield* storeAuditLog(store, workspaceId)
        for (const e of log) assert.match(e.id, ID("log"))
        assert.strictEqual(new Set(log.map((e) => e.id)).size, log.length, "entry ids are unique")
        const entry = entriesOf(created, T0 + 7)
        const rlOf = (name: string) => ratelimitOf(created, name)
        assert.deepStrictEqual(log.map(({ id: _, ...rest }) => rest), [
          entry("identity.create", `Created identity ${created.id}.`),
          entry("ratelimit.create", `Created ratelimit ${rlOf("zulu").id}.`, rlOf("zulu")),
          entry("ratelimit.create", `Created ratelimit ${rlOf("alpha").id}.`, rlOf("alpha")),
          entry("ratelimit.create", `Created ratelimit ${rlOf("mike").id}.`, rlOf("mike"))
        ])

        // Without ratelimits: one entry. Without audit (admin): none.
        const bare = yield* store.createIdentity({ workspaceId, externalId: "bare", now: T0 + 8, audit })
        yield* store.createIdentity({ workspaceId, externalId: "admin_made", ratelimits: [rl("x_1")], now: T0 + 9 })
        const tail = (yield* storeAuditLog(store, workspaceId)).slice(log.length)
        assert.deepStrictEqual(tail.map(({ id: _, ...rest }) => rest), [
          entriesOf(bare, T0 + 8)("identity.create", `Created identity ${bare.id}.`)
        ])
      }))

    it.effect("createIdentity: a live duplicate externalId (exact, case-sensitive) is IdentityConflict; nothing written", () =>
      Effect.gen(function*() {
        const { store, workspaceId } = yield* workspace
        const first = yield* store.createIdentity({ workspaceId, externalId: "dup", ratelimits: [rl("a_1")], now: T0, audit })
        const before = yield* storeAuditLog(store, workspaceId)
        const conflict = yield* Effect.flip(
          store.createIdentity({ workspaceId, externalId: "dup", meta: { x: 1 }, ratelimits: [rl("b_1")], now: T0 + 1, audit })
        )
        assert.strictEqual(conflict._tag, "IdentityConflict")
        assert.deepStrictEqual(yield* storeAuditLog(store, workspaceId), before)
        assert.deepStrictEqual(fields(yield* found(store, workspaceId, "dup")), fields(first))
        // Another case is another externalId.
        const upper = yield* store.createIdentity({ workspaceId, externalId: "DUP", now: T0 + 2 })
        assert.strictEqual((yield* found(store, workspaceId, "DUP")).id, upper.id)
        assert.strictEqual((yield* found(store, workspaceId, "dup")).id, first.id)
      }))

    it.effect("concurrent creates of one externalId: exactly one succeeds, one set of audit entries", () =>
      Effect.gen(function*() {
        const { store, workspaceId } = yield* workspace
        const results = yield* Effect.all(
          Array.from({ length: 8 }, (_, i) =>
            Effect.either(store.createIdentity({
              workspaceId,
              externalId: "racy",
              meta: { i },
              ratelimits: [rl("only")],
              now: T0 + i,
              audit
            }))),
          { concurrency: "unbounded" }
        )
        const winners = results.flatMap((result) => result._tag === "Right" ? [result.right] : [])
        const losers = results.flatMap((result) => result._tag === "Left" ? [result.left._tag] : [])
        assert.strictEqual(winners.length, 1)
        assert.deepStrictEqual(losers, Array.from({ length: 7 }, () => "IdentityConflict"))
        const winner = winners[0]
        assert.strictEqual((yield* found(store, workspaceId, "racy")).id, winner?.id)
        const log = yield* storeAuditLog(store, workspaceId)
        assert.deepStrictEqual(log.map((e) => [e.event, e.resources[0]?.id]), [
          ["identity.create", winner?.id],
          ["ratelimit.create", winner?.id]
        ])
        const page = yield* store.listIdentities({ workspaceId, limit: 100 })
        assert.deepStrictEqual(ids(page.identities), [winner?.id])
      }))

    it.effect("deleteIdentity with audit: identity.delete, then ratelimit.delete per ratelimit; rows kept", () =>
      Effect.gen(function*() {
        const { store, workspaceId } = yield* workspace
        const created = yield* store.createIdentity({
          workspaceId,
          externalId: "doomed",
          ratelimits: [rl("zulu"), rl("alpha"), rl("mike")],
          now: T0
        })
        // The set is then given as mike, new_b, zulu: deletions are audited in that order.
        const updated = yield* update(store, workspaceId, "doomed", { ratelimits: [rl("mike"), rl("new_b"), rl("zulu")] }, T0 + 1)
        const logBefore = yield* storeAuditLog(store, workspaceId)
        assert.isTrue(yield* store.deleteIdentity(workspaceId, "doomed", T0 + 2, audit))
        const entry = entriesOf(created, T0 + 2)
        const rlOf = (name: string) => ratelimitOf(updated, name)
        assert.deepStrictEqual((yield* storeAuditLog(store, workspaceId)).slice(logBefore.length).map(({ id: _, ...rest }) => rest), [
          entry("identity.delete", `Deleted identity ${created.id}.`),
          entry("ratelimit.delete", `Deleted ratelimit ${rlOf("mike").id}.`, rlOf("mike")),
          entry("ratelimit.delete", `Deleted ratelimit ${rlOf("new_b").id}.`, rlOf("new_b")),
          entry("ratelimit.delete", `Deleted ratelimit ${rlOf("zulu").id}.`, rlOf("zulu"))
        ])
        assert.isNull(yield* store.getIdentity(workspaceId, "doomed"))
        assert.isNull(yield* store.getIdentity(workspaceId, created.id))
        assert.deepStrictEqual((yield* store.listIdentities({ workspaceId, limit: 100 })).identities, [])

        // A second, sequential delete: false, nothing written; by id too.
        const logAfter = yield* storeAuditLog(store, workspaceId)
        assert.isFalse(yield* store.deleteIdentity(workspaceId, "doomed", T0 + 3, audit))
        assert.isFalse(yield* store.deleteIdentity(workspaceId, created.id, T0 + 3, audit))
        assert.isFalse(yield* store.deleteIdentity(workspaceId, "nobody", T0 + 3, audit))
        assert.deepStrictEqual(yield* storeAuditLog(store, workspaceId), logAfter)

        // Without ratelimits: one entry. Without audit (admin): none.
        const plain = yield* store.createIdentity({ workspaceId, externalId: "plain", now: T0 })
        assert.isTrue(yield* store.deleteIdentity(workspaceId, plain.id, T0 + 4, audit))
        const quiet = yield* store.createIdentity({ workspaceId, externalId: "quiet", ratelimits: [rl("q_1")], now: T0 })
        assert.isTrue(yield* store.deleteIdentity(workspaceId, quiet.id, T0 + 5))
        assert.deepStrictEqual((yield* storeAuditLog(store, workspaceId)).slice(logAfter.length).map(({ id: _, ...rest }) => rest), [
          entriesOf(plain, T0 + 4)("identity.delete", `Deleted identity ${plain.id}.`)
        ])
      }))

    it.effect("create → delete → create the same externalId: a new id, nothing carried over", () =>
      Effect.gen(function*() {
        const { store, workspaceId } = yield* workspace
        const first = yield* store.createIdentity({ workspaceId, externalId: "phoenix", meta: { v: 1 }, ratelimits: [rl("per_month", 300_000)], now: T0, audit })
        assert.isTrue(yield* store.deleteIdentity(workspaceId, "phoenix", T0 + 1, audit))
        const second = yield* store.createIdentity({ workspaceId, externalId: "phoenix", ratelimits: [rl("per_month", 20_000)], now: T0 + 2, audit })
        assert.notStrictEqual(second.id, first.id)
        const read = yield* found(store, workspaceId, "phoenix")
        assert.deepStrictEqual(fields(read), fields(second))
        assert.deepStrictEqual(read.meta, {})
        assert.notStrictEqual(read.ratelimits[0]?.id, first.ratelimits[0]?.id)
        assert.isNull(yield* store.getIdentity(workspaceId, first.id))
        // And delete again (the reference's "Stripe flow": never a failure).
        assert.isTrue(yield* store.deleteIdentity(workspaceId, "phoenix", T0 + 3, audit))
        const log = yield* storeAuditLog(store, workspaceId)
        assert.deepStrictEqual(log.map((e) => [e.event, e.resources[0]?.id]), [
          ["identity.create", first.id],
          ["ratelimit.create", first.id],
          ["identity.delete", first.id],
          ["ratelimit.delete", first.id],
          ["identity.create", second.id],
          ["ratelimit.create", second.id],
          ["identity.delete", second.id],
          ["ratelimit.delete", second.id]
        ])
      }))

    it.effect("concurrent deletes of one identity: no failure, at least one true, exactly one set of audit entries", () =>
      Effect.gen(function*() {
        const { identity, store, workspaceId } = yield* seeded()
        const results = yield* Effect.all(
          Array.from({ length: 6 }, (_, i) => store.deleteIdentity(workspaceId, i % 2 === 0 ? "user_1" : identity.id, T0 + 1, audit)),
          { concurrency: "unbounded" }
        )
        assert.include(results, true)
        const log = yield* storeAuditLog(store, workspaceId)
        assert.deepStrictEqual(log.map((e) => e.event), ["identity.delete", "ratelimit.delete", "ratelimit.delete"])
        assert.isNull(yield* store.getIdentity(workspaceId, "user_1"))
      }))

    it.effect("delete racing update: one of the two orders, audit included", () =>
      Effect.gen(function*() {
        const { identity, store, workspaceId } = yield* seeded([rl("alpha"), rl("beta")])
        const [updated, deleted] = yield* Effect.all([
          Effect.either(update(store, workspaceId, "user_1", { ratelimits: [rl("gamma")] }, T0 + 1)),
          store.deleteIdentity(workspaceId, identity.id, T0 + 2, audit)
        ], { concurrency: "unbounded" })
        assert.isTrue(deleted)
        assert.isNull(yield* store.getIdentity(workspaceId, identity.id))
        const log = (yield* storeAuditLog(store, workspaceId)).map((e) => [e.event, e.resources[1]?.name ?? ""].join(" "))
        if (updated._tag === "Right") {
          // Update, then delete: the delete lists the set the update left.
          assert.deepStrictEqual(log, [
            "identity.update ",
            "ratelimit.create gamma",
            "ratelimit.delete alpha",
            "ratelimit.delete beta",
            "identity.delete ",
            "ratelimit.delete gamma"
          ])
        } else {
          assert.strictEqual(updated.left._tag, "IdentityNotFound")
          assert.deepStrictEqual(log, ["identity.delete ", "ratelimit.delete alpha", "ratelimit.delete beta"])
        }
      }))

    it.effect("listIdentities: live identities of the workspace by id (code units), pages of limit, cursor = next page's first id", () =>
      Effect.gen(function*() {
        const { store, workspaceId } = yield* workspace
        const { workspaceId: otherId } = yield* workspace
        const created: Array<Identity> = []
        for (let i = 0; i < 12; i++) {
          created.push(yield* store.createIdentity({
            workspaceId,
            externalId: `ext_${i}`,
            environment: i === 3 ? "staging" : "default",
            meta: i % 2 === 0 ? { plan: "pro", i } : {},
            ratelimits: i % 2 === 0 ? [rl("requests", 100), rl("api_calls", 100, 60_000, true)] : [],
            now: T0 + i
          }))
        }
        const gone = created[5]?.id ?? ""
        yield* store.deleteIdentity(workspaceId, gone, T0 + 20)
        yield* store.createIdentity({ workspaceId: otherId, externalId: "ext_0", now: T0 })
        yield* store.createIdentity({ workspaceId: otherId, externalId: "other", now: T0 })
        const live = created.filter((identity) => identity.id !== gone)
        const order = ids(live).sort(byCodeUnits)

        // Every identity as getIdentity answers it (ratelimits by name, meta, environment).
        const all = yield* store.listIdentities({ workspaceId, limit: 100 })
        assert.deepStrictEqual(ids(all.identities), order)
        assert.isUndefined(all.cursor)
        for (const identity of all.identities) {
          assert.deepStrictEqual(fields(identity), fields(yield* found(store, workspaceId, identity.id)))
        }
        assert.deepStrictEqual(all.identities.find((identity) => identity.externalId === "ext_3")?.environment, "staging")

        // Pages of 5: 5, 5, 1; limit + 1 rows read, so a full last page has no cursor.
        const pages = yield* allPages(store, workspaceId, 5)
        assert.deepStrictEqual(pages.map((page) => page.length), [5, 5, 1])
        assert.deepStrictEqual(pages.flatMap(ids), order)
        const first = yield* store.listIdentities({ workspaceId, limit: 5 })
        assert.strictEqual(first.cursor, order[5])
        assert.isUndefined((yield* store.listIdentities({ workspaceId, limit: 11 })).cursor)
        const ten = yield* store.listIdentities({ workspaceId, limit: 10 })
        assert.strictEqual(ten.cursor, order[10])
        assert.deepStrictEqual(ids((yield* store.listIdentities({ workspaceId, limit: 1, cursor: order[10] })).identities), [order[10]])
        assert.deepStrictEqual(ids((yield* store.listIdentities({ workspaceId: otherId, limit: 100 })).identities).length, 2)
        assert.deepStrictEqual(yield* store.listIdentities({ workspaceId: newId("ws"), limit: 100 }), { identities: [] })
      }))

    it.effect("listIdentities: any string is a cursor, a lower bound in code-unit order (NUL, lone surrogates too)", () =>
      Effect.gen(function*() {
        const { store, workspaceId } = yield* workspace
        for (let i = 0; i < 8; i++) yield* store.createIdentity({ workspaceId, externalId: `c_${i}`, now: T0 })
        const order = ids((yield* store.listIdentities({ workspaceId, limit: 100 })).identities)
        assert.strictEqual(order.length, 8)
        const third = order[3] ?? ""
        const cursors = [
          "",
          "id_",
          "ID_",
          "invalid_cursor_format",
          "\u0000",
          "\u0000zzz",
          third,
          `${third}\u0000`,
          `${third}\u0000\u0000`,
          third.slice(0, -1),
          `${third.slice(0, -1)}\u0000`,
          `${third}\ud800`,
          "\ud800",
          "\uffff",
          "😀",
          "%",
          "_",
          "\\",
          `id_${"z".repeat(300)}`
        ]
        for (const cursor of cursors) {
          const page = yield* store.listIdentities({ workspaceId, limit: 100, cursor })
          // JavaScript's own `>=` on the very same string is the reference.
          assert.deepStrictEqual(ids(page.identities), order.filter((id) => id >= cursor), JSON.stringify(cursor))
        }
        assert.deepStrictEqual(ids((yield* store.listIdentities({ workspaceId, limit: 100, cursor: `${third}\u0000` })).identities), order.slice(4))
        assert.deepStrictEqual(ids((yield* store.listIdentities({ workspaceId, limit: 100, cursor: "invalid_cursor_format" })).identities), [])
      }))

    it.effect("listIdentities search: case-insensitive (ASCII letters) literal substring of id or externalId", () =>
      Effect.gen(function*() {
        const { store, workspaceId } = yield* workspace
        const make = (externalId: string) => store.createIdentity({ workspaceId, externalId, now: T0 })
        const alice = yield* make("acme_alice")
        const bob = yield* make("acme_bob")
        const discount = yield* make("discount_100%_user")
        // Admin-made externalIds (the API's pattern allows none of these characters).
        const backslash = yield* make("back\\slash_user")
        const upper = yield* make("Ärger_É")
        const lower = yield* make("ärger_é")
        const emoji = yield* make("emoji_😀")
        const search = (text: string, limit = 100) =>
          Effect.map(store.listIdentities({ workspaceId, limit, search: text }), (page) => page.identities.map((i) => i.externalId).sort())
        const cases: ReadonlyArray<readonly [string, ReadonlyArray<Identity>]> = [
          ["alice", [alice]],
          [bob.id, [bob]],
          [bob.id.toLowerCase(), [bob]],
          [bob.id.toUpperCase(), [bob]],
          ["ACME_ALICE", [alice]],
          ["Acme", [alice, bob]],
          ["100%", [discount]],
          ["%", [discount]],
          ["%_", [discount]],
          ["b_b", []],
          ["_b", [bob]],
          ["\\", [backslash]],
          ["K\\S", [backslash]],
          ["does-not-exist", []],
          ["id_", [alice, bob, discount, backslash, upper, lower, emoji]],
          // Only A–Z fold: Ä/ä and É/é are different characters here, on every layer.
          ["ärger", [lower]],
          ["ÄRGER", [upper]],
          ["RGER_", [upper, lower]],
          ["é", [lower]],
          ["É", [upper]],
          ["😀", [emoji]],
          ["\ud83d", []],
          ["\ud800", []],
          // NUL: no stored text can hold it.
          ["ali\u0000ce", []],
          ["\u0000", []]
        ]
        for (const [text, expected] of cases) {
          assert.deepStrictEqual(yield* search(text), expected.map((i) => i.externalId).sort(), JSON.stringify(text))
        }

        // Pages of a search, in id order, with the cursor.
        const acme = [alice, bob].map((i) => i.id).sort(byCodeUnits)
        const pages = yield* allPages(store, workspaceId, 1, "ACME")
        assert.deepStrictEqual(pages.map(ids), [[acme[0]], [acme[1]]])
        // A soft-deleted identity no longer matches.
        yield* store.deleteIdentity(workspaceId, "acme_alice", T0 + 1)
        assert.deepStrictEqual(yield* search("acme"), ["acme_bob"])
      }))

    more?.(it)
  })

// --- SQL failures ---------------------------------------------------------------------------

const TRIGGER_NAME = "explode_here"

/** Installs a trigger failing any write of a ratelimit named `explode_here`; removed after `self`. */
const withExplodingTrigger = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql.unsafe(`CREATE OR REPLACE FUNCTION identity_kit_test_explode() RETURNS trigger
      LANGUAGE plpgsql AS $$ BEGIN
        IF NEW.name = '${TRIGGER_NAME}' THEN RAISE EXCEPTION 'test trigger: % refused', NEW.name; END IF;
        RETURN NEW;
      END $$`)
    yield* sql.unsafe(`CREATE TRIGGER identity_kit_test_explode BEFORE INSERT OR UPDATE ON identity_kit_ratelimits
      FOR EACH ROW EXECUTE FUNCTION identity_kit_test_explode()`)
    return yield* self.pipe(
      Effect.ensuring(Effect.orDie(sql.unsafe(`DROP TRIGGER identity_kit_test_explode ON identity_kit_ratelimits`)))
    )
  })

/** Tests for SQL stores: a statement failing half-way through the write leaves everything as it was. */
export const sqlFailureSuite = (it: Vitest.MethodsNonLive<IdentityStore | SqlClient.SqlClient, true>): void => {
  it.effect("a failure inside the write rolls it all back and answers the spec's 500", () =>
    withExplodingTrigger(Effect.gen(function*() {
      const store = yield* IdentityStore
      const { workspaceId, identity } = yield* seeded([rl("alpha", 1), rl("beta", 2)])
      const { key } = yield* Admin.issueRootKey({ workspaceId })
      const before = yield* store.getIdentity(workspaceId, "user_1")

      // The trigger fires on the last row written: meta, the kept and the new names came first.
      const direct = yield* Effect.flip(update(store, workspaceId, "user_1", {
        meta: `{"plan":"changed"}`,
        ratelimits: [rl("alpha", 99), rl("gamma"), rl(TRIGGER_NAME)]
      }, T0 + 1))
      assert.strictEqual(direct._tag, "StorageError")

      // Through HTTP: the fixed 500 body, nothing of the database error.
      const kit = makeIdentityKit({ storage: Layer.succeed(IdentityStore, store) })
      const response = yield* Effect.promise(() =>
        kit.fetch(new Request(`http://localhost${ROUTE}`, {
          method: "POST",
          headers: { authorization: `Bearer ${Redacted.value(key)}`, "content-type": "application/json" },
          body: JSON.stringify({
            identity: identity.id,
            meta: { plan: "changed" },
            ratelimits: [{ name: "alpha", limit: 99, duration: 1000 }, { name: TRIGGER_NAME, limit: 1, duration: 1000 }]
          })
        }))
      )
      yield* Effect.promise(() => kit.dispose())
      assert.strictEqual(response.status, 500)
      assert.match(response.headers.get("content-type") ?? "", /^application\/json/)
      const text = yield* Effect.promise(() => response.text())
      assert.notInclude(text, "refused")
      assert.notInclude(text, "identity_kit")
      expect(JSON.parse(text)).toStrictEqual({
        meta: { requestId: expect.stringMatching(ID("req")) },
        error: {
          title: "Internal Server Error",
          detail: "We're unable to update the identity.",
          status: 500,
          type: "https://unkey.com/docs/errors/unkey/application/unexpected_error"
        }
      })

      const after = yield* store.getIdentity(workspaceId, "user_1")
      assert.deepStrictEqual(after && fields(after), before && fields(before))
      assert.deepStrictEqual(yield* storeAuditLog(store, workspaceId), [])

      // And the same update without the refused name goes through.
      const ok = yield* update(store, workspaceId, "user_1", { meta: `{"plan":"changed"}`, ratelimits: [rl("alpha", 99), rl("gamma")] }, T0 + 2)
      assert.deepStrictEqual(names(ok), ["alpha", "gamma"])
    })))
}

// --- SQL hot path ---------------------------------------------------------------------------

/**
 * Tests for the hot statements of SQL stores (root-key lookup, update), which may run on a
 * driver-level executor beside the `SqlClient`: rows that do not decode, transactions, and the
 * write function of the previous version, still installed for a rolling upgrade.
 */
export const sqlHotPathSuite = (it: Vitest.MethodsNonLive<IdentityStore | SqlClient.SqlClient, true>): void => {
  it.effect("a row that does not decode is a StorageError, never a defect", () =>
    Effect.gen(function*() {
      const store = yield* IdentityStore
      const sql = yield* SqlClient.SqlClient
      const { workspaceId } = yield* workspace
      const tooBig = rootKeyIn(workspaceId)
      const notAList = rootKeyIn(workspaceId)
      for (const [key, expiresAt, permissions] of [[tooBig, "1152921504606846976", "[]"], [notAList, null, `{"a":1}`]] as const) {
        yield* sql`INSERT INTO identity_kit_root_keys (id, workspace_id, hash, name, permissions, enabled, expires_at, created_at)
                   VALUES (${key.id}, ${workspaceId}, ${key.hash}, 'bad', ${permissions}::text::json, true,
                           ${expiresAt}::bigint, ${T0}::bigint)`
        const exit = yield* Effect.exit(store.findRootKey(key.hash))
        assert.isTrue(exit._tag === "Failure" && exit.cause._tag === "Fail" && exit.cause.error._tag === "StorageError", key.id)
      }
    }))

  it.effect("inside a SqlClient transaction the hot statements join it", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const { identity, store, workspaceId } = yield* seeded([rl("alpha")])
      const key = rootKeyIn(workspaceId)
      const failure = yield* Effect.flip(sql.withTransaction(Effect.gen(function*() {
        // The transaction holds the identity's row lock: a statement on another connection would wait for ever.
        yield* sql`SELECT id FROM identity_kit_identities WHERE id = ${identity.id} FOR UPDATE`
        const updated = yield* update(store, workspaceId, "user_1", { meta: `{"in":"tx"}`, ratelimits: [rl("beta")] }, T0 + 1)
        assert.deepStrictEqual(names(updated), ["beta"])
        // A key written in the transaction is seen by the lookup in it.
        yield* store.putRootKey(key)
        assert.strictEqual((yield* store.findRootKey(key.hash))?.key.id, key.id)
        return yield* Effect.fail("roll back")
      })))
      assert.strictEqual(failure, "roll back")
      assert.deepStrictEqual(fields(yield* found(store, workspaceId, "user_1")), fields(identity))
      assert.deepStrictEqual(yield* storeAuditLog(store, workspaceId), [])
      assert.isNull(yield* store.findRootKey(key.hash))
    }))

  it.effect("the write function of the previous version still works beside the new one", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const { identity, store, workspaceId } = yield* seeded([rl("alpha")])
      const rows = yield* sql<{ readonly id: string; readonly meta: string; readonly ratelimits: string }>`
        SELECT id, meta, ratelimits FROM identity_kit_update_identity(${workspaceId}::text, 'user_1'::text,
          '{"v":1}'::json, '[{"name":"beta","limit":1,"duration":1000,"autoApply":true}]'::json,
          'key_old'::text, 'root key'::text, '203.0.113.7'::text, 'old/1.0'::text, ${T0 + 1}::bigint)`
      assert.strictEqual(rows[0]?.id, identity.id)
      assert.deepStrictEqual(JSON.parse(rows[0]?.meta ?? "null"), { v: 1 })
      const read = yield* found(store, workspaceId, "user_1")
      assert.deepStrictEqual(read.meta, { v: 1 })
      assert.deepStrictEqual(names(read), ["beta"])
      const log = yield* storeAuditLog(store, workspaceId)
      assert.deepStrictEqual(log.map((e) => [e.event, e.requestId, e.hostRequestId]), [
        ["identity.update", "", ""],
        ["ratelimit.create", "", ""],
        ["ratelimit.delete", "", ""]
      ])
    }))

  // One audit id for five entries, no ratelimit ids: each version of the function makes the rest.
  // Versions before 4 (instances of earlier versions, during a rolling upgrade) write no request ids.
  const idFallbackCalls = [
    {
      version: 2,
      requestIds: ["", ""],
      call: (sql: SqlClient.SqlClient, workspaceId: string, given: string) =>
        sql<{ readonly ratelimits: string; readonly meta: string | null }>`
        SELECT ratelimits, meta FROM identity_kit_update_identity_v2(${workspaceId}::text, 'user_1'::text,
          '{"v":2}'::json, '[{"name":"delta","limit":1,"duration":1000,"autoApply":false},{"name":"alpha","limit":2,"duration":1000,"autoApply":false}]'::json,
          NULL::text[], ${`{${given}}`}::text::text[],
          'key_new'::text, 'root key'::text, '203.0.113.7'::text, 'new/1.0'::text, ${T0 + 1}::bigint)`
    },
    // Versions 3 and 4 take the same arguments, 4 with the request ids before `p_now`.
    ...([[3, ""], [4, `'req_fallback'::text, 'host fallback'::text, `]] as const).map(([version, idArguments]) => ({
      version,
      requestIds: version === 4 ? ["req_fallback", "host fallback"] : ["", ""],
      call: (sql: SqlClient.SqlClient, workspaceId: string, given: string) =>
        sql.unsafe<{ readonly ratelimits: string; readonly meta: string | null }>(
          `SELECT ratelimits, meta FROM identity_kit_update_identity_v${version}($1::text, 'user_1'::text,
          '{"v":2}'::json, '{delta,alpha}'::text[], '{1,2}'::bigint[], '{1000,1000}'::bigint[], '{f,f}'::boolean[],
          NULL::text[], $2::text::text[], 'key_new'::text, 'root key'::text, '203.0.113.7'::text, 'new/1.0'::text,
          ${idArguments}$3::bigint)`,
          [workspaceId, `{${given}}`, T0 + 1]
        )
    }))
  ]
  for (const { call, requestIds, version } of idFallbackCalls) {
    it.effect(`version ${version} of the write function makes the ids it is not given, in the same format`, () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const { store, workspaceId } = yield* seeded([rl("alpha"), rl("beta"), rl("gamma")])
        const given = newId("log")
        const rows = yield* call(sql, workspaceId, given)
        assert.isNull(rows[0]?.meta, "meta is not answered when it was given")
        const answered: ReadonlyArray<{ readonly id: string; readonly name: string }> = JSON.parse(rows[0]?.ratelimits ?? "[]")
        // v2 answers by name; v3 leaves the order to the caller (sql.ts sorts).
        assert.deepStrictEqual(answered.map((r) => r.name).sort(), ["alpha", "delta"])
        for (const r of answered) assert.match(r.id, ID("rl"))
        const log = yield* storeAuditLog(store, workspaceId)
        // identity.update, create delta, update alpha, delete beta, delete gamma.
        assert.deepStrictEqual(log.map((e) => e.event), [
          "identity.update",
          "ratelimit.create",
          "ratelimit.update",
          "ratelimit.delete",
          "ratelimit.delete"
        ])
        assert.strictEqual(log[0]?.id, given)
        for (const e of log) assert.match(e.id, ID("log"))
        for (const e of log) assert.deepStrictEqual([e.requestId, e.hostRequestId], requestIds)
        assert.strictEqual(new Set(log.map((e) => e.id)).size, log.length)
        const stored = (yield* found(store, workspaceId, "user_1")).ratelimits.map(
          ({ autoApply, createdAt, duration, id, limit, name, updatedAt }) => ({ id, name, limit, duration, autoApply, createdAt, updatedAt })
        )
        assert.deepStrictEqual([...answered].sort((x, y) => (x.name < y.name ? -1 : 1)), stored)
      }))
  }

  it.effect("versions 3 and 4 (this version's) of the write function store exactly what version 2 stores", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      // Names an array literal or JSON must quote or escape: two created, two updated, three deleted.
      const before = [rl("kept \"q\" \\ {a,b}"), rl("NULL"), rl("gone_b"), rl(" gone_a "), rl("ключ é\n\t")]
      const after = [rl("new, 2", 7, 1000, true), rl("ключ é\n\t", 3, 2000), rl("NULL", 4), rl("new\u0001 1", 5)]
      const v2 = yield* seeded(before)
      const v3 = yield* seeded(before)
      const v4 = yield* seeded(before)
      const json = JSON.stringify(after)
      yield* sql`SELECT id FROM identity_kit_update_identity_v2(${v2.workspaceId}::text, 'user_1'::text, '{"v":2}'::json,
        ${json}::text::json, NULL::text[], NULL::text[], 'key_x'::text, 'root key'::text, '203.0.113.7'::text,
        'ua/1.0'::text, ${T0 + 1}::bigint)`
      // Version 3 as the previous version of sql.ts calls it: the set as four array literals.
      const array = (items: ReadonlyArray<string>) => `{${items.map((item) => `"${item.replace(/["\\]/g, "\\$&")}"`).join(",")}}`
      yield* sql`SELECT id FROM identity_kit_update_identity_v3(${v3.workspaceId}::text, 'user_1'::text, '{"v":2}'::json,
        ${array(after.map((r) => r.name))}::text::text[], ${array(after.map((r) => String(r.limit)))}::text::bigint[],
        ${array(after.map((r) => String(r.duration)))}::text::bigint[], ${array(after.map((r) => String(r.autoApply)))}::text::boolean[],
        NULL::text[], NULL::text[], 'key_x'::text, 'root key'::text, '203.0.113.7'::text, 'ua/1.0'::text, ${T0 + 1}::bigint)`
      const updated = yield* update(v4.store, v4.workspaceId, "user_1", { meta: `{"v":2}`, ratelimits: after }, T0 + 1)
      assert.deepStrictEqual(names(updated), jsOrder(after.map((r) => r.name)))

      // What each wrote, with the ids (random on either side) replaced by their role.
      const stored = (workspaceId: string, identityId: string) =>
        Effect.gen(function*() {
          const ratelimits = yield* sql<{ readonly id: string; readonly name: string; readonly rest: string }>`
            SELECT id, name, concat_ws('|', "limit", duration, auto_apply, position, created_at, updated_at) AS rest
            FROM identity_kit_ratelimits WHERE identity_id = ${identityId} ORDER BY position`
          const roles = new Map<string, string>([[identityId, "<identity>"]])
          for (const r of ratelimits) roles.set(r.id, `<rl ${r.name}>`)
          const log = yield* sql<{ readonly event: string; readonly display: string; readonly resources: string; readonly rest: string }>`
            SELECT event, display, resources::text AS resources,
                   concat_ws('|', actor_type, actor_name, remote_ip, request_id, host_request_id, time) AS rest
            FROM identity_kit_audit_log WHERE workspace_id = ${workspaceId} ORDER BY seq`
          // Deleted ratelimits are named by the entry that deleted them.
          for (const e of log) {
            const deleted = /^Deleted ratelimit (.+)$/.exec(e.display)?.[1]
            const resources: ReadonlyArray<{ readonly name?: string }> = JSON.parse(e.resources)
            if (deleted !== undefined) roles.set(deleted, `<deleted ${resources[1]?.name ?? "?"}>`)
          }
          const anonymous = (text: string) => [...roles].reduce((t, [id, role]) => t.split(id).join(role), text)
          return {
            identity: yield* sql`SELECT meta::text AS meta, updated_at FROM identity_kit_identities WHERE id = ${identityId}`,
            ratelimits: ratelimits.map((r) => [r.name, r.rest]),
            log: log.map((e) => [e.event, anonymous(e.display), anonymous(e.resources), e.rest])
          }
        })
      const wrote2 = yield* stored(v2.workspaceId, v2.identity.id)
      assert.strictEqual(wrote2.log.length, 8)
      assert.deepStrictEqual(yield* stored(v3.workspaceId, v3.identity.id), wrote2)
      assert.deepStrictEqual(yield* stored(v4.workspaceId, v4.identity.id), wrote2)
    }))
}

// --- SQL: create, delete, list ----------------------------------------------------------------

/** Tests for SQL stores of what the contract cannot see: rows kept by a soft delete, create's atomicity. */
export const sqlIdentitiesSuite = (it: Vitest.MethodsNonLive<IdentityStore | SqlClient.SqlClient, true>): void => {
  it.effect("a soft delete keeps the row (deleted, updated_at untouched) and every ratelimit row", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const { identity, store, workspaceId } = yield* seeded([rl("alpha"), rl("beta"), rl("gamma")])
      yield* update(store, workspaceId, "user_1", { meta: `{"v":2}` }, T0 + 1)
      assert.isTrue(yield* store.deleteIdentity(workspaceId, "user_1", T0 + 2, audit))
      const rows = yield* sql<{ readonly deleted: boolean; readonly updated_at: string | number }>`
        SELECT deleted, updated_at FROM identity_kit_identities WHERE id = ${identity.id}`
      assert.deepStrictEqual(rows.map((row) => [row.deleted, Number(row.updated_at)]), [[true, T0 + 1]])
      const kept = yield* sql<{ readonly id: string }>`
        SELECT id FROM identity_kit_ratelimits WHERE identity_id = ${identity.id} ORDER BY id`
      assert.deepStrictEqual(kept.map((row) => row.id), identity.ratelimits.map((r) => r.id).sort())

      // The externalId is free again; the new identity starts with no ratelimits.
      const again = yield* store.createIdentity({ workspaceId, externalId: "user_1", now: T0 + 3, audit })
      const live = yield* sql<{ readonly id: string; readonly deleted: boolean }>`
        SELECT id, deleted FROM identity_kit_identities WHERE workspace_id = ${workspaceId} AND external_id = 'user_1'`
      assert.sameDeepMembers(live.map((row) => [row.id, row.deleted]), [[identity.id, true], [again.id, false]])
      assert.deepStrictEqual((yield* found(store, workspaceId, "user_1")).ratelimits, [])
    }))

  it.effect("a failure inside a create leaves nothing: no identity, no ratelimit, no audit entry", () =>
    withExplodingTrigger(Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const { store, workspaceId } = yield* workspace
      const failure = yield* Effect.flip(store.createIdentity({
        workspaceId,
        externalId: "half",
        ratelimits: [rl("alpha"), rl(TRIGGER_NAME)],
        now: T0,
        audit
      }))
      assert.strictEqual(failure._tag, "StorageError")
      const [counts] = yield* sql<{ readonly identities: number; readonly ratelimits: number }>`
        SELECT (SELECT count(*)::int FROM identity_kit_identities WHERE workspace_id = ${workspaceId}) AS identities,
               (SELECT count(*)::int FROM identity_kit_ratelimits WHERE workspace_id = ${workspaceId}) AS ratelimits`
      assert.deepStrictEqual(counts, { identities: 0, ratelimits: 0 })
      assert.deepStrictEqual(yield* storeAuditLog(store, workspaceId), [])
      // The externalId was never taken.
      const ok = yield* store.createIdentity({ workspaceId, externalId: "half", ratelimits: [rl("alpha")], now: T0, audit })
      assert.deepStrictEqual(names(ok), ["alpha"])
    })))

  it.effect("what earlier versions write beside this one (their delete function, their create) has no request ids", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const { identity, store, workspaceId } = yield* seeded([rl("alpha"), rl("beta")])
      // An audit row as the create statement of earlier versions writes it: without the new columns.
      yield* sql`INSERT INTO identity_kit_audit_log
                   (id, workspace_id, event, display, actor_type, actor_id, actor_name, remote_ip, user_agent, time, resources)
                 VALUES (${newId("log")}, ${workspaceId}, 'identity.create', 'Created identity.', 'rootkey', 'key_old',
                         'root key', '203.0.113.7', 'old/1.0', ${T0}::bigint, '[]'::json)`
      const [row] = yield* sql<{ readonly found: boolean }>`
        SELECT identity_kit_delete_identity_v1(${workspaceId}::text, 'user_1'::text, ${`{${newId("log")}}`}::text::text[],
          'key_old'::text, 'root key'::text, '203.0.113.7'::text, 'old/1.0'::text, ${T0 + 1}::bigint) AS found`
      assert.isTrue(row?.found)
      assert.isNull(yield* store.getIdentity(workspaceId, identity.id))
      const log = yield* storeAuditLog(store, workspaceId)
      assert.deepStrictEqual(log.map((e) => [e.event, e.userAgent, e.requestId, e.hostRequestId]), [
        ["identity.create", "old/1.0", "", ""],
        ["identity.delete", "old/1.0", "", ""],
        ["ratelimit.delete", "old/1.0", "", ""],
        ["ratelimit.delete", "old/1.0", "", ""]
      ])
    }))

  it.effect("a delete with more ratelimits than the audit ids sent makes the rest, in the same format", () =>
    Effect.gen(function*() {
      const { identity, store, workspaceId } = yield* seeded(Array.from({ length: 60 }, (_, i) => rl(`rl_${String(i).padStart(2, "0")}`)))
      assert.isTrue(yield* store.deleteIdentity(workspaceId, identity.id, T0 + 1, audit))
      const log = yield* storeAuditLog(store, workspaceId)
      assert.strictEqual(log.length, 61)
      for (const e of log) assert.match(e.id, ID("log"))
      assert.strictEqual(new Set(log.map((e) => e.id)).size, 61)
      assert.deepStrictEqual(log.slice(1).map((e) => e.resources[1]?.name), names(identity))
    }))
}

// --- PostgreSQL: races made certain ---------------------------------------------------------

/** Until `probe` answers true (the test's timeout bounds the wait). */
const eventually = <E, R>(probe: Effect.Effect<boolean, E, R>) =>
  Effect.gen(function*() {
    while (!(yield* probe)) yield* Effect.sleep("10 millis")
  })

/** How many backends wait, directly or behind another waiter, for the transaction of backend `pid`. */
const waitingFor = (pid: number) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ readonly n: number }>`
      WITH RECURSIVE blocked(pid) AS (
        SELECT a.pid FROM pg_stat_activity a WHERE ${pid}::int = ANY(pg_blocking_pids(a.pid))
        UNION
        SELECT a.pid FROM pg_stat_activity a JOIN blocked b ON b.pid = ANY(pg_blocking_pids(a.pid))
      )
      SELECT count(*)::int AS n FROM blocked`.pipe(Effect.map((rows) => rows[0]?.n ?? 0)))

/**
 * Runs `inside` in a transaction on its own connection that holds `identityId`'s row lock, starts
 * `racers` once it holds it, waits until `count` backends queue behind it, then commits.
 */
const behindALock = <A, E, R>(identityId: string, count: number, inside: Effect.Effect<unknown, E, R>, racers: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const locked = yield* Deferred.make<number>()
    const release = yield* Deferred.make<void>()
    const holder = yield* Effect.fork(sql.withTransaction(Effect.gen(function*() {
      yield* inside
      const [row] = yield* sql<{ readonly pid: number }>`
        SELECT pg_backend_pid() AS pid FROM identity_kit_identities WHERE id = ${identityId} FOR UPDATE`
      yield* Deferred.succeed(locked, row?.pid ?? -1)
      yield* Deferred.await(release)
    })))
    const pid = yield* Deferred.await(locked)
    const racing = yield* Effect.fork(racers)
    yield* eventually(Effect.map(waitingFor(pid), (n) => n >= count))
    yield* Deferred.succeed(release, undefined)
    yield* Fiber.join(holder)
    return yield* Fiber.join(racing)
  })

/**
 * Races on a server with several connections, made certain with a row lock held by a transaction
 * (on PGlite, one connection, they cannot happen): both deletes have found the identity before
 * either writes.
 */
export const postgresRaceSuite = (it: Vitest.MethodsNonLive<IdentityStore | SqlClient.SqlClient, true>): void => {
  it.effect("two deletes that both found the identity: both true, exactly one set of audit entries", () =>
    Effect.gen(function*() {
      const { identity, store, workspaceId } = yield* seeded([rl("alpha"), rl("beta")])
      const results = yield* behindALock(
        identity.id,
        2,
        Effect.void,
        Effect.all([
          store.deleteIdentity(workspaceId, "user_1", T0 + 1, audit),
          store.deleteIdentity(workspaceId, identity.id, T0 + 1, audit)
        ], { concurrency: "unbounded" })
      )
      assert.deepStrictEqual(results, [true, true])
      const log = yield* storeAuditLog(store, workspaceId)
      assert.deepStrictEqual(log.map((e) => e.event), ["identity.delete", "ratelimit.delete", "ratelimit.delete"])
      assert.isFalse(yield* store.deleteIdentity(workspaceId, "user_1", T0 + 2, audit))
    }))

  it.effect("a delete that waited for an update lists the ratelimits the update left", () =>
    Effect.gen(function*() {
      const { identity, store, workspaceId } = yield* seeded([rl("alpha"), rl("beta")])
      // The update runs in the lock holder's transaction: the delete found the identity (and its
      // old ratelimits, in its first snapshot) before the update committed.
      const deleted = yield* behindALock(
        identity.id,
        1,
        update(store, workspaceId, "user_1", { ratelimits: [rl("gamma")] }, T0 + 1),
        store.deleteIdentity(workspaceId, "user_1", T0 + 2, audit)
      )
      assert.isTrue(deleted)
      const log = yield* storeAuditLog(store, workspaceId)
      assert.deepStrictEqual(log.slice(-2).map((e) => [e.event, e.resources[1]?.name ?? ""]), [
        ["identity.delete", ""],
        ["ratelimit.delete", "gamma"]
      ])
    }))

  it.effect("creates of one externalId queued behind a lock: exactly one succeeds", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const { identity, store, workspaceId } = yield* seeded()
      // The holder soft-deletes user_1 and keeps the transaction open: every create of user_1
      // waits on the unique index entry until it commits, then one of them wins.
      const results = yield* behindALock(
        identity.id,
        3,
        sql`UPDATE identity_kit_identities SET deleted = true WHERE id = ${identity.id}`,
        Effect.all(
          Array.from({ length: 3 }, (_, i) =>
            Effect.either(store.createIdentity({ workspaceId, externalId: "user_1", now: T0 + i, audit }))),
          { concurrency: "unbounded" }
        )
      )
      assert.strictEqual(results.filter((result) => result._tag === "Right").length, 1)
      assert.deepStrictEqual(
        results.flatMap((result) => result._tag === "Left" ? [result.left._tag] : []),
        ["IdentityConflict", "IdentityConflict"]
      )
      const log = yield* storeAuditLog(store, workspaceId)
      assert.deepStrictEqual(log.map((e) => e.event), ["identity.create"])
    }))
}
