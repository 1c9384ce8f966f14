/**
 * Success rules of spec §3 and §5 through the fetch handler on memory storage, plus the request
 * program run directly on its services under `TestClock`.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Redacted, TestClock } from "effect"
import { Admin, Authorization, IdentityStore, layerMemory } from "identity-kit"
import { makeRequestProgram, resolveHttpOptions } from "../src/http/program.js"
import { selectRoutes } from "../src/http/routes.js"
import * as AuthorizationLayer from "../src/services/Authorization.js"
import { type Answer, call, seed } from "./support/core.js"
import { adminAuditLog, auditLogOf } from "./support/audit.js"

const data = (answer: Answer) => {
  assert.strictEqual(answer.status, 200, JSON.stringify(answer.body))
  assert.strictEqual(answer.contentType, "application/json")
  assert.match(answer.body.meta.requestId, /^req_[1-9A-HJ-NP-Za-km-z]+$/)
  assert.isUndefined(answer.body.error)
  const d = answer.body.data
  if (d === undefined) throw new Error("no data")
  // No null in data's own fields (meta is the user's JSON and may hold nulls); ratelimits never [].
  assert.notInclude(JSON.stringify({ ...d, meta: {} }), "null")
  if ("ratelimits" in d) assert.isAbove(d.ratelimits?.length ?? 0, 0)
  return d
}

const rl = (name: string, limit = 10, duration = 60_000, autoApply?: boolean) =>
  autoApply === undefined ? { name, limit, duration } : { name, limit, duration, autoApply }

describe("success body (spec §3)", () => {
  it.effect("answers the identity after the update, ratelimits in request order", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      const d = data(yield* call(s, {
        identity: "user_123",
        meta: { plan: "premium" },
        ratelimits: [rl("zeta", 1000, 3_600_000, true), rl("requests", 7), rl("alpha", 3)]
      }))
      assert.match(String(d["id"]), /^id_[1-9A-HJ-NP-Za-km-z]+$/)
      assert.strictEqual(d["externalId"], "user_123")
      assert.deepStrictEqual(d["meta"], { plan: "premium" })
      assert.deepStrictEqual(d.ratelimits?.map((r) => r["name"]), ["zeta", "requests", "alpha"])
      assert.deepStrictEqual(Object.keys(d.ratelimits?.[0] ?? {}).sort(), ["autoApply", "duration", "id", "limit", "name"])
      for (const r of d.ratelimits ?? []) assert.match(String(r["id"]), /^rl_[1-9A-HJ-NP-Za-km-z]+$/)
      assert.deepStrictEqual(d.ratelimits?.[0], { ...d.ratelimits?.[0], limit: 1000, duration: 3_600_000, autoApply: true })
      assert.strictEqual(d.ratelimits?.[1]?.["autoApply"], false)
    }))

  it.effect("without ratelimits in the request: the stored set, by name; meta kept when omitted", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      const d = data(yield* call(s, { identity: "user_123" }))
      assert.deepStrictEqual(d["meta"], { plan: "free" })
      assert.deepStrictEqual(d.ratelimits?.map((r) => r["name"]), ["requests", "tokens"])
    }))

  it.effect("id match wins over externalId match", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      const first = yield* Effect.promise(() => s.kit.admin.createIdentity({ workspaceId: s.workspaceId, externalId: "first" }))
      // A second identity whose externalId is the first one's id.
      const second = yield* Effect.promise(() => s.kit.admin.createIdentity({ workspaceId: s.workspaceId, externalId: first.id }))
      const d = data(yield* call(s, { identity: first.id, meta: { hit: true } }))
      assert.strictEqual(d["id"], first.id)
      const untouched = yield* Effect.promise(() => s.kit.admin.getIdentity(s.workspaceId, second.id))
      assert.deepStrictEqual(untouched?.meta, {})
    }))
})

describe("the write (spec §5)", () => {
  it.effect("replace-set: kept names keep their id, new names get one, missing names go", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      const before = yield* Effect.promise(() => s.kit.admin.getIdentity(s.workspaceId, "user_123"))
      const oldRequests = before?.ratelimits.find((r) => r.name === "requests")
      const d = data(yield* call(s, { identity: "user_123", ratelimits: [rl("requests", 999, 1000, false), rl("new_one")] }))
      assert.strictEqual(d.ratelimits?.[0]?.["id"], oldRequests?.id)
      assert.strictEqual(d.ratelimits?.[0]?.["limit"], 999)
      assert.notStrictEqual(d.ratelimits?.[1]?.["id"], oldRequests?.id)
      const after = yield* Effect.promise(() => s.kit.admin.getIdentity(s.workspaceId, "user_123"))
      assert.deepStrictEqual(after?.ratelimits.map((r) => r.name), ["new_one", "requests"])
      assert.isNotNull(after?.ratelimits.find((r) => r.name === "requests")?.updatedAt)
    }))

  it.effect("sending the same request twice is idempotent: same ids, same rows", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      const body = { identity: "user_123", meta: { a: 1 }, ratelimits: [rl("one"), rl("two")] }
      const first = data(yield* call(s, body))
      const second = data(yield* call(s, body))
      assert.deepStrictEqual(second, first)
      const stored = yield* Effect.promise(() => s.kit.admin.getIdentity(s.workspaceId, "user_123"))
      assert.strictEqual(stored?.ratelimits.length, 2)
    }))

  it.effect("meta {} clears, [] deletes every ratelimit, omitted fields are untouched", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      const cleared = data(yield* call(s, { identity: "user_123", meta: {} }))
      assert.deepStrictEqual(cleared["meta"], {})
      assert.strictEqual(cleared.ratelimits?.length, 2)
      const none = data(yield* call(s, { identity: "user_123", ratelimits: [] }))
      assert.isFalse("ratelimits" in none)
      assert.deepStrictEqual(none["meta"], {})
      const stored = yield* Effect.promise(() => s.kit.admin.getIdentity(s.workspaceId, "user_123"))
      assert.deepStrictEqual(stored?.ratelimits, [])
    }))

  it.effect("unicode, special characters and __proto__ are stored and answered literally", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      const raw = `{"identity":"user_123","meta":{"__proto__":{"polluted":true},"constructor":{"prototype":{"x":1}},` +
        `"emoji":"🙂👍🏽","rtl":"مرحبا","nul":"a\\u0000b","quote":"\\"'<>&","lone":"\\ud800","nested":{"a":[1,null,true,{"b":"ç"}]}}}`
      const d = data(yield* call(s, raw))
      const meta = d["meta"] as Record<string, unknown>
      assert.deepStrictEqual(Object.keys(meta), ["__proto__", "constructor", "emoji", "rtl", "nul", "quote", "lone", "nested"])
      assert.deepStrictEqual(Object.getOwnPropertyDescriptor(meta, "__proto__")?.value, { polluted: true })
      assert.strictEqual(meta["emoji"], "🙂👍🏽")
      assert.strictEqual(meta["nul"], "a\u0000b")
      assert.strictEqual(meta["lone"], "\ud800")
      assert.isUndefined(({} as Record<string, unknown>)["polluted"])
      const stored = yield* Effect.promise(() => s.kit.admin.getIdentity(s.workspaceId, "user_123"))
      assert.strictEqual(Object.getPrototypeOf(stored?.meta), Object.prototype)
      assert.isTrue(Object.prototype.hasOwnProperty.call(stored?.meta, "__proto__"))
    }))

  it.effect("audit entries: one identity.update plus one per ratelimit touched, with actor, ip and agent", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed({ trustProxy: true }))
      const d = data(yield* call(
        s,
        { identity: "user_123", ratelimits: [rl("requests"), rl("fresh")] },
        { "x-forwarded-for": "203.0.113.7, 10.0.0.1", "user-agent": "test-agent/1.0" }
      ))
      const log = yield* Effect.promise(() => auditLogOf(s.kit, s.workspaceId))
      const requests = d.ratelimits?.[0]?.["id"]
      const fresh = d.ratelimits?.[1]?.["id"]
      const before = yield* Effect.promise(() => s.kit.admin.getIdentity(s.workspaceId, "user_123"))
      assert.isDefined(before)
      assert.deepStrictEqual(
        log.map((e) => [e.event, e.display]),
        [
          ["identity.update", `Updated identity ${d["id"]}`],
          ["ratelimit.create", `Created ratelimit ${fresh}`],
          ["ratelimit.update", `Updated ratelimit ${requests}`],
          ["ratelimit.delete", log[3]?.display ?? "missing"]
        ]
      )
      assert.match(log[3]?.display ?? "", /^Deleted ratelimit rl_/)
      for (const entry of log) {
        assert.match(entry.id, /^log_/)
        assert.strictEqual(entry.workspaceId, s.workspaceId)
        assert.strictEqual(entry.actorType, "rootkey")
        assert.strictEqual(entry.actorId, s.keyId)
        assert.strictEqual(entry.actorName, "root key")
        assert.strictEqual(entry.remoteIp, "203.0.113.7")
        assert.strictEqual(entry.userAgent, "test-agent/1.0")
        assert.deepStrictEqual(entry.resources[0], { type: "identity", id: String(d["id"]), name: "user_123" })
      }
      assert.deepStrictEqual(log[1]?.resources[1], { type: "ratelimit", id: String(fresh), name: "fresh" })
      // A rejected request writes nothing.
      yield* call(s, { identity: "user_123", ratelimits: [rl("x1x"), rl("x1x")] })
      assert.strictEqual((yield* Effect.promise(() => auditLogOf(s.kit, s.workspaceId))).length, 4)
    }))

  it.effect("a retried request is harmless: same state, one more set of audit entries", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      const body = { identity: "user_123", meta: { v: 2 }, ratelimits: [rl("requests", 1)] }
      const a = data(yield* call(s, body))
      const b = data(yield* call(s, body))
      assert.deepStrictEqual(a, b)
      const log = yield* Effect.promise(() => auditLogOf(s.kit, s.workspaceId))
      assert.deepStrictEqual(log.map((e) => e.event), [
        "identity.update",
        "ratelimit.update",
        "ratelimit.delete",
        "identity.update",
        "ratelimit.update"
      ])
    }))
})

describe("the request program on its services", () => {
  const services = AuthorizationLayer.layer.pipe(Layer.provideMerge(layerMemory))
  const program = makeRequestProgram(resolveHttpOptions({ trustProxy: true }), selectRoutes(undefined))

  it.effect("uses the Effect Clock for timestamps and key expiry (TestClock)", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(1_800_000_000_000)
      yield* Admin.createWorkspace({ id: "ws_clock" })
      const { key } = yield* Admin.issueRootKey({ workspaceId: "ws_clock", expiresAt: 1_800_000_060_000 })
      yield* Admin.createIdentity({ workspaceId: "ws_clock", externalId: "ext" })
      // The program runs in this fiber, on the services in context: no kit, no runtime of its own.
      const update = (meta: object) =>
        program({
          method: "POST",
          path: "/v2/identities.updateIdentity",
          headers: {
            authorization: `Bearer ${Redacted.value(key)}`,
            "content-type": "application/json",
            "x-forwarded-for": "198.51.100.1"
          },
          body: new TextEncoder().encode(JSON.stringify({ identity: "ext", meta }))
        }, (effect) => effect).pipe(Effect.map((response) => ({ status: response.status, body: JSON.parse(response.body) })))
      yield* TestClock.adjust("59 seconds")
      const result = yield* update({ t: 1 })
      assert.strictEqual(result.status, 200)
      assert.deepStrictEqual(result.body.data.meta, { t: 1 })
      const stored = yield* Effect.flatMap(IdentityStore, (store) => store.getIdentity("ws_clock", "ext"))
      assert.strictEqual(stored?.updatedAt, 1_800_000_059_000)
      const log = yield* adminAuditLog("ws_clock")
      assert.strictEqual(log[0]?.time, 1_800_000_059_000)
      assert.strictEqual(log[0]?.remoteIp, "198.51.100.1")
      // Expired exactly at expiresAt.
      yield* TestClock.adjust("1 second")
      const expired = yield* update({ t: 2 })
      assert.strictEqual(expired.status, 403)
      assert.strictEqual(expired.body.error.detail, "The provided root key is invalid. the key has expired on 2027-01-15T08:01:00Z")
      // Services resolve from their tags.
      yield* Authorization
    }).pipe(Effect.provide(services)))
})
