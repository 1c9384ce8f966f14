/**
 * Reading a large request body without building it (issue 9, item 2). Validation (spec §2 V4–V5)
 * runs before the root-key check, so a caller without a valid key chooses what the kit parses;
 * `JSON.parse` of 10 MiB of `[[],[],…]` builds millions of arrays. This module checks the JSON
 * syntax exactly as `JSON.parse` does, in one pass over the text that allocates nothing per value,
 * and builds a small stand-in ("skeleton") of the body that the endpoint's Schema answers exactly
 * as it answers the parsed body:
 *
 * - a field that must be a scalar (a string, a number, a boolean) gets its value parsed from its
 *   slice of the text, or, when it holds an array or object, an empty one of the same kind
 *   (messages name only the JSON type);
 * - `meta` gets a `MetaText`: its slice and what V5 reads of it (key count, depth, a number out of
 *   range); the handler parses it after the key check;
 * - `ratelimits` of more than 50 items gets an `ItemCount` (V5 reads the count first); otherwise its
 *   items, built the same way, with unknown item keys left out (the Schema ignores them);
 * - unknown top-level keys are counted and the first listed, in the order `for…in` gives them.
 *
 * `JSON.parse` semantics kept: a repeated key keeps its last value, `__proto__` is an ordinary key,
 * array-index keys come first in ascending order. A syntax error is reported with the message
 * `JSON.parse` gives (see `syntaxErrorMessage`).
 */
import { ItemCount, limits, MetaText } from "../domain/Common.js"

// Container kinds on the scanner's stack.
const ARRAY = 1
const OBJECT = 2

/** What the last `skipValue` found; one shared record, so a scan allocates nothing per value. */
class ValueScan {
  /** Where the value starts (after leading whitespace). */
  start = 0
  /** On failure: the position of the syntax error, as `JSON.parse` reports it. */
  error = -1
  /** On failure: where the token being read there started, or -1 (the error is between tokens). */
  tokenStart = -1
  /** On failure: how many containers of the value were open (their kinds: `kinds[1..depth]`). */
  depth = 0
  /** Nesting: 1 for `{}` or `[]`, 0 for a scalar. */
  maxDepth = 0
  /** A number beyond double range (JSON.parse reads it as ±Infinity). */
  outOfRange = false
  /** Some object inside has two members or more (so a repeated key could hide a value). */
  multi = false
  /** Members or items of the value itself, when it is a container. */
  count = 0
  /** The last string read held an escape. */
  escaped = false
  /** The hash of the last key read by `scanKey`, when it held no escape. */
  hash = 0
  /** The last number read by `scanNumber` is beyond double range. */
  numberOutOfRange = false
}

const scan = new ValueScan()
/** The kinds of the open containers by depth, from 1: what a failed scan leaves for the replay. */
let kinds: Uint8Array = new Uint8Array(256)

function growKinds(): Uint8Array {
  const next: Uint8Array = new Uint8Array(kinds.length * 2)
  next.set(kinds)
  kinds = next
  return next
}

/**
 * `2^1024 − 2^970`: the least decimal that rounds to Infinity (halfway between the largest double
 * and 2^1024, rounded to even). 309 digits.
 */
const OVERFLOW_DIGITS = (2n ** 1024n - 2n ** 970n).toString()

/**
 * Whether the number in `s[start, end)`, whose first significant digit stands for 10^308, rounds to
 * Infinity: its significant digits compared with `OVERFLOW_DIGITS`, without building the number.
 */
function overflows308(s: string, start: number, end: number): boolean {
  let k = 0
  let started = false
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i)
    if (c === 0x65 || c === 0x45) break
    if (c < 0x30 || c > 0x39) continue
    if (!started) {
      if (c === 0x30) continue
      started = true
    }
    if (k < OVERFLOW_DIGITS.length) {
      const d = OVERFLOW_DIGITS.charCodeAt(k++)
      if (c !== d) return c > d
    } else if (c !== 0x30) {
      return true
    }
  }
  // Every digit so far equals the threshold's; fewer digits means less (the rest are zeros).
  return k >= OVERFLOW_DIGITS.length
}

/** Whether the valid JSON number `s[start, end)` is beyond double range (JSON.parse reads ±Infinity). */
function numberOutOfRange(s: string, start: number, end: number): boolean {
  return scanNumber(s, start, end, 0) === end && scan.numberOutOfRange
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39
}

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09
}

/** Records a syntax error at `pos` (inside the token at `tokenStart`, or -1), with `depth` containers open. */
function fail(pos: number, tokenStart: number, depth: number): number {
  scan.error = pos
  scan.tokenStart = tokenStart
  scan.depth = depth
  return -1
}

/** What ends or interrupts a run of plain string characters: a quote, a backslash, a control character. */
const SPECIAL = /["\\\u0000-\u001f]/g

/**
 * The string whose opening quote is at `i - 1`: the position after its closing quote, or -1 with
 * the error's position in `scan.error` (a control character, a bad escape, or the end of the text).
 */
function skipString(s: string, i: number, end: number): number {
  let escaped = false
  // Past a few plain characters, the engine's regular expressions find the next one that matters.
  let plain = 0
  for (;;) {
    if (i >= end) {
      scan.error = end
      return -1
    }
    if (++plain > 32) {
      plain = 0
      SPECIAL.lastIndex = i
      const found = SPECIAL.exec(s)
      i = found === null || found.index >= end ? end : found.index
      continue
    }
    const c = s.charCodeAt(i)
    if (c === 0x22) {
      scan.escaped = escaped
      return i + 1
    }
    if (c === 0x5c) {
      escaped = true
      if (++i >= end) {
        scan.error = end
        return -1
      }
      const e = s.charCodeAt(i)
      if (e === 0x75) {
        for (let k = 0; k < 4; k++) {
          if (++i >= end) {
            scan.error = end
            return -1
          }
          const h = s.charCodeAt(i)
          if (!(isDigit(h) || (h >= 0x61 && h <= 0x66) || (h >= 0x41 && h <= 0x46))) {
            scan.error = i
            return -1
          }
        }
      } else if (
        e !== 0x22 && e !== 0x5c && e !== 0x2f && e !== 0x62 && e !== 0x66 && e !== 0x6e && e !== 0x72 && e !== 0x74
      ) {
        scan.error = i
        return -1
      }
    } else if (c < 0x20) {
      scan.error = i
      return -1
    }
    i++
  }
}

/**
 * The number at `start` (a `-` or a digit), checked as JSON.parse checks it: its end, or -1 with the
 * error recorded (`depth` containers open). `scan.numberOutOfRange`: beyond double range, found from
 * the power of ten of its first significant digit (`lead`) without converting it.
 */
function scanNumber(s: string, start: number, end: number, depth: number): number {
  let i = start
  let c = s.charCodeAt(i)
  if (c === 0x2d) {
    if (++i >= end) return fail(end, start, depth)
    c = s.charCodeAt(i)
  }
  let lead = 0
  let zero = false
  if (c === 0x30) {
    zero = true
    i++
    if (i < end && isDigit(s.charCodeAt(i))) return fail(i, start, depth)
  } else if (isDigit(c)) {
    const first = i
    i++
    while (i < end && isDigit(s.charCodeAt(i))) i++
    lead = i - first - 1
  } else {
    return fail(i, start, depth)
  }
  if (i < end && s.charCodeAt(i) === 0x2e) {
    if (++i >= end) return fail(end, start, depth)
    if (!isDigit(s.charCodeAt(i))) return fail(i, start, depth)
    const first = i
    while (i < end && isDigit(s.charCodeAt(i))) i++
    if (zero) {
      for (let k = first; k < i; k++) {
        if (s.charCodeAt(k) !== 0x30) {
          zero = false
          lead = first - k - 1
          break
        }
      }
    }
  }
  if (i < end && ((c = s.charCodeAt(i)) === 0x65 || c === 0x45)) {
    if (++i >= end) return fail(end, start, depth)
    c = s.charCodeAt(i)
    let sign = 1
    if (c === 0x2d || c === 0x2b) {
      if (c === 0x2d) sign = -1
      if (++i >= end) return fail(end, start, depth)
      c = s.charCodeAt(i)
    }
    if (!isDigit(c)) return fail(i, start, depth)
    let exponent = 0
    while (i < end && isDigit(c = s.charCodeAt(i))) {
      // Past 10^8 the value is 0 or Infinity whatever the digits; the count stops growing.
      if (exponent < 100_000_000) exponent = exponent * 10 + (c - 0x30)
      i++
    }
    lead += sign * exponent
  }
  scan.numberOutOfRange = lead >= 308 && !zero && (lead > 308 || overflows308(s, start, i))
  return i
}

/**
 * Checks the JSON value starting at `i` (after any whitespace) and stops right after it: the
 * position after the value, or -1 with the error in `scan` (and the open containers' kinds in
 * `kinds`). Counts in `scan` what V5 reads of the value: nesting, numbers out of range, members;
 * with `keys`, collects the keys of the value itself when it is an object. One pass, one byte of
 * stack per open container, nothing allocated per value.
 */
function skipValue(s: string, i: number, end: number, keys?: KeySpans): number {
  let stack: Uint8Array = kinds
  let depth = 0
  let max = 0
  let oor = false
  let multi = false
  let count = 0
  let c = 0
  scan.start = -1
  value: for (;;) {
    while (i < end && (c = s.charCodeAt(i)) <= 0x20 && isSpace(c)) i++
    if (i >= end) return fail(end, -1, depth)
    if (depth === 0) scan.start = i
    const start = i
    if (c === 0x22) {
      i = skipString(s, i + 1, end)
      if (i < 0) return fail(scan.error, start, depth)
    } else if (c === 0x5b || c === 0x7b) {
      // Openers, and those that open an array's first item (`[[[…`), in one tight loop.
      let kind = ARRAY
      for (;;) {
        i++
        if (++depth >= stack.length) stack = growKinds()
        kind = c === 0x5b ? ARRAY : OBJECT
        stack[depth] = kind
        while (i < end && (c = s.charCodeAt(i)) <= 0x20 && isSpace(c)) i++
        if (i >= end) return fail(end, -1, depth)
        if (kind !== ARRAY || (c !== 0x5b && c !== 0x7b)) break
        if (depth === 1) count = 1
      }
      if (depth > max) max = depth
      if (kind === ARRAY) {
        if (c === 0x5d) {
          i++
          depth--
        } else {
          if (depth === 1) count = 1
          continue value
        }
      } else {
        if (c === 0x7d) {
          i++
          depth--
        } else if (c === 0x22) {
          const key = i
          if (depth === 1) {
            count = 1
            i = keys === undefined ? skipString(s, i + 1, end) : scanKey(s, i + 1, end)
            if (i >= 0 && keys !== undefined) keys.push(key, i)
          } else {
            i = skipString(s, i + 1, end)
          }
          if (i < 0) return fail(scan.error, key, depth)
          while (i < end && (c = s.charCodeAt(i)) <= 0x20 && isSpace(c)) i++
          if (i >= end) return fail(end, -1, depth)
          if (c !== 0x3a) return fail(i, -1, depth)
          i++
          continue value
        } else {
          return fail(i, -1, depth)
        }
      }
    } else if (c >= 0x30 && c <= 0x39) {
      // A plain integer (no fraction or exponent, under 300 digits), the common number: read here,
      // and never out of range. Any other goes to `scanNumber`.
      let j = i + 1
      let d = 0
      if (c !== 0x30) while (j < end && (d = s.charCodeAt(j)) >= 0x30 && d <= 0x39) j++
      d = j < end ? s.charCodeAt(j) : 0
      if ((d >= 0x30 && d <= 0x39) || d === 0x2e || d === 0x65 || d === 0x45 || j - i >= 300) {
        i = scanNumber(s, i, end, depth)
        if (i < 0) return -1
        if (scan.numberOutOfRange) oor = true
      } else {
        i = j
      }
    } else if (c === 0x2d) {
      i = scanNumber(s, i, end, depth)
      if (i < 0) return -1
      if (scan.numberOutOfRange) oor = true
    } else if (c === 0x74 || c === 0x66 || c === 0x6e) {
      const word = c === 0x74 ? "true" : c === 0x66 ? "false" : "null"
      for (let k = 1; k < word.length; k++) {
        if (++i >= end) return fail(end, start, depth)
        if (s.charCodeAt(i) !== word.charCodeAt(k)) return fail(i, start, depth)
      }
      i++
    } else {
      return fail(i, -1, depth)
    }
    // A value is complete: close what it completes, or go on to the next member or item.
    for (;;) {
      if (depth === 0) {
        scan.maxDepth = max
        scan.outOfRange = oor
        scan.multi = multi
        scan.count = count
        return i
      }
      while (i < end && (c = s.charCodeAt(i)) <= 0x20 && isSpace(c)) i++
      if (i >= end) return fail(end, -1, depth)
      if (stack[depth] === ARRAY) {
        if (c === 0x2c) {
          i++
          if (depth === 1) count++
          continue value
        }
        if (c !== 0x5d) return fail(i, -1, depth)
        i++
        depth--
      } else {
        if (c === 0x2c) {
          i++
          multi = true
          if (depth === 1) count++
          while (i < end && (c = s.charCodeAt(i)) <= 0x20 && isSpace(c)) i++
          if (i >= end) return fail(end, -1, depth)
          if (c !== 0x22) return fail(i, -1, depth)
          const key = i
          if (depth === 1 && keys !== undefined) {
            i = scanKey(s, i + 1, end)
            if (i >= 0) keys.push(key, i)
          } else {
            i = skipString(s, i + 1, end)
          }
          if (i < 0) return fail(scan.error, key, depth)
          while (i < end && (c = s.charCodeAt(i)) <= 0x20 && isSpace(c)) i++
          if (i >= end) return fail(end, -1, depth)
          if (c !== 0x3a) return fail(i, -1, depth)
          i++
          continue value
        }
        if (c !== 0x7d) return fail(i, -1, depth)
        i++
        depth--
      }
    }
  }
}

function skipSpace(s: string, i: number): number {
  let c = 0
  while (i < s.length && ((c = s.charCodeAt(i)) === 0x20 || c === 0x0a || c === 0x0d || c === 0x09)) i++
  return i
}

// ---------------------------------------------------------------------------------------------
// Keys: compared, hashed and ordered by their decoded UTF-16 code units, as JSON.parse makes them.

// Decoded keys, for the rare key with an escape; reused.
let scratch: Uint16Array = new Uint16Array(64)
let scratch2: Uint16Array = new Uint16Array(64)
let decodedLength = 0

/**
 * The decoded code units of the (valid) key whose quotes are at `start` and `end - 1`: `into`, or a
 * larger array when it is too small; their count in `decodedLength`.
 */
function decodeKey(s: string, start: number, end: number, into: Uint16Array): Uint16Array {
  let out = into
  if (out.length < end - start) out = new Uint16Array(Math.max(end - start, out.length * 2))
  let n = 0
  for (let i = start + 1; i < end - 1; i++) {
    let c = s.charCodeAt(i)
    if (c === 0x5c) {
      const e = s.charCodeAt(++i)
      switch (e) {
        case 0x62:
          c = 0x08
          break
        case 0x66:
          c = 0x0c
          break
        case 0x6e:
          c = 0x0a
          break
        case 0x72:
          c = 0x0d
          break
        case 0x74:
          c = 0x09
          break
        case 0x75:
          // Four hex digits read in place (the scan checked them): no slice or parse per escape.
          c = (hex(s.charCodeAt(i + 1)) << 12) | (hex(s.charCodeAt(i + 2)) << 8) | (hex(s.charCodeAt(i + 3)) << 4) |
            hex(s.charCodeAt(i + 4))
          i += 4
          break
        default:
          c = e
      }
    }
    out[n++] = c
  }
  decodedLength = n
  return out
}

/**
 * Keys of object members: spans into the text (`ends` negative when the key holds an escape), and
 * a number per key when asked for. Grows as needed.
 */
class KeySpans {
  starts: Int32Array = new Int32Array(64)
  ends: Int32Array = new Int32Array(64)
  /** The key's hash when it holds no escape (`scanKey`). */
  hashes: Int32Array = new Int32Array(64)
  values: Int32Array | undefined
  length = 0
  /** Whether some key holds an escape (its hash is then computed from its decoded units). */
  someEscaped = false

  constructor(withValues: boolean) {
    if (withValues) this.values = new Int32Array(64)
  }

  /** A key just read by `scanKey`. */
  push(start: number, end: number): void {
    if (this.length === this.starts.length) this.grow()
    this.starts[this.length] = start
    if (scan.escaped) this.someEscaped = true
    this.ends[this.length] = scan.escaped ? -end : end
    this.hashes[this.length] = scan.hash
    if (this.values !== undefined) this.values[this.length] = 0
    this.length++
  }

  private grow(): void {
    this.starts = grown(this.starts)
    this.ends = grown(this.ends)
    this.hashes = grown(this.hashes)
    if (this.values !== undefined) this.values = grown(this.values)
  }
}

// A per-process secret for the key hash, so that a client cannot choose keys that all collide.
const SEED = globalThis.crypto.getRandomValues(new Uint32Array(1))[0]! | 0

function hashUnits(units: Uint16Array, n: number): number {
  let h = SEED
  for (let i = 0; i < n; i++) h = Math.imul(h ^ units[i]!, 0x5bd1e995) ^ (h >>> 15)
  return fmix(h ^ n)
}

/** The hash `scanKey` gives the unescaped key with quotes at `start` and `end - 1`. */
function hashOfKey(s: string, start: number, end: number): number {
  let h = SEED
  for (let i = start + 1; i < end - 1; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x5bd1e995) ^ (h >>> 15)
  return fmix(h ^ (end - start - 2))
}

/**
 * A key (opening quote at `i - 1`), as `skipString`, hashed as it is read (`scan.hash`, the same as
 * `hashUnits` of its code units) when it holds no escape.
 */
function scanKey(s: string, i: number, end: number): number {
  let h = SEED
  const first = i
  for (;;) {
    if (i >= end) {
      scan.error = end
      return -1
    }
    const c = s.charCodeAt(i)
    if (c === 0x22) {
      scan.escaped = false
      scan.hash = fmix(h ^ (i - first))
      return i + 1
    }
    // An escape (hashed later, decoded) or a control character (an error): read as any string.
    if (c === 0x5c || c < 0x20) return skipString(s, i, end)
    h = Math.imul(h ^ c, 0x5bd1e995) ^ (h >>> 15)
    i++
  }
}

function fmix(h: number): number {
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  return h ^ (h >>> 16)
}

/** Whether keys `a` and `b` of `spans` are the same key once decoded. */
function sameKey(s: string, spans: KeySpans, a: number, b: number): boolean {
  const a0 = spans.starts[a]!
  const a1 = spans.ends[a]!
  const b0 = spans.starts[b]!
  const b1 = spans.ends[b]!
  if (a1 > 0 && b1 > 0) {
    if (a1 - a0 !== b1 - b0) return false
    for (let i = 1; i < a1 - a0 - 1; i++) if (s.charCodeAt(a0 + i) !== s.charCodeAt(b0 + i)) return false
    return true
  }
  scratch = decodeKey(s, a0, Math.abs(a1), scratch)
  const n = decodedLength
  scratch2 = decodeKey(s, b0, Math.abs(b1), scratch2)
  if (n !== decodedLength) return false
  for (let i = 0; i < n; i++) if (scratch[i] !== scratch2[i]) return false
  return true
}

function keyHash(s: string, spans: KeySpans, k: number): number {
  const end = spans.ends[k]!
  if (end > 0) return spans.hashes[k]!
  scratch = decodeKey(s, spans.starts[k]!, -end, scratch)
  return hashUnits(scratch, decodedLength)
}

/** After `distinctKeys`: 1 at the offset (from `from`) of each key kept. Reused; grown as needed. */
let kept: Uint8Array = new Uint8Array(1024)

/**
 * The distinct keys among `spans[from, to)`: how many, and in `kept` the first occurrence of each
 * (`fromEnd`: walking from the last key back, the occurrence JSON.parse keeps). The keys are
 * partitioned by the top bits of their hash into parts small enough for the CPU cache (one
 * open-addressing table of a million keys costs a cache miss per key), and deduplicated part by
 * part. Probing is bounded: past a budget no honest input reaches, the keys are decoded and put in a
 * `Set`, whose hashing the engine seeds.
 */
// The hashes of the few keys `distinctKeys` compares pairwise.
const fewHashes = new Int32Array(16)
// `distinctKeys`' buffers for more keys, reused from call to call and grown as needed.
let dedupKeys = new Int32Array(64)
let dedupHashes = new Int32Array(64)
const dedupBounds = new Int32Array(2)
let dedupTable = new Int32Array(64)

function distinctKeys(s: string, spans: KeySpans, from: number, to: number, fromEnd: boolean): number {
  const n = to - from
  if (kept.length < n) kept = new Uint8Array(Math.max(n, kept.length * 2))
  kept.fill(0, 0, n)
  if (n <= 16) {
    // A few keys: compared pairwise, each hashed once (an escaped key's hash decodes it).
    for (let j = 0; j < n; j++) fewHashes[j] = keyHash(s, spans, from + j)
    let distinct = 0
    for (let step = 0; step < n; step++) {
      const j = fromEnd ? n - 1 - step : step
      let seen = false
      for (let other = 0; other < n && !seen; other++) {
        if (kept[other] === 1 && fewHashes[other] === fewHashes[j]) {
          seen = sameKey(s, spans, from + other, from + j)
        }
      }
      if (!seen) {
        kept[j] = 1
        distinct++
      }
    }
    return distinct
  }
  // Hash and key offset of each key, grouped by part, in key order within a part. The buffers are
  // the module's, grown as needed: `meta` may hold ~100K small objects, each deduplicated here.
  const bits = n <= 2048 ? 0 : Math.min(14, Math.ceil(Math.log2(n / 1024)))
  if (dedupKeys.length < n) {
    dedupKeys = new Int32Array(Math.max(n, dedupKeys.length * 2))
    dedupHashes = new Int32Array(dedupKeys.length)
  }
  let partHashes: Int32Array
  if (spans.someEscaped) {
    partHashes = dedupHashes
    for (let j = 0; j < n; j++) partHashes[j] = keyHash(s, spans, from + j)
  } else {
    partHashes = spans.hashes.subarray(from, to)
  }
  const partKeys = dedupKeys
  const parts = 1 << bits
  const bounds = bits === 0 ? dedupBounds.fill(0) : new Int32Array(parts + 1)
  if (bits === 0) {
    for (let j = 0; j < n; j++) partKeys[j] = j
    bounds[1] = n
  } else {
    const shift = 32 - bits
    for (let j = 0; j < n; j++) {
      const p = (partHashes[j]! >>> shift) + 1
      bounds[p] = bounds[p]! + 1
    }
    for (let p = 0; p < parts; p++) bounds[p + 1] = bounds[p + 1]! + bounds[p]!
    const next = bounds.slice(0, parts)
    const hashes = new Int32Array(n)
    for (let j = 0; j < n; j++) {
      const h = partHashes[j]!
      const p = h >>> shift
      const at = next[p]!
      next[p] = at + 1
      hashes[at] = h
      partKeys[at] = j
    }
    partHashes = hashes
  }
  // Interleaved: entry + 1 (0: free), then its hash. Sized by the distinct keys found, not by the
  // keys: 1.7M copies of one key must not allocate a table for 1.7M.
  let table = dedupTable
  let budget = 8 * n + 1024
  let distinct = 0
  for (let p = 0; p < parts; p++) {
    const lo = bounds[p]!
    const hi = bounds[p + 1]!
    if (hi === lo) continue
    let slots = 16
    table.fill(0, 0, slots * 2)
    let mask = slots - 1
    let used = 0
    for (let step = 0; step < hi - lo; step++) {
      const at = fromEnd ? hi - 1 - step : lo + step
      const h = partHashes[at]!
      const j = partKeys[at]!
      let slot = h & mask
      let found = false
      for (;;) {
        const entry = table[slot * 2]!
        if (entry === 0) break
        if (table[slot * 2 + 1] === h && sameKey(s, spans, from + partKeys[entry - 1]!, from + j)) {
          found = true
          break
        }
        slot = (slot + 1) & mask
        if (--budget < 0) return distinctBySet(s, spans, from, to, fromEnd)
      }
      if (found) continue
      table[slot * 2] = at + 1
      table[slot * 2 + 1] = h
      kept[j] = 1
      distinct++
      // Past half full: twice the slots, the entries placed again.
      if (++used * 2 > slots) {
        const entries = table.slice(0, slots * 2)
        slots *= 2
        mask = slots - 1
        if (table.length < slots * 2) dedupTable = table = new Int32Array(slots * 2)
        else table.fill(0, 0, slots * 2)
        for (let q = 0; q < entries.length; q += 2) {
          const entry = entries[q]!
          if (entry === 0) continue
          const eh = entries[q + 1]!
          let at2 = eh & mask
          while (table[at2 * 2] !== 0) at2 = (at2 + 1) & mask
          table[at2 * 2] = entry
          table[at2 * 2 + 1] = eh
        }
      }
    }
  }
  return distinct
}

function keyText(s: string, spans: KeySpans, k: number): string {
  const start = spans.starts[k]!
  const end = spans.ends[k]!
  return end > 0 ? s.slice(start + 1, end - 1) : JSON.parse(s.slice(start, -end))
}

function distinctBySet(s: string, spans: KeySpans, from: number, to: number, fromEnd: boolean): number {
  const seen = new Set<string>()
  kept.fill(0, 0, to - from)
  for (let step = 0; step < to - from; step++) {
    const j = fromEnd ? to - from - 1 - step : step
    const key = keyText(s, spans, from + j)
    if (seen.has(key)) continue
    seen.add(key)
    kept[j] = 1
  }
  return seen.size
}

/** The array index a key stands for (`"0"`…`"4294967294"`, canonical), or -1. */
function indexOfKey(s: string, spans: KeySpans, k: number): number {
  const end = spans.ends[k]!
  let units: Uint16Array | undefined
  let start = spans.starts[k]! + 1
  let n = end - start - 1
  if (end < 0) {
    // At most 10 digits, each at most 6 characters escaped (`\u0031`): longer keys are no index,
    // and need no decoding to say so.
    if (-end - start > 62) return -1
    scratch = decodeKey(s, start - 1, -end, scratch)
    units = scratch
    start = 0
    n = decodedLength
  }
  if (n < 1 || n > 10) return -1
  let value = 0
  for (let i = 0; i < n; i++) {
    const c = units === undefined ? s.charCodeAt(start + i) : units[i]!
    if (!isDigit(c) || (i === 0 && c === 0x30 && n > 1)) return -1
    value = value * 10 + (c - 0x30)
  }
  return value <= 4_294_967_294 ? value : -1
}

/** How many unknown keys are listed before the rest are only counted. */
export const MAX_UNKNOWN_LISTED = 20

/** The unknown top-level keys: the first `MAX_UNKNOWN_LISTED` in `for…in` order, and how many. */
export interface UnknownKeys {
  readonly listed: ReadonlyArray<string>
  readonly count: number
}

/** Distinct keys in `for…in` order (array indices ascending, then the others as first sent). */
function listUnknown(s: string, spans: KeySpans): UnknownKeys {
  if (spans.length === 0) return { listed: [], count: 0 }
  // The smallest indices, ascending, and the first other keys.
  const indices: Array<number> = []
  const names: Array<number> = []
  const count = distinctKeys(s, spans, 0, spans.length, false)
  for (let k = 0; k < spans.length; k++) {
    if (kept[k] !== 1) continue
    const index = indexOfKey(s, spans, k)
    if (index < 0) {
      if (names.length < MAX_UNKNOWN_LISTED) names.push(k)
      continue
    }
    if (indices.length === MAX_UNKNOWN_LISTED && index > indices[MAX_UNKNOWN_LISTED - 1]!) continue
    let at = indices.length
    while (at > 0 && indices[at - 1]! > index) at--
    indices.splice(at, 0, index)
    if (indices.length > MAX_UNKNOWN_LISTED) indices.pop()
  }
  const listed = indices.map(String)
  for (const k of names) {
    if (listed.length === MAX_UNKNOWN_LISTED) break
    listed.push(keyText(s, spans, k))
  }
  return { listed, count }
}

// ---------------------------------------------------------------------------------------------
// Objects with named members: the body itself, and each ratelimit item.

/** The last value of each known key of one object (JSON.parse keeps the last). */
class Members {
  readonly starts: Int32Array
  readonly ends: Int32Array
  readonly counts: Int32Array
  readonly depths: Int32Array
  readonly flags: Uint8Array
  /** The keys of the last value of `known[keysOf]` when it is an object (the members `meta` counts). */
  readonly keys: KeySpans | undefined

  constructor(readonly known: ReadonlyArray<string>, readonly keysOf: number = -1) {
    this.starts = new Int32Array(known.length).fill(-1)
    this.ends = new Int32Array(known.length)
    this.counts = new Int32Array(known.length)
    this.depths = new Int32Array(known.length)
    this.flags = new Uint8Array(known.length)
    if (keysOf >= 0) this.keys = new KeySpans(false)
  }
}

const OUT_OF_RANGE = 1
const MULTI = 2

const longest = new WeakMap<ReadonlyArray<string>, number>()
/** The length of the longest name in `known` (remembered per list). */
const longestKnown = (known: ReadonlyArray<string>): number => {
  let n = longest.get(known)
  if (n === undefined) {
    n = known.reduce((max, name) => Math.max(max, name.length), 0)
    longest.set(known, n)
  }
  return n
}

/** A hex digit's value (the scan checked it is one). */
const hex = (c: number): number => (c <= 0x39 ? c - 0x30 : (c | 0x20) - 0x57)

/** Which known key the key at `[start, end)` is, or -1. */
function knownIndex(s: string, start: number, end: number, escaped: boolean, known: ReadonlyArray<string>): number {
  if (!escaped) {
    const n = end - start - 2
    for (let k = 0; k < known.length; k++) {
      const name = known[k]!
      if (name.length === n && s.startsWith(name, start + 1)) return k
    }
    return -1
  }
  // A decoded key is at least a sixth of its text (`\uXXXX`): one far longer than every known name
  // is none of them, without decoding it.
  if (end - start - 2 > 6 * longestKnown(known)) return -1
  scratch = decodeKey(s, start, end, scratch)
  const n = decodedLength
  outer: for (let k = 0; k < known.length; k++) {
    const name = known[k]!
    if (name.length !== n) continue
    for (let i = 0; i < n; i++) if (scratch[i] !== name.charCodeAt(i)) continue outer
    return k
  }
  return -1
}

/**
 * `skipValue` for the value of an unknown key, whose facts nobody reads: a string or a plain integer
 * (what a million unknown keys hold) read here, anything else by `skipValue`.
 */
function skipUnknownValue(s: string, i: number, end: number): number {
  let c = 0
  while (i < end && (c = s.charCodeAt(i)) <= 0x20 && isSpace(c)) i++
  if (c === 0x22 && i < end) {
    const next = skipString(s, i + 1, end)
    return next < 0 ? fail(scan.error, i, 0) : next
  }
  if (c >= 0x31 && c <= 0x39) {
    let j = i + 1
    while (j < end && (c = s.charCodeAt(j)) >= 0x30 && c <= 0x39) j++
    if (j === end || (c !== 0x2e && c !== 0x65 && c !== 0x45 && (c < 0x30 || c > 0x39))) {
      if (j - i < 300) return j
    }
  }
  return skipValue(s, i, end)
}

/**
 * Reads the object whose `{` is at `i`: the last value of each known key into `members`, the other
 * keys into `unknown` (when given). The position after the object, or -1 (`scan.error`).
 */
function readObject(s: string, i: number, members: Members, unknown: KeySpans | undefined): number {
  const end = s.length
  i = skipSpace(s, i + 1)
  if (i >= end) return fail(end, -1, 0)
  if (s.charCodeAt(i) === 0x7d) return i + 1
  for (;;) {
    if (s.charCodeAt(i) !== 0x22) return fail(i, -1, 0)
    const keyStart = i
    const next = scanKey(s, i + 1, end)
    if (next < 0) return fail(scan.error, keyStart, 0)
    const escaped = scan.escaped
    const hash = scan.hash
    i = skipSpace(s, next)
    if (i >= end) return fail(end, -1, 0)
    if (s.charCodeAt(i) !== 0x3a) return fail(i, -1, 0)
    const k = knownIndex(s, keyStart, next, escaped, members.known)
    let keys: KeySpans | undefined
    if (k >= 0 && k === members.keysOf) {
      keys = members.keys!
      keys.length = 0
    }
    const valueEnd = k < 0 ? skipUnknownValue(s, i + 1, end) : skipValue(s, i + 1, end, keys)
    if (valueEnd < 0) return -1
    if (k >= 0) {
      members.starts[k] = scan.start
      members.ends[k] = valueEnd
      members.counts[k] = scan.count
      members.depths[k] = scan.maxDepth
      members.flags[k] = (scan.outOfRange ? OUT_OF_RANGE : 0) | (scan.multi ? MULTI : 0)
    } else if (unknown !== undefined) {
      scan.escaped = escaped
      scan.hash = hash
      unknown.push(keyStart, next)
    }
    i = skipSpace(s, valueEnd)
    if (i >= end) return fail(end, -1, 0)
    const c = s.charCodeAt(i)
    if (c === 0x7d) return i + 1
    if (c !== 0x2c) return fail(i, -1, 0)
    i = skipSpace(s, i + 1)
    if (i >= end) return fail(end, -1, 0)
  }
}

// ---------------------------------------------------------------------------------------------
// `meta` when a repeated key could change what V5 reads of it.

/**
 * Key count, depth and whether a number is out of range, of the valid meta object at
 * `[start, end)`, as JSON.parse would build it: in every object a repeated key keeps only its last
 * value, so an earlier value's depth or number does not count. One pass; per open object one frame,
 * per member of an open object one entry (the members of an object are dropped when it closes).
 */
export function metaFacts(s: string, start: number, end: number): { keys: number; depth: number; outOfRange: boolean } {
  // One frame per open object: its first key (-1: none yet), where its members start in `keys`
  // (-1: it has one member at most), and the facts (depth × 2 + out of range) of the member being
  // read. A member is put in `keys` only once its object has a second one: a chain of one-member
  // objects uses none.
  let frameFirst: Int32Array = new Int32Array(64)
  let frameBase: Int32Array = new Int32Array(64)
  let frameFact: Int32Array = new Int32Array(64)
  let top = -1
  // Members of the open objects with two members or more, in order: key span and facts.
  const keys = new KeySpans(true)
  let depth = 0
  let expectKey = false
  let result = { keys: 0, depth: 0, outOfRange: false }
  let i = start
  while (i < end) {
    const c = s.charCodeAt(i)
    if (c === 0x22) {
      if (!expectKey) {
        i = skipString(s, i + 1, end)
        continue
      }
      expectKey = false
      frameFact[top] = depth * 2
      if (frameFirst[top] === -1) {
        frameFirst[top] = i
        i = skipString(s, i + 1, end)
      } else {
        const next = scanKey(s, i + 1, end)
        keys.push(i, next)
        i = next
      }
    } else if (c === 0x7b || c === 0x5b) {
      if (++depth >= kinds.length) growKinds()
      if (top >= 0 && depth > frameFact[top]! >> 1) frameFact[top] = depth * 2 | (frameFact[top]! & 1)
      if (c === 0x7b) {
        kinds[depth] = OBJECT
        if (++top === frameFirst.length) {
          frameFirst = grown(frameFirst)
          frameBase = grown(frameBase)
          frameFact = grown(frameFact)
        }
        frameFirst[top] = -1
        frameBase[top] = -1
        frameFact[top] = depth * 2
        expectKey = true
      } else {
        kinds[depth] = ARRAY
      }
      i++
    } else if (c === 0x5d) {
      depth--
      i++
    } else if (c === 0x7d) {
      const base = frameBase[top]!
      let fact = frameFact[top]!
      let survivors = frameFirst[top] === -1 ? 0 : 1
      if (base >= 0) {
        const values = keys.values!
        const n = keys.length - base
        values[keys.length - 1] = fact
        let harmless = true
        for (let k = base; k < keys.length; k++) {
          const f = values[k]!
          if ((f & 1) === 1 || f >> 1 > limits.maxMetaDepth) harmless = false
        }
        // Nothing a repeated key could hide would change an answer (depth within the limit either
        // way, no number out of range): every member counts; else only the last of each key.
        survivors = n
        if (harmless && top > 0) {
          for (let k = base; k < keys.length; k++) fact = maxFact(fact, values[k]!)
        } else {
          survivors = distinctKeys(s, keys, base, keys.length, true)
          fact = depth * 2
          for (let j = 0; j < n; j++) if (kept[j] === 1) fact = maxFact(fact, values[base + j]!)
        }
        keys.length = base
      }
      depth--
      expectKey = false
      i++
      if (top === 0) {
        result = { keys: survivors, depth: fact >> 1, outOfRange: (fact & 1) === 1 }
      } else {
        frameFact[top - 1] = maxFact(frameFact[top - 1]!, fact)
      }
      top--
    } else if (c === 0x2c) {
      if (kinds[depth] === OBJECT) {
        // The member read is complete. A second member is coming: the first goes to `keys` too.
        if (frameBase[top] === -1) {
          const first = frameFirst[top]!
          const firstEnd = skipString(s, first + 1, end)
          if (!scan.escaped) scan.hash = hashOfKey(s, first, firstEnd)
          frameBase[top] = keys.length
          keys.push(first, firstEnd)
        }
        keys.values![keys.length - 1] = frameFact[top]!
        expectKey = true
      }
      i++
    } else if (c === 0x2d || isDigit(c)) {
      // One number: its end, and whether it is out of range (only a long one, or one with an
      // exponent, can be).
      const first = i
      let exponent = false
      while (++i < end) {
        const d = s.charCodeAt(i)
        if (d === 0x65 || d === 0x45) exponent = true
        else if (!(isDigit(d) || d === 0x2e || d === 0x2b || d === 0x2d)) break
      }
      if ((exponent || i - first > 300) && numberOutOfRange(s, first, i)) frameFact[top] = frameFact[top]! | 1
    } else if (c === 0x74 || c === 0x6e) {
      i += 4
    } else if (c === 0x66) {
      i += 5
    } else {
      i++
    }
  }
  return result
}

/** Facts (depth × 2 + out of range) of two values together. */
function maxFact(a: number, b: number): number {
  return Math.max(a & ~1, b & ~1) | (a & 1) | (b & 1)
}

function grown(array: Int32Array): Int32Array {
  // Four times: a million keys cost a few copies, not twenty.
  const next = new Int32Array(array.length * 4)
  next.set(array)
  return next
}

// ---------------------------------------------------------------------------------------------
// Syntax errors: the message JSON.parse gives, without building the valid text before the error.

/** Below this error position JSON.parse of the body itself is cheap: it stops at the error. */
export const REPLAY_FROM = 4096

/**
 * What a failed scan knew where it stopped: the error's position, the token it was reading (or -1),
 * and the containers open there, outermost first (1: array, 2: object).
 */
export interface SyntaxFailure {
  readonly pos: number
  readonly tokenStart: number
  readonly open: ArrayLike<number>
}

/**
 * The failure `scan` holds, with the body's own object around the value when `inObject`. One typed
 * copy of the stack: a body of 10M open `[` before its error must not cost 10M array pushes.
 */
function failure(inObject: boolean): SyntaxFailure {
  const offset = inObject ? 1 : 0
  const open = new Uint8Array(scan.depth + offset)
  if (inObject) open[0] = OBJECT
  open.set(kinds.subarray(1, scan.depth + 1), offset)
  return { pos: scan.error, tokenStart: scan.tokenStart, open }
}

const parseError = (text: string): string | undefined => {
  try {
    JSON.parse(text)
    return undefined
  } catch (error) {
    return error instanceof SyntaxError ? error.message : undefined
  }
}

/** The first syntax error in `s`, as the scan finds it; undefined when `s` is JSON. */
export function syntaxFailureOf(s: string): SyntaxFailure | undefined {
  const start = skipSpace(s, 0)
  if (start >= s.length) return { pos: s.length, tokenStart: -1, open: [] }
  const end = skipValue(s, start, s.length)
  if (end < 0) return failure(false)
  const rest = skipSpace(s, end)
  return rest < s.length ? { pos: rest, tokenStart: -1, open: [] } : undefined
}

/** Whether the engine's JSON.parse messages give a line and column (newer V8 does): then line breaks must stay. */
const MESSAGES_COUNT_LINES = /line/i.test(parseError("[\n1 2]") ?? "")

/**
 * The `SyntaxError` message `JSON.parse(s)` throws. JSON.parse builds everything before the error,
 * so a huge valid start would cost what the prescan avoids: past `replayFrom`, the engine is handed
 * a stand-in of that start instead (`standIn`) and its message is the one for `s`. The wording stays
 * the engine's own.
 */
export function syntaxErrorMessage(s: string, at: SyntaxFailure, replayFrom: number = REPLAY_FROM): string {
  if (at.pos >= replayFrom && at.pos >= 10 && s.length >= 64) {
    const stand = standIn(s, at, MESSAGES_COUNT_LINES)
    if (stand !== undefined) {
      const message = parseError(stand.prefix + s.slice(stand.cut))
      if (message !== undefined) return message
    }
  }
  return parseError(s) ?? "Unexpected end of JSON input"
}

/** The position of the opening quote of the string whose closing quote is at `close`. */
function openingQuote(s: string, close: number): number {
  for (let i = close - 1; ; i--) {
    if (s.charCodeAt(i) !== 0x22) continue
    // A quote inside a string is escaped: an odd run of backslashes before it.
    let slashes = 0
    while (s.charCodeAt(i - 1 - slashes) === 0x5c) slashes++
    if (slashes % 2 === 0) return i
  }
}

/**
 * A text of the same length as `s[0, cut)` that leaves JSON.parse in the state it is in at `cut`,
 * where `cut` is a boundary between tokens at most `pos - 10` (the engine quotes 10 characters each
 * side of an unexpected token): then `prefix + s.slice(cut)` fails where `s` fails, with the same
 * message. Found walking back from the error over at most those 10 characters and the token they
 * start in: the containers that stretch closes are rebuilt from their closing brackets, the one
 * then open from the failed scan's stack, and what the parser expects at `cut` from the token before
 * it. The rest is spaces (and, with `keepLines`, the line breaks as the engine counts them, the last
 * one in its place). Undefined if the walk finds something it cannot place (never, for a valid start).
 */
export function standIn(s: string, at: SyntaxFailure, keepLines: boolean): { prefix: string; cut: number } | undefined {
  const x = at.pos - 10
  let depth = at.open.length
  let least = depth
  // Containers entered walking back (through their closing bracket), by depth.
  const entered: Array<number | undefined> = []
  let j = at.tokenStart >= 0 ? at.tokenStart : at.pos
  let cut: number
  for (;;) {
    if (j <= x) {
      cut = j
      break
    }
    let k = j
    while (k > 0 && isSpace(s.charCodeAt(k - 1))) k--
    if (k <= x) {
      cut = x
      break
    }
    const c = s.charCodeAt(k - 1)
    if (c === 0x5d || c === 0x7d) {
      entered[++depth] = c === 0x5d ? ARRAY : OBJECT
      j = k - 1
    } else if (c === 0x5b || c === 0x7b) {
      entered[depth--] = undefined
      if (depth < least) least = depth
      j = k - 1
    } else if (c === 0x2c || c === 0x3a) {
      j = k - 1
    } else if (c === 0x22) {
      j = openingQuote(s, k - 1)
    } else if (isDigit(c)) {
      j = k - 1
      // A number's characters; a number ends with a digit, a literal with a letter.
      while (j > 0 && /[-+.0-9eE]/.test(s[j - 1]!)) j--
    } else if (c >= 0x61 && c <= 0x7a) {
      j = k - 1
      while (j > 0 && (s.charCodeAt(j - 1) >= 0x61 && s.charCodeAt(j - 1) <= 0x7a)) j--
    } else {
      return undefined
    }
  }
  // Never between the `\r` and `\n` of one line break (a cut in whitespace moves back one).
  if (cut > 0 && cut < s.length && s.charCodeAt(cut - 1) === 0x0d && s.charCodeAt(cut) === 0x0a) cut--
  const kindAt = (level: number) => entered[level] ?? at.open[level - 1]
  // What the parser expects at the cut: from the innermost container and the token before it.
  let p = cut
  while (p > 0 && isSpace(s.charCodeAt(p - 1))) p--
  const before = p > 0 ? s.charCodeAt(p - 1) : -1
  let expect: number
  if (depth === 0) {
    expect = before === -1 ? Expect.TopValue : Expect.TopAfter
  } else if (kindAt(depth) === ARRAY) {
    expect = before === 0x5b ? Expect.ArrayFirst : before === 0x2c ? Expect.ArrayNext : Expect.ArrayAfter
  } else if (before === 0x7b) {
    expect = Expect.ObjectFirst
  } else if (before === 0x2c) {
    expect = Expect.ObjectNext
  } else if (before === 0x3a) {
    expect = Expect.ObjectValue
  } else if (before === 0x22) {
    // A string just before: a key (after `{` or `,`) or a value (after `:`).
    let q = openingQuote(s, p - 1)
    while (q > 0 && isSpace(s.charCodeAt(q - 1))) q--
    const c = s.charCodeAt(q - 1)
    expect = c === 0x7b ? Expect.ColonFirst : c === 0x2c ? Expect.ColonNext : Expect.ObjectAfter
  } else {
    expect = Expect.ObjectAfter
  }
  const tokens: Array<string> = []
  for (let level = Math.max(1, least); level < depth; level++) {
    if (kindAt(level) === ARRAY) tokens.push("[")
    else tokens.push("{", "\"\"", ":")
  }
  tokens.push(...coreOf(expect))
  if (!keepLines) {
    const core = tokens.join("")
    return core.length > cut ? undefined : { prefix: core + " ".repeat(cut - core.length), cut }
  }
  // Line breaks before the cut, as the engine counts them (`\r\n` once), and where the last one is.
  let breaks = 0
  let lastBreak = -1
  for (let i = 0; i < cut; i++) {
    const c = s.charCodeAt(i)
    if (c === 0x0d && i + 1 < cut && s.charCodeAt(i + 1) === 0x0a) i++
    if (c === 0x0d || c === 0x0a) {
      breaks++
      lastBreak = i
    }
  }
  // Tokens after the last break as far as they fit there; the rest before the first.
  let split = tokens.length
  let after = 0
  while (split > 0 && after + tokens[split - 1]!.length <= cut - lastBreak - 1) after += tokens[--split]!.length
  const head = tokens.slice(0, split).join("")
  const tail = tokens.slice(split).join("")
  const room = lastBreak + 1 - breaks - head.length
  if (room < 0) return undefined
  return {
    prefix: head + " ".repeat(room) + "\n".repeat(breaks) + tail + " ".repeat(cut - lastBreak - 1 - tail.length),
    cut
  }
}

/** Where the parser is at a boundary between tokens: what it expects next, in its innermost container. */
const Expect = {
  TopValue: 0,
  TopAfter: 1,
  ArrayFirst: 2,
  ArrayNext: 3,
  ArrayAfter: 4,
  ObjectFirst: 5,
  ObjectNext: 6,
  ColonFirst: 7,
  ColonNext: 8,
  ObjectValue: 9,
  ObjectAfter: 10
} as const

/** The shortest tokens that leave the parser expecting what `expect` says, in its innermost container. */
function coreOf(expect: number): ReadonlyArray<string> {
  switch (expect) {
    case Expect.TopAfter:
      return ["0"]
    case Expect.ArrayFirst:
      return ["["]
    case Expect.ArrayNext:
      return ["[", "0", ","]
    case Expect.ArrayAfter:
      return ["[", "0"]
    case Expect.ObjectFirst:
      return ["{"]
    case Expect.ObjectNext:
      return ["{", "\"\"", ":", "0", ","]
    case Expect.ColonFirst:
      return ["{", "\"\""]
    case Expect.ColonNext:
      return ["{", "\"\"", ":", "0", ",", "\"\""]
    case Expect.ObjectValue:
      return ["{", "\"\"", ":"]
    case Expect.ObjectAfter:
      return ["{", "\"\"", ":", "0"]
    default:
      return []
  }
}

// ---------------------------------------------------------------------------------------------
// The stand-in body.

/**
 * How V5 reads a top-level field, so what its stand-in must keep: `scalar`, a string, number or
 * boolean (a container is refused by its JSON type alone); `meta`; `ratelimits`.
 */
export type FieldShape = "scalar" | "meta" | "ratelimits"

/** The prescan of a body: the `SyntaxError` message JSON.parse gives, or the stand-in body. */
export type Prescan =
  | { readonly _tag: "SyntaxError"; readonly message: string }
  | {
    readonly _tag: "Body"
    /** The stand-in: an object with the known keys only, or what stands in for a non-object. */
    readonly body: unknown
    readonly unknown: UnknownKeys
  }

const NO_UNKNOWN: UnknownKeys = { listed: [], count: 0 }

const RATELIMIT_FIELDS: ReadonlyArray<string> = ["name", "limit", "duration", "autoApply"]

/**
 * Reads `s` as the body of an endpoint whose top-level fields are `fields` (with how V5 reads each)
 * without building it: see the module comment. `listUnknown`: whether unknown top-level keys are
 * listed and counted (the endpoints that refuse them).
 */
export function prescanBody(
  s: string,
  fields: ReadonlyArray<readonly [string, FieldShape]>,
  listUnknownKeys: boolean,
  replayFrom: number = REPLAY_FROM
): Prescan {
  try {
    return read(s, fields, listUnknownKeys, replayFrom)
  } finally {
    // The shared buffers stay small: one large body must not hold memory once answered.
    if (kinds.length > KEEP) kinds = new Uint8Array(256)
    if (kept.length > KEEP) kept = new Uint8Array(1024)
    if (scratch.length > KEEP) scratch = new Uint16Array(64)
    if (scratch2.length > KEEP) scratch2 = new Uint16Array(64)
  }
}

/** The largest shared buffer kept between bodies. */
const KEEP = 1 << 16

function read(
  s: string,
  fields: ReadonlyArray<readonly [string, FieldShape]>,
  listUnknownKeys: boolean,
  replayFrom: number
): Prescan {
  const syntaxError = (at: SyntaxFailure): Prescan => ({ _tag: "SyntaxError", message: syntaxErrorMessage(s, at, replayFrom) })
  const start = skipSpace(s, 0)
  if (start >= s.length) return syntaxError({ pos: s.length, tokenStart: -1, open: [] })
  if (s.charCodeAt(start) !== 0x7b) {
    const end = skipValue(s, start, s.length)
    if (end < 0) return syntaxError(failure(false))
    const rest = skipSpace(s, end)
    if (rest < s.length) return syntaxError({ pos: rest, tokenStart: -1, open: [] })
    return { _tag: "Body", body: scalarOrEmpty(s, start, end), unknown: NO_UNKNOWN }
  }
  const members = new Members(fields.map(([name]) => name), fields.findIndex(([, shape]) => shape === "meta"))
  const unknown = listUnknownKeys ? new KeySpans(false) : undefined
  const end = readObject(s, start, members, unknown)
  if (end < 0) return syntaxError(failure(true))
  const rest = skipSpace(s, end)
  if (rest < s.length) return syntaxError({ pos: rest, tokenStart: -1, open: [] })
  const body: Record<string, unknown> = {}
  for (let k = 0; k < fields.length; k++) {
    const valueStart = members.starts[k]!
    if (valueStart < 0) continue
    const [name, shape] = fields[k]!
    const valueEnd = members.ends[k]!
    const c = s.charCodeAt(valueStart)
    if (shape === "meta" && c === 0x7b) {
      body[name] = metaText(s, valueStart, valueEnd, members, k)
    } else if (shape === "ratelimits" && c === 0x5b) {
      body[name] = members.counts[k]! > limits.maxRatelimits
        ? new ItemCount(members.counts[k]!)
        : ratelimitItems(s, valueStart)
    } else {
      body[name] = scalarOrEmpty(s, valueStart, valueEnd)
    }
  }
  return { _tag: "Body", body, unknown: unknown === undefined ? NO_UNKNOWN : listUnknown(s, unknown) }
}

/** A scalar as JSON.parse reads it; a container as an empty one of its kind. */
function scalarOrEmpty(s: string, start: number, end: number): unknown {
  const c = s.charCodeAt(start)
  return c === 0x5b ? [] : c === 0x7b ? {} : JSON.parse(s.slice(start, end))
}

function metaText(s: string, start: number, end: number, members: Members, k: number): MetaText {
  const depth = members.depths[k]!
  const outOfRange = (members.flags[k]! & OUT_OF_RANGE) !== 0
  let keys = members.counts[k]!
  // Without an object of two members or more no key is repeated: what was counted is exact.
  if ((members.flags[k]! & MULTI) === 0) return new MetaText(s, start, end, keys, depth, outOfRange)
  // V5 checks the key count first: past the limit, it is the whole answer.
  if (keys > limits.maxMetaKeys) keys = distinctKeys(s, members.keys!, 0, members.keys!.length, false)
  if (keys > limits.maxMetaKeys || (depth <= limits.maxMetaDepth && !outOfRange)) {
    return new MetaText(s, start, end, keys, depth, outOfRange)
  }
  // A repeated key could hide what is too deep or out of range: read it as JSON.parse builds it.
  const facts = metaFacts(s, start, end)
  return new MetaText(s, start, end, facts.keys, facts.depth, facts.outOfRange)
}

/** At most 50 items of a valid `ratelimits` array at `start`: each built as the body's fields are. */
function ratelimitItems(s: string, start: number): Array<unknown> {
  const items: Array<unknown> = []
  let i = skipSpace(s, start + 1)
  if (s.charCodeAt(i) === 0x5d) return items
  for (;;) {
    const itemStart = i
    let end: number
    if (s.charCodeAt(itemStart) === 0x7b) {
      const members = new Members(RATELIMIT_FIELDS)
      end = readObject(s, itemStart, members, undefined)
      const item: Record<string, unknown> = {}
      for (let k = 0; k < RATELIMIT_FIELDS.length; k++) {
        if (members.starts[k]! >= 0) item[RATELIMIT_FIELDS[k]!] = scalarOrEmpty(s, members.starts[k]!, members.ends[k]!)
      }
      items.push(item)
    } else {
      end = skipValue(s, itemStart, s.length)
      items.push(scalarOrEmpty(s, itemStart, end))
    }
    i = skipSpace(s, end)
    if (s.charCodeAt(i) === 0x5d) return items
    i = skipSpace(s, i + 1)
  }
}
