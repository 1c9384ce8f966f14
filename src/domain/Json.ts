/** JSON values as they come out of `JSON.parse`. */
export type JsonValue = null | boolean | number | string | ReadonlyArray<JsonValue> | JsonObject
/** A JSON object; keys such as `__proto__` are ordinary own keys. */
export interface JsonObject {
  readonly [key: string]: JsonValue
}

/** True for a plain JSON object (not an array, not null). */
export const isJsonObject = (value: unknown): value is JsonObject =>
  typeof value === "object" && value !== null && !Array.isArray(value)

/** Number of UTF-8 bytes of a string. */
export const utf8Length = (text: string): number => Buffer.byteLength(text, "utf8")
