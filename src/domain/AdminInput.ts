/**
 * What the admin API (`Admin.*`, `kit.admin.*`) takes, as Schemas built from the HTTP API's own
 * (./Common.ts, ./Identities.ts): an identity's externalId, meta and ratelimits are checked exactly
 * as `POST /v2/identities.createIdentity` checks them, with the same messages, and the rest by the
 * rules below. The admin API is called from JavaScript, not with parsed JSON, so `meta` is also
 * checked to be JSON (no `undefined`, function, Date, cycle …), which a parsed body always is.
 *
 * An invalid call fails with `InvalidInput`; each issue's `location` is the parameter's name, then
 * the path inside it, as the HTTP API writes `body.ratelimits[0].limit`: `input.ratelimits[0].limit`,
 * `patch.permissions[1]`, `query.cursor`, `workspaceId`.
 */
import { Either, ParseResult, Schema } from "effect"
import { InvalidInput, ValidationIssue } from "../Errors.js"
import { codePoints, JsonBoolean, JsonNumber, JsonString, limits, Meta, RatelimitsRequest, storableText, want } from "./Common.js"
import { CreateIdentityRequest, identityLimits } from "./Identities.js"
import { isJsonObject, type JsonObject, utf8Length } from "./Json.js"

/** The admin API's own limits (where the HTTP API has none). */
export const adminLimits = {
  /**
   * Decision: a root key given by the caller (`issueRootKey({ key })`) has at least 16 characters.
   * Only its unsalted SHA-256 hash is stored, so a short key is one a leaked table gives away by
   * brute force; 16 still allows a hand-made key in a script or a test. A generated key has 38.
   */
  minRootKeyLength: 16,
  maxRootKeyLength: 256,
  /** Ids of workspaces, keys and identities named in a call: a new workspace id is at most 128. */
  maxIdLength: 255,
  maxWorkspaceIdLength: 128,
  maxNameLength: 255,
  maxPermissions: 1000,
  maxPermissionLength: 512,
  defaultPageLimit: 100,
  maxPageLimit: 1000
} as const

const text = (min: number, max: number) =>
  JsonString.pipe(
    Schema.filter((s) => {
      const n = codePoints(s)
      return n >= min || `minLength: got ${n}, want ${min}`
    }),
    Schema.filter((s) => {
      const n = codePoints(s)
      return n <= max || `maxLength: got ${n}, want ${max}`
    }),
    Schema.filter(storableText)
  )

const ID_PATTERN = /^[a-zA-Z0-9_.-]+$/

/** The id of an existing workspace, key or identity named in a call: 1–255 characters PostgreSQL text can hold. */
export const Reference = text(1, adminLimits.maxIdLength)

/** A new workspace's id: 1–128 of `a–z A–Z 0–9 _ . -` (the ids this package makes, `ws_…`, are such). */
export const NewWorkspaceId = text(1, adminLimits.maxWorkspaceIdLength).pipe(
  Schema.filter((s) => ID_PATTERN.test(s) || `pattern: want ${ID_PATTERN.source}`)
)

/** A workspace's or a root key's name, an identity's environment: 1–255 characters. */
export const Name = text(1, adminLimits.maxNameLength)

/** A permission string: 1–512 characters (matched exactly, as the HTTP API matches them). */
export const Permission = text(1, adminLimits.maxPermissionLength)

/** A root key's permissions: at most 1000 (none is allowed: such a key is refused by every endpoint). */
export const Permissions = Schema.Array(Permission).pipe(
  Schema.filter((items) =>
    items.length <= adminLimits.maxPermissions || `maxItems: got ${items.length}, want at most ${adminLimits.maxPermissions}`
  )
).annotations({ message: want("array") })

// A key must fit an `Authorization: Bearer <key>` header as every client sends it (the kit trims
// the token, so no spaces), in every HTTP stack (visible ASCII only).
const KEY_PATTERN = /^[\x21-\x7e]*$/

/**
 * A root key's plaintext: 16–256 visible ASCII characters. Messages never show the key.
 * Decision: see `adminLimits.minRootKeyLength`.
 */
export const RootKeyPlaintext = JsonString.pipe(
  Schema.filter((s) => KEY_PATTERN.test(s) || "pattern: only visible ASCII characters (no spaces), as an Authorization header carries them"),
  Schema.filter((s) => s.length >= adminLimits.minRootKeyLength || `minLength: got ${s.length}, want ${adminLimits.minRootKeyLength}`),
  Schema.filter((s) => s.length <= adminLimits.maxRootKeyLength || `maxLength: got ${s.length}, want ${adminLimits.maxRootKeyLength}`)
)

/** The latest time a JavaScript `Date` holds (+275760-09-13): later ones cannot be shown or compared as dates. */
export const MAX_EPOCH_MILLIS = 8_640_000_000_000_000

const withinDates = (n: number) => n <= MAX_EPOCH_MILLIS || `maximum: got ${n}, want ${MAX_EPOCH_MILLIS} (the latest time a Date holds)`

/** Epoch milliseconds: an integer from 0 to `MAX_EPOCH_MILLIS`. */
export const EpochMillis = JsonNumber.pipe(
  Schema.filter((n) => Number.isInteger(n) || "got number, want integer"),
  Schema.filter((n) => n >= 0 || `minimum: got ${n}, want 0`),
  Schema.filter(withinDates)
)

const isPlainObject = (value: object): boolean => {
  const proto: unknown = Object.getPrototypeOf(value)
  return proto === Object.prototype || proto === null
}

/** What JavaScript value a message calls it: `undefined`, `function`, `Date`, `NaN` … */
const describe = (value: unknown): string =>
  typeof value === "number" ? String(value)
  : typeof value === "object" && value !== null ? (value.constructor?.name ?? "object")
  : typeof value

/**
 * The first value in `root` that JSON cannot carry as it is (`JSON.stringify` would drop or change
 * it), with its path; a nesting past `maxMetaDepth` (a cycle, say) is reported there, before
 * `Meta`'s own walk, which would not end on a cycle.
 */
const notJson = (root: JsonObject): Schema.FilterOutput => {
  const path: Array<PropertyKey> = []
  const visit = (value: unknown, depth: number): Schema.FilterOutput => {
    if (value === null || typeof value === "string" || typeof value === "boolean") return undefined
    if (typeof value === "number") {
      return Number.isFinite(value) ? undefined : { path: [...path], message: `got ${describe(value)}, want a finite number` }
    }
    if (typeof value !== "object") return { path: [...path], message: `got ${describe(value)}, want a JSON value` }
    if (depth > limits.maxMetaDepth) {
      return { path: [], message: `maxDepth: got more than ${limits.maxMetaDepth}, want at most ${limits.maxMetaDepth}` }
    }
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) {
        path.push(i)
        const found = visit(value[i], depth + 1)
        path.pop()
        if (found !== undefined) return found
      }
      return undefined
    }
    if (!isPlainObject(value)) return { path: [...path], message: `got ${describe(value)}, want a plain object` }
    for (const key of Object.keys(value)) {
      path.push(key)
      const found = visit(Reflect.get(value, key), depth + 1)
      path.pop()
      if (found !== undefined) return found
    }
    return undefined
  }
  return visit(root, 1)
}

/**
 * `meta` as the admin API takes it: JSON (see `notJson`), then `Meta` (at most 100 keys, nesting
 * at most 100, numbers in range), then at most 1 MiB as compact JSON (what the HTTP API refuses
 * with its "Metadata is too large").
 */
export const AdminMeta = Schema.declare(isJsonObject, { message: want("object") }).pipe(
  Schema.filter(notJson),
  Schema.compose(Meta),
  Schema.filter((meta) => {
    const size = utf8Length(JSON.stringify(meta))
    return size <= limits.maxMetaBytes ||
      `maxBytes: got ${size} bytes of compact JSON, want at most ${limits.maxMetaBytes} (Metadata is too large, it must be less than 1MB)`
  })
)

/** The HTTP API's `ratelimits` (at most 50, each checked as the API checks it), names unique. */
export const AdminRatelimits = RatelimitsRequest.pipe(
  Schema.filter((items) => {
    const seen = new Set<string>()
    for (let i = 0; i < items.length; i++) {
      const name = items[i]?.name ?? ""
      if (seen.has(name)) {
        return { path: [i, "name"], message: `Ratelimit with name '${name}' is already defined in the request` }
      }
      seen.add(name)
    }
    return undefined
  })
)

const optional = <S extends Schema.Schema.Any>(schema: S) => Schema.optionalWith(schema, { exact: true })

const object = { message: want("object") } as const

/** `createWorkspace`'s input. */
export const CreateWorkspaceInput = Schema.Struct({
  id: optional(NewWorkspaceId),
  name: optional(Name),
  enabled: optional(JsonBoolean)
}).annotations(object)

/** `updateWorkspace`'s patch. */
export const WorkspaceUpdateInput = Schema.Struct({
  name: optional(Name),
  enabled: optional(JsonBoolean)
}).annotations(object)

/** `issueRootKey`'s input but `key`, checked on its own (`RootKeyPlaintext`) once unwrapped. */
export const IssueRootKeyInput = Schema.Struct({
  workspaceId: Reference,
  permissions: optional(Permissions),
  name: optional(Name),
  enabled: optional(JsonBoolean),
  expiresAt: optional(EpochMillis)
}).annotations(object)

/** Epoch milliseconds or `null` (one message per problem, not one per member of a union). */
export const EpochMillisOrNull = Schema.declare(
  (input: unknown): input is number | null => input === null || typeof input === "number",
  { message: want("integer or null") }
).pipe(
  Schema.filter((n) => n === null || Number.isInteger(n) || "got number, want integer"),
  Schema.filter((n) => n === null || n >= 0 || `minimum: got ${n}, want 0`),
  Schema.filter((n) => n === null || withinDates(n))
)

/** `updateRootKey`'s patch. */
export const RootKeyUpdateInput = Schema.Struct({
  enabled: optional(JsonBoolean),
  permissions: optional(Permissions),
  expiresAt: optional(EpochMillisOrNull)
}).annotations(object)

/** `createIdentity`'s input: the HTTP API's `externalId`, `meta` and `ratelimits`, and the rest. */
export const CreateIdentityInput = Schema.Struct({
  workspaceId: Reference,
  externalId: CreateIdentityRequest.fields.externalId,
  environment: optional(Name),
  meta: optional(AdminMeta),
  ratelimits: optional(AdminRatelimits)
}).annotations(object)

const PageLimit = JsonNumber.pipe(
  Schema.filter((n) => Number.isInteger(n) || "got number, want integer"),
  Schema.filter((n) => n >= 1 || `minimum: got ${n}, want 1`),
  Schema.filter((n) => n <= adminLimits.maxPageLimit || `maximum: got ${n}, want ${adminLimits.maxPageLimit}`)
)

/** A list's query: `limit` 1–1000, `cursor` a string (what it holds is checked by `decodeCursor`). */
export const PageQueryInput = Schema.Struct({
  limit: optional(PageLimit),
  cursor: optional(JsonString)
}).annotations(object)

/** `listIdentities`' query: also `search`, at most 256 characters as over HTTP. */
export const IdentityPageQueryInput = Schema.Struct({
  ...PageQueryInput.fields,
  search: optional(JsonString.pipe(Schema.filter((s) => {
    const n = codePoints(s)
    return n <= identityLimits.maxSearchLength || `maxLength: got ${n}, want ${identityLimits.maxSearchLength}`
  })))
}).annotations(object)

// --- checking a call ----------------------------------------------------------------------------

/** `input.ratelimits[2].limit` from a parameter's name and a parse path. */
const location = (root: string, path: ReadonlyArray<PropertyKey>): string =>
  path.reduce<string>((out, key) => typeof key === "number" ? `${out}[${key}]` : `${out}.${String(key)}`, root)

const toIssue = (root: string) => (issue: ParseResult.ArrayFormatterIssue): ValidationIssue => {
  const last = String(issue.path.at(-1))
  return issue._tag === "Missing"
    ? new ValidationIssue({ location: location(root, issue.path), message: `missing property '${last}'`, fix: `Add the '${last}' property` })
    : new ValidationIssue({ location: location(root, issue.path), message: issue.message })
}

/** The issues of one parameter, `[]` when it is valid. */
export type Checked<A> = Either.Either<A, ReadonlyArray<ValidationIssue>>

/**
 * A checker of one parameter against `schema`, compiled once: every violation, each located under
 * `root` (the parameter's name). Unknown keys are ignored.
 */
export const checker = <A, I>(schema: Schema.Schema<A, I>, root: string): (value: unknown) => Checked<A> => {
  const decode = Schema.decodeUnknownEither(schema, { errors: "all", onExcessProperty: "ignore" })
  return (value) => Either.mapLeft(decode(value), (error) => ParseResult.ArrayFormatter.formatErrorSync(error).map(toIssue(root)))
}

/** One issue at `location`, as a failed check. */
export const issueAt = (location: string, message: string, fix?: string): Checked<never> =>
  Either.left([new ValidationIssue(fix === undefined ? { location, message } : { location, message, fix })])

/**
 * The `InvalidInput` of an admin operation, or the checked values. Every parameter is checked and
 * every issue reported; the detail names the operation and the first issue.
 */
export const collect = <const T extends ReadonlyArray<Checked<unknown>>>(
  operation: string,
  checks: T
): Either.Either<{ readonly [K in keyof T]: T[K] extends Checked<infer A> ? A : never }, InvalidInput> => {
  const issues = checks.flatMap((check) => Either.isLeft(check) ? check.left : [])
  if (issues.length === 0) {
    return Either.right(checks.map((check) => Either.getOrThrow(check)) as { readonly [K in keyof T]: T[K] extends Checked<infer A> ? A : never })
  }
  const first = issues[0]
  const more = issues.length > 1 ? ` (and ${issues.length - 1} more)` : ""
  return Either.left(new InvalidInput({
    detail: `Invalid input to ${operation}: ${first?.location}: ${first?.message}${more}`,
    errors: issues
  }))
}

// --- cursors ------------------------------------------------------------------------------------

/** The lists whose cursors this module makes; a cursor is only good for the list that made it. */
export type CursorKind = "workspaces" | "rootKeys" | "identities" | "auditLog"

const CURSOR_TAG: Readonly<Record<CursorKind, string>> = {
  workspaces: "w",
  rootKeys: "k",
  identities: "i",
  auditLog: "a"
}

const BASE64URL = /^[A-Za-z0-9_-]+$/
const POSITION = /^(0|[1-9][0-9]{0,15})$/

/**
 * An opaque cursor: base64url of the list's tag and the store's keyset position (an id, or an
 * audit-log position), so a caller cannot mistake it for an id nor hand one list's cursor to
 * another.
 */
export const encodeCursor = (kind: CursorKind, position: string | number): string =>
  Buffer.from(`${CURSOR_TAG[kind]}:${position}`, "utf8").toString("base64url")

/** The store position of a cursor `encodeCursor(kind, …)` made (`""`: from the start), else an issue at `query.cursor`. */
export function decodeCursor(kind: "auditLog", cursor: string | undefined): Checked<number | undefined>
export function decodeCursor(kind: Exclude<CursorKind, "auditLog">, cursor: string | undefined): Checked<string | undefined>
export function decodeCursor(kind: CursorKind, cursor: string | undefined): Checked<string | number | undefined> {
  if (cursor === undefined || cursor === "") return Either.right(undefined)
  const invalid = issueAt(
    "query.cursor",
    `not a cursor of ${kind}`,
    "Pass the cursor the previous page of the same list answered, or leave it out to start from the beginning"
  )
  if (!BASE64URL.test(cursor)) return invalid
  const decoded = Buffer.from(cursor, "base64url")
  // Canonical base64url only: Node's decoder ignores stray characters and padding bits.
  if (decoded.toString("base64url") !== cursor) return invalid
  const textual = decoded.toString("utf8")
  const prefix = `${CURSOR_TAG[kind]}:`
  if (!textual.startsWith(prefix)) return invalid
  const position = textual.slice(prefix.length)
  if (kind !== "auditLog") return position === "" ? invalid : Either.right(position)
  return POSITION.test(position) && Number.isSafeInteger(Number(position)) ? Either.right(Number(position)) : invalid
}
