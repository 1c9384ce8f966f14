/**
 * Property: whatever JSON (or non-JSON) a client sends, the answer is a 2xx or a 4xx with the
 * documented shape — never a 500, never a thrown exception.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, FastCheck as fc } from "effect"
import { call, seed, type Answer } from "./support/core.js"

const seeded = seed()

const json = fc.jsonValue({ maxDepth: 4 })
const maybe = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: undefined })
const ratelimit = fc.record(
  {
    name: fc.oneof(fc.string({ minLength: 0, maxLength: 140 }), json),
    limit: fc.oneof(fc.integer(), fc.double(), fc.constant(2 ** 53), json),
    duration: fc.oneof(fc.integer({ min: -10, max: 10_000_000 }), json),
    autoApply: fc.oneof(fc.boolean(), json),
    extra: json
  },
  { requiredKeys: [] }
)
const requestLike = fc.record(
  {
    identity: fc.oneof(fc.constantFrom("user_123", "nobody", ""), fc.string(), json),
    meta: fc.oneof(fc.dictionary(fc.string(), json, { maxKeys: 8 }), json),
    ratelimits: fc.oneof(fc.array(ratelimit, { maxLength: 6 }), json),
    unknownKey: json
  },
  { requiredKeys: [] }
)

const checkShape = (answer: Answer) => {
  assert.include([200, 400, 404, 413], answer.status, JSON.stringify(answer.body))
  assert.strictEqual(answer.contentType, "application/json")
  assert.match(answer.body.meta.requestId, /^req_/)
  if (answer.status === 200) {
    assert.isDefined(answer.body.data)
    return
  }
  const error = answer.body.error
  assert.isDefined(error)
  assert.strictEqual(error?.status, answer.status)
  assert.isString(error?.detail)
  if (answer.status === 400 || answer.status === 413) assert.isArray(error?.errors)
  else assert.isUndefined(error?.errors)
}

describe("any body gives a documented 2xx/4xx", () => {
  it.effect.prop("request-shaped JSON", [requestLike], ([body]) =>
    Effect.gen(function*() {
      checkShape(yield* call(yield* Effect.promise(() => seeded), body))
    }), { fastCheck: { numRuns: 300 } })

  it.effect.prop("arbitrary JSON values", [json], ([body]) =>
    Effect.gen(function*() {
      checkShape(yield* call(yield* Effect.promise(() => seeded), JSON.stringify(body)))
    }), { fastCheck: { numRuns: 200 } })

  it.effect.prop("arbitrary text and headers", [fc.string({ maxLength: 200 }), maybe(fc.string()), maybe(fc.string())], ([body, contentType, authorization]) =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seeded)
      checkShape(yield* call(s, body, {
        "content-type": contentType?.replace(/[\r\n\0]/g, ""),
        ...(authorization === undefined ? {} : { authorization: authorization.replace(/[\r\n\0]/g, "") })
      }))
    }), { fastCheck: { numRuns: 200 } })

  it.effect("deeply nested meta is a 400, not a stack overflow", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seeded)
      const deep = "{\"identity\":\"user_123\",\"meta\":" + "{\"a\":".repeat(100_000) + "1" + "}".repeat(100_001)
      const answer = yield* call(s, deep)
      checkShape(answer)
      assert.strictEqual(answer.status, 400)
      assert.match(answer.body.error?.errors?.[0]?.message ?? "", /^maxDepth: got 100000, want at most 100$/)
    }))
})
