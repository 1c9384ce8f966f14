/**
 * The admin API (`Admin.*`, issue 10 item 4): input checked with the HTTP API's own Schemas (the
 * same messages as `createIdentity` over HTTP, located under the parameter's name), workspaces
 * that must exist, and keyset-paginated lists with opaque cursors. On memory storage: what each
 * storage does is the contract's (test/storage-contract.ts).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Either, Redacted } from "effect"
import {
  Admin,
  type AuditLogEntry,
  hashRootKey,
  IdentityStore,
  InvalidInput,
  layerMemory,
  makeIdentityKit,
  type Page,
  type ValidationIssue
} from "identity-kit"
import { adminLimits, decodeCursor, encodeCursor } from "../src/domain/AdminInput.js"

const issues = (error: InvalidInput) => error.errors.map((issue: ValidationIssue) => [issue.location, issue.message])

/** The `InvalidInput` an Effect fails with, or a test failure. */
const invalid = <A, E>(effect: Effect.Effect<A, E, IdentityStore>) =>
  Effect.flatMap(Effect.flip(effect), (error) =>
    error instanceof InvalidInput ? Effect.succeed(error) : Effect.dieMessage(`expected InvalidInput, got ${String(error)}`))

/** Runs a test on a fresh, empty memory store. */
const fresh = <A, E>(effect: Effect.Effect<A, E, IdentityStore>) => Effect.provide(effect, layerMemory)

const withWorkspace = Effect.map(Admin.createWorkspace({ name: "admin" }), (workspace) => workspace.id)

describe("Admin: input checked as the HTTP API checks it", () => {
  it.effect("createIdentity: each field refused where the API refuses it, every issue at input.…", () =>
    fresh(Effect.gen(function*() {
      const workspaceId = yield* withWorkspace
      const error = yield* invalid(Admin.createIdentity({
        workspaceId,
        externalId: "has space",
        environment: "",
        meta: { n: Number.NaN },
        ratelimits: [
          { name: "ok_name", limit: -1, duration: 0 },
          { name: "ab", limit: 1.5, duration: 1000 },
          { name: "ok_name", limit: 1, duration: 1000 }
        ]
      }))
      assert.deepStrictEqual(issues(error), [
        ["input.externalId", "pattern: want ^[a-zA-Z0-9_.-]+$"],
        ["input.environment", "minLength: got 0, want 1"],
        ["input.meta.n", "got NaN, want a finite number"],
        ["input.ratelimits[0].limit", "minimum: got -1, want 1"],
        ["input.ratelimits[0].duration", "minimum: got 0, want 1000"],
        ["input.ratelimits[1].name", "minLength: got 2, want 3"],
        ["input.ratelimits[1].limit", "got number, want integer"]
      ])
      assert.strictEqual(error.detail, "Invalid input to createIdentity: input.externalId: pattern: want ^[a-zA-Z0-9_.-]+$ (and 6 more)")
      assert.strictEqual(error.message, error.detail)
      // Nothing was written.
      assert.deepStrictEqual((yield* Admin.listIdentities(workspaceId)).items, [])
    })))

  it.effect("createIdentity: duplicate names (at the second), 51 ratelimits, meta over 100 keys, 1 MiB, 100 levels", () =>
    fresh(Effect.gen(function*() {
      const workspaceId = yield* withWorkspace
      const rl = (name: string) => ({ name, limit: 1, duration: 1000 })
      const duplicate = yield* invalid(Admin.createIdentity({ workspaceId, externalId: "u", ratelimits: [rl("aaa"), rl("bbb"), rl("aaa")] }))
      assert.deepStrictEqual(issues(duplicate), [["input.ratelimits[2].name", "Ratelimit with name 'aaa' is already defined in the request"]])
      const many = yield* invalid(Admin.createIdentity({
        workspaceId,
        externalId: "u",
        ratelimits: Array.from({ length: 51 }, (_, i) => rl(`rl_${i}`))
      }))
      assert.deepStrictEqual(issues(many), [["input.ratelimits", "maxItems: got 51, want at most 50"]])
      const keys = yield* invalid(Admin.createIdentity({
        workspaceId,
        externalId: "u",
        meta: Object.fromEntries(Array.from({ length: 101 }, (_, i) => [`k${i}`, i]))
      }))
      assert.deepStrictEqual(issues(keys), [["input.meta", "maxProperties: got 101, want at most 100"]])
      const large = yield* invalid(Admin.createIdentity({ workspaceId, externalId: "u", meta: { blob: "x".repeat(1_048_576) } }))
      assert.strictEqual(large.errors[0]?.location, "input.meta")
      assert.match(large.errors[0]?.message ?? "", /^maxBytes: got 1048587 bytes of compact JSON, want at most 1048576/)
      let deep: Record<string, unknown> = {}
      const root = deep
      for (let i = 0; i < 120; i++) deep = (deep["d"] = {}) as Record<string, unknown>
      const nested = yield* invalid(Admin.createIdentity({ workspaceId, externalId: "u", meta: root as never }))
      assert.deepStrictEqual(issues(nested), [["input.meta", "maxDepth: got more than 100, want at most 100"]])
      // Exactly at the limits: accepted.
      const atLimits = yield* Admin.createIdentity({
        workspaceId,
        externalId: "at_limits",
        meta: { blob: "x".repeat(1_048_576 - 11) },
        ratelimits: Array.from({ length: 50 }, (_, i) => rl(`rl_${i}`))
      })
      assert.strictEqual(atLimits.ratelimits.length, 50)
    })))

  it.effect("createIdentity: meta must be JSON (no undefined, function, Date, Map, cycle, BigInt)", () =>
    fresh(Effect.gen(function*() {
      const workspaceId = yield* withWorkspace
      const cyclic: Record<string, unknown> = {}
      cyclic["self"] = cyclic
      const cases: ReadonlyArray<readonly [unknown, string, string]> = [
        [{ a: undefined }, "input.meta.a", "got undefined, want a JSON value"],
        [{ a: [1, () => 1] }, "input.meta.a[1]", "got function, want a JSON value"],
        [{ when: new Date(0) }, "input.meta.when", "got Date, want a plain object"],
        [{ m: new Map() }, "input.meta.m", "got Map, want a plain object"],
        [{ n: 10n }, "input.meta.n", "got bigint, want a JSON value"],
        [{ x: Number.POSITIVE_INFINITY }, "input.meta.x", "got Infinity, want a finite number"],
        [cyclic, "input.meta", "maxDepth: got more than 100, want at most 100"],
        [[1], "input.meta", "got array, want object"],
        [null, "input.meta", "got null, want object"]
      ]
      for (const [meta, location, message] of cases) {
        const error = yield* invalid(Admin.createIdentity({ workspaceId, externalId: "u", meta: meta as never }))
        assert.deepStrictEqual(issues(error), [[location, message]], location)
      }
      // `__proto__` is an ordinary key, as over HTTP; a null-prototype object is plain.
      const parsed = JSON.parse(`{"__proto__":{"polluted":true}}`)
      const created = yield* Admin.createIdentity({ workspaceId, externalId: "proto", meta: parsed })
      assert.deepStrictEqual(JSON.stringify(created.meta), `{"__proto__":{"polluted":true}}`)
      assert.isUndefined(({} as Record<string, unknown>)["polluted"])
      const bare = Object.assign(Object.create(null) as Record<string, unknown>, { a: 1 })
      assert.deepStrictEqual((yield* Admin.createIdentity({ workspaceId, externalId: "bare", meta: bare as never })).meta, { a: 1 })
    })))

  it.effect("the same bad body gives the same messages over HTTP (body.…) and through the admin API (input.…)", () =>
    fresh(Effect.gen(function*() {
      const kit = makeIdentityKit({ storage: layerMemory })
      const workspace = yield* Effect.promise(() => kit.admin.createWorkspace({ name: "http" }))
      const { key } = yield* Effect.promise(() =>
        kit.admin.issueRootKey({ workspaceId: workspace.id, permissions: ["identity.*.create_identity"] })
      )
      const bodies: ReadonlyArray<Record<string, unknown>> = [
        { externalId: "" },
        { externalId: "x".repeat(256) },
        { externalId: "ok", ratelimits: [{ name: "requests", limit: -1, duration: 0 }] },
        { externalId: "ok", ratelimits: [{ name: "r", limit: 2 ** 53, duration: 1000, autoApply: "yes" }] },
        { externalId: "ok", ratelimits: Array.from({ length: 51 }, () => ({ name: "many", limit: 1, duration: 1000 })) },
        { externalId: "ok", meta: Object.fromEntries(Array.from({ length: 101 }, (_, i) => [`k${i}`, i])) },
        { externalId: "ok", meta: "text" },
        { externalId: 7 }
      ]
      for (const body of bodies) {
        const response = yield* Effect.promise(() =>
          kit.fetch(new Request("http://localhost/v2/identities.createIdentity", {
            method: "POST",
            headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
            body: JSON.stringify(body)
          }))
        )
        assert.strictEqual(response.status, 400)
        const answered = (yield* Effect.promise(() => response.json())) as {
          readonly error: { readonly errors: ReadonlyArray<{ readonly location: string; readonly message: string }> }
        }
        const overHttp = answered.error.errors.map((issue) => [issue.location.replace(/^body/, "input"), issue.message])
        const error = yield* Effect.promise(() =>
          kit.admin.createIdentity({ workspaceId: workspace.id, ...body } as never).then(() => undefined, (e: unknown) => e)
        )
        assert.instanceOf(error, InvalidInput)
        if (error instanceof InvalidInput) assert.deepStrictEqual(issues(error), overHttp, JSON.stringify(body).slice(0, 80))
      }
      yield* Effect.promise(() => kit.dispose())
    })))

  it.effect("issueRootKey: a given key of 16–256 visible ASCII characters, never echoed; permissions non-empty strings", () =>
    fresh(Effect.gen(function*() {
      const workspaceId = yield* withWorkspace
      const secret = "short-secret"
      const short = yield* invalid(Admin.issueRootKey({ workspaceId, key: Redacted.make(secret) }))
      assert.deepStrictEqual(issues(short), [["input.key", `minLength: got ${secret.length}, want ${adminLimits.minRootKeyLength}`]])
      assert.notInclude(JSON.stringify(short), secret)
      assert.notInclude(short.detail, secret)
      const oneChar = yield* invalid(Admin.issueRootKey({ workspaceId, key: Redacted.make("k") }))
      assert.deepStrictEqual(issues(oneChar), [["input.key", "minLength: got 1, want 16"]])
      const spaced = yield* invalid(Admin.issueRootKey({ workspaceId, key: Redacted.make("a key with spaces in it") }))
      assert.strictEqual(spaced.errors[0]?.location, "input.key")
      assert.match(spaced.errors[0]?.message ?? "", /^pattern: only visible ASCII/)
      const plain = yield* invalid(Admin.issueRootKey({ workspaceId, key: "not-a-redacted-string" as never }))
      assert.deepStrictEqual(issues(plain), [["input.key", "got string, want a Redacted string"]])
      assert.notInclude(JSON.stringify(plain), "not-a-redacted-string")
      const perms = yield* invalid(Admin.issueRootKey({
        workspaceId,
        permissions: ["identity.*.read_identity", "", 7 as never],
        name: "",
        expiresAt: -1,
        enabled: "yes" as never
      }))
      assert.deepStrictEqual(issues(perms), [
        ["input.permissions[1]", "minLength: got 0, want 1"],
        ["input.permissions[2]", "got integer, want string"],
        ["input.name", "minLength: got 0, want 1"],
        ["input.enabled", "got string, want boolean"],
        ["input.expiresAt", "minimum: got -1, want 0"]
      ])
      const noWorkspace = yield* invalid(Admin.issueRootKey({ workspaceId: "" }))
      assert.deepStrictEqual(issues(noWorkspace), [["input.workspaceId", "minLength: got 0, want 1"]])

      // Exactly 16 works, and it is the key; no permissions at all is allowed (every endpoint refuses it).
      const given = "0123456789abcdef"
      const issued = yield* Admin.issueRootKey({ workspaceId, key: Redacted.make(given), permissions: [] })
      assert.strictEqual(Redacted.value(issued.key), given)
      assert.strictEqual(issued.rootKey.hash, hashRootKey(given))
      assert.deepStrictEqual(issued.rootKey.permissions, [])
      const generated = yield* Admin.issueRootKey({ workspaceId })
      assert.match(Redacted.value(generated.key), /^unkey_[1-9A-HJ-NP-Za-km-z]{30,}$/)
    })))

  it.effect("updateRootKey and revokeRootKey: patch and keyId checked (patch.…, keyId)", () =>
    fresh(Effect.gen(function*() {
      const workspaceId = yield* withWorkspace
      const { rootKey } = yield* Admin.issueRootKey({ workspaceId })
      const error = yield* invalid(Admin.updateRootKey("", { permissions: [""], expiresAt: 1.5, enabled: null as never }))
      assert.deepStrictEqual(issues(error), [
        ["keyId", "minLength: got 0, want 1"],
        ["patch.enabled", "got null, want boolean"],
        ["patch.permissions[0]", "minLength: got 0, want 1"],
        ["patch.expiresAt", "got number, want integer"]
      ])
      assert.deepStrictEqual(issues(yield* invalid(Admin.revokeRootKey(""))), [["keyId", "minLength: got 0, want 1"]])
      const changed = yield* Admin.updateRootKey(rootKey.id, { expiresAt: null, permissions: ["a"] })
      assert.deepStrictEqual(changed?.permissions, ["a"])
      assert.isNull(changed?.expiresAt)
      assert.isTrue(yield* Admin.revokeRootKey(rootKey.id))
      assert.isFalse(yield* Admin.revokeRootKey("key_missing"))
    })))

  it.effect("createWorkspace: id 1–128 of a–z A–Z 0–9 _ . -, name 1–255", () =>
    fresh(Effect.gen(function*() {
      const error = yield* invalid(Admin.createWorkspace({ id: "ws one/two", name: "", enabled: 1 as never }))
      assert.deepStrictEqual(issues(error), [
        ["input.id", "pattern: want ^[a-zA-Z0-9_.-]+$"],
        ["input.name", "minLength: got 0, want 1"],
        ["input.enabled", "got integer, want boolean"]
      ])
      assert.deepStrictEqual(issues(yield* invalid(Admin.createWorkspace({ id: "w".repeat(129) }))), [["input.id", "maxLength: got 129, want 128"]])
      assert.deepStrictEqual(issues(yield* invalid(Admin.createWorkspace(null as never))), [["input", "got null, want object"]])
      const made = yield* Admin.createWorkspace({ id: "w".repeat(128) })
      assert.deepStrictEqual([made.id.length, made.name, made.enabled], [128, "default", true])
    })))

  it.effect("updateWorkspace: changes only what the patch names, keeps createdAt; null for none; patch checked", () =>
    fresh(Effect.gen(function*() {
      const made = yield* Admin.createWorkspace({ id: "ws_up", name: "acme" })
      // Neighbours on both sides: the lookup is exact, not the next id.
      yield* Admin.createWorkspace({ id: "ws_u" })
      yield* Admin.createWorkspace({ id: "ws_upz" })
      const disabled = yield* Admin.updateWorkspace("ws_up", { enabled: false })
      assert.deepStrictEqual(disabled, { ...made, enabled: false })
      const renamed = yield* Admin.updateWorkspace("ws_up", { name: "acme inc" })
      assert.deepStrictEqual(renamed, { ...made, name: "acme inc", enabled: false })
      assert.isNull(yield* Admin.updateWorkspace("ws_uo", { enabled: true }))
      assert.isNull(yield* Admin.updateWorkspace("ws_upa", { enabled: true }))
      assert.deepStrictEqual((yield* Admin.listWorkspaces()).items.find((ws) => ws.id === "ws_up"), renamed)
      const error = yield* invalid(Admin.updateWorkspace("", { name: "", enabled: "no" as never }))
      assert.deepStrictEqual(issues(error), [
        ["workspaceId", "minLength: got 0, want 1"],
        ["patch.name", "minLength: got 0, want 1"],
        ["patch.enabled", "got string, want boolean"]
      ])
    })))

  it.effect("getIdentity and deleteIdentity: workspaceId and identity must be non-empty strings", () =>
    fresh(Effect.gen(function*() {
      assert.deepStrictEqual(issues(yield* invalid(Admin.getIdentity("", ""))), [
        ["workspaceId", "minLength: got 0, want 1"],
        ["identity", "minLength: got 0, want 1"]
      ])
      assert.deepStrictEqual(issues(yield* invalid(Admin.deleteIdentity("ws", 5 as never))), [["identity", "got integer, want string"]])
    })))
})

describe("Admin: workspaces must exist", () => {
  it.effect("issueRootKey and createIdentity for a missing workspace: WorkspaceNotFound naming it; nothing stored", () =>
    fresh(Effect.gen(function*() {
      const key = yield* Effect.flip(Admin.issueRootKey({ workspaceId: "ws_nowhere", key: Redacted.make("nowhere-key-0123456789") }))
      assert.strictEqual(key._tag, "WorkspaceNotFound")
      if (key._tag === "WorkspaceNotFound") {
        assert.strictEqual(key.workspaceId, "ws_nowhere")
        assert.strictEqual(key.message, "Workspace 'ws_nowhere' does not exist.")
      }
      const store = yield* IdentityStore
      assert.isNull(yield* store.findRootKey(hashRootKey("nowhere-key-0123456789")))
      const identity = yield* Effect.flip(Admin.createIdentity({ workspaceId: "ws_nowhere", externalId: "user_1" }))
      assert.strictEqual(identity._tag, "WorkspaceNotFound")
      assert.isNull(yield* Admin.getIdentity("ws_nowhere", "user_1"))
      // Invalid input is reported before the workspace is looked for.
      const both = yield* Effect.flip(Admin.createIdentity({ workspaceId: "ws_nowhere", externalId: "" }))
      assert.strictEqual(both._tag, "InvalidInput")
    })))
})

describe("Admin: lists", () => {
  /** Every page of a list, checking each: `cursor` only on a full page. */
  const pages = <A>(list: (cursor: string | undefined) => Effect.Effect<Page<A>, unknown, IdentityStore>, limit: number) =>
    Effect.gen(function*() {
      const all: Array<ReadonlyArray<A>> = []
      let cursor: string | undefined
      do {
        const page: Page<A> = yield* list(cursor)
        all.push(page.items)
        if (page.cursor !== undefined) assert.strictEqual(page.items.length, limit)
        // `cursor` is left out, not `undefined`, on the last page.
        else assert.notProperty(page, "cursor")
        cursor = page.cursor
        assert.isBelow(all.length, 50)
      } while (cursor !== undefined)
      return all
    })

  it.effect("listWorkspaces, listRootKeys (no hash), listIdentities (search), listAuditLog: pages of limit, opaque cursors", () =>
    fresh(Effect.gen(function*() {
      const workspaceId = yield* withWorkspace
      for (let i = 0; i < 4; i++) yield* Admin.createWorkspace({ id: `ws_list_${i}` })
      const workspaces = yield* pages((cursor) => Admin.listWorkspaces(cursor === undefined ? { limit: 2 } : { limit: 2, cursor }), 2)
      assert.deepStrictEqual(workspaces.map((page) => page.length), [2, 2, 1])
      assert.deepStrictEqual(workspaces.flat().map((w) => w.id), [workspaceId, "ws_list_0", "ws_list_1", "ws_list_2", "ws_list_3"].sort())

      for (let i = 0; i < 5; i++) yield* Admin.issueRootKey({ workspaceId, name: `k${i}` })
      const keys = (yield* pages((cursor) => Admin.listRootKeys(workspaceId, cursor === undefined ? { limit: 3 } : { limit: 3, cursor }), 3)).flat()
      assert.strictEqual(keys.length, 5)
      for (const key of keys) assert.notProperty(key, "hash")

      for (let i = 0; i < 7; i++) yield* Admin.createIdentity({ workspaceId, externalId: i < 3 ? `acme_${i}` : `other_${i}` })
      const found = (yield* pages((cursor) =>
        Admin.listIdentities(workspaceId, cursor === undefined ? { limit: 2, search: " ACME " } : { limit: 2, cursor, search: " ACME " }), 2)).flat()
      assert.deepStrictEqual(found.map((identity) => identity.externalId).sort(), ["acme_0", "acme_1", "acme_2"])
      for (const identity of found) assert.notProperty(identity, "metaJson")

      // The admin API writes no audit entries; the HTTP endpoints do. Here, the store writes them.
      const store = yield* IdentityStore
      const audit = { actorId: "key_x", actorName: "root key", remoteIp: "", userAgent: "" }
      for (let i = 0; i < 3; i++) yield* store.createIdentity({ workspaceId, externalId: `audited_${i}`, ratelimits: [], now: i, audit })
      const log = yield* pages((cursor) => Admin.listAuditLog(workspaceId, cursor === undefined ? { limit: 1 } : { limit: 1, cursor }), 1)
      assert.deepStrictEqual(log.flat().map((entry: AuditLogEntry) => entry.resources[0]?.name), ["audited_0", "audited_1", "audited_2"])
    })))

  it.effect("defaults and bounds: limit 100 by default, 1–1000; a cursor only for the list that made it", () =>
    fresh(Effect.gen(function*() {
      const workspaceId = yield* withWorkspace
      for (let i = 0; i < 101; i++) yield* Admin.createIdentity({ workspaceId, externalId: `user_${i}` })
      const first = yield* Admin.listIdentities(workspaceId)
      assert.strictEqual(first.items.length, 100)
      assert.isString(first.cursor)
      assert.notInclude(first.cursor ?? "", "id_", "opaque: not the identity id itself")
      assert.strictEqual((yield* Admin.listIdentities(workspaceId, { cursor: first.cursor ?? "" })).items.length, 1)
      assert.strictEqual((yield* Admin.listIdentities(workspaceId, { limit: 1000 })).items.length, 101)
      // "" starts at the beginning, as over HTTP.
      assert.strictEqual((yield* Admin.listIdentities(workspaceId, { cursor: "" })).items.length, 100)

      assert.deepStrictEqual(issues(yield* invalid(Admin.listWorkspaces({ limit: 0 }))), [["query.limit", "minimum: got 0, want 1"]])
      assert.deepStrictEqual(issues(yield* invalid(Admin.listRootKeys(workspaceId, { limit: 1001 }))), [["query.limit", "maximum: got 1001, want 1000"]])
      assert.deepStrictEqual(issues(yield* invalid(Admin.listAuditLog("", { limit: 2.5 }))), [
        ["workspaceId", "minLength: got 0, want 1"],
        ["query.limit", "got number, want integer"]
      ])
      assert.deepStrictEqual(
        issues(yield* invalid(Admin.listIdentities(workspaceId, { search: "s".repeat(257) }))),
        [["query.search", "maxLength: got 257, want 256"]]
      )
      // Another list's cursor, garbage, a non-canonical spelling: refused at query.cursor.
      const identityCursor = first.cursor ?? ""
      for (
        const cursor of [identityCursor, "garbage!", `${identityCursor}=`, encodeCursor("auditLog", "x"), encodeCursor("workspaces", "")]
      ) {
        const error = yield* invalid(Admin.listWorkspaces({ cursor }))
        assert.deepStrictEqual(error.errors.map((issue) => issue.location), ["query.cursor"], cursor)
        assert.strictEqual(error.errors[0]?.message, "not a cursor of workspaces")
      }
      const auditError = yield* invalid(Admin.listAuditLog(workspaceId, { cursor: encodeCursor("auditLog", "-1") }))
      assert.deepStrictEqual(issues(auditError), [["query.cursor", "not a cursor of auditLog"]])
    })))

  it("cursors: made and read back by the list that made them", () => {
    assert.deepStrictEqual(decodeCursor("identities", encodeCursor("identities", "id_abc")), Either.right("id_abc"))
    assert.deepStrictEqual(decodeCursor("auditLog", encodeCursor("auditLog", 42)), Either.right(42))
    assert.deepStrictEqual(decodeCursor("auditLog", encodeCursor("auditLog", Number.MAX_SAFE_INTEGER)), Either.right(Number.MAX_SAFE_INTEGER))
    assert.isTrue(Either.isLeft(decodeCursor("auditLog", encodeCursor("auditLog", "9007199254740993"))))
    assert.isTrue(Either.isLeft(decodeCursor("rootKeys", encodeCursor("identities", "id_abc"))))
    assert.deepStrictEqual(decodeCursor("rootKeys", undefined), Either.right(undefined))
  })
})
