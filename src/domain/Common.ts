/**
 * Schemas shared by the endpoints' request bodies: JSON types with JSON Schema's wording
 * (`got X, want Y`, so messages read the same as Unkey's own validator), storable text, `meta`,
 * and one ratelimit of a request (spec §1 of update-identity; identities §1).
 */
import { Schema } from "effect"
import { isJsonObject, type JsonObject } from "./Json.js"

/** Limits of spec §1. */
export const limits = {
  maxRatelimits: 50,
  maxMetaKeys: 100,
  maxMetaBytes: 1_048_576,
  /** Decision: meta nesting is bounded so serialising it can never exhaust the stack. */
  maxMetaDepth: 100,
  minNameLength: 3,
  maxNameLength: 128,
  minDuration: 1000
} as const

/** The JSON type of a value, for messages: `null`, `array`, `object`, `string`, `number`, `boolean`. */
export const jsonTypeOf = (value: unknown): string =>
  value === null ? "null" : Array.isArray(value) ? "array" : typeof value === "number" && Number.isInteger(value) ? "integer" : typeof value

/** A message in JSON Schema's wording: `got null, want object`. */
export const want = (type: string) => (issue: { readonly actual: unknown }) => `got ${jsonTypeOf(issue.actual)}, want ${type}`

/** A JSON string. */
export const JsonString = Schema.String.annotations({ message: want("string") })
/** A JSON boolean. */
export const JsonBoolean = Schema.Boolean.annotations({ message: want("boolean") })
/** A JSON number (`integer` in messages: every number field here is an integer). */
export const JsonNumber = Schema.Number.annotations({ message: want("integer") })

// PostgreSQL text cannot hold U+0000 or unpaired UTF-16 surrogates; such an identity or name can
// never exist, so it is a client error (400), not a storage failure (500).
const LONE_SURROGATE = /\p{Surrogate}/u
/** `true` when PostgreSQL text can hold `s`, else why not. */
export const storableText = (s: string) =>
  s.includes("\u0000") ? "must not contain the NUL character (\\u0000)"
  : LONE_SURROGATE.test(s) ? "must be valid Unicode (no unpaired surrogate)"
  : true

/** An integer ≥ `minimum` and ≤ 2^53−1. */
export const SafeInteger = (minimum: number) =>
  JsonNumber.pipe(
    Schema.filter((n) => Number.isInteger(n) || `got number, want integer`),
    Schema.filter((n) => n >= minimum || `minimum: got ${n}, want ${minimum}`),
    Schema.filter((n) => Number.isSafeInteger(n) || `maximum: got ${n}, want ${Number.MAX_SAFE_INTEGER}`)
  )

const SURROGATE = /[\uD800-\uDFFF]/

/**
 * Length in code points, as JSON Schema counts `minLength`/`maxLength` (as `for…of` counts: a
 * surrogate pair is one, an unpaired surrogate one). A long string without surrogates is its length:
 * a 10 MiB name must not cost a step per character (issue 9).
 */
export const codePoints = (s: string) => {
  // Short strings (names, the common case) are cheaper to walk than to hand to the regex engine.
  if (s.length > 64 && !SURROGATE.test(s)) return s.length
  let n = s.length
  for (let i = 0; i < s.length - 1; i++) {
    const c = s.charCodeAt(i)
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = s.charCodeAt(i + 1)
      if (d >= 0xdc00 && d <= 0xdfff) {
        n--
        i++
      }
    }
  }
  return n
}

/** What one walk of `meta` found: its nesting depth, whether a number is out of range, how many values. */
export interface MetaScan {
  /** Nesting of objects/arrays: 1 for `{}`, 2 for `{"a":[]}`, 0 for a non-object. */
  readonly depth: number
  readonly outOfRange: boolean
  /** Values visited, the root included: every value exactly once. */
  readonly nodes: number
}

/**
 * Depth of nested objects/arrays, and whether a number is out of range, in one walk without
 * recursion. Cost per value is a few comparisons and no allocation for array members (one
 * `Object.values` per object), and memory is at most one frame per level of the current path, not
 * one entry per pending value: a body of millions of `[]` must cost about what parsing it did (issue 9).
 * It never stops early: the message names the greatest depth, and a number out of range anywhere
 * is refused, so every value can change the answer.
 */
export const scanMeta = (root: unknown): MetaScan => {
  if (typeof root !== "object" || root === null) {
    return { depth: 0, outOfRange: typeof root === "number" && !Number.isFinite(root), nodes: 1 }
  }
  // Parallel stacks, one frame per open container: its members, the next index to visit, its depth.
  // A container that is the last member of its parent replaces the parent's frame (nothing is left
  // to visit there), so a chain `[[[…]]]` of millions of levels keeps one frame, not millions.
  const lists: Array<ReadonlyArray<unknown>> = [Array.isArray(root) ? root : Object.values(root)]
  const next: Array<number> = [0]
  const depths: Array<number> = [1]
  let max = 1
  let nodes = 1
  let outOfRange = false
  for (let top = 0; top >= 0;) {
    const list = lists[top]
    const index = next[top] ?? 0
    if (list === undefined || index >= list.length) {
      lists.pop()
      next.pop()
      depths.pop()
      top--
      continue
    }
    next[top] = index + 1
    const value: unknown = list[index]
    nodes++
    if (typeof value === "object" && value !== null) {
      const depth = (depths[top] ?? 0) + 1
      if (depth > max) max = depth
      const members = Array.isArray(value) ? value : Object.values(value)
      if (index + 1 === list.length) {
        lists[top] = members
        next[top] = 0
        depths[top] = depth
      } else {
        lists.push(members)
        next.push(0)
        depths.push(depth)
        top++
      }
    } else if (typeof value === "number" && !Number.isFinite(value)) {
      // JSON.parse reads a number beyond double range (1e400) as ±Infinity, which JSON.stringify
      // would then store as null: such a number is refused, as the reference's decoder refuses it.
      outOfRange = true
    }
  }
  return { depth: max, outOfRange, nodes }
}

/**
 * `meta` as the request sent it, read before the root-key check (spec §2: V before H1) without
 * being built: its JSON text and what V5 checks of it. A handler parses it only after the key check,
 * so a caller without a valid key never makes the kit build a large meta (issue 9). Made by the
 * prescan of large bodies (src/http/jsonScan.ts).
 */
export class MetaText {
  constructor(
    /** The body text; the meta object is `text.slice(start, end)`. */
    readonly text: string,
    readonly start: number,
    readonly end: number,
    /**
     * Its keys as `Object.keys` counts them when past `maxMetaKeys`; within it, possibly more (a
     * repeated key counted each time): V5 only compares it with the limit.
     */
    readonly keys: number,
    /** As `scanMeta` finds it when past `maxMetaDepth`; within it, possibly more (as `keys`). */
    readonly depth: number,
    /** A number beyond double range, as `scanMeta` finds it. */
    readonly outOfRange: boolean
  ) {}

  /** The meta object, as `JSON.parse` of the whole body would have made it. */
  parse(): JsonObject {
    return JSON.parse(this.text.slice(this.start, this.end))
  }
}

/** `meta` as a request's body hands it to a handler: parsed, or still text (see `MetaText`). */
export type MetaInput = JsonObject | MetaText

/** The meta object of a request, parsed now if it is still text: only after the root-key check. */
export const metaObject = (meta: MetaInput): JsonObject => meta instanceof MetaText ? meta.parse() : meta

const isMetaInput = (input: unknown): input is MetaInput => input instanceof MetaText || isJsonObject(input)

const metaSchema = <A extends MetaInput>(is: (input: unknown) => input is A) =>
  Schema.declare(is, { message: want("object") }).pipe(
    Schema.filter((value) => {
      const count = value instanceof MetaText ? value.keys : Object.keys(value).length
      return count <= limits.maxMetaKeys || `maxProperties: got ${count}, want at most ${limits.maxMetaKeys}`
    }),
    Schema.filter((value) => {
      const { depth, outOfRange } = value instanceof MetaText ? value : scanMeta(value)
      return depth > limits.maxMetaDepth
        ? `maxDepth: got ${depth}, want at most ${limits.maxMetaDepth}`
        : outOfRange
        ? "a number is out of range: it must fit a 64-bit float (at most about 1.8e308 in magnitude)"
        : true
    })
  ).annotations({ identifier: "Meta" })

/**
 * `meta` is validated but never rebuilt: the decoded value is the object `JSON.parse` made, so keys
 * such as `__proto__` stay ordinary own keys and no prototype is ever touched.
 */
export const Meta = metaSchema(isJsonObject)

/** `Meta` as the endpoints decode it: a parsed object or a `MetaText`, with the same checks and messages. */
export const MetaWire = metaSchema(isMetaInput)

/** One ratelimit of the request; unknown keys inside an item are ignored (spec §1). */
export const RatelimitRequest = Schema.Struct({
  name: JsonString.pipe(
    Schema.filter((s) => {
      const n = codePoints(s)
      return n >= limits.minNameLength || `minLength: got ${n}, want ${limits.minNameLength}`
    }),
    Schema.filter((s) => {
      const n = codePoints(s)
      return n <= limits.maxNameLength || `maxLength: got ${n}, want ${limits.maxNameLength}`
    }),
    Schema.filter(storableText)
  ),
  limit: SafeInteger(1),
  duration: SafeInteger(limits.minDuration),
  // Decision (spec §1): optional; the handler treats a missing value as false.
  autoApply: Schema.optionalWith(JsonBoolean, { exact: true })
}).annotations({
  message: want("object"),
  parseOptions: { onExcessProperty: "ignore" }
})


/**
 * How many items a large `ratelimits` holds, read without building them (the prescan of large
 * bodies, src/http/jsonScan.ts): V5 checks the count before any item, so past 50 the count is the
 * whole answer.
 */
export class ItemCount {
  constructor(readonly length: number) {}
}

const ratelimitsSchema = <A extends ReadonlyArray<unknown> | ItemCount>(is: (input: unknown) => input is A) =>
  // Declared, not `Schema.Array(Schema.Unknown)`: that decode copies every item before the count is
  // checked, and a 10 MiB body holds 5M items (issue 9).
  Schema.declare(is, { message: want("array") }).pipe(
    Schema.filter((items) =>
      items.length <= limits.maxRatelimits ||
      `maxItems: got ${items.length}, want at most ${limits.maxRatelimits}`
    ),
    // Only arrays reach the items: an `ItemCount` is always past the limit.
    Schema.compose(Schema.Array(RatelimitRequest), { strict: false })
  )

/**
 * The `ratelimits` of a request: at most 50 items. The item count is checked before any item is
 * decoded, so a huge array costs one check, not one error per item.
 */
export const RatelimitsRequest = ratelimitsSchema((input: unknown): input is ReadonlyArray<unknown> => Array.isArray(input))

/** `RatelimitsRequest` as the endpoints decode it: an array or an `ItemCount`, with the same checks and messages. */
export const RatelimitsWire = ratelimitsSchema((input: unknown): input is ReadonlyArray<unknown> | ItemCount =>
  Array.isArray(input) || input instanceof ItemCount
)
