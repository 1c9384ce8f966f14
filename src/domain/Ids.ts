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
const idBytes = new Uint8Array(12)

/** A fresh id with the given prefix, e.g. `newId("rl")` → `rl_3ZbHNpUq1GnvAaVx`. */
export const newId = (prefix: IdPrefix, nowMs: number = Date.now()): string => {
  const seconds = Math.max(0, Math.floor(nowMs / 1000) - EPOCH_SECONDS) >>> 0
  idBytes[0] = seconds >>> 24
  idBytes[1] = (seconds >>> 16) & 0xff
  idBytes[2] = (seconds >>> 8) & 0xff
  idBytes[3] = seconds & 0xff
  if (randomOffset === RANDOM_BATCH) {
    randomFillSync(random)
    randomOffset = 0
  }
  // Each random byte serves one id only.
  for (let i = 0; i < 8; i++) idBytes[4 + i] = random[randomOffset + i] ?? 0
  randomOffset += 8
  return `${prefix}_${base58(idBytes)}`
}
