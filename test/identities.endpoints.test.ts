/**
 * `createIdentity`, `getIdentity`, `listIdentities` and `deleteIdentity` over HTTP (identities
 * contract §1–§4 and its Decisions): every ported case of the contract's "Tests" lists, on memory,
 * PGlite and (with `DATABASE_URL`) PostgreSQL, one kit per storage and one workspace per test. Then,
 * on memory, what no storage changes: the shared rules on all five endpoints, error content
 * negotiation (§0.5), storage failures (500) and the `endpoints` option.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import {
  type IdentityKit,
  IdentityStore,
  type IdentityStoreService,
  layerMemory,
  makeIdentityKit,
  makeMemory,
  StorageError
} from "identity-kit"
import {
  ALL_PERMISSIONS,
  type Answer,
  bearer,
  call,
  codeUnitSort,
  createdId,
  type Endpoint,
  ENDPOINTS,
  ERROR_BASE,
  expectError,
  expectOk,
  ID,
  type IdentityBody,
  identityOf,
  missing,
  MISSING_PATTERN,
  pageOf,
  PATHS,
  PERMISSION,
  schemaDetail,
  seedIdentity,
  seedLegacyIdentity,
  storages,
  storedRows,
  useKit,
  workspace,
  type Ws
} from "./support/identities.js"
import { auditLogOf } from "./support/audit.js"
import { goneWorkspaceKey, layerMemoryWithGoneWorkspace } from "./support/gone-workspace.js"

const INVALID_INPUT = "unkey/application/invalid_input"
const MALFORMED = "unkey/authentication/malformed"
const KEY_NOT_FOUND = "unkey/authentication/key_not_found"
const INSUFFICIENT = "unkey/authorization/insufficient_permissions"
const IDENTITY_NOT_FOUND = "unkey/data/identity_not_found"
const ALREADY_EXISTS = "unkey/data/identity_already_exists"
const MALFORMED_DETAIL =
  "You must provide a valid root key in the Authorization header in the format 'Bearer ROOT_KEY'. Your authorization header is missing the 'Bearer ' prefix."

const rl = (name: string, limit = 10, duration = 60_000, autoApply?: boolean) =>
  autoApply === undefined ? { name, limit, duration } : { name, limit, duration, autoApply }

const promise = <A>(f: () => Promise<A>) => Effect.promise(f)

/** The workspace's audit entries, oldest first. */
const auditOf = (ws: Ws) => promise(() => auditLogOf(ws.kit, ws.workspaceId))

/** Every page of a listing, following `cursor` (with the same limit and search) until it is omitted. */
const walk = (ws: Ws, body: { readonly limit?: number; readonly search?: string }, authorization?: string) =>
  Effect.gen(function*() {
    const pages: Array<ReadonlyArray<IdentityBody>> = []
    let cursor: string | undefined
    for (let i = 0; i < 50; i++) {
      const page = pageOf(
        yield* call(ws, "listIdentities", cursor === undefined ? body : { ...body, cursor }, authorization === undefined ? {} : { authorization })
      )
      pages.push(page.data)
      if (!page.hasMore) return pages
      // The cursor is the id of the next page's first identity (contract §3).
      cursor = page.cursor
    }
    return assert.fail("more than 50 pages")
  })

const ids = (items: ReadonlyArray<IdentityBody>) => items.map((identity) => identity.id)

for (const storage of storages) {
  describe(`identities endpoints on ${storage.name}`, () => {
    const env = useKit(storage)

    // --- §1 createIdentity ------------------------------------------------------------------

    describe("createIdentity", () => {
      it.effect("200: externalId only; stored meta {} and environment default; the id resolves via getIdentity", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const id = createdId(yield* call(ws, "createIdentity", { externalId: "user_only" }))
          const stored = yield* promise(() => ws.kit.admin.getIdentity(ws.workspaceId, "user_only"))
          assert.strictEqual(stored?.id, id)
          assert.deepStrictEqual(stored?.meta, {})
          assert.strictEqual(stored?.environment, "default")
          assert.deepStrictEqual(stored?.ratelimits, [])
          assert.strictEqual(stored?.deleted, false)
          assert.isNull(stored?.updatedAt)
          assert.deepStrictEqual(identityOf(yield* call(ws, "getIdentity", { identity: id })), {
            id,
            externalId: "user_only",
            meta: {}
          })
        }))

      it.effect("200: nested and typed meta round-trips (null values, arrays, empty objects)", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const meta = {
            nil: null,
            list: [1, "two", null, { three: [] }, [true, false]],
            empty: {},
            nested: { a: { b: { c: "d" } } },
            num: -1500.25,
            big: 2 ** 53 - 1,
            yes: true,
            text: "ünïcödé 🙂 \"quoted\""
          }
          const id = createdId(yield* call(ws, "createIdentity", { externalId: "typed_meta", meta }))
          assert.deepStrictEqual(identityOf(yield* call(ws, "getIdentity", { identity: id })).meta, meta)
          assert.deepStrictEqual((yield* promise(() => ws.kit.admin.getIdentity(ws.workspaceId, id)))?.meta, meta)
          const empty = createdId(yield* call(ws, "createIdentity", { externalId: "empty_meta", meta: {} }))
          assert.deepStrictEqual(identityOf(yield* call(ws, "getIdentity", { identity: empty })).meta, {})
        }))

      it.effect("200: meta and 2 ratelimits together are stored as sent (autoApply defaults to false)", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const id = createdId(yield* call(ws, "createIdentity", {
            externalId: "with_limits",
            meta: { plan: "pro" },
            ratelimits: [rl("requests", 100, 60_000, true), rl("api_calls", 5, 1000)]
          }))
          const got = identityOf(yield* call(ws, "getIdentity", { identity: "with_limits" }))
          assert.strictEqual(got.id, id)
          assert.deepStrictEqual(got.meta, { plan: "pro" })
          // Ordered by name (Decision §0.4).
          assert.deepStrictEqual(got.ratelimits?.map(({ id: _, ...rest }) => rest), [
            { name: "api_calls", limit: 5, duration: 1000, autoApply: false },
            { name: "requests", limit: 100, duration: 60_000, autoApply: true }
          ])
          const stored = yield* promise(() => ws.kit.admin.getIdentity(ws.workspaceId, id))
          assert.deepStrictEqual(stored?.ratelimits.map((r) => r.id), got.ratelimits?.map((r) => r.id))
        }))

      it.effect("200: three externalIds get three distinct ids; \"123\", 255 characters and every allowed character pass", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const created: Array<string> = []
          for (const externalId of ["user_a", "user_b", "user_c", "123", "x".repeat(255), "a.B-c_9"]) {
            created.push(createdId(yield* call(ws, "createIdentity", { externalId })))
          }
          assert.strictEqual(new Set(created).size, created.length)
          assert.strictEqual(identityOf(yield* call(ws, "getIdentity", { identity: "123" })).id, created[3])
        }))

      it.effect("200: unknown top-level keys (and unknown ratelimit keys) are ignored", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const id = createdId(yield* call(ws, "createIdentity", {
            externalId: "extra_keys",
            environment: "production",
            foo: { bar: 1 },
            ratelimits: [{ ...rl("tokens", 3, 2000), extra: true }]
          }))
          const stored = yield* promise(() => ws.kit.admin.getIdentity(ws.workspaceId, id))
          assert.strictEqual(stored?.environment, "default")
          assert.deepStrictEqual(stored?.meta, {})
          const got = identityOf(yield* call(ws, "getIdentity", { identity: id }))
          assert.deepStrictEqual(got.ratelimits?.map((r) => [r.name, r.limit, r.duration, r.autoApply]), [["tokens", 3, 2000, false]])
        }))

      it.effect("audit: one identity.create, then one ratelimit.create per ratelimit (displays end with a period)", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const id = createdId(yield* call(
            ws,
            "createIdentity",
            { externalId: "audited", ratelimits: [rl("zeta"), rl("alpha")] },
            { "x-forwarded-for": "203.0.113.9, 10.0.0.1", "user-agent": "ids-test/1.0" }
          ))
          const got = identityOf(yield* call(ws, "getIdentity", { identity: id }))
          const rlId = (name: string) => got.ratelimits?.find((r) => r.name === name)?.id ?? "missing"
          const log = yield* auditOf(ws)
          assert.strictEqual(log.length, 3)
          assert.deepStrictEqual([log[0]?.event, log[0]?.display], ["identity.create", `Created identity ${id}.`])
          assert.deepStrictEqual(log[0]?.resources, [{ type: "identity", id, name: "audited" }])
          const rest = log.slice(1).map((e) => [e.event, e.display, JSON.stringify(e.resources)]).sort((a, b) => String(a[1]).localeCompare(String(b[1])))
          const expected = ["zeta", "alpha"].map((name) => [
            "ratelimit.create",
            `Created ratelimit ${rlId(name)}.`,
            JSON.stringify([{ type: "identity", id, name: "audited" }, { type: "ratelimit", id: rlId(name), name }])
          ]).sort((a, b) => String(a[1]).localeCompare(String(b[1])))
          assert.deepStrictEqual(rest, expected)
          for (const entry of log) {
            assert.match(entry.id, ID("log"))
            assert.strictEqual(entry.workspaceId, ws.workspaceId)
            assert.strictEqual(entry.actorType, "rootkey")
            assert.strictEqual(entry.actorId, ws.keyId)
            assert.strictEqual(entry.actorName, "root key")
            assert.strictEqual(entry.remoteIp, "203.0.113.9")
            assert.strictEqual(entry.userAgent, "ids-test/1.0")
          }
        }))

      it.effect("400 schema: every case of the contract, nothing stored", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const keys = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, i]))
          const cases: ReadonlyArray<readonly [unknown, string]> = [
            [{}, "body.externalId"],
            [{ externalId: "" }, "body.externalId"],
            [{ externalId: "no_name", ratelimits: [{ limit: 1, duration: 1000 }] }, "body.ratelimits[0].name"],
            [{ externalId: "neg_limit", ratelimits: [rl("abc", -10)] }, "body.ratelimits[0].limit"],
            [{ externalId: "zero_limit", ratelimits: [rl("abc", 0)] }, "body.ratelimits[0].limit"],
            [{ externalId: "short_duration", ratelimits: [rl("abc", 1, 999)] }, "body.ratelimits[0].duration"],
            [{ externalId: "many_keys", meta: keys(101) }, "body.meta"],
            [{ externalId: "a b" }, "body.externalId"],
            [{ externalId: "x".repeat(256) }, "body.externalId"],
            [{ externalId: "a@b" }, "body.externalId"],
            [{ externalId: "a:b" }, "body.externalId"],
            [{ externalId: "ünï" }, "body.externalId"],
            [{ externalId: 7 }, "body.externalId"],
            [{ externalId: "null_meta", meta: null }, "body.meta"],
            [{ externalId: "null_rl", ratelimits: null }, "body.ratelimits"],
            [{ externalId: "array_meta", meta: [1] }, "body.meta"],
            [{ externalId: "many_rl", ratelimits: Array.from({ length: 51 }, (_, i) => rl(`rl_${i}`)) }, "body.ratelimits"],
            ["[]", "body"]
          ]
          for (const [body, location] of cases) {
            const error = expectError(yield* call(ws, "createIdentity", body), 400, INVALID_INPUT, { title: "Bad Request" })
            assert.strictEqual(error.detail, schemaDetail("createIdentity"), JSON.stringify(body))
            assert.isNotEmpty(error.errors, JSON.stringify(body))
            assert.include(error.errors?.map((e) => e.location) ?? [], location, JSON.stringify(body))
          }
          // 100 keys and 50 ratelimits are the edges that pass.
          createdId(yield* call(ws, "createIdentity", { externalId: "edge", meta: keys(100), ratelimits: Array.from({ length: 50 }, (_, i) => rl(`rl_${i}`)) }))
          assert.deepStrictEqual((yield* auditOf(ws)).filter((e) => e.event === "identity.create").length, 1)
        }))

      it.effect("400: meta larger than 1 MiB, with errors: []", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          // {"k":"…"} is 8 bytes of framing: 1,069,548 bytes is 1.02 MiB.
          const error = expectError(
            yield* call(ws, "createIdentity", { externalId: "big_meta", meta: { k: "x".repeat(1_069_548 - 8) } }),
            400,
            INVALID_INPUT
          )
          assert.strictEqual(error.detail, "Metadata is too large, it must be less than 1MB, got: 1.02")
          assert.deepStrictEqual(error.errors, [])
          assert.isNull(yield* promise(() => ws.kit.admin.getIdentity(ws.workspaceId, "big_meta")))
        }))

      it.effect("400 no Authorization, 400 malformed, 401 unknown key", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const body = { externalId: "external_test_id" }
          const none = expectError(yield* call(ws, "createIdentity", body, { authorization: undefined }), 400, INVALID_INPUT)
          assert.strictEqual(none.detail, "Authorization header for 'bearer' scheme")
          assert.strictEqual(none.errors?.[0]?.location, "security")
          const malformed = expectError(yield* call(ws, "createIdentity", body, { authorization: "malformed_header" }), 400, MALFORMED)
          assert.strictEqual(malformed.detail, MALFORMED_DETAIL)
          const unknown = expectError(yield* call(ws, "createIdentity", body, { authorization: "Bearer invalid_token" }), 401, KEY_NOT_FOUND, { title: "Unauthorized" })
          assert.strictEqual(unknown.detail, "The provided root key is invalid. We could not find the requested key.")
          assert.isNull(yield* promise(() => ws.kit.admin.getIdentity(ws.workspaceId, "external_test_id")))
        }))

      it.effect("403: only the exact identity.*.create_identity counts; nothing stored", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const cases: ReadonlyArray<ReadonlyArray<string>> = [
            [],
            ["*"],
            ["identity.*"],
            ["identity.create_identity"],
            ["IDENTITY.*.CREATE_IDENTITY"],
            [PERMISSION.read, PERMISSION.update, PERMISSION.delete]
          ]
          for (const permissions of cases) {
            const error = expectError(
              yield* call(ws, "createIdentity", { externalId: "external_test_id" }, { authorization: yield* bearer(ws, permissions) }),
              403,
              INSUFFICIENT,
              { title: "Insufficient Permissions" }
            )
            assert.strictEqual(error.detail, missing([PERMISSION.create], permissions))
          }
          assert.isNull(yield* promise(() => ws.kit.admin.getIdentity(ws.workspaceId, "external_test_id")))
          // The exact permission alone is enough.
          createdId(yield* call(ws, "createIdentity", { externalId: "external_test_id" }, { authorization: yield* bearer(ws, [PERMISSION.create]) }))
        }))

      it.effect("409: a live identity with the same externalId; no errors key, nothing written", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const first = createdId(yield* call(ws, "createIdentity", { externalId: "dup_user", ratelimits: [rl("abc")] }))
          const conflict = yield* call(ws, "createIdentity", { externalId: "dup_user", meta: { other: true } })
          const error = expectError(conflict, 409, ALREADY_EXISTS)
          assert.deepStrictEqual(error, {
            title: "Conflicting Resource",
            detail: "Identity with externalId 'dup_user' already exists in this workspace.",
            status: 409,
            type: ERROR_BASE + ALREADY_EXISTS
          })
          const stored = yield* promise(() => ws.kit.admin.getIdentity(ws.workspaceId, "dup_user"))
          assert.strictEqual(stored?.id, first)
          assert.deepStrictEqual(stored?.meta, {})
          assert.deepStrictEqual((yield* auditOf(ws)).map((e) => e.event), ["identity.create", "ratelimit.create"])
          // Uniqueness is per workspace.
          const other = yield* workspace(env())
          createdId(yield* call(other, "createIdentity", { externalId: "dup_user" }))
        }))

      it.effect("Decision: duplicate ratelimit names → 400 and nothing stored; after the permission, before meta size", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const body = { externalId: "dup_names", ratelimits: [rl("same"), rl("other"), rl("same", 2)] }
          const error = expectError(yield* call(ws, "createIdentity", body), 400, INVALID_INPUT, { title: "Bad Request" })
          assert.strictEqual(error.detail, "Ratelimit with name 'same' is already defined in the request")
          assert.deepStrictEqual(error.errors, [])
          assert.isNull(yield* promise(() => ws.kit.admin.getIdentity(ws.workspaceId, "dup_names")))
          assert.deepStrictEqual(yield* auditOf(ws), [])
          // Exact, case-sensitive names: these are distinct.
          createdId(yield* call(ws, "createIdentity", { externalId: "case_names", ratelimits: [rl("abc"), rl("ABC")] }))
          // Order: permission → duplicate names → meta size.
          const unprivileged = yield* bearer(ws, [PERMISSION.read])
          assert.strictEqual((yield* call(ws, "createIdentity", body, { authorization: unprivileged })).status, 403)
          const both = yield* call(ws, "createIdentity", { ...body, meta: { k: "x".repeat(1_100_000) } })
          assert.strictEqual(both.body.error?.detail, "Ratelimit with name 'same' is already defined in the request")
        }))

      it.effect("Decision: create → delete → create the same externalId → 200 with a new id", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const first = createdId(yield* call(ws, "createIdentity", { externalId: "reused", ratelimits: [rl("abc")] }))
          expectOk(yield* call(ws, "deleteIdentity", { identity: "reused" }))
          const second = createdId(yield* call(ws, "createIdentity", { externalId: "reused" }))
          assert.notStrictEqual(second, first)
          const got = identityOf(yield* call(ws, "getIdentity", { identity: "reused" }))
          assert.deepStrictEqual(got, { id: second, externalId: "reused", meta: {} })
        }))
    })

    // --- §2 getIdentity ---------------------------------------------------------------------

    describe("getIdentity", () => {
      it.effect("200 by externalId and by internal id: meta, ratelimits by name, no other fields", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const meta = { name: "Test User", email: "test@example.com", plan: "pro", credits: 100 }
          const identity = yield* seedIdentity(ws, "test_user", {
            meta,
            ratelimits: [rl("requests", 1000, 3_600_000, true), rl("api_calls", 100, 60_000)]
          })
          const byExternal = identityOf(yield* call(ws, "getIdentity", { identity: "test_user" }))
          assert.deepStrictEqual(byExternal, {
            id: identity.id,
            externalId: "test_user",
            meta,
            ratelimits: [
              { id: identity.ratelimits[0]?.id ?? "", name: "api_calls", limit: 100, duration: 60_000, autoApply: false },
              { id: identity.ratelimits[1]?.id ?? "", name: "requests", limit: 1000, duration: 3_600_000, autoApply: true }
            ]
          })
          const works = yield* seedIdentity(ws, "unkey_works")
          assert.deepStrictEqual(identityOf(yield* call(ws, "getIdentity", { identity: works.id })), {
            id: works.id,
            externalId: "unkey_works",
            meta: {}
          })
          // Read-only: no audit entries.
          assert.deepStrictEqual(yield* auditOf(ws), [])
        }))

      it.effect("no meta → {}; no ratelimits → key absent; >1 KB nested meta round-trips; 10 ratelimits → all 10", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          yield* seedIdentity(ws, "bare")
          const bare = identityOf(yield* call(ws, "getIdentity", { identity: "bare" }))
          assert.deepStrictEqual(bare.meta, {})
          assert.isFalse("ratelimits" in bare)

          const meta = {
            profile: { bio: "b".repeat(800), tags: Array.from({ length: 30 }, (_, i) => `tag-${i}`) },
            settings: { theme: { dark: true, palette: ["#000", "#fff"] }, limits: { a: 1, b: null } }
          }
          assert.isAbove(JSON.stringify(meta).length, 1024)
          yield* seedIdentity(ws, "large_meta", { meta })
          assert.deepStrictEqual(identityOf(yield* call(ws, "getIdentity", { identity: "large_meta" })).meta, meta)

          const names = Array.from({ length: 10 }, (_, i) => `limit_${9 - i}`)
          yield* seedIdentity(ws, "ten", { ratelimits: names.map((name, i) => rl(name, i + 1, 1000 * (i + 1))) })
          const ten = identityOf(yield* call(ws, "getIdentity", { identity: "ten" }))
          assert.deepStrictEqual(ten.ratelimits?.map((r) => r.name), codeUnitSort(names))
          const nine = ten.ratelimits?.find((r) => r.name === "limit_9")
          assert.deepStrictEqual([nine?.limit, nine?.duration, nine?.autoApply], [1, 1000, false])
        }))

      it.effect("id match wins over externalId match; lookups are case-sensitive", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const first = yield* seedIdentity(ws, "first", { meta: { which: "first" } })
          yield* seedIdentity(ws, first.id, { meta: { which: "second" } })
          assert.deepStrictEqual(identityOf(yield* call(ws, "getIdentity", { identity: first.id })).meta, { which: "first" })
          yield* seedIdentity(ws, "CaseUser")
          expectError(yield* call(ws, "getIdentity", { identity: "caseuser" }), 404, IDENTITY_NOT_FOUND)
          expectError(yield* call(ws, "getIdentity", { identity: first.id.toLowerCase() }), 404, IDENTITY_NOT_FOUND)
        }))

      it.effect("400: empty identity, {} and unknown keys are schema errors", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const empty = expectError(yield* call(ws, "getIdentity", { identity: "" }), 400, INVALID_INPUT)
          assert.strictEqual(empty.detail, schemaDetail("getIdentity"))
          assert.deepStrictEqual([empty.errors?.[0]?.location, empty.errors?.[0]?.message], ["body.identity", "minLength: got 0, want 1"])
          const none = expectError(yield* call(ws, "getIdentity", {}), 400, INVALID_INPUT)
          assert.strictEqual(none.detail, schemaDetail("getIdentity"))
          assert.deepStrictEqual(none.errors?.map((e) => e.message), ["missing property 'identity'"])
          const extra = expectError(yield* call(ws, "getIdentity", { identity: "x", foo: 1 }), 400, INVALID_INPUT)
          assert.deepStrictEqual(extra.errors?.map((e) => e.message), ["additional properties 'foo' not allowed"])
          const typed = expectError(yield* call(ws, "getIdentity", { identity: 5 }), 400, INVALID_INPUT)
          assert.deepStrictEqual(typed.errors?.map((e) => e.message), ["got integer, want string"])
        }))

      it.effect("400 no Authorization, 400 malformed, 401 unknown key", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const body = { identity: "anything" }
          const none = expectError(yield* call(ws, "getIdentity", body, { authorization: undefined }), 400, INVALID_INPUT)
          assert.strictEqual(none.detail, "Authorization header for 'bearer' scheme")
          expectError(yield* call(ws, "getIdentity", body, { authorization: "InvalidFormat xyz" }), 400, MALFORMED)
          expectError(yield* call(ws, "getIdentity", body, { authorization: "Bearer invalid_key" }), 401, KEY_NOT_FOUND)
        }))

      it.effect("403: a key without permissions on an existing identity; a key for another identity", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const identity = yield* seedIdentity(ws, "guarded")
          const other = yield* seedIdentity(ws, "other_one")
          const none = expectError(
            yield* call(ws, "getIdentity", { identity: "guarded" }, { authorization: yield* bearer(ws, []) }),
            403,
            INSUFFICIENT,
            { title: "Insufficient Permissions" }
          )
          assert.strictEqual(none.detail, missing([PERMISSION.read], []))
          const otherPermission = `identity.${other.id}.read_identity`
          for (const target of ["guarded", identity.id]) {
            const error = expectError(
              yield* call(ws, "getIdentity", { identity: target }, { authorization: yield* bearer(ws, [otherPermission]) }),
              403,
              INSUFFICIENT
            )
            assert.match(error.detail, MISSING_PATTERN)
            // After the lookup both alternatives are listed, the wildcard first.
            assert.strictEqual(error.detail, missing([PERMISSION.read, `identity.${identity.id}.read_identity`], [otherPermission]))
          }
          // A permission naming the externalId never counts; neither do `*`, update or delete.
          for (const permissions of [["identity.guarded.read_identity"], ["*"], [PERMISSION.update, PERMISSION.delete, PERMISSION.create]]) {
            const answer = yield* call(ws, "getIdentity", { identity: "guarded" }, { authorization: yield* bearer(ws, permissions) })
            expectError(answer, 403, INSUFFICIENT)
          }
          const lower = yield* call(ws, "getIdentity", { identity: "guarded" }, { authorization: yield* bearer(ws, ["IDENTITY.*.READ_IDENTITY"]) })
          expectError(lower, 403, INSUFFICIENT)
        }))

      it.effect("404: unknown externalId (exact body); soft-deleted by externalId and by id; another workspace's", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const unknown = yield* call(ws, "getIdentity", { identity: "does_not_exist" })
          expectError(unknown, 404, IDENTITY_NOT_FOUND)
          assert.deepStrictEqual(unknown.body.error, {
            title: "Not Found",
            detail: "This identity does not exist.",
            status: 404,
            type: ERROR_BASE + IDENTITY_NOT_FOUND
          })
          const gone = yield* seedIdentity(ws, "gone", { ratelimits: [rl("abc")] })
          assert.isTrue(yield* promise(() => ws.kit.admin.deleteIdentity(ws.workspaceId, "gone")))
          expectError(yield* call(ws, "getIdentity", { identity: "gone" }), 404, IDENTITY_NOT_FOUND)
          expectError(yield* call(ws, "getIdentity", { identity: gone.id }), 404, IDENTITY_NOT_FOUND)
          const foreign = yield* workspace(env())
          const theirs = yield* seedIdentity(foreign, "theirs")
          expectError(yield* call(ws, "getIdentity", { identity: "theirs" }), 404, IDENTITY_NOT_FOUND)
          expectError(yield* call(ws, "getIdentity", { identity: theirs.id }), 404, IDENTITY_NOT_FOUND)
        }))

      it.effect("404, never 500: identities no storage can hold (NUL, lone surrogate), odd and long strings", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          for (const identity of ["a\u0000b", "test_" + "\u0000".repeat(1000), "@#$%", "x".repeat(1005), "%", "_", "' OR 1=1 --"]) {
            expectError(yield* call(ws, "getIdentity", { identity }), 404, IDENTITY_NOT_FOUND)
          }
          expectError(yield* call(ws, "getIdentity", "{\"identity\":\"x\\ud800\"}"), 404, IDENTITY_NOT_FOUND)
        }))

      it.effect("Decision P0: a key with no read permission + unknown identity → 403 (reference: 404)", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          for (const permissions of [[], [PERMISSION.update, PERMISSION.create, PERMISSION.delete], ["identity.read_identity"]]) {
            const error = expectError(
              yield* call(ws, "getIdentity", { identity: "nobody_here" }, { authorization: yield* bearer(ws, permissions) }),
              403,
              INSUFFICIENT
            )
            assert.strictEqual(error.detail, missing([PERMISSION.read], permissions))
          }
          // A per-identity read permission passes P0: the unknown identity is then a 404.
          const someone = yield* seedIdentity(ws, "someone")
          expectError(
            yield* call(ws, "getIdentity", { identity: "nobody_here" }, { authorization: yield* bearer(ws, [`identity.${someone.id}.read_identity`]) }),
            404,
            IDENTITY_NOT_FOUND
          )
        }))

      it.effect("Decision: identity.<id>.read_identity reads that identity by id or by externalId", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const identity = yield* seedIdentity(ws, "mine", { meta: { a: 1 } })
          const authorization = yield* bearer(ws, [`identity.${identity.id}.read_identity`])
          for (const target of [identity.id, "mine"]) {
            assert.deepStrictEqual(identityOf(yield* call(ws, "getIdentity", { identity: target }, { authorization })), {
              id: identity.id,
              externalId: "mine",
              meta: { a: 1 }
            })
          }
        }))
    })

    // --- §3 listIdentities ------------------------------------------------------------------

    describe("listIdentities", () => {
      /** 15 identities with meta {plan:"pro"}, every other one with api_calls 100/60000. */
      const fifteen = (ws: Ws) =>
        Effect.promise(() =>
          Promise.all(Array.from({ length: 15 }, (_, i) =>
            ws.kit.admin.createIdentity({
              workspaceId: ws.workspaceId,
              externalId: `test_identity_${i}`,
              meta: { plan: "pro", index: i },
              ratelimits: i % 2 === 0 ? [rl("api_calls", 100, 60_000)] : []
            })))
        )

      it.effect("15 identities: all listed in id order with meta and their ratelimits; ratelimits absent exactly when none", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const created = yield* fifteen(ws)
          const page = pageOf(yield* call(ws, "listIdentities", {}))
          assert.strictEqual(page.hasMore, false)
          assert.deepStrictEqual(ids(page.data), codeUnitSort(created.map((c) => c.id)))
          for (const item of page.data) {
            const source = created.find((c) => c.id === item.id)
            const index = Number(source?.externalId.slice("test_identity_".length))
            assert.strictEqual(item.externalId, `test_identity_${index}`)
            assert.deepStrictEqual(item.meta, { plan: "pro", index })
            if (index % 2 === 0) {
              assert.deepStrictEqual(item.ratelimits, [
                { id: source?.ratelimits[0]?.id ?? "", name: "api_calls", limit: 100, duration: 60_000, autoApply: false }
              ])
            } else {
              assert.isFalse("ratelimits" in item)
            }
          }
          // Read-only: listing writes no audit entry (and admin creates write none).
          assert.deepStrictEqual(yield* auditOf(ws), [])
        }))

      it.effect("limit 5 → 5 and the next page's first id as cursor; limit 7 → pages 7/7/1 with no overlap", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const sorted = codeUnitSort((yield* fifteen(ws)).map((c) => c.id))
          const five = pageOf(yield* call(ws, "listIdentities", { limit: 5 }))
          assert.deepStrictEqual(ids(five.data), sorted.slice(0, 5))
          assert.isTrue(five.hasMore)
          assert.strictEqual(five.cursor, sorted[5])
          const seven = pageOf(yield* call(ws, "listIdentities", { limit: 7 }))
          assert.deepStrictEqual(ids(seven.data), sorted.slice(0, 7))
          assert.strictEqual(seven.cursor, sorted[7])
          const second = pageOf(yield* call(ws, "listIdentities", { limit: 7, cursor: seven.cursor }))
          assert.isNotEmpty(second.data)
          assert.deepStrictEqual(ids(second.data), sorted.slice(7, 14))
          const pages = yield* walk(ws, { limit: 7 })
          assert.deepStrictEqual(pages.map((p) => p.length), [7, 7, 1])
          assert.deepStrictEqual(pages.flatMap(ids), sorted)
          // limit 15 and 100: one page, no cursor; limit 14: a cursor to the last one.
          assert.isFalse(pageOf(yield* call(ws, "listIdentities", { limit: 15 })).hasMore)
          assert.strictEqual(pageOf(yield* call(ws, "listIdentities", { limit: 14 })).cursor, sorted[14])
          assert.deepStrictEqual(ids(pageOf(yield* call(ws, "listIdentities", { limit: 1, cursor: sorted[14] })).data), [sorted[14]])
        }))

      it.effect("default limit is 100: 101 identities → 100 and a cursor", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const created = yield* promise(() =>
            Promise.all(Array.from({ length: 101 }, (_, i) => ws.kit.admin.createIdentity({ workspaceId: ws.workspaceId, externalId: `u${i}` })))
          )
          const sorted = codeUnitSort(created.map((c) => c.id))
          const page = pageOf(yield* call(ws, "listIdentities", {}))
          assert.deepStrictEqual(ids(page.data), sorted.slice(0, 100))
          assert.strictEqual(page.cursor, sorted[100])
          assert.deepStrictEqual(ids(pageOf(yield* call(ws, "listIdentities", { limit: 100 })).data), sorted.slice(0, 100))
        }))

      it.effect("cursor: \"\" starts at the beginning; any other string is a lower bound (garbage → 200)", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const sorted = codeUnitSort((yield* fifteen(ws)).map((c) => c.id))
          assert.deepStrictEqual(ids(pageOf(yield* call(ws, "listIdentities", { cursor: "" })).data), sorted)
          // Ids start with "id_": "invalid_cursor_format" sorts after them all, "a" before them all.
          assert.deepStrictEqual(pageOf(yield* call(ws, "listIdentities", { cursor: "invalid_cursor_format" })).data, [])
          assert.deepStrictEqual(ids(pageOf(yield* call(ws, "listIdentities", { cursor: "a" })).data), sorted)
          // Strings PostgreSQL text cannot hold are still just lower bounds (below every id): 200, never 500.
          assert.deepStrictEqual(ids(pageOf(yield* call(ws, "listIdentities", { cursor: "\u0000' OR 1=1 --" })).data), sorted)
          assert.deepStrictEqual(ids(pageOf(yield* call(ws, "listIdentities", "{\"cursor\":\"\\ud800\"}")).data), [])
          const middle = sorted[6] ?? ""
          // A cursor between two ids starts at the next one.
          assert.deepStrictEqual(ids(pageOf(yield* call(ws, "listIdentities", { cursor: middle + "\u0000" })).data), sorted.slice(7))
        }))

      it.effect("soft-deleted absent; other workspaces absent; all environments present; unicode round-trips", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const prod = yield* seedIdentity(ws, "test_user_prod", { environment: "production" })
          const staging = yield* seedIdentity(ws, "test_user_staging", { environment: "staging" })
          const unicode = yield* seedLegacyIdentity(ws, "ユーザー_🙂", { meta: { name: "Zoë", emoji: "👍🏽", rtl: "مرحبا" } })
          yield* seedIdentity(ws, "deleted_one")
          assert.isTrue(yield* promise(() => ws.kit.admin.deleteIdentity(ws.workspaceId, "deleted_one")))
          const other = yield* workspace(env())
          yield* seedIdentity(other, "someone_else")
          const page = pageOf(yield* call(ws, "listIdentities", {}))
          assert.deepStrictEqual(ids(page.data), codeUnitSort([prod.id, staging.id, unicode.id]))
          const listed = page.data.find((item) => item.id === unicode.id)
          assert.deepStrictEqual(listed, { id: unicode.id, externalId: "ユーザー_🙂", meta: { name: "Zoë", emoji: "👍🏽", rtl: "مرحبا" } })
        }))

      it.effect("one identity: 1 item, hasMore false, no cursor; an empty workspace: data []", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const empty = pageOf(yield* call(ws, "listIdentities", {}))
          assert.deepStrictEqual([empty.data, empty.hasMore], [[], false])
          const only = yield* seedIdentity(ws, "only_one")
          const page = pageOf(yield* call(ws, "listIdentities", { limit: 1 }))
          assert.deepStrictEqual(page.data, [{ id: only.id, externalId: "only_one", meta: {} }])
          assert.isFalse(page.hasMore)
        }))

      it.effect("search: case-insensitive literal substring of id or externalId, trimmed", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const alice = yield* seedIdentity(ws, "acme_alice")
          const bob = yield* seedIdentity(ws, "acme_bob")
          const discount = yield* seedLegacyIdentity(ws, "discount_100%_user")
          const search = (value: string) =>
            Effect.map(call(ws, "listIdentities", { search: value }), (answer) => ids(pageOf(answer).data))
          assert.deepStrictEqual(yield* search("alice"), [alice.id])
          assert.deepStrictEqual(yield* search(bob.id), [bob.id])
          assert.deepStrictEqual(yield* search(bob.id.toLowerCase()), [bob.id])
          // The tail of an id (its head is the creation second, shared by ids made together).
          assert.deepStrictEqual(yield* search(bob.id.slice(-8)), [bob.id])
          assert.deepStrictEqual(yield* search("ACME_ALICE"), [alice.id])
          assert.deepStrictEqual(yield* search("Acme"), codeUnitSort([alice.id, bob.id]))
          assert.deepStrictEqual(yield* search("100%"), [discount.id])
          assert.deepStrictEqual(yield* search("%"), [discount.id])
          assert.deepStrictEqual(yield* search("b_b"), [])
          assert.deepStrictEqual(yield* search("does-not-exist"), [])
          assert.deepStrictEqual(yield* search("   "), codeUnitSort([alice.id, bob.id, discount.id]))
          assert.deepStrictEqual(yield* search(""), codeUnitSort([alice.id, bob.id, discount.id]))
          assert.deepStrictEqual(yield* search("  alice \n"), [alice.id])
          assert.deepStrictEqual(yield* search("x".repeat(256)), [])
          // No identity can contain what PostgreSQL text cannot hold: [], never 500.
          assert.deepStrictEqual(yield* search("\u0000"), [])
          assert.deepStrictEqual(yield* search("alice\u0000"), [])
        }))

      it.effect("search: `_`, `%` and `\\` match only themselves; search pages with the cursor", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const slash = yield* seedLegacyIdentity(ws, "back\\slash")
          const underscore = yield* seedIdentity(ws, "under_score")
          yield* seedIdentity(ws, "underXscore")
          yield* seedIdentity(ws, "backXslash")
          const search = (value: string) =>
            Effect.map(call(ws, "listIdentities", { search: value }), (answer) => ids(pageOf(answer).data))
          assert.deepStrictEqual(yield* search("\\"), [slash.id])
          assert.deepStrictEqual(yield* search("k\\s"), [slash.id])
          assert.deepStrictEqual(yield* search("r_s"), [underscore.id])
          assert.deepStrictEqual(yield* search("R_SC"), [underscore.id])
          // Every id has a literal "_" ("id_…"), so "_" matches all of them and nothing else.
          assert.strictEqual((yield* search("_")).length, 4)
          // Paging a search: same search and limit with the cursor.
          const matching = yield* promise(() =>
            Promise.all(Array.from({ length: 5 }, (_, i) => ws.kit.admin.createIdentity({ workspaceId: ws.workspaceId, externalId: `needle_${i}` })))
          )
          const pages = yield* walk(ws, { search: "NEEDLE", limit: 2 })
          assert.deepStrictEqual(pages.map((p) => p.length), [2, 2, 1])
          assert.deepStrictEqual(pages.flatMap(ids), codeUnitSort(matching.map((m) => m.id)))
        }))

      it.effect("400: limit −10, 0, 1.5, 200, 1000; cursor null; search of 257 characters; unknown keys", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const cases: ReadonlyArray<readonly [unknown, string]> = [
            [{ limit: -10 }, "body.limit"],
            [{ limit: 0 }, "body.limit"],
            [{ limit: 1.5 }, "body.limit"],
            [{ limit: 200 }, "body.limit"],
            [{ limit: 1000 }, "body.limit"],
            [{ limit: "10" }, "body.limit"],
            [{ cursor: null }, "body.cursor"],
            [{ cursor: 5 }, "body.cursor"],
            [{ search: "x".repeat(257) }, "body.search"],
            [{ search: null }, "body.search"],
            [{ foo: 1 }, "body.foo"],
            ["[]", "body"]
          ]
          for (const [body, location] of cases) {
            const error = expectError(yield* call(ws, "listIdentities", body), 400, INVALID_INPUT)
            assert.include(error.type, "invalid_input")
            assert.strictEqual(error.detail, schemaDetail("listIdentities"), JSON.stringify(body))
            assert.include(error.errors?.map((e) => e.location) ?? [], location, JSON.stringify(body))
          }
          // The edges pass.
          for (const body of [{ limit: 1 }, { limit: 100 }, { search: "x".repeat(256) }, { cursor: "", search: "", limit: 50 }]) {
            pageOf(yield* call(ws, "listIdentities", body))
          }
        }))

      it.effect("400 (ported as-is): no headers at all; InvalidFormat; a bad key without Content-Type (V runs before H1)", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          expectError(yield* call(ws, "listIdentities", {}, { authorization: undefined, "content-type": undefined }), 400, INVALID_INPUT)
          expectError(yield* call(ws, "listIdentities", {}, { authorization: "InvalidFormat xyz" }), 400, MALFORMED)
          const noType = expectError(
            yield* call(ws, "listIdentities", { limit: 10 }, { authorization: "Bearer invalid_key", "content-type": undefined }),
            400,
            INVALID_INPUT
          )
          assert.match(noType.detail, /^POST operation request content type '.*' does not exist$/)
          expectError(yield* call(ws, "listIdentities", {}, { authorization: "Bearer invalid_key" }), 401, KEY_NOT_FOUND)
        }))

      it.effect("403: no-permission key with identities present; the wildcard reads all environments; a per-identity key with a targeted search", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const prod = yield* seedIdentity(ws, "test_user_prod", { environment: "production" })
          const staging = yield* seedIdentity(ws, "test_user_staging", { environment: "staging" })
          const dev = yield* seedIdentity(ws, "test_user_dev")
          const none = expectError(
            yield* call(ws, "listIdentities", {}, { authorization: yield* bearer(ws, []) }),
            403,
            INSUFFICIENT,
            { title: "Insufficient Permissions" }
          )
          assert.include(none.detail, "Missing one of these permissions")
          assert.strictEqual(none.detail, missing([PERMISSION.read], []))

          const all = pageOf(yield* call(ws, "listIdentities", {}, { authorization: yield* bearer(ws, [PERMISSION.read]) }))
          assert.deepStrictEqual(ids(all.data), codeUnitSort([prod.id, staging.id, dev.id]))

          const own = `identity.${prod.id}.read_identity`
          const authorization = yield* bearer(ws, [own])
          const targeted = pageOf(yield* call(ws, "listIdentities", { search: "test_user_prod" }, { authorization }))
          assert.deepStrictEqual(ids(targeted.data), [prod.id])
          // Without the search the page holds identities it may not read: the first of them, in
          // page order, is named, its own permission first.
          const expectedDenied = codeUnitSort([prod.id, staging.id, dev.id]).find((id) => id !== prod.id) ?? ""
          const denied = expectError(yield* call(ws, "listIdentities", {}, { authorization }), 403, INSUFFICIENT)
          assert.strictEqual(denied.detail, missing([`identity.${expectedDenied}.read_identity`, PERMISSION.read], [own]))
          assert.match(denied.detail, MISSING_PATTERN)
          // A search with no match needs no per-row permission, only P0.
          assert.deepStrictEqual(pageOf(yield* call(ws, "listIdentities", { search: "nothing_matches" }, { authorization })).data, [])
          // Exact strings only.
          for (const permissions of [["*"], ["IDENTITY.*.READ_IDENTITY"], [PERMISSION.update, PERMISSION.create, PERMISSION.delete]]) {
            expectError(yield* call(ws, "listIdentities", {}, { authorization: yield* bearer(ws, permissions) }), 403, INSUFFICIENT)
          }
        }))

      it.effect("Decision P0: a key with no read permission on an empty workspace → 403 (reference: 200 [])", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          for (const permissions of [[], [PERMISSION.update], ["identity.read_identity"]]) {
            const error = expectError(
              yield* call(ws, "listIdentities", { search: "anything" }, { authorization: yield* bearer(ws, permissions) }),
              403,
              INSUFFICIENT
            )
            assert.strictEqual(error.detail, missing([PERMISSION.read], permissions))
          }
          // The wildcard on the empty workspace: 200, data [].
          assert.deepStrictEqual(pageOf(yield* call(ws, "listIdentities", {})).data, [])
        }))
    })

    // --- §4 deleteIdentity ------------------------------------------------------------------

    describe("deleteIdentity", () => {
      it.effect("200 by externalId: body exactly { meta }; then no live row, get 404, not listed; the row stays, deleted", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const identity = yield* seedIdentity(ws, "test_delete", { meta: { a: 1 } })
          const keep = yield* seedIdentity(ws, "keep_me")
          const answer = yield* call(ws, "deleteIdentity", { identity: "test_delete" })
          expectOk(answer)
          assert.deepStrictEqual(Object.keys(answer.body), ["meta"])
          assert.deepStrictEqual(Object.keys(answer.body.meta), ["requestId"])
          assert.isNull(yield* promise(() => ws.kit.admin.getIdentity(ws.workspaceId, "test_delete")))
          assert.isNull(yield* promise(() => ws.kit.admin.getIdentity(ws.workspaceId, identity.id)))
          expectError(yield* call(ws, "getIdentity", { identity: "test_delete" }), 404, IDENTITY_NOT_FOUND)
          assert.deepStrictEqual(ids(pageOf(yield* call(ws, "listIdentities", {})).data), [keep.id])
          const rows = yield* storedRows(env(), identity.id)
          if (rows !== undefined) assert.strictEqual(rows.deleted, true)
          // A sequential second delete is a 404 (by externalId and by id).
          expectError(yield* call(ws, "deleteIdentity", { identity: "test_delete" }), 404, IDENTITY_NOT_FOUND)
          expectError(yield* call(ws, "deleteIdentity", { identity: identity.id }), 404, IDENTITY_NOT_FOUND)
        }))

      it.effect("200 by id for an identity with 3 ratelimits: the ratelimit rows stay; audit identity.delete + one ratelimit.delete each", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const identity = yield* seedIdentity(ws, "limited", { ratelimits: [rl("one"), rl("two"), rl("three")] })
          expectOk(yield* call(ws, "deleteIdentity", { identity: identity.id }, { "x-forwarded-for": "198.51.100.4", "user-agent": "del/1" }))
          const rows = yield* storedRows(env(), identity.id)
          if (rows !== undefined) assert.deepStrictEqual(rows, { deleted: true, ratelimits: 3 })
          const log = yield* auditOf(ws)
          assert.strictEqual(log.length, 4)
          assert.deepStrictEqual([log[0]?.event, log[0]?.display], ["identity.delete", `Deleted identity ${identity.id}.`])
          assert.deepStrictEqual(log[0]?.resources, [{ type: "identity", id: identity.id, name: "limited" }])
          const byRatelimit = log.slice(1).map((e) => [e.event, e.display, JSON.stringify(e.resources)]).sort((a, b) => String(a[1]).localeCompare(String(b[1])))
          const expected = identity.ratelimits.map((r) => [
            "ratelimit.delete",
            `Deleted ratelimit ${r.id}.`,
            JSON.stringify([{ type: "identity", id: identity.id, name: "limited" }, { type: "ratelimit", id: r.id, name: r.name }])
          ]).sort((a, b) => String(a[1]).localeCompare(String(b[1])))
          assert.deepStrictEqual(byRatelimit, expected)
          for (const entry of log) {
            assert.strictEqual(entry.workspaceId, ws.workspaceId)
            assert.strictEqual(entry.actorId, ws.keyId)
            assert.strictEqual(entry.remoteIp, "198.51.100.4")
            assert.strictEqual(entry.userAgent, "del/1")
          }
        }))

      it.effect("create X → delete → create X (new id) → delete → 200; both rows stay deleted", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const first = createdId(yield* call(ws, "createIdentity", { externalId: "twice", ratelimits: [rl("abc")] }))
          expectOk(yield* call(ws, "deleteIdentity", { identity: "twice" }))
          const second = createdId(yield* call(ws, "createIdentity", { externalId: "twice", ratelimits: [rl("abc")] }))
          assert.notStrictEqual(second, first)
          expectOk(yield* call(ws, "deleteIdentity", { identity: "twice" }))
          const old = yield* storedRows(env(), first)
          const renewed = yield* storedRows(env(), second)
          if (old !== undefined && renewed !== undefined) {
            assert.deepStrictEqual(renewed, { deleted: true, ratelimits: 1 })
            // Decision 1: the older row is still there, deleted (the reference purges it).
            assert.notStrictEqual(old.deleted, false)
          }
          expectError(yield* call(ws, "getIdentity", { identity: "twice" }), 404, IDENTITY_NOT_FOUND)
        }))

      it.effect("the Stripe flow: per_month 300000 → delete → per_month 20000 → delete → 200 (never 500)", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const month = 30 * 24 * 3_600_000
          createdId(yield* call(ws, "createIdentity", { externalId: "cus_stripe", ratelimits: [rl("per_month", 300_000, month)] }))
          expectOk(yield* call(ws, "deleteIdentity", { identity: "cus_stripe" }))
          createdId(yield* call(ws, "createIdentity", { externalId: "cus_stripe", ratelimits: [rl("per_month", 20_000, month)] }))
          expectOk(yield* call(ws, "deleteIdentity", { identity: "cus_stripe" }))
          createdId(yield* call(ws, "createIdentity", { externalId: "cus_stripe" }))
        }))

      it.effect("400: empty identity, {} and unknown keys; \"@#$%\", NUL characters and 1005 characters → 404", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          for (const body of [{ identity: "" }, {}, { identity: "x", extra: true }, { identity: null }]) {
            const error = expectError(yield* call(ws, "deleteIdentity", body), 400, INVALID_INPUT)
            assert.strictEqual(error.detail, schemaDetail("deleteIdentity"))
            assert.isNotEmpty(error.errors)
          }
          for (const identity of ["@#$%", "test_" + "\u0000".repeat(1000), "a\u0000", "x".repeat(1005)]) {
            expectError(yield* call(ws, "deleteIdentity", { identity }), 404, IDENTITY_NOT_FOUND)
          }
          expectError(yield* call(ws, "deleteIdentity", "{\"identity\":\"\\udc00x\"}"), 404, IDENTITY_NOT_FOUND)
        }))

      it.effect("400 no Authorization; 400 malformed; 401 for keys that do not exist", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          yield* seedIdentity(ws, "target")
          const body = { identity: "target" }
          const none = expectError(yield* call(ws, "deleteIdentity", body, { authorization: undefined }), 400, INVALID_INPUT)
          assert.strictEqual(none.detail, "Authorization header for 'bearer' scheme")
          for (const authorization of ["malformed_header", "Bearer "]) {
            expectError(yield* call(ws, "deleteIdentity", body, { authorization }), 400, MALFORMED)
          }
          for (const token of ["invalid_token", "not-a-valid-key-format", "random_string_not_a_key", "123"]) {
            expectError(yield* call(ws, "deleteIdentity", body, { authorization: `Bearer ${token}` }), 401, KEY_NOT_FOUND, { title: "Unauthorized" })
          }
          assert.isNotNull(yield* promise(() => ws.kit.admin.getIdentity(ws.workspaceId, "target")))
        }))

      it.effect("403: every permission set but the exact identity.*.delete_identity, before the lookup; nothing deleted", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          yield* seedIdentity(ws, "protected")
          const cases: ReadonlyArray<ReadonlyArray<string>> = [
            [],
            [PERMISSION.create],
            ["key.*.delete_key"],
            [PERMISSION.read],
            ["identity.create_identity"],
            ["key.*.delete_key", "api.*.delete_api", "workspace.*.read_workspace"],
            ["IDENTITY.*.DELETE_IDENTITY"],
            ["*"],
            ["identity.protected.delete_identity"]
          ]
          for (const permissions of cases) {
            const authorization = yield* bearer(ws, permissions)
            for (const identity of ["protected", "does_not_exist"]) {
              const error = expectError(yield* call(ws, "deleteIdentity", { identity }, { authorization }), 403, INSUFFICIENT, { title: "Insufficient Permissions" })
              assert.strictEqual(error.detail, missing([PERMISSION.delete], permissions))
            }
          }
          assert.isNotNull(yield* promise(() => ws.kit.admin.getIdentity(ws.workspaceId, "protected")))
          assert.deepStrictEqual(yield* auditOf(ws), [])
          // The exact permission alone is enough.
          expectOk(yield* call(ws, "deleteIdentity", { identity: "protected" }, { authorization: yield* bearer(ws, [PERMISSION.delete]) }))
        }))

      it.effect("Decision 2: concurrent deletes of one identity: 200 or 404, never 500; one set of audit entries", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const identity = yield* seedIdentity(ws, "contested", { ratelimits: [rl("abc"), rl("def")] })
          const answers = yield* Effect.all(
            Array.from({ length: 6 }, (_, i) => call(ws, "deleteIdentity", { identity: i % 2 === 0 ? "contested" : identity.id })),
            { concurrency: "unbounded" }
          )
          for (const answer of answers) assert.include([200, 404], answer.status, answer.text)
          assert.isAtLeast(answers.filter((answer) => answer.status === 200).length, 1)
          assert.deepStrictEqual((yield* auditOf(ws)).map((e) => e.event), ["identity.delete", "ratelimit.delete", "ratelimit.delete"])
          const rows = yield* storedRows(env(), identity.id)
          if (rows !== undefined) assert.deepStrictEqual(rows, { deleted: true, ratelimits: 2 })
        }))

      it.effect("404: another workspace's key asking for a random or a foreign externalId; already deleted; a long unknown id", () =>
        Effect.gen(function*() {
          const ws = yield* workspace(env())
          const mine = yield* seedIdentity(ws, "mine_only")
          const foreign = yield* workspace(env())
          for (const identity of ["random_external_id", "mine_only", mine.id]) {
            expectError(yield* call(foreign, "deleteIdentity", { identity }), 404, IDENTITY_NOT_FOUND)
          }
          assert.isNotNull(yield* promise(() => ws.kit.admin.getIdentity(ws.workspaceId, "mine_only")))
          yield* seedIdentity(ws, "soft_deleted")
          assert.isTrue(yield* promise(() => ws.kit.admin.deleteIdentity(ws.workspaceId, "soft_deleted")))
          const deleted = yield* call(ws, "deleteIdentity", { identity: "soft_deleted" })
          expectError(deleted, 404, IDENTITY_NOT_FOUND, { title: "Not Found" })
          assert.strictEqual(deleted.body.error?.detail, "This identity does not exist.")
          expectError(yield* call(ws, "deleteIdentity", { identity: "id_" + "1".repeat(300) }), 404, IDENTITY_NOT_FOUND)
          // None of these wrote an audit entry.
          assert.deepStrictEqual(yield* auditOf(ws), [])
          assert.deepStrictEqual(yield* auditOf(foreign), [])
        }))
    })
  })
}

// --- what no storage changes (memory) ------------------------------------------------------

/** A memory kit with one workspace, a key holding every permission and identity `user_123`. */
const memoryWorkspace = (options: { readonly maxBodyBytes?: number } = {}) =>
  Effect.gen(function*() {
    // The memory store in which `GONE_WORKSPACE`'s keys are found without their workspace (A9).
    const kit = makeIdentityKit({ storage: layerMemoryWithGoneWorkspace, ...options })
    const ws = yield* workspace({ storage: "memory", kit, sql: undefined })
    yield* seedIdentity(ws, "user_123")
    return ws
  })

/** A body each endpoint answers 200 to, in a workspace with `user_123`. */
const validBody: { readonly [E in Endpoint]: (n: number) => unknown } = {
  createIdentity: (n) => ({ externalId: `created_${n}` }),
  getIdentity: () => ({ identity: "user_123" }),
  listIdentities: () => ({}),
  updateIdentity: () => ({ identity: "user_123" }),
  deleteIdentity: () => ({ identity: "user_123" })
}

let serial = 0

/** A request each endpoint answers 200 to: creates and deletes work on an identity of their own. */
const succeed = (ws: Ws, endpoint: Endpoint, headers: Record<string, string | undefined> = {}) =>
  Effect.gen(function*() {
    const n = ++serial
    if (endpoint === "deleteIdentity") yield* seedIdentity(ws, `to_delete_${n}`)
    const body = endpoint === "deleteIdentity" ? { identity: `to_delete_${n}` } : validBody[endpoint](n)
    const answer = yield* call(ws, endpoint, body, headers)
    expectOk(answer)
    return answer
  })

/** A body each endpoint's schema rejects. */
const invalidBody: { readonly [E in Endpoint]: unknown } = {
  createIdentity: { externalId: "" },
  getIdentity: { identity: "" },
  listIdentities: { limit: 0 },
  updateIdentity: { identity: "" },
  deleteIdentity: { identity: "" }
}

describe("shared rules on all five endpoints (memory)", () => {
  it.effect("V1–V5 with the endpoint's path in V3/V4/V5 details", () =>
    Effect.gen(function*() {
      const ws = yield* memoryWorkspace()
      for (const endpoint of ENDPOINTS) {
        const v1 = expectError(yield* call(ws, endpoint, validBody[endpoint](1), { authorization: undefined }), 400, INVALID_INPUT)
        assert.strictEqual(v1.detail, "Authorization header for 'bearer' scheme", endpoint)
        assert.deepStrictEqual(v1.errors, [{
          location: "security",
          message: "Authorization header was not found",
          fix: "Add an 'Authorization' header to this request"
        }])
        const v2 = expectError(yield* call(ws, endpoint, validBody[endpoint](1), { "content-type": "text/plain" }), 400, INVALID_INPUT)
        assert.strictEqual(v2.detail, "POST operation request content type 'text/plain' does not exist", endpoint)
        const v3 = expectError(yield* call(ws, endpoint, ""), 400, INVALID_INPUT)
        assert.strictEqual(v3.detail, `POST request body is empty for '${PATHS[endpoint]}'`)
        const v4 = expectError(yield* call(ws, endpoint, "{"), 400, INVALID_INPUT)
        assert.strictEqual(v4.detail, schemaDetail(endpoint))
        assert.strictEqual(v4.errors?.length, 1)
        const v5 = expectError(yield* call(ws, endpoint, invalidBody[endpoint]), 400, INVALID_INPUT)
        assert.strictEqual(v5.detail, schemaDetail(endpoint))
        assert.isNotEmpty(v5.errors)
        // Parameters on the Content-Type are allowed.
        yield* succeed(ws, endpoint, { "content-type": "application/json; charset=utf-8" })
      }
    }))

  it.effect("A1, A4, A6–A9 on every endpoint", () =>
    Effect.gen(function*() {
      const ws = yield* memoryWorkspace()
      const issue = (input: { readonly workspaceId: string; readonly enabled?: boolean; readonly expiresAt?: number }) =>
        Effect.map(promise(() => ws.kit.admin.issueRootKey({ permissions: ALL_PERMISSIONS, ...input })), ({ key }) => `Bearer ${key}`)
      const disabled = yield* issue({ workspaceId: ws.workspaceId, enabled: false })
      const expired = yield* issue({ workspaceId: ws.workspaceId, expiresAt: Date.UTC(2024, 0, 2, 3, 4, 5) })
      yield* promise(() => ws.kit.admin.createWorkspace({ id: "ws_off", enabled: false }))
      const off = yield* issue({ workspaceId: "ws_off" })
      const orphan = `Bearer ${yield* promise(() => goneWorkspaceKey(ws.kit, { permissions: ALL_PERMISSIONS }))}`
      for (const endpoint of ENDPOINTS) {
        const body = validBody[endpoint](3)
        expectError(yield* call(ws, endpoint, body, { authorization: "Basic abc" }), 400, MALFORMED)
        expectError(yield* call(ws, endpoint, body, { authorization: "Bearer unkey_nope" }), 401, KEY_NOT_FOUND)
        expectError(yield* call(ws, endpoint, body, { authorization: disabled }), 403, "unkey/authorization/key_disabled", { title: "Key is disabled" })
        const a7 = expectError(yield* call(ws, endpoint, body, { authorization: expired }), 403, "unkey/authorization/forbidden")
        assert.strictEqual(a7.detail, "The provided root key is invalid. the key has expired on 2024-01-02T03:04:05Z")
        expectError(yield* call(ws, endpoint, body, { authorization: off }), 403, "unkey/authorization/workspace_disabled")
        expectError(yield* call(ws, endpoint, body, { authorization: orphan }), 404, "unkey/data/workspace_not_found")
      }
    }))

  it.effect("a bad body and a bad key → the body's 400; 405 for other methods; 413 over the size limit", () =>
    Effect.gen(function*() {
      const ws = yield* memoryWorkspace()
      const small = yield* memoryWorkspace({ maxBodyBytes: 64 })
      for (const endpoint of ENDPOINTS) {
        const answer = yield* call(ws, endpoint, invalidBody[endpoint], { authorization: "Bearer wrong" })
        assert.strictEqual(answer.body.error?.detail, schemaDetail(endpoint))
        for (const method of ["GET", "PUT", "DELETE"]) {
          expectError(yield* call(ws, endpoint, method === "GET" ? undefined : validBody[endpoint](4), {}, { method }), 405, "unkey/application/method_not_allowed")
        }
        const big = yield* call(small, endpoint, { identity: "user_123", externalId: "x", pad: "x".repeat(100) })
        expectError(big, 413, "user/bad_request/request_body_too_large")
      }
    }))
})

describe("error Content-Type negotiation, §0.5 (memory)", () => {
  const problem = [
    "application/problem+json",
    "application/*",
    "*/*",
    "application/json, */*;q=0.1",
    "text/html, application/problem+json;q=0.9",
    "text/html,application/*"
  ]
  const plain = [undefined, "application/json", "text/html", "application/json; charset=utf-8", "application/problem+xml"]

  it.effect("errors: problem+json when Accept lists it, application/* or */*; else application/json — on every endpoint", () =>
    Effect.gen(function*() {
      const ws = yield* memoryWorkspace()
      for (const endpoint of ENDPOINTS) {
        for (const accept of problem) {
          const answer = yield* call(ws, endpoint, validBody[endpoint](5), { authorization: "Bearer unkey_nope", accept })
          expectError(answer, 401, KEY_NOT_FOUND, { contentType: "application/problem+json" })
          const invalid = yield* call(ws, endpoint, invalidBody[endpoint], { accept })
          expectError(invalid, 400, INVALID_INPUT, { contentType: "application/problem+json" })
        }
        for (const accept of plain) {
          const answer = yield* call(ws, endpoint, validBody[endpoint](5), { authorization: "Bearer unkey_nope", accept })
          expectError(answer, 401, KEY_NOT_FOUND, { contentType: "application/json" })
        }
      }
    }))

  it.effect("404, 409 and 403 are negotiated too; 200s are always application/json", () =>
    Effect.gen(function*() {
      const ws = yield* memoryWorkspace()
      const accept = "application/problem+json"
      expectError(yield* call(ws, "deleteIdentity", { identity: "nobody" }, { accept }), 404, IDENTITY_NOT_FOUND, { contentType: accept })
      expectError(yield* call(ws, "getIdentity", { identity: "nobody" }, { accept: "*/*" }), 404, IDENTITY_NOT_FOUND, { contentType: accept })
      expectError(yield* call(ws, "updateIdentity", { identity: "nobody" }, { accept }), 404, IDENTITY_NOT_FOUND, { contentType: accept })
      expectError(yield* call(ws, "createIdentity", { externalId: "user_123" }, { accept }), 409, ALREADY_EXISTS, { contentType: accept })
      expectError(yield* call(ws, "createIdentity", { externalId: "user_123" }), 409, ALREADY_EXISTS, { contentType: "application/json" })
      const unprivileged = yield* bearer(ws, [])
      expectError(yield* call(ws, "listIdentities", {}, { authorization: unprivileged, accept }), 403, INSUFFICIENT, { contentType: accept })
      for (const endpoint of ENDPOINTS) {
        for (const value of [...problem, ...plain]) yield* succeed(ws, endpoint, { accept: value })
      }
    }))
})

describe("storage failures answer the endpoint's sentence, never the cause (memory)", () => {
  const LEAK = "SELECT secret FROM pg_shadow"
  const fail = (operation: string) => () => Effect.fail(new StorageError({ operation, cause: new Error(LEAK) }))
  const failing = (override: (memory: IdentityStoreService) => IdentityStoreService): IdentityKit =>
    makeIdentityKit({ storage: Layer.effect(IdentityStore, Effect.map(makeMemory, override)) })

  const cases: ReadonlyArray<{
    readonly endpoint: Endpoint
    readonly kit: () => IdentityKit
    readonly body: unknown
    readonly detail: string
    readonly type: string
  }> = [
    {
      endpoint: "createIdentity",
      kit: () => failing((m) => ({ ...m, createIdentity: fail("createIdentity") })),
      body: { externalId: "boom", ratelimits: [rl("abc")] },
      detail: "We're unable to create the identity and its ratelimits.",
      type: "unkey/application/unexpected_error"
    },
    {
      endpoint: "getIdentity",
      kit: () => failing((m) => ({ ...m, getIdentity: fail("getIdentity") })),
      body: { identity: "boom" },
      detail: "We're unable to retrieve the identity.",
      type: "unkey/application/unexpected_error"
    },
    {
      endpoint: "listIdentities",
      kit: () => failing((m) => ({ ...m, listIdentities: fail("listIdentities") })),
      body: { search: "boom" },
      detail: "We're unable to list the identities.",
      type: "unkey/application/unexpected_error"
    },
    {
      endpoint: "deleteIdentity",
      kit: () => failing((m) => ({ ...m, deleteIdentity: fail("deleteIdentity") })),
      body: { identity: "boom" },
      detail: "Failed to delete Identity.",
      type: "unkey/application/service_unavailable"
    }
  ]

  for (const c of cases) {
    it.effect(`${c.endpoint}: 500 ${c.detail}`, () =>
      Effect.gen(function*() {
        const kit = c.kit()
        const created = yield* promise(() => kit.admin.createWorkspace({ name: "failing" }))
        const { key } = yield* promise(() => kit.admin.issueRootKey({ workspaceId: created.id, permissions: ALL_PERMISSIONS }))
        const target = { kit, rootKey: key }
        for (const accept of [undefined, "*/*"]) {
          const answer: Answer = yield* call(target, c.endpoint, c.body, { accept })
          const error = expectError(answer, 500, c.type, { contentType: accept === undefined ? "application/json" : "application/problem+json" })
          assert.deepStrictEqual(error, { title: "Internal Server Error", detail: c.detail, status: 500, type: ERROR_BASE + c.type })
          assert.notInclude(answer.text, "pg_shadow")
          assert.notInclude(answer.text, key)
          assert.notInclude(answer.text, "    at ")
        }
        yield* promise(() => kit.dispose())
      }))
  }
})

describe("the endpoints option", () => {
  it.effect("default: all five served", () =>
    Effect.sync(() => {
      const kit = makeIdentityKit({ storage: layerMemory })
      assert.deepStrictEqual([...kit.routes].sort(), Object.values(PATHS).sort())
      for (const path of Object.values(PATHS)) assert.isTrue(kit.handles(path), path)
    }))

  it.effect("[\"updateIdentity\"] serves only that route; the others are 404", () =>
    Effect.gen(function*() {
      const kit = makeIdentityKit({ storage: layerMemory, endpoints: ["updateIdentity"] })
      assert.deepStrictEqual(kit.routes, [PATHS.updateIdentity])
      const ws = yield* workspace({ storage: "memory", kit, sql: undefined })
      yield* seedIdentity(ws, "user_123")
      expectOk(yield* call(ws, "updateIdentity", { identity: "user_123", meta: { a: 1 } }))
      for (const endpoint of ENDPOINTS.filter((e) => e !== "updateIdentity")) {
        assert.isFalse(kit.handles(PATHS[endpoint]))
        expectError(yield* call(ws, endpoint, validBody[endpoint](7)), 404, "unkey/application/route_not_found")
      }
      // Nothing was created or deleted through the unserved routes.
      assert.isNotNull(yield* promise(() => kit.admin.getIdentity(ws.workspaceId, "user_123")))
      assert.isNull(yield* promise(() => kit.admin.getIdentity(ws.workspaceId, "created_7")))
    }))

  it("unknown names throw a TypeError at makeIdentityKit", () => {
    for (const endpoints of [["nope"], ["updateIdentity", "getIdentities"], ["UpdateIdentity"]]) {
      assert.throws(
        // @ts-expect-error: not endpoint names, on purpose.
        () => makeIdentityKit({ storage: layerMemory, endpoints }),
        TypeError
      )
    }
  })
})
