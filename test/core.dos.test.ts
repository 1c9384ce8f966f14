/**
 * Bodies without a key (issue 9, item 2): the worst-case shapes keep the contract's order and
 * answers (V before A before B), a large body is never built before the key check (the prescan,
 * src/http/jsonScan.ts), and the meta walk visits every value once with no early exit that could
 * change an answer. No timing here: the cost figures are in bench/README.md (bench/dos.ts).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, FastCheck as fc } from "effect"
import { vi } from "vitest"
import { codePoints, scanMeta } from "../src/domain/Common.js"
import { type Answer, call, seed } from "./support/core.js"

const MiB = 1024 * 1024
const UNKNOWN_KEY = "Bearer unkey_nobody_has_this_key"

/** `{"identity":"user_123","meta":{"a":[[],[],…]}}` padded with spaces to exactly `bytes`, with `tail` as the last member. */
const nestedBody = (bytes: number, tail = "[]") => {
  const head = `{"identity":"user_123","meta":{"a":[`
  const end = `${tail}]}}`
  const count = Math.floor((bytes - head.length - end.length) / 3)
  const json = head + "[],".repeat(count) + end
  return json + " ".repeat(bytes - json.length)
}

const firstMessage = (answer: Answer) => answer.body.error?.errors?.[0]?.message

describe("scanMeta: one walk, every value once", () => {
  it("counts every value of a wide array of empty arrays exactly once", () => {
    const wide = { a: Array.from({ length: 600_000 }, () => []) }
    assert.deepStrictEqual(scanMeta(wide), { depth: 3, outOfRange: false, nodes: 600_002 })
  })

  it("finds a number out of range after more values than 1 MiB of meta can hold (no early stop on count)", () => {
    const members: Array<unknown> = Array.from({ length: 600_000 }, () => [])
    members.push(Number.POSITIVE_INFINITY)
    assert.deepStrictEqual(scanMeta({ a: members }), { depth: 3, outOfRange: true, nodes: 600_003 })
  })

  it("reports the greatest depth, past the limit, of a chain deeper than any stack", () => {
    let deep: unknown = 1
    for (let i = 0; i < 200_000; i++) deep = [deep]
    const scan = scanMeta({ a: deep, b: [[]] })
    assert.deepStrictEqual(scan, { depth: 200_001, outOfRange: false, nodes: 200_004 })
  })

  it("walks objects and arrays alike; a non-object root has depth 0", () => {
    assert.deepStrictEqual(scanMeta({}), { depth: 1, outOfRange: false, nodes: 1 })
    assert.deepStrictEqual(scanMeta({ a: { b: [1, "x", null, { c: -Infinity }] } }), {
      depth: 4,
      outOfRange: true,
      nodes: 8
    })
    assert.deepStrictEqual(scanMeta(Number.NaN), { depth: 0, outOfRange: true, nodes: 1 })
    // A last member replaces its parent's frame: depths still count from the right parent.
    assert.deepStrictEqual(scanMeta({ a: [[[]], 0], b: [[[[]]]], c: [{ d: [[], [[]]] }, 1] }), {
      depth: 6,
      outOfRange: false,
      nodes: 16
    })
  })
})

/** The walk as it was written first (recursive, one visit per value): the reference for the property. */
const reference = (value: unknown, depth = 1): { depth: number; outOfRange: boolean; nodes: number } => {
  if (typeof value !== "object" || value === null) {
    return { depth: depth - 1, outOfRange: typeof value === "number" && !Number.isFinite(value), nodes: 1 }
  }
  let out = { depth, outOfRange: false, nodes: 1 }
  for (const child of Object.values(value)) {
    const inner = reference(child, depth + 1)
    out = {
      depth: Math.max(out.depth, inner.depth),
      outOfRange: out.outOfRange || inner.outOfRange,
      nodes: out.nodes + inner.nodes
    }
  }
  return out
}

describe("scanMeta agrees with a recursive walk", () => {
  it("on arbitrary JSON objects", () => {
    const value = fc.oneof(fc.jsonValue({ maxDepth: 6 }), fc.constantFrom(Infinity, -Infinity))
    fc.assert(
      fc.property(fc.dictionary(fc.string(), fc.oneof(value, fc.array(value))), (meta) => {
        assert.deepStrictEqual(scanMeta(meta), reference(meta))
      }),
      { numRuns: 300 }
    )
  })
})

describe("10 MiB bodies: the contract's order and answers", () => {
  const body = nestedBody(10 * MiB)

  it.effect("the body is exactly the default limit (not a 413)", () =>
    Effect.sync(() => assert.strictEqual(Buffer.byteLength(body), 10 * MiB)))

  it.effect("nested empty arrays in meta: no key 400 (V1), unknown key 401, valid key 400 too large (B5)", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      const none = yield* call(s, body, { authorization: undefined })
      assert.strictEqual(none.status, 400)
      assert.strictEqual(none.body.error?.detail, "Authorization header for 'bearer' scheme")
      const unknown = yield* call(s, body, { authorization: UNKNOWN_KEY })
      assert.strictEqual(unknown.status, 401)
      assert.strictEqual(unknown.body.error?.type, "https://unkey.com/docs/errors/unkey/authentication/key_not_found")
      const valid = yield* call(s, body)
      assert.strictEqual(valid.status, 400)
      assert.match(valid.body.error?.detail ?? "", /^Metadata is too large, it must be less than 1MB, got: 10\.00$/)
      assert.deepStrictEqual(valid.body.error?.errors, [])
    }), { timeout: 60_000 })

  it.effect("a number out of range at the very end is still found first (V5 before the key)", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      const answer = yield* call(s, nestedBody(10 * MiB, "1e400"), { authorization: UNKNOWN_KEY })
      assert.strictEqual(answer.status, 400)
      assert.match(firstMessage(answer) ?? "", /^a number is out of range/)
    }), { timeout: 60_000 })

  it.effect("a 5M-item ratelimits is one maxItems error (V5 before the key)", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      const items = 5 * 1024 * 1024 - 20
      const answer = yield* call(s, `{"identity":"x","ratelimits":[${"0,".repeat(items - 1)}0]}`, {
        authorization: UNKNOWN_KEY
      })
      assert.strictEqual(answer.status, 400)
      assert.deepStrictEqual(answer.body.error?.errors?.map((e) => e.message), [
        `maxItems: got ${items}, want at most 50`
      ])
    }), { timeout: 60_000 })

  it.effect("a non-array ratelimits keeps its type message", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      const answer = yield* call(s, { identity: "x", ratelimits: { length: 1 } }, { authorization: UNKNOWN_KEY })
      assert.strictEqual(answer.status, 400)
      assert.deepStrictEqual(answer.body.error?.errors?.map((e) => [e.location, e.message]), [
        ["body.ratelimits", "got object, want array"]
      ])
    }))

  it.effect("700,000 unknown top-level keys: 20 listed and a count, before the key", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      const keys = 700_000
      const parts: Array<string> = ['{"identity":"x"']
      for (let i = 0; i < keys; i++) parts.push(`,"k${i}":0`)
      parts.push("}")
      const answer = yield* call(s, parts.join(""), { authorization: UNKNOWN_KEY })
      assert.strictEqual(answer.status, 400)
      const errors = answer.body.error?.errors ?? []
      assert.strictEqual(errors.length, 21)
      assert.strictEqual(errors[0]?.message, "additional properties 'k0' not allowed")
      assert.strictEqual(errors[19]?.message, "additional properties 'k19' not allowed")
      assert.strictEqual(errors[20]?.message, `additional properties: ${keys - 20} more not listed`)
    }), { timeout: 60_000 })
})

/**
 * The lengths of the `JSON.parse` calls, while `run` runs, on more than 64 KiB of `body`: none when
 * the body is prescanned. (A syntax error's message is replayed on a stand-in of the same length,
 * mostly spaces: not a part of the body.)
 */
const largeParses = <A>(body: string, run: Effect.Effect<A>) =>
  Effect.gen(function*() {
    const jsonParse = vi.spyOn(JSON, "parse")
    try {
      const result = yield* run
      const large = jsonParse.mock.calls.map(([text]) => String(text)).filter((text) =>
        text.length > 64 * 1024 && body.includes(text)
      ).map((text) => text.length)
      return { result, large }
    } finally {
      jsonParse.mockRestore()
    }
  })

describe("10 MiB bodies without a valid key are never built", () => {
  const keyList = (bytes: number) => {
    const parts: Array<string> = []
    for (let length = 0, i = 0; length < bytes - 16; i++) {
      const part = `,"k${i.toString(36)}":0`
      parts.push(part)
      length += part.length
    }
    return parts.join("")
  }
  const deep = 5 * MiB - 40
  const objects = Math.floor((10 * MiB - 60) / 6)
  const cases: ReadonlyArray<readonly [string, string, number]> = [
    ["nested empty arrays in meta", nestedBody(10 * MiB), 401],
    ["arrays nested 5M deep", `{"identity":"x","meta":{"a":${"[".repeat(deep)}${"]".repeat(deep)}}}`, 400],
    ["a 5M-item ratelimits", `{"identity":"x","ratelimits":[${"0,".repeat(5 * MiB - 20)}0]}`, 400],
    ["a million unknown top-level keys", `{"identity":"x"${keyList(10 * MiB - 20)}}`, 400],
    ["a million keys in meta", `{"identity":"x","meta":{"_":0${keyList(10 * MiB - 30)}}}`, 400],
    // Valid once JSON.parse keeps the last "a": so the key check comes, and answers 401.
    ["objects nested 1.7M deep, hidden by a repeated key", `{"identity":"x","meta":{"a":${"{\"a\":".repeat(objects)}1${"}".repeat(objects)},"a":1}}`, 401],
    ["a syntax error after 10 MiB of valid JSON", nestedBody(10 * MiB - 1) + "x", 400]
  ]
  for (const [name, body, status] of cases) {
    it.effect(`${name}: answered ${status}, no JSON.parse of the body`, () =>
      Effect.gen(function*() {
        const s = yield* Effect.promise(() => seed())
        const { result: answer, large } = yield* largeParses(body, call(s, body, { authorization: UNKNOWN_KEY }))
        assert.strictEqual(answer.status, status, JSON.stringify(answer.body).slice(0, 300))
        assert.deepStrictEqual(large, [])
        if (status === 400) {
          // The same answer as parsing it whole: V4's message, or V5's issues.
          const expected = syntaxMessage(body)
          if (expected !== undefined) assert.strictEqual(firstMessage(answer), expected)
        }
      }), { timeout: 60_000 })
  }

  it.effect("deep objects hidden by a repeated key, with a valid key: parsed after the key check, then refused by its size (B5)", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      const depth = 1_000_000
      const body = `{"identity":"user_123","meta":{"a":${"{\"a\":".repeat(depth)}1${"}".repeat(depth)},"a":"${"x".repeat(1_100_000)}"}}`
      const answer = yield* call(s, body)
      assert.strictEqual(answer.status, 400)
      assert.match(answer.body.error?.detail ?? "", /^Metadata is too large, it must be less than 1MB, got: 1\.05$/)
    }), { timeout: 60_000 })
})

const syntaxMessage = (text: string): string | undefined => {
  try {
    JSON.parse(text)
    return undefined
  } catch (error) {
    return error instanceof SyntaxError ? error.message : undefined
  }
}

describe("string lengths in code points", () => {
  it("counts as for…of does: a surrogate pair once, an unpaired surrogate once", () => {
    const reference = (s: string) => {
      let n = 0
      for (const _ of s) n++
      return n
    }
    const units = fc.array(fc.constantFrom("a", "é", "\ud800", "\udc00", "\udbff\udfff", "😀", "\u0000"))
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: "binary" }), units.map((parts) => parts.join(""))), (s) => {
        assert.strictEqual(codePoints(s), reference(s), JSON.stringify(s))
      }),
      { numRuns: 2000 }
    )
  })

  it.effect("a ratelimit name of 10 MiB: one maxLength error, before the key", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      const length = 10 * MiB - 80
      const answer = yield* call(s, `{"identity":"x","ratelimits":[{"name":"${"n".repeat(length)}"}]}`, {
        authorization: UNKNOWN_KEY
      })
      assert.strictEqual(answer.status, 400)
      assert.deepStrictEqual(answer.body.error?.errors?.map((e) => [e.location, e.message]), [
        ["body.ratelimits[0].name", `maxLength: got ${length}, want 128`],
        ["body.ratelimits[0].limit", "missing property 'limit'"],
        ["body.ratelimits[0].duration", "missing property 'duration'"]
      ])
    }), { timeout: 60_000 })
})
