/**
 * Identifiers of the form `<prefix>_<base58>`, as Unkey issues them: 12 bytes, the first 4 the
 * seconds since 1,700,000,000 (big-endian, so ids sort roughly by creation), the last 8 random.
 */
import { randomFillSync } from "node:crypto"

const ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
const EPOCH_SECONDS = 1_700_000_000

/** The id prefixes this package issues. */
export type IdPrefix = "id" | "rl" | "req" | "log" | "ws" | "key"

// Base58 by long division on 16-bit limbs, 6 digits at a time: every intermediate value stays below
// 58^6 · 2^16 ≈ 2.5e15 < 2^53, so plain numbers are exact. A BigInt per byte and per digit (the
// textbook version) cost ~10× more, and ids are made several times per request.
const CHUNK = 58 ** 6
const CHUNK_DIGITS = 6

/** Base58 (Bitcoin alphabet) encoding of a byte array. */
export const base58 = (bytes: Uint8Array): string => {
  let zeros = 0
  while (zeros < bytes.length && bytes[zeros] === 0) zeros++
  // Big-endian 16-bit limbs of the value; an odd length gets a leading 8-bit limb.
  const limbs: Array<number> = []
  let i = zeros
  if ((bytes.length - i) % 2 === 1) limbs.push(bytes[i++] ?? 0)
  for (; i < bytes.length; i += 2) limbs.push(((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0))

  // Chunks of 6 digits, least significant first.
  const chunks: Array<number> = []
  let start = 0
  while (start < limbs.length) {
    let remainder = 0
    for (let j = start; j < limbs.length; j++) {
      const current = remainder * 65_536 + (limbs[j] ?? 0)
      let quotient = Math.floor(current / CHUNK)
      remainder = current - quotient * CHUNK
      // The float division can land one off near an integer; exact integer arithmetic fixes it.
      if (remainder < 0) {
        quotient--
        remainder += CHUNK
      } else if (remainder >= CHUNK) {
        quotient++
        remainder -= CHUNK
      }
      limbs[j] = quotient
    }
    chunks.push(remainder)
    while (start < limbs.length && limbs[start] === 0) start++
  }

  let out = "1".repeat(zeros)
  for (let c = chunks.length - 1; c >= 0; c--) {
    let chunk = chunks[c] ?? 0
    let digits = ""
    // The most significant chunk is not padded: the value has no leading zero digits.
    for (let d = 0; d < CHUNK_DIGITS && (chunk > 0 || c < chunks.length - 1); d++) {
      digits = ALPHABET.charAt(chunk % 58) + digits
      chunk = Math.floor(chunk / 58)
    }
    out += digits
  }
  return out
}

// Random bytes drawn from the OS in batches: one `randomFillSync` per 256 ids instead of one per id.
const RANDOM_BATCH = 8 * 256
const random = new Uint8Array(RANDOM_BATCH)
let randomOffset = RANDOM_BATCH

// An id's 12 bytes as six 16-bit limbs in a reused array, divided by 58^6 in place (values stay
// below 58^6 · 2^16 < 2^53: exact), each remainder giving 6 digits; the digits go into one reused
// buffer and become a string in one step. No array and no string per digit: ids are made several
// times per request.
const ALPHABET_CODES = Uint8Array.from(ALPHABET, (char) => char.charCodeAt(0))
const digits = Buffer.alloc(24)
const limbs = new Float64Array(6)

/** Base58 of the 96-bit value `hi·2^64 + mid·2^32 + lo` (each a 32-bit unsigned limb, `hi` > 0). */
const base58Of96 = (hi: number, mid: number, lo: number): string => {
  limbs[0] = hi >>> 16
  limbs[1] = hi & 0xffff
  limbs[2] = mid >>> 16
  limbs[3] = mid & 0xffff
  limbs[4] = lo >>> 16
  limbs[5] = lo & 0xffff
  let start = limbs[0] === 0 ? 1 : 0
  let at = digits.length
  while (start < 6) {
    let remainder = 0
    for (let j = start; j < 6; j++) {
      const current = remainder * 65_536 + (limbs[j] ?? 0)
      const quotient = Math.floor(current / CHUNK)
      remainder = current - quotient * CHUNK
      limbs[j] = quotient
    }
    while (start < 6 && limbs[start] === 0) start++
    // Six digits, least significant first; the most significant chunk is not padded.
    for (let d = 0; d < CHUNK_DIGITS && (remainder > 0 || start < 6); d++) {
      const digit = remainder % 58
      digits[--at] = ALPHABET_CODES[digit] ?? 0
      remainder = (remainder - digit) / 58
    }
  }
  return digits.toString("latin1", at, digits.length)
}

/** A fresh id with the given prefix, e.g. `newId("rl")` → `rl_3ZbHNpUq1GnvAaVx`. */
export const newId = (prefix: IdPrefix, nowMs: number = Date.now()): string => {
  const seconds = Math.max(0, Math.floor(nowMs / 1000) - EPOCH_SECONDS) >>> 0
  if (randomOffset === RANDOM_BATCH) {
    randomFillSync(random)
    randomOffset = 0
  }
  // Each random byte serves one id only.
  const r = randomOffset
  randomOffset += 8
  const mid = (((random[r] ?? 0) << 24) | ((random[r + 1] ?? 0) << 16) | ((random[r + 2] ?? 0) << 8) | (random[r + 3] ?? 0)) >>> 0
  const lo = (((random[r + 4] ?? 0) << 24) | ((random[r + 5] ?? 0) << 16) | ((random[r + 6] ?? 0) << 8) | (random[r + 7] ?? 0)) >>> 0
  // Before 2023-11-14 (a test clock at 0) the leading zero bytes become "1"s: the general encoder.
  return `${prefix}_${seconds === 0 ? base58(idBytes(seconds, mid, lo)) : base58Of96(seconds, mid, lo)}`
}

const idBytes = (hi: number, mid: number, lo: number): Uint8Array => {
  const bytes = new Uint8Array(12)
  const view = new DataView(bytes.buffer)
  view.setUint32(0, hi)
  view.setUint32(4, mid)
  view.setUint32(8, lo)
  return bytes
}
