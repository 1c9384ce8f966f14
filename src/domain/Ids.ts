/**
 * Identifiers of the form `<prefix>_<base58>`, as Unkey issues them: 12 bytes, the first 4 the
 * seconds since 1,700,000,000 (big-endian, so ids sort roughly by creation), the last 8 random.
 */
import { randomBytes } from "node:crypto"

const ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
const EPOCH_SECONDS = 1_700_000_000

/** The id prefixes this package issues. */
export type IdPrefix = "id" | "rl" | "req" | "log" | "ws" | "key"

/** Base58 (Bitcoin alphabet) encoding of a byte array. */
export const base58 = (bytes: Uint8Array): string => {
  let value = 0n
  for (const byte of bytes) value = (value << 8n) | BigInt(byte)
  let out = ""
  while (value > 0n) {
    out = ALPHABET[Number(value % 58n)] + out
    value /= 58n
  }
  for (const byte of bytes) {
    if (byte !== 0) break
    out = "1" + out
  }
  return out
}

/** A fresh id with the given prefix, e.g. `newId("rl")` → `rl_3ZbHNpUq1GnvAaVx`. */
export const newId = (prefix: IdPrefix, nowMs: number = Date.now()): string => {
  const bytes = new Uint8Array(12)
  const seconds = Math.max(0, Math.floor(nowMs / 1000) - EPOCH_SECONDS) >>> 0
  new DataView(bytes.buffer).setUint32(0, seconds)
  bytes.set(randomBytes(8), 4)
  return `${prefix}_${base58(bytes)}`
}

