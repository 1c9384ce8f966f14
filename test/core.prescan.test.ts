/**
 * The prescan of large bodies (src/http/jsonScan.ts, issue 9 item 2) answers exactly what parsing
 * the whole body answers: the same V4 message, the same V5 issues in the same order, the same
 * handler outcome with a valid key. Differential: every body goes through both paths, on all five
 * endpoints; the generators aim at what the prescan stands in for (repeated keys, array-index keys,
 * escaped keys, numbers at the edge of double range, depth and key counts at their limits, item
 * counts around 50, containers where scalars are expected, syntax errors after long valid text).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Either, FastCheck as fc } from "effect"
import { vi } from "vitest"
import { scanMeta } from "../src/domain/Common.js"
import type { Route } from "../src/http/endpoint.js"
import { metaFacts, prescanBody, REPLAY_FROM, standIn, syntaxFailureOf } from "../src/http/jsonScan.js"
import { PRESCAN_FROM } from "../src/http/request.js"
import { selectRoutes } from "../src/http/routes.js"
import { call, type Endpoint, ENDPOINTS, seedIdentity, storages, useKit, workspace } from "./support/identities.js"

// --- JSON text, built by hand: JSON.stringify cannot repeat a key ---------------------------------

const space = fc.constantFrom("", "", "", " ", "\n", "\r\n\t ", "  ")
const joined = (parts: ReadonlyArray<string>, spaces: ReadonlyArray<string>) =>
  parts.map((part, i) => (spaces[i % Math.max(1, spaces.length)] ?? "") + part).join(",")

const NUMBERS = [
  "0", "-0", "1", "-1", "3", "1.5", "2.5e3", "0.000", "1e400", "-1e400", "1E-400", "0e999999999", "1e-99999999999",
  "1.7976931348623157e308", "1.7976931348623158e308", "1.7976931348623159e308", "-1.7976931348623158e308",
  "17976931348623158e292", "0.17976931348623158e309", "179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497791",
  "179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497790.99",
  "9007199254740991", "9007199254740993", "1000", "60000", "3600000", "100", "101", "50"
]
const STRINGS = [
  "\"user_123\"", "\"\"", "\"x\"", "\"rl1\"", "\"rl\"", "\"a\\u0000b\"", "\"\\ud800\"", "\"\\u0075ser_123\"",
  "\"user\\/123\"", "\"\\\"q\\\"\"", "\"é\"", "\"😀\"", "\"bad id!\"", "\"user_1\""
]

const scalar = fc.oneof(
  fc.constantFrom(...NUMBERS),
  fc.constantFrom(...STRINGS),
  fc.constantFrom("true", "false", "null"),
  fc.string({ maxLength: 8 }).map((s) => JSON.stringify(s)),
  // Long enough for the string scan to look ahead (past 32 plain characters), escapes included.
  fc.string({ minLength: 28, maxLength: 90, unit: "binary" }).map((s) => JSON.stringify(s)),
  fc.double().filter(Number.isFinite).map(String),
  fc.integer().map(String)
)

const KEYS = [
  "\"a\"", "\"b\"", "\"\\u0061\"", "\"0\"", "\"1\"", "\"10\"", "\"01\"", "\"\\u0031\"", "\"4294967294\"", "\"4294967295\"",
  "\"-1\"", "\"__proto__\"", "\"constructor\"", "\"\"", "\"foo\"", "\"k\\n\"", "\"😀\""
]
const FIELDS = [
  "identity", "externalId", "meta", "ratelimits", "limit", "cursor", "search", "name", "duration", "autoApply"
]
const fieldKey = fc.constantFrom(...FIELDS).chain((name) =>
  fc.constantFrom(`"${name}"`, `"\\u${name.charCodeAt(0).toString(16).padStart(4, "0")}${name.slice(1)}"`, `"${name}"`)
)
const key = fc.oneof(fc.constantFrom(...KEYS), fieldKey, fc.string({ maxLength: 4 }).map((s) => JSON.stringify(s)))

const deep = (n: number, inner: string, open = "[", close = "]") => open.repeat(n) + inner + close.repeat(n)

const { value } = fc.letrec<{ value: string }>((tie) => ({
  value: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    scalar,
    fc.tuple(fc.array(tie("value"), { maxLength: 4 }), fc.array(space)).map(([xs, s]) => "[" + joined(xs, s) + "]"),
    fc.tuple(fc.array(fc.tuple(key, tie("value")), { maxLength: 4 }), fc.array(space)).map(([ms, s]) =>
      "{" + joined(ms.map(([k, v]) => k + ":" + v), s) + "}"
    ),
    fc.tuple(fc.integer({ min: 97, max: 103 }), scalar).map(([n, v]) => deep(n, v)),
    fc.tuple(fc.integer({ min: 97, max: 103 }), scalar).map(([n, v]) => deep(n, v, "{\"a\":", "}"))
  )
}))

const isJson = (text: string) => {
  try {
    JSON.parse(text)
    return true
  } catch {
    return false
  }
}

/** Meta objects at the limits: about 100 keys (some repeated), 100 levels, hidden numbers out of range. */
const meta = fc.oneof(
  value,
  fc.tuple(fc.integer({ min: 95, max: 105 }), fc.integer({ min: 0, max: 6 }), scalar).map(([n, repeats, v]) => {
    const members = Array.from({ length: n }, (_, i) => `"k${i}":${v}`)
    for (let i = 0; i < repeats; i++) members.push(`"k${i}":0`)
    return "{" + members.join(",") + "}"
  }),
  fc.constantFrom(
    "{\"a\":1e400,\"a\":1}",
    "{\"a\":1,\"a\":1e400}",
    "{\"a\":{\"b\":1e400,\"b\":2}}",
    "{\"a\":{\"b\":1e400,\"\\u0062\":2}}",
    `{"a":${deep(100, "0")},"a":0}`,
    `{"a":${deep(100, "0")},"b":0}`,
    `{"a":${deep(99, "0")},"a":${deep(98, "0")}}`,
    `{"x":{"a":${deep(120, "0")},"a":1,"c":2},"y":[${deep(100, "1")}]}`,
    `{"x":[{"a":${deep(105, "0")},"a":1}],"x":0}`,
    "{\"__proto__\":{\"a\":1e400},\"__proto__\":1}",
    "{}"
  )
)

const item = fc.oneof(
  value,
  fc.tuple(
    fc.subarray(["name", "limit", "duration", "autoApply", "extra", "name"]),
    fc.constantFrom("\"rl1\"", "\"rl2\"", "10", "1000", "true", "[]", "{}", "1e400", "\"ab\"", "2.5", "-1"),
    fc.constantFrom("\"rl1\"", "60000", "1", "false", "[[]]", "{\"a\":1}")
  ).map(([names, a, b]) => "{" + names.map((name, i) => `"${name}":${i % 2 === 0 ? a : b}`).join(",") + "}"),
  fc.constantFrom(
    "{\"name\":\"rl1\",\"limit\":10,\"duration\":60000,\"autoApply\":true}",
    "{\"name\":\"rl2\",\"limit\":10,\"duration\":60000,\"name\":\"rl3\",\"x\":[1e400]}",
    "{\"\\u006eame\":\"rl1\",\"limit\":1,\"duration\":1000}"
  )
)
const ratelimits = fc.oneof(
  value,
  fc.array(item, { maxLength: 3 }).map((xs) => "[" + xs.join(",") + "]"),
  fc.tuple(fc.integer({ min: 48, max: 53 }), item).map(([n, x]) => "[" + Array.from({ length: n }, () => x).join(",") + "]")
)

const fieldValue = (name: string) =>
  name === "meta" ? meta : name === "ratelimits" ? ratelimits : fc.oneof(scalar, value)

/** A body: an object of field members (some repeated or escaped), unknown keys, or any JSON value. */
const body = fc.oneof(
  { weight: 4, arbitrary: fc.tuple(
    fc.array(
      fc.oneof(
        fc.constantFrom(...FIELDS).chain((name) => fc.tuple(fc.constant(`"${name}"`), fieldValue(name))),
        fc.tuple(fieldKey, value),
        fc.tuple(key, value)
      ),
      { maxLength: 6 }
    ),
    fc.array(space)
  ).map(([members, s]) => (s[0] ?? "") + "{" + joined(members.map(([k, v]) => k + ":" + v), s) + "}") },
  { weight: 1, arbitrary: value }
)

/** Indented JSON, line breaks `\n`, `\r\n` or both mixed: whitespace right before every cut. */
const pretty = fc.tuple(fc.jsonValue({ maxDepth: 6 }), fc.constantFrom<string | number>(1, 2, "\t", "\r\n ")).map(
  ([value, indent]) => {
    const text = JSON.stringify(value, null, indent)
    return indent === "\r\n " ? text.replace(/\n/g, "\r\n") : text
  }
)

/** Valid meta: JSON objects, some with repeated keys that hide what alone would be refused. */
const validMeta = fc.oneof(
  fc.dictionary(fc.string({ maxLength: 6 }), fc.jsonValue({ maxDepth: 4 }), { maxKeys: 6 }).map((m) => JSON.stringify(m)),
  fc.constantFrom(
    "{\"plan\":\"pro\",\"plan\":\"free\"}",
    "{\"a\":1e400,\"a\":1}",
    `{"a":${deep(150, "0")},"a":{"b":[1,2]}}`,
    `{"x":{"y":1e999,"y":2},"\\u0078":3,"__proto__":{"z":1}}`,
    "{\"n\":1.7976931348623157e308,\"m\":-0,\"s\":\"\\ud800\"}"
  )
)

/** A valid ratelimit item, sometimes with unknown or repeated keys (the last one counts). */
const validItem = fc.tuple(fc.constantFrom("rl1", "rl2", "rl3", "tokens"), fc.integer({ min: 1, max: 1000 }), fc.boolean()).chain(
  ([name, limit, autoApply]) =>
    fc.constantFrom(
      `{"name":"${name}","limit":${limit},"duration":60000,"autoApply":${autoApply}}`,
      `{"name":"xx","name":"${name}","limit":${limit},"duration":1000,"extra":[[1e400]]}`,
      `{"\\u006eame":"${name}","limit":${limit},"duration":2000,"autoApply":${autoApply},"limit":${limit + 1}}`
    )
)

/** Bodies each endpoint accepts (with a valid key, the handler runs: a write, a read, a 404, a 409). */
const validBody = (endpoint: Endpoint): fc.Arbitrary<string> => {
  const ratelimits = fc.array(validItem, { maxLength: 3 }).map((items) => "[" + items.join(",") + "]")
  const members = (...entries: ReadonlyArray<fc.Arbitrary<string | undefined>>) =>
    fc.tuple(...entries).map((parts) => "{" + parts.filter((part) => part !== undefined).join(",") + "}")
  const optional = (name: string, value: fc.Arbitrary<string>) => fc.option(value.map((v) => `"${name}":${v}`), { nil: undefined })
  switch (endpoint) {
    case "updateIdentity":
      return members(
        fc.constantFrom("\"identity\":\"user_123\"", "\"identity\":\"nobody\"", "\"\\u0069dentity\":\"user_123\""),
        optional("meta", validMeta),
        optional("ratelimits", ratelimits)
      )
    case "createIdentity":
      return members(
        fc.constantFrom("\"externalId\":\"user_123\"", "\"externalId\":\"new_user\""),
        optional("meta", validMeta),
        optional("ratelimits", ratelimits),
        optional("ignored", value)
      )
    case "listIdentities":
      return members(optional("limit", fc.integer({ min: 1, max: 100 }).map(String)), optional("search", fc.constantFrom("\"user\"", "\"\"")))
    default:
      return fc.constantFrom("{\"identity\":\"user_123\"}", "{\"identity\":\"nobody\"}", "{\"identity\":\"x\",\"identity\":\"user_123\"}")
  }
}

/** A body cut or changed at one place: a syntax error, or not. */
const TOKENS = ["", "{", "}", "[", "]", ",", ":", "\"", "\\", "x", "1", "-", "0", ".", "e", "tru", "\u0001", "\u2028", " "]
const edited = fc.tuple(fc.oneof(body, pretty), fc.nat(), fc.constantFrom(...TOKENS), fc.nat({ max: 3 }), fc.boolean()).map(
  ([text, at, token, remove, cut]) => {
    const i = at % (text.length + 1)
    return cut ? text.slice(0, i) : text.slice(0, i) + token + text.slice(i + remove)
  }
)

/** A long valid start before the edit, so that the error is past `REPLAY_FROM` (the replay). */
const longEdited = fc.tuple(fc.integer({ min: REPLAY_FROM, max: REPLAY_FROM * 2 }), edited, fc.boolean()).map(
  ([n, text, spaced]) => {
    const fill = spaced ? "[],\n".repeat(n / 4) : "[],".repeat(n / 3)
    return text.startsWith("{")
      ? `{"pad":[${fill}[]],` + text.slice(1).replace(/^\s*}/, "\"z\":0}")
      : `[${fill}` + text + "]"
  }
)

// --- the two paths, compared ------------------------------------------------------------------

const routes: ReadonlyArray<Route> = selectRoutes(undefined)

const outcome = (route: Route, text: string, prescan: boolean) => {
  const decoded = route.decode(text, prescan)
  return Either.isRight(decoded)
    ? "valid"
    : decoded.left.map((issue) => ({ location: issue.location, message: issue.message, fix: issue.fix }))
}

const sameOnEveryRoute = (text: string) => {
  for (const route of routes) {
    assert.deepStrictEqual(outcome(route, text, true), outcome(route, text, false), `${route.name}: ${text.slice(0, 500)}`)
  }
}

describe("V4–V5: the prescan answers what parsing the body answers", () => {
  it("on bodies aimed at what it stands in for", () => {
    fc.assert(fc.property(body, sameOnEveryRoute), { numRuns: 1500 })
  })

  it("on bodies with a syntax error, or an edit that keeps them valid", () => {
    fc.assert(fc.property(edited, sameOnEveryRoute), { numRuns: 1500 })
  })

  it("on syntax errors after a long valid start (the message replayed, not the body parsed)", () => {
    fc.assert(fc.property(longEdited, sameOnEveryRoute), { numRuns: 300 })
  })

  it("on arbitrary JSON values and text", () => {
    fc.assert(
      fc.property(fc.oneof(fc.jsonValue().map((v) => JSON.stringify(v)), fc.string({ maxLength: 60 })), sameOnEveryRoute),
      { numRuns: 500 }
    )
  })

  it("on the cases written out", () => {
    for (
      const text of [
        "{\"identity\":\"x\",\"identity\":[1],\"identity\":\"user_123\"}",
        "{\"0\":1,\"b\":1,\"10\":1,\"\\u0031\":1,\"4294967295\":1,\"4294967294\":1,\"a\":1,\"01\":1,\"b\":2}",
        "{" + Array.from({ length: 30 }, (_, i) => `"${29 - i}":0,"k${i}":0`).join(",") + "}",
        "{\"__proto__\":{\"identity\":\"x\"},\"identity\":\"user_123\"}",
        "{\"\\u0069dentity\":\"user_123\",\"meta\":{\"a\":1e400,\"a\":1}}",
        "{\"identity\":\"x\",\"meta\":{\"a\":{\"b\":1e400,\"b\":1},\"c\":[1.7976931348623158e308]}}",
        "{\"identity\":\"x\",\"ratelimits\":[" + "0,".repeat(50) + "0],\"meta\":[]}",
        "{\"externalId\":\"a\",\"meta\":" + deep(101, "{}", "[", "]") + ",\"limit\":[],\"cursor\":{}}",
        " \r\n[1,2,3]\t",
        "\"a string body\"",
        "{\"identity\":\"x\"} x",
        "{\"a\":1,\"a\" 1}",
        "{\"a\" 1}"
      ]
    ) sameOnEveryRoute(text)
  })
})

// --- with the handler: no key, an unknown key, a valid key ------------------------------------

const env = useKit(storages[0]!)

/** Ids are random: masked, so that two workspaces' answers compare. */
const masked = (text: string) => text.replace(/\b(id|rl|req|log|ws|key)_[1-9A-HJ-NP-Za-km-z]+/g, "$1_*")

describe("whole requests: the same status and body with and without the prescan", () => {
  it.effect.prop(
    "a valid JSON body, small (parsed) and padded past the prescan size (prescanned)",
    [fc.constantFrom(...ENDPOINTS).chain((endpoint) =>
      fc.tuple(fc.constant(endpoint), fc.oneof(body.filter(isJson), validBody(endpoint)))
    )],
    ([[endpoint, text]]: [[Endpoint, string]]) =>
      Effect.gen(function*() {
        const a = yield* workspace(env())
        const b = yield* workspace(env())
        for (const ws of [a, b]) {
          yield* seedIdentity(ws, "user_123", {
            meta: { plan: "free" },
            ratelimits: [{ name: "rl1", limit: 10, duration: 60_000 }]
          })
        }
        const padded = text + " ".repeat(PRESCAN_FROM)
        for (const authorization of [undefined, "Bearer unkey_nobody_has_this_key", "valid"]) {
          const headers = (ws: typeof a) => ({ authorization: authorization === "valid" ? `Bearer ${ws.rootKey}` : authorization })
          const small = yield* call(a, endpoint, text, headers(a))
          const large = yield* call(b, endpoint, padded, headers(b))
          assert.strictEqual(large.status, small.status, `${endpoint} ${authorization}: ${text.slice(0, 300)}`)
          assert.strictEqual(masked(large.text), masked(small.text), `${endpoint} ${authorization}: ${text.slice(0, 300)}`)
        }
      }),
    { fastCheck: { numRuns: 200 } }
  )
})

// --- the pieces ---------------------------------------------------------------------------------

describe("metaFacts: what V5 reads of meta, as JSON.parse would build it", () => {
  it("agrees with Object.keys and scanMeta of the parsed meta, repeated keys included", () => {
    fc.assert(
      fc.property(meta.filter((text) => text.startsWith("{") && isJson(text)), (text) => {
        const parsed = JSON.parse(text)
        const reference = scanMeta(parsed)
        const facts = metaFacts(text, 0, text.length)
        assert.strictEqual(facts.keys, Object.keys(parsed).length, text)
        // Below the limit only the verdict matters (the prescan may not compute a depth it never reports).
        const verdict = (f: { depth: number; outOfRange: boolean }) =>
          f.depth > 100 ? `depth ${f.depth}` : f.outOfRange ? "out of range" : "ok"
        assert.strictEqual(verdict(facts), verdict(reference), text)
      }),
      { numRuns: 2000 }
    )
  })
})

const parseMessage = (text: string) => {
  try {
    JSON.parse(text)
    return undefined
  } catch (error) {
    return error instanceof SyntaxError ? error.message : undefined
  }
}

/** Line breaks as the engine counts them (`\r\n` once) before `end`, and where the last one ends. */
const lines = (text: string, end: number) => {
  let count = 0
  let lastEnd = 0
  for (let i = 0; i < end; i++) {
    const c = text[i]
    if (c === "\r" && i + 1 < end && text[i + 1] === "\n") i++
    if (c === "\r" || c === "\n") {
      count++
      lastEnd = i + 1
    }
  }
  return { count, lastEnd }
}

describe("syntax errors: JSON.parse's message, replayed on a short stand-in", () => {
  it("is the message JSON.parse gives, and the body itself is not parsed", () => {
    const jsonParse = vi.spyOn(JSON, "parse")
    try {
      fc.assert(
        fc.property(fc.oneof(edited, longEdited), (text) => {
          const expected = parseMessage(text)
          if (expected === undefined) return
          jsonParse.mockClear()
          const scanned = prescanBody(text, [["identity", "scalar"]], true, 0)
          assert.deepStrictEqual(scanned, { _tag: "SyntaxError", message: expected }, text.slice(0, 300))
          // JSON.parse is handed the stand-in, not the body (unless the two are the same text: the
          // error is then in the first tokens, or in one long token).
          const at = syntaxFailureOf(text)
          const stand = at === undefined || at.pos < 60 || text.length < 64 ? undefined : standIn(text, at, false)
          if (stand !== undefined && stand.prefix !== text.slice(0, stand.cut)) {
            assert.isFalse(jsonParse.mock.calls.some(([arg]) => arg === text), `parsed whole: ${text.slice(0, 300)}`)
          }
        }),
        { numRuns: 3000 }
      )
    } finally {
      jsonParse.mockRestore()
    }
  })

  it("keeps the length, the line breaks and the text around the error", () => {
    fc.assert(
      fc.property(fc.oneof(edited, longEdited), fc.boolean(), (text, keepLines) => {
        const at = syntaxFailureOf(text)
        // Shorter texts are quoted whole by the engine: never replayed.
        if (at === undefined || at.pos < 10 || text.length < 64) return
        const stand = standIn(text, at, keepLines)
        assert.isDefined(stand, text.slice(0, 300))
        if (stand === undefined) return
        const replay = stand.prefix + text.slice(stand.cut)
        assert.strictEqual(replay.length, text.length)
        assert.isAtMost(stand.cut, at.pos - 10)
        // Without its line breaks the replay gives the same message but for the line and column
        // that newer engines (Node 22 and later) append: compared without them.
        const message = (t: string) => keepLines ? parseMessage(t) : parseMessage(t)?.replace(/ \(line \d+ column \d+\)$/, "")
        assert.strictEqual(message(replay), message(text), text.slice(0, 300))
        if (keepLines) assert.deepStrictEqual(lines(replay, at.pos), lines(text, at.pos))
      }),
      { numRuns: 2000 }
    )
  })

  it("a large valid start with an error at its end: the message, without parsing the body", () => {
    const cases = [
      `{"identity":"x","meta":{"a":[${"[],".repeat(200_000)}[]]}}x`,
      `{"identity":"x","meta":{"a":${"[".repeat(100_000)}${"]".repeat(99_990)}x`,
      `{"identity":"x","meta":{"a":[${"{\"b\":0},\n".repeat(50_000)}{"b" 0}]}}`,
      `{"identity":"x","meta":{"a":"${"y".repeat(300_000)}\u0001"}}`,
      `{"identity":"x","ratelimits":[${"1,".repeat(100_000)}1.]}`,
      `{"identity":"x",${Array.from({ length: 30_000 }, (_, i) => `"k${i}":0`).join(",")},"z" 1}`,
      `{"identity":"x","meta":{"a":[${"[],".repeat(200_000)}[]]}`
    ]
    for (const text of cases) {
      const expected = parseMessage(text)
      assert.isDefined(expected)
      const jsonParse = vi.spyOn(JSON, "parse")
      try {
        for (const route of routes) {
          assert.deepStrictEqual(outcome(route, text, true), [{ location: "body", message: expected, fix: undefined }])
        }
        assert.isFalse(jsonParse.mock.calls.some(([arg]) => arg === text), text.slice(0, 100))
      } finally {
        jsonParse.mockRestore()
      }
    }
  })
})
