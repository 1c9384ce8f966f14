/**
 * `IdentityStore` on any `@effect/sql` `SqlClient` speaking PostgreSQL: `PgClient.layer`,
 * `PgClient.layerFromPool` (a host's own `pg` pool), or the PGlite client of `./pglite.ts`. The
 * tables and the write function come from `./migrations.ts`; run `migrate` (or `layerMigrations`)
 * first.
 *
 * Every method is one statement, so one round trip and atomic without `BEGIN`/`COMMIT`: the update
 * is one call of the `identity_kit_update_identity_v4` function and the delete one call of
 * `identity_kit_delete_identity_v2` (see migrations.ts for why they are functions), creating an
 * identity is one statement with data-modifying CTEs (identity, ratelimits, audit), and a page of
 * `listIdentities` is one index-backed statement with each identity's ratelimits as JSON text.
 * Every `SqlError` (and a row that does not decode) becomes a `StorageError` here, at the edge.
 *
 * The statements of every request (the root-key lookup, and the update, create, get, list or
 * delete) run through the `StatementExecutor` of `./executor.ts` when the client's layer provides
 * one (`layerPostgres`, `layerPgliteClient`: prepared statements straight on the driver), else
 * through the `SqlClient`; their rows are decoded by hand-written decoders (a root-key row: ~0.2 µs
 * against ~3 µs with Schema). The other admin statements go through the `SqlClient` and Schema.
 *
 * @example
 * ```ts
 * import { PgClient } from "@effect/sql-pg"
 * import { Effect, Layer } from "effect"
 * import { Pool } from "pg"
 * import { layerMigrations, layerSql } from "identity-kit/sql"
 * const client = PgClient.layerFromPool({
 *   acquire: Effect.acquireRelease(
 *     Effect.sync(() => new Pool({ connectionString: process.env.DATABASE_URL, connectionTimeoutMillis: 5000 })),
 *     (pool) => Effect.promise(() => pool.end())
 *   )
 * })
 * const storage = layerSql.pipe(Layer.provide(layerMigrations), Layer.provide(client))
 * ```
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Duration, Effect, Layer, Option, ParseResult, Random, Schedule, Schema } from "effect"
import { IdentityConflict, IdentityNotFound, RootKeyConflict, StorageError, WorkspaceNotFound } from "../Errors.js"
import { newId } from "../domain/Ids.js"
import { isJsonObject, type JsonObject } from "../domain/Json.js"
import type {
  AuditContext,
  AuditLogEntry,
  Identity,
  IdentityUpdate,
  Ratelimit,
  RatelimitInput,
  RootKey,
  RootKeyInfo,
  RootKeyLookup,
  Workspace
} from "../domain/Model.js"
import { annotate, traced, withSpan } from "../internal/trace.js"
import {
  type IdentityListQuery,
  type IdentityPage,
  IdentityStore,
  type IdentityStoreService,
  type KeysetPage,
  type KeysetQuery,
  type NewIdentity,
  type RootKeyPatch,
  type WorkspacePatch
} from "../services/IdentityStore.js"
import { fromSqlClient, outsideTransactions, type Rows, type Statement, StatementExecutor } from "./executor.js"
import { hasSqlState, listBounds, wellFormed } from "./internal.js"
import {
  IDENTITIES_WORKSPACE_FK,
  LIVE_EXTERNAL_ID_INDEX,
  type MigrationRecord,
  MIGRATIONS_TABLE,
  noTablesMessage,
  ROOT_KEYS_WORKSPACE_FK,
  schemaProblem
} from "./migrations.js"

export { layerMigrations, migrate, migrateWith } from "./migrations.js"
export type { MigrateOptions } from "./migrations.js"
export { StatementExecutor } from "./executor.js"
export { rootKeyNotifyMigration } from "./notify.js"
export type { StatementExecutorService } from "./executor.js"

// --- Rows -------------------------------------------------------------------------------------
// Drivers disagree on int8 (node-postgres: string, PGlite: number, others: bigint), so 64-bit
// columns accept all three and must be a safe integer. JSON columns are selected as text and parsed
// here, so no driver-specific JSON parsing (or a host's `transformJson`) is involved.

const SafeInteger = Schema.transformOrFail(
  Schema.Union(Schema.Number, Schema.BigIntFromSelf, Schema.String),
  Schema.Number,
  {
    strict: true,
    decode: (value, _, ast) => {
      const number = typeof value === "number" ? value : Number(value)
      return Number.isSafeInteger(number) && (typeof value !== "string" || /^-?\d+$/.test(value))
        ? ParseResult.succeed(number)
        : ParseResult.fail(new ParseResult.Type(ast, value, "expected a safe integer"))
    },
    encode: (number) => ParseResult.succeed(number)
  }
)

const JsonObjectFromSelf = Schema.declare((value: unknown): value is JsonObject => isJsonObject(value), {
  identifier: "JsonObject"
})

const RootKeyRow = Schema.Struct({
  id: Schema.String,
  workspace_id: Schema.String,
  hash: Schema.String,
  name: Schema.String,
  permissions: Schema.parseJson(Schema.Array(Schema.String)),
  enabled: Schema.Boolean,
  expires_at: Schema.NullOr(SafeInteger),
  deleted_at: Schema.NullOr(SafeInteger),
  created_at: SafeInteger,
  workspace_name: Schema.NullOr(Schema.String),
  workspace_enabled: Schema.NullOr(Schema.Boolean),
  workspace_created_at: Schema.NullOr(SafeInteger)
})

const WorkspaceRow = Schema.Struct({
  id: Schema.String,
  name: Schema.String,
  enabled: Schema.Boolean,
  created_at: SafeInteger
})

const RootKeyInfoRow = Schema.Struct({
  id: Schema.String,
  workspace_id: Schema.String,
  name: Schema.String,
  permissions: Schema.parseJson(Schema.Array(Schema.String)),
  enabled: Schema.Boolean,
  expires_at: Schema.NullOr(SafeInteger),
  deleted_at: Schema.NullOr(SafeInteger),
  created_at: SafeInteger
})

const AuditRow = Schema.Struct({
  seq: SafeInteger,
  id: Schema.String,
  workspace_id: Schema.String,
  event: Schema.Literal(
    "identity.create",
    "identity.update",
    "identity.delete",
    "ratelimit.create",
    "ratelimit.update",
    "ratelimit.delete"
  ),
  display: Schema.String,
  actor_type: Schema.Literal("rootkey"),
  actor_id: Schema.String,
  actor_name: Schema.String,
  remote_ip: Schema.String,
  user_agent: Schema.String,
  request_id: Schema.String,
  host_request_id: Schema.String,
  time: SafeInteger,
  resources: Schema.parseJson(Schema.Array(Schema.Struct({
    type: Schema.Literal("identity", "ratelimit"),
    id: Schema.String,
    name: Schema.String
  })))
})

const MetaJson = Schema.parseJson(JsonObjectFromSelf)

// JavaScript's string order (UTF-16 code units), as the memory layer sorts. SQL sorts by
// `COLLATE "C"` (UTF-8 bytes), which differs for characters above U+FFFF against U+E000–U+FFFF,
// so the final order is set here.
const byName = (a: Ratelimit, b: Ratelimit) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)

/** A root key as lists show it: never its hash. */
const toRootKeyInfo = (row: typeof RootKeyInfoRow.Type): RootKeyInfo => ({
  id: row.id,
  workspaceId: row.workspace_id,
  name: row.name,
  permissions: row.permissions,
  enabled: row.enabled,
  expiresAt: row.expires_at,
  deletedAt: row.deleted_at,
  createdAt: row.created_at
})

const toRootKey = (row: typeof RootKeyRow.Type): RootKey => ({ ...toRootKeyInfo(row), hash: row.hash })

// Row arrays as constants, built once (see `rows`).
const RootKeyRows = Schema.Array(RootKeyRow)
const AuditRows = Schema.Array(AuditRow)
const WorkspaceRows = Schema.Array(WorkspaceRow)
const RootKeyInfoRows = Schema.Array(RootKeyInfoRow)

/** The page of an admin list that read up to `limit + 1` rows: the last one only gives the next cursor. */
const keysetPage = <Row, A, C>(
  rows: ReadonlyArray<Row>,
  limit: number,
  item: (row: Row) => A,
  position: (row: Row) => C
): KeysetPage<A, C> => {
  const next = rows[limit]
  const items = rows.slice(0, limit).map(item)
  return next === undefined ? { items } : { items, cursor: position(next) }
}

/** SQLSTATE `sqlState` on `constraint` (a driver that does not name the constraint: whichever it is). */
const isConstraintViolation = (error: SqlError, sqlState: string, constraint: string): boolean => {
  const cause = error.cause
  return typeof cause === "object" && cause !== null &&
    "code" in cause && cause.code === sqlState &&
    (!("constraint" in cause) || cause.constraint === undefined || cause.constraint === constraint)
}

/** SQLSTATE foreign_key_violation on `constraint`. */
const isForeignKeyViolation = (error: SqlError, constraint: string): boolean => isConstraintViolation(error, "23503", constraint)

/** SQLSTATE unique_violation on `constraint`. */
const isUniqueViolation = (error: SqlError, constraint: string): boolean => isConstraintViolation(error, "23505", constraint)

const isLiveExternalIdConflict = (error: SqlError): boolean => isUniqueViolation(error, LIVE_EXTERNAL_ID_INDEX)

// The unique constraint on root key hashes (migration 0001).
const ROOT_KEYS_HASH_KEY = "identity_kit_root_keys_hash_key"

// SQLSTATE serialization_failure and deadlock_detected: the transaction was rolled back as a whole.
const RETRYABLE_SQLSTATES: ReadonlySet<string> = new Set(["40001", "40P01"])

/** Whether a storage failure is a rolled-back transaction that may simply be run again. */
const isSerializationFailure = (error: StorageError): boolean => hasSqlState(error, RETRYABLE_SQLSTATES)

// --- The hot path: two statements, decoded by hand --------------------------------------------
// Rows arrive as arrays in the statement's column order. A value of the wrong type throws a
// `RowDecodeError` naming the column (never the value: it may be request data), which the executor
// turns into a `SqlError` and the store into a `StorageError`.

/** A row that does not have the shape its statement promises. */
class RowDecodeError extends Error {
  constructor(statement: string, column: string, expected: string, value: unknown) {
    super(`${statement}: column ${column}: expected ${expected}, got ${value === null ? "null" : typeof value}`)
    this.name = "RowDecodeError"
  }
}

const INT8_MIN = BigInt(Number.MIN_SAFE_INTEGER)
const INT8_MAX = BigInt(Number.MAX_SAFE_INTEGER)

/** A 64-bit integer column as a JS number: node-postgres gives a string, PGlite a number, others a bigint. */
const safeInteger = (value: unknown): number | undefined => {
  if (typeof value === "number") return Number.isSafeInteger(value) ? value : undefined
  if (typeof value === "string") {
    const number = Number(value)
    // `String(number) === value` rejects "", " 1", "1e3", "0x10" and digits past 2^53.
    return Number.isSafeInteger(number) && String(number) === value ? number : undefined
  }
  if (typeof value === "bigint") return value >= INT8_MIN && value <= INT8_MAX ? Number(value) : undefined
  return undefined
}

/** Column readers of one statement's rows. */
const columns = (statement: string) => {
  const fail = (column: string, expected: string, value: unknown): never => {
    throw new RowDecodeError(statement, column, expected, value)
  }
  const text = (value: unknown, column: string): string => typeof value === "string" ? value : fail(column, "text", value)
  const bool = (value: unknown, column: string): boolean =>
    typeof value === "boolean" ? value : fail(column, "boolean", value)
  const integer = (value: unknown, column: string): number => safeInteger(value) ?? fail(column, "a safe integer", value)
  const integerOrNull = (value: unknown, column: string): number | null =>
    value === null ? null : safeInteger(value) ?? fail(column, "a safe integer or null", value)
  const json = (value: unknown, column: string): unknown => {
    const source = text(value, column)
    try {
      return JSON.parse(source)
    } catch {
      return fail(column, "valid JSON", value)
    }
  }
  return { fail, text, bool, integer, integerOrNull, json }
}

// The statements' names are part of their identity on a connection: change the text, change the name.
const FIND_ROOT_KEY: Statement = {
  name: "identity_kit_find_root_key_1",
  text: `SELECT k.id, k.workspace_id, k.name, k.permissions::text, k.enabled, k.expires_at, k.deleted_at, k.created_at,
       w.name, w.enabled, w.created_at
FROM identity_kit_root_keys k
LEFT JOIN identity_kit_workspaces w ON w.id = k.workspace_id
WHERE k.hash = $1::text`
}

const rootKeyColumns = columns("findRootKey")

/** The row of `FIND_ROOT_KEY`, or null when there is none. */
const decodeRootKeyLookup = (rows: Rows, hash: string): RootKeyLookup | null => {
  const row = rows[0]
  if (row === undefined) return null
  const c = rootKeyColumns
  const permissions = c.json(row[3], "permissions")
  if (!Array.isArray(permissions) || !permissions.every((p): p is string => typeof p === "string")) {
    return c.fail("permissions", "a JSON array of strings", row[3])
  }
  const workspaceId = c.text(row[1], "workspace_id")
  const key: RootKey = {
    id: c.text(row[0], "id"),
    workspaceId,
    hash,
    name: c.text(row[2], "name"),
    permissions,
    enabled: c.bool(row[4], "enabled"),
    expiresAt: c.integerOrNull(row[5], "expires_at"),
    deletedAt: c.integerOrNull(row[6], "deleted_at"),
    createdAt: c.integer(row[7], "created_at")
  }
  // The workspace's columns are all NULL when the join found none (its columns are NOT NULL).
  const workspace: Workspace | null = row[8] === null
    ? null
    : {
      id: workspaceId,
      name: c.text(row[8], "workspace name"),
      enabled: c.bool(row[9], "workspace enabled"),
      createdAt: c.integer(row[10], "workspace created_at")
    }
  return { key, workspace }
}

// Every parameter is text, a number or NULL, cast in SQL, so no driver re-serialises JSON or arrays.
// The requested set goes as four parallel arrays (names, limits, durations, autoApply): the
// function reads them with `unnest`, cheaper for PostgreSQL than parsing and casting JSON.
const UPDATE_IDENTITY: Statement = {
  name: "identity_kit_update_identity_4",
  text: `SELECT id, external_id, environment, meta, created_at, updated_at, ratelimits
FROM identity_kit_update_identity_v4($1::text, $2::text, $3::text::json, $4::text::text[], $5::text::bigint[],
  $6::text::bigint[], $7::text::boolean[], $8::text::text[], $9::text::text[], $10::text, $11::text, $12::text,
  $13::text, $14::text, $15::text, $16::bigint)`
}

const updateColumns = columns("updateIdentity")

type Columns = ReturnType<typeof columns>

/** One element of a `ratelimits` JSON column (`json_build_object` of the statements here). */
const ratelimitFromJson = (c: Columns, value: unknown): Ratelimit => {
  const field = (key: string): unknown => isJsonObject(value) ? value[key] : c.fail("ratelimits", "an array of objects", value)
  return {
    id: c.text(field("id"), "ratelimits[].id"),
    name: c.text(field("name"), "ratelimits[].name"),
    limit: c.integer(field("limit"), "ratelimits[].limit"),
    duration: c.integer(field("duration"), "ratelimits[].duration"),
    autoApply: c.bool(field("autoApply"), "ratelimits[].autoApply"),
    createdAt: c.integer(field("createdAt"), "ratelimits[].createdAt"),
    updatedAt: c.integerOrNull(field("updatedAt"), "ratelimits[].updatedAt")
  }
}

/** The row of `UPDATE_IDENTITY` as the identity it describes, or null when none was found. */
const decodeUpdatedIdentity = (rows: Rows, update: IdentityUpdate): Identity | null => {
  const row = rows[0]
  if (row === undefined) return null
  const c = updateColumns
  const ratelimitsJson = c.json(row[6], "ratelimits")
  if (!Array.isArray(ratelimitsJson)) return c.fail("ratelimits", "a JSON array", row[6])
  const ratelimits = ratelimitsJson.map((value) => ratelimitFromJson(c, value)).sort(byName)
  const fields = {
    id: c.text(row[0], "id"),
    workspaceId: update.workspaceId,
    externalId: c.text(row[1], "external_id"),
    environment: c.text(row[2], "environment"),
    deleted: false,
    createdAt: c.integer(row[4], "created_at"),
    updatedAt: c.integerOrNull(row[5], "updated_at"),
    ratelimits
  }
  const sentMeta = update.meta
  if (sentMeta === undefined) {
    const meta = c.json(row[3], "meta")
    return isJsonObject(meta) ? { ...fields, meta } : c.fail("meta", "a JSON object", row[3])
  }
  // The function leaves out a meta it was given. The caller has it as a value already: parsing
  // the text back waits until (unless) someone reads it.
  let parsed: JsonObject | undefined
  return {
    ...fields,
    get meta(): JsonObject {
      return parsed ??= parseSentMeta(sentMeta)
    }
  }
}

/** `IdentityUpdate.meta`: compact JSON of an object, which the database accepted as `json`. */
const parseSentMeta = (text: string): JsonObject => JSON.parse(text)

// --- create, get, list, delete (identities contract §1–§4) ------------------------------------

/**
 * Create in one statement (data-modifying CTEs: all of it or nothing): the identity, its
 * ratelimits in request order (ids from Node, `position` = index), and with `$8` (the audit ids,
 * NULL without audit) `identity.create` then one `ratelimit.create` per item. A live duplicate
 * externalId fails the whole statement on the partial unique index (23505): two concurrent
 * creates queue on that index entry, so exactly one commits.
 */
const CREATE_IDENTITY: Statement = {
  name: "identity_kit_create_identity_2",
  text: `WITH identity AS (
  INSERT INTO identity_kit_identities (id, workspace_id, external_id, environment, meta, deleted, created_at, updated_at)
  VALUES ($1::text, $2::text, $3::text, $4::text, $5::text::json, false, $6::bigint, NULL)
  RETURNING id
),
req AS (
  SELECT e.ord::integer AS ord, e.value->>'id' AS id, e.value->>'name' AS name, (e.value->>'limit')::bigint AS lim,
         (e.value->>'duration')::bigint AS dur, (e.value->>'autoApply')::boolean AS auto_apply
  FROM json_array_elements($7::text::json) WITH ORDINALITY AS e(value, ord)
),
created AS (
  INSERT INTO identity_kit_ratelimits
    (id, workspace_id, identity_id, name, "limit", duration, auto_apply, position, created_at, updated_at)
  SELECT req.id, $2::text, i.id, req.name, req.lim, req.dur, req.auto_apply, req.ord - 1, $6::bigint, NULL
  FROM req CROSS JOIN identity i
)
INSERT INTO identity_kit_audit_log
  (id, workspace_id, event, display, actor_type, actor_id, actor_name, remote_ip, user_agent, request_id,
   host_request_id, time, resources)
SELECT ($8::text::text[])[e.n], $2::text, e.event, e.display, 'rootkey', $9::text, $10::text, $11::text, $12::text,
       $13::text, $14::text, $6::bigint,
       CASE WHEN e.rl_id IS NULL
         THEN json_build_array(json_build_object('type', 'identity', 'id', $1::text, 'name', $3::text))
         ELSE json_build_array(
           json_build_object('type', 'identity', 'id', $1::text, 'name', $3::text),
           json_build_object('type', 'ratelimit', 'id', e.rl_id, 'name', e.rl_name))
       END
FROM (
  SELECT 1 AS n, 'identity.create' AS event, 'Created identity ' || $1::text || '.' AS display,
         NULL::text AS rl_id, NULL::text AS rl_name
  UNION ALL
  SELECT req.ord + 1, 'ratelimit.create', 'Created ratelimit ' || req.id || '.', req.id, req.name FROM req
) e
WHERE $8::text IS NOT NULL
ORDER BY e.n`
}

// The columns of an identity, and its ratelimits as JSON text (ordered in Node: see `byName`).
const IDENTITY_COLUMNS = `i.id, i.external_id, i.environment, i.meta::text, i.created_at, i.updated_at,
  (SELECT coalesce(json_agg(json_build_object(
            'id', r.id, 'name', r.name, 'limit', r."limit", 'duration', r.duration,
            'autoApply', r.auto_apply, 'createdAt', r.created_at, 'updatedAt', r.updated_at)), '[]'::json)::text
   FROM identity_kit_ratelimits r WHERE r.identity_id = i.id)`

/** The live identity with this id or externalId (an id match wins; exact, case-sensitive `=`). */
const GET_IDENTITY: Statement = {
  name: "identity_kit_get_identity_1",
  text: `SELECT ${IDENTITY_COLUMNS}
FROM identity_kit_identities i
WHERE i.workspace_id = $1::text AND NOT i.deleted AND (i.id = $2::text OR i.external_id = $2::text)
ORDER BY i.id = $2::text DESC
LIMIT 1`
}

/**
 * A page: `$3` = limit + 1 rows from `$2` on, in byte order (`COLLATE "C"`, which for these ASCII
 * ids is also JavaScript's code-unit order), read from the index `LIVE_ID_INDEX` (migration 0005)
 * in its order, so the scan stops after `$3` rows whatever the workspace's size.
 */
const LIST_IDENTITIES: Statement = {
  name: "identity_kit_list_identities_1",
  text: `SELECT ${IDENTITY_COLUMNS}
FROM identity_kit_identities i
WHERE i.workspace_id = $1::text AND NOT i.deleted AND i.id COLLATE "C" >= $2::text
ORDER BY i.id COLLATE "C"
LIMIT $3::integer`
}

/**
 * `LIST_IDENTITIES` with `search` (`$4`, already `asciiLower`ed): a literal substring (`strpos`, so
 * no pattern characters) of the id or externalId folded the same way, `lower(… COLLATE "C")`
 * being ASCII-only whatever the database's locale. Same index scan, which reads rows until `$3`
 * match: a search that matches few rows reads the rest of the workspace from the cursor on.
 */
const SEARCH_IDENTITIES: Statement = {
  name: "identity_kit_search_identities_1",
  text: `SELECT ${IDENTITY_COLUMNS}
FROM identity_kit_identities i
WHERE i.workspace_id = $1::text AND NOT i.deleted AND i.id COLLATE "C" >= $2::text
  AND (strpos(lower(i.id COLLATE "C"), $4::text) > 0 OR strpos(lower(i.external_id COLLATE "C"), $4::text) > 0)
ORDER BY i.id COLLATE "C"
LIMIT $3::integer`
}

/** The soft delete of migration 0008's function (one call: one round trip, one transaction). */
const DELETE_IDENTITY: Statement = {
  name: "identity_kit_delete_identity_2",
  text: `SELECT identity_kit_delete_identity_v2($1::text, $2::text, $3::text::text[], $4::text, $5::text, $6::text,
  $7::text, $8::text, $9::text, $10::bigint)`
}

// Audit ids a delete sends: `identity.delete` and as many ratelimits as a request can set (50);
// an identity with more (admin-made) gets the rest from `identity_kit_new_id`.
const DELETE_AUDIT_IDS = 51

const readColumns = columns("getIdentity")
const listColumns = columns("listIdentities")
const deleteColumns = columns("deleteIdentity")

/** A row of `IDENTITY_COLUMNS` as the identity it describes. */
const identityFromRow = (c: Columns, row: ReadonlyArray<unknown>, workspaceId: string): Identity => {
  const meta = c.json(row[3], "meta")
  const ratelimits = c.json(row[6], "ratelimits")
  if (!Array.isArray(ratelimits)) return c.fail("ratelimits", "a JSON array", row[6])
  return {
    id: c.text(row[0], "id"),
    workspaceId,
    externalId: c.text(row[1], "external_id"),
    environment: c.text(row[2], "environment"),
    meta: isJsonObject(meta) ? meta : c.fail("meta", "a JSON object", row[3]),
    deleted: false,
    createdAt: c.integer(row[4], "created_at"),
    updatedAt: c.integerOrNull(row[5], "updated_at"),
    ratelimits: ratelimits.map((value) => ratelimitFromJson(c, value)).sort(byName)
  }
}

/** The page of a list statement that read up to `limit + 1` rows. */
const decodePage = (rows: Rows, query: IdentityListQuery): IdentityPage => {
  const identities: Array<Identity> = []
  for (let at = 0; at < rows.length && at < query.limit; at++) {
    identities.push(identityFromRow(listColumns, rows[at] ?? [], query.workspaceId))
  }
  const next = rows[query.limit]
  return next === undefined ? { identities } : { identities, cursor: listColumns.text(next[0], "id") }
}

const NO_AUDIT = [null, null, null, null, null, null, null] as const

/** The audit parameters of create and delete: the entries' ids, then who, from where and in which request. */
const auditParameters = (audit: AuditContext | undefined, ids: () => string) =>
  audit === undefined
    ? NO_AUDIT
    : [
      ids(),
      audit.actorId,
      audit.actorName,
      audit.remoteIp,
      audit.userAgent,
      audit.requestId ?? "",
      audit.hostRequestId ?? ""
    ] as const

// A character that needs a backslash inside a quoted array element, or a UTF-16 surrogate (a lone
// one is made U+FFFD by `wellFormed`, as every driver's UTF-8 encoding would).
const NEEDS_CARE = /["\\\uD800-\uDFFF]/

/** A string as a double-quoted element of a PostgreSQL array literal (any text, `NULL` included). */
const arrayElement = (text: string): string =>
  NEEDS_CARE.test(text) ? `"${wellFormed(text).replace(/["\\]/g, "\\$&")}"` : `"${text}"`

/** The requested set as the function's four array literals: names, limits, durations, autoApply. */
const ratelimitArrays = (
  requested: ReadonlyArray<RatelimitInput>
): readonly [names: string, limits: string, durations: string, autoApply: string] => {
  let names = "{"
  let limits = "{"
  let durations = "{"
  let autoApply = "{"
  for (let i = 0; i < requested.length; i++) {
    const rl = requested[i]
    if (rl === undefined) continue
    const comma = i === 0 ? "" : ","
    names += comma + arrayElement(rl.name)
    // Validation keeps both safe integers, which `String` writes as plain digits.
    limits += comma + String(rl.limit)
    durations += comma + String(rl.duration)
    autoApply += comma + (rl.autoApply ? "t" : "f")
  }
  return [names + "}", limits + "}", durations + "}", autoApply + "}"]
}

const NO_RATELIMITS = [null, null, null, null] as const

/** `count` fresh ids as a PostgreSQL array literal (base58 and `_` need no quoting). */
const idArray = (prefix: "rl" | "log", count: number, now: number): string => {
  let literal = "{"
  for (let i = 0; i < count; i++) literal += (i === 0 ? "" : ",") + newId(prefix, now)
  return literal + "}"
}

// --- the admin lists ----------------------------------------------------------------------------
// One statement a page, `$limit` = limit + 1 rows (the last only gives the next page's position),
// read from an index in its order, so a page costs about that many rows whatever the table's size:
// migration 0009's indexes for workspaces and root keys, 0001's (workspace_id, seq) for the audit
// log. Ids compare in byte order (`COLLATE "C"`), JavaScript's code-unit order for these ASCII
// ids, as in `listIdentities`. Admin statements: through the `SqlClient`, rows decoded by Schema.

/** Workspaces from id `$1` on. */
export const LIST_WORKSPACES = `SELECT id, name, enabled, created_at
FROM identity_kit_workspaces
WHERE id COLLATE "C" >= $1::text
ORDER BY id COLLATE "C"
LIMIT $2::integer`

/** Workspace `$1`'s root keys (revoked ones too, never the hash) from id `$2` on. */
export const LIST_ROOT_KEYS = `SELECT id, workspace_id, name, permissions::text AS permissions, enabled, expires_at, deleted_at,
  created_at
FROM identity_kit_root_keys
WHERE workspace_id = $1::text AND id COLLATE "C" >= $2::text
ORDER BY id COLLATE "C"
LIMIT $3::integer`

/**
 * Workspace `$1`'s audit entries from position `$2` (`seq`) on. An entry's `seq` is taken when it
 * is inserted and it is seen once its transaction commits, so a write that commits while a reader
 * pages may land before the reader's position and not be read by it; it is never read twice.
 */
export const LIST_AUDIT_LOG = `SELECT seq, id, workspace_id, event, display, actor_type, actor_id, actor_name, remote_ip,
  user_agent, request_id, host_request_id, time, resources::text AS resources
FROM identity_kit_audit_log
WHERE workspace_id = $1::text AND seq >= $2::bigint
ORDER BY seq
LIMIT $3::integer`

// --- readiness ------------------------------------------------------------------------------

/**
 * The newest migration recorded, read from the primary key's end: one round trip, on the same
 * executor as the requests (so it also proves their path to the database works). While another
 * instance migrates, it waits for the migrator's table lock, i.e. until the schema is settled.
 */
const PROBE: Statement = {
  name: "identity_kit_probe_1",
  text: `SELECT migration_id, name FROM ${MIGRATIONS_TABLE} ORDER BY migration_id DESC LIMIT 1`
}

const probeColumns = columns("probe")

const decodeProbe = (rows: Rows): MigrationRecord | undefined => {
  const row = rows[0]
  return row === undefined
    ? undefined
    : { id: probeColumns.integer(row[0], "migration_id"), name: probeColumns.text(row[1], "name") }
}

// SQLSTATE undefined_table: the migrator's table is not on the search path, so neither is anything
// the migrations create (they all run in the same schema).
const isUndefinedTable = (error: SqlError): boolean => {
  const cause = error.cause
  return typeof cause === "object" && cause !== null && "code" in cause && cause.code === "42P01"
}

const probeFailed = (cause: SqlError) =>
  new StorageError({
    operation: "probe",
    cause: isUndefinedTable(cause)
      ? new Error(noTablesMessage(`no table ${MIGRATIONS_TABLE}: the migrations never ran here`), { cause })
      : cause
  })

const findRootKeyFailed = (cause: SqlError) => new StorageError({ operation: "findRootKey", cause })
// PostgreSQL text cannot hold NUL, nor a lone UTF-16 surrogate, which node-postgres sends as
// U+FFFD: "x\uD800" would then find the identity "x\uFFFD". Such a string names no identity on
// any layer (as in memory), so it is answered without a query: not found.
const UNSTORABLE = /\u0000|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/
const namesNothing = (identity: string): boolean => UNSTORABLE.test(identity)

const updateIdentityFailed = (cause: SqlError) => new StorageError({ operation: "updateIdentity", cause })

// Under REPEATABLE READ or SERIALIZABLE (a database whose default isolation is not READ COMMITTED),
// a concurrent update of the same identity aborts the call instead of waiting. The call is one
// transaction that changed nothing, so it is safe to run again: up to 8 more times, after about
// 5, 10, 20 … ms (jittered). Built once, and entered only after a failure: the success path pays
// one `catchIf`.
const retrySchedule = Schedule.jittered(Schedule.exponential("10 millis"))
const firstRetryDelay = Effect.flatMap(Random.nextRange(4, 6), (ms) => Effect.sleep(Duration.millis(ms)))

const isRetryable = (error: unknown): boolean => error instanceof StorageError && isSerializationFailure(error)

const retrySerializationFailures = <A, E>(statement: Effect.Effect<A, E>): Effect.Effect<A, E> =>
  Effect.catchIf(statement, isRetryable, () =>
    Effect.zipRight(
      firstRetryDelay,
      Effect.retry(statement, { while: isRetryable, times: 7, schedule: retrySchedule })
    ))

/** `IdentityStore` on the `SqlClient` in context (its name/JSON transforms are bypassed). */
export const makeSql: Effect.Effect<IdentityStoreService, never, SqlClient.SqlClient> = Effect.gen(function*() {
  const sql = (yield* SqlClient.SqlClient).withoutTransforms()
  const fast = yield* Effect.serviceOption(StatementExecutor)
  const executor = Option.isSome(fast) ? outsideTransactions(fast.value, sql) : fromSqlClient(sql)

  /** Runs a statement and decodes its rows; every failure is a `StorageError` of `operation`. */
  // `schema` is one of the `…Rows` constants: decoding with the same schema object reuses
  // Schema's compiled parser (a fresh `Schema.Array(…)` per query cost ~140 µs a request, bench/).
  const rows = <A, I>(
    operation: string,
    schema: Schema.Schema<ReadonlyArray<A>, I>,
    statement: Effect.Effect<ReadonlyArray<unknown>, SqlError>
  ): Effect.Effect<ReadonlyArray<A>, StorageError> =>
    statement.pipe(
      Effect.flatMap(Schema.decodeUnknown(schema)),
      Effect.mapError((cause) => new StorageError({ operation, cause }))
    )

  const probe = withSpan("IdentityStore.probe")(Effect.flatMap(
    Effect.mapError(executor.execute(PROBE, [], decodeProbe), probeFailed),
    (applied) => {
      const problem = schemaProblem(applied)
      return problem === undefined ? Effect.void : Effect.fail(new StorageError({ operation: "probe", cause: new Error(problem) }))
    }
  ))

  const findRootKey = traced("IdentityStore.findRootKey", function*(hash: string) {
    return yield* executor.execute(FIND_ROOT_KEY, [hash], (rows) => decodeRootKeyLookup(rows, hash)).pipe(
      Effect.mapError(findRootKeyFailed)
    )
  })

  // One statement: each field is replaced only when the patch has it.
  const updateRootKey = traced("IdentityStore.updateRootKey", function*(id: string, patch: RootKeyPatch) {
    // A single statement, rolled back whole on a serialization failure (REPEATABLE READ or
    // SERIALIZABLE by default): run again.
    const [row] = yield* retrySerializationFailures(rows(
      "updateRootKey",
      RootKeyRows,
      sql`UPDATE identity_kit_root_keys SET
            enabled = CASE WHEN ${patch.enabled !== undefined}::boolean THEN ${patch.enabled ?? false}::boolean ELSE enabled END,
            permissions = CASE WHEN ${patch.permissions !== undefined}::boolean
              THEN ${JSON.stringify(patch.permissions ?? [])}::text::json ELSE permissions END,
            expires_at = CASE WHEN ${patch.expiresAt !== undefined}::boolean THEN ${patch.expiresAt ?? null}::bigint ELSE expires_at END,
            deleted_at = CASE WHEN ${patch.deletedAt !== undefined}::boolean
              THEN CASE WHEN ${patch.deletedAt ?? null}::bigint IS NULL THEN NULL
                        ELSE COALESCE(deleted_at, ${patch.deletedAt ?? null}::bigint) END
              ELSE deleted_at END
          WHERE id = ${id} AND (deleted_at IS NULL OR ${patch.deletedAt !== undefined}::boolean)
          RETURNING id, workspace_id, hash, name, permissions::text AS permissions, enabled, expires_at, deleted_at,
                    created_at, NULL::text AS workspace_name, NULL::boolean AS workspace_enabled,
                    NULL::bigint AS workspace_created_at`
    ))
    return row === undefined ? null : toRootKey(row)
  })

  const updateIdentity = traced("IdentityStore.updateIdentity", function*(update: IdentityUpdate) {
    yield* annotate({ "workspace.id": update.workspaceId })
    if (namesNothing(update.identity)) return yield* new IdentityNotFound()
    const requested = update.ratelimits
    const count = requested === undefined ? 0 : requested.length
    const identity = yield* retrySerializationFailures(
      executor.execute(
        UPDATE_IDENTITY,
        [
          update.workspaceId,
          update.identity,
          update.meta ?? null,
          ...(requested === undefined ? NO_RATELIMITS : ratelimitArrays(requested)),
          // An id for each requested item, used when its name is new; audit ids for the identity
          // and one entry per item, plus as many deletions (more fall back to ids made in SQL).
          requested === undefined ? null : idArray("rl", count, update.now),
          idArray("log", 1 + 2 * count, update.now),
          update.audit.actorId,
          update.audit.actorName,
          update.audit.remoteIp,
          update.audit.userAgent,
          update.audit.requestId ?? "",
          update.audit.hostRequestId ?? "",
          update.now
        ],
        (rows) => decodeUpdatedIdentity(rows, update)
      ).pipe(Effect.mapError(updateIdentityFailed))
    )
    return identity ?? (yield* new IdentityNotFound())
  })

  // A replaced workspace keeps the time it was first created.
  const putWorkspace = traced("IdentityStore.putWorkspace", function*(workspace: Workspace) {
    const [row] = yield* rows(
      "putWorkspace",
      WorkspaceRows,
      sql`INSERT INTO identity_kit_workspaces (id, name, enabled, created_at)
          VALUES (${workspace.id}, ${workspace.name}, ${workspace.enabled}, ${workspace.createdAt}::bigint)
          ON CONFLICT (id) DO UPDATE SET name = excluded.name, enabled = excluded.enabled
          RETURNING id, name, enabled, created_at`
    )
    return row === undefined ? workspace : { ...workspace, createdAt: row.created_at }
  })

  // One statement: each field is replaced only when the patch has it.
  const updateWorkspace = traced("IdentityStore.updateWorkspace", function*(id: string, patch: WorkspacePatch) {
    // A single statement, rolled back whole on a serialization failure (REPEATABLE READ or
    // SERIALIZABLE by default): run again.
    const [row] = yield* retrySerializationFailures(rows(
      "updateWorkspace",
      WorkspaceRows,
      sql`UPDATE identity_kit_workspaces SET
            name = CASE WHEN ${patch.name !== undefined}::boolean THEN ${patch.name ?? ""}::text ELSE name END,
            enabled = CASE WHEN ${patch.enabled !== undefined}::boolean THEN ${patch.enabled ?? false}::boolean ELSE enabled END
          WHERE id = ${id}
          RETURNING id, name, enabled, created_at`
    ))
    return row === undefined ? null : { id: row.id, name: row.name, enabled: row.enabled, createdAt: row.created_at }
  })

  // The workspace's existence is checked by the foreign key of migration 0009, in the same statement.
  const putRootKey = traced("IdentityStore.putRootKey", function*(key: RootKey) {
    yield* sql`INSERT INTO identity_kit_root_keys
                 (id, workspace_id, hash, name, permissions, enabled, expires_at, deleted_at, created_at)
               VALUES (${key.id}, ${key.workspaceId}, ${key.hash}, ${key.name},
                       ${JSON.stringify(key.permissions)}::text::json, ${key.enabled},
                       ${key.expiresAt}::bigint, ${key.deletedAt}::bigint, ${key.createdAt}::bigint)`.pipe(
      Effect.mapError((cause) =>
        isForeignKeyViolation(cause, ROOT_KEYS_WORKSPACE_FK)
          ? new WorkspaceNotFound({ workspaceId: key.workspaceId })
          : isUniqueViolation(cause, ROOT_KEYS_HASH_KEY)
          ? new RootKeyConflict()
          : new StorageError({ operation: "putRootKey", cause })
      )
    )
    return key
  })

  const listWorkspaces = traced("IdentityStore.listWorkspaces", function*(query: KeysetQuery<string>) {
    const found = yield* rows(
      "listWorkspaces",
      WorkspaceRows,
      sql.unsafe(LIST_WORKSPACES, [listBounds(query.cursor, undefined).from, query.limit + 1])
    )
    return keysetPage(
      found,
      query.limit,
      (row): Workspace => ({ id: row.id, name: row.name, enabled: row.enabled, createdAt: row.created_at }),
      (row) => row.id
    )
  })

  const listRootKeys = traced("IdentityStore.listRootKeys", function*(workspaceId: string, query: KeysetQuery<string>) {
    yield* annotate({ "workspace.id": workspaceId })
    const found = yield* rows(
      "listRootKeys",
      RootKeyInfoRows,
      sql.unsafe(LIST_ROOT_KEYS, [workspaceId, listBounds(query.cursor, undefined).from, query.limit + 1])
    )
    return keysetPage(
      found,
      query.limit,
      toRootKeyInfo,
      (row) => row.id
    )
  })

  const createIdentity = traced("IdentityStore.createIdentity", function*(
    input: NewIdentity & { readonly now: number; readonly audit?: AuditContext | undefined }
  ) {
    yield* annotate({ "workspace.id": input.workspaceId })
    const id = newId("id", input.now)
    const environment = input.environment ?? "default"
    const metaJson = JSON.stringify(input.meta ?? {})
    const ratelimits = (input.ratelimits ?? []).map((rl) => ({
      id: newId("rl", input.now),
      name: wellFormed(rl.name),
      limit: rl.limit,
      duration: rl.duration,
      autoApply: rl.autoApply
    }))
    yield* retrySerializationFailures(
      executor.execute(
        CREATE_IDENTITY,
        [
          id,
          input.workspaceId,
          input.externalId,
          environment,
          metaJson,
          input.now,
          JSON.stringify(ratelimits),
          ...auditParameters(input.audit, () => idArray("log", 1 + ratelimits.length, input.now))
        ],
        () => undefined
      ).pipe(
        Effect.mapError((cause) =>
          isLiveExternalIdConflict(cause)
            ? new IdentityConflict({ workspaceId: input.workspaceId, externalId: input.externalId })
            : isForeignKeyViolation(cause, IDENTITIES_WORKSPACE_FK)
            ? new WorkspaceNotFound({ workspaceId: input.workspaceId })
            : new StorageError({ operation: "createIdentity", cause })
        )
      )
    )
    // What was written, read back the way every other method answers it (meta parsed from its text).
    const meta = yield* Schema.decode(MetaJson)(metaJson).pipe(
      Effect.mapError((cause) => new StorageError({ operation: "createIdentity", cause }))
    )
    const identity: Identity = {
      id,
      workspaceId: input.workspaceId,
      externalId: input.externalId,
      environment,
      meta,
      deleted: false,
      createdAt: input.now,
      updatedAt: null,
      ratelimits: ratelimits.map((rl): Ratelimit => ({ ...rl, createdAt: input.now, updatedAt: null })).sort(byName)
    }
    return identity
  })

  // A string with NUL or a lone surrogate names nothing (see `namesNothing`): answered without asking.
  const getIdentity = traced("IdentityStore.getIdentity", function*(workspaceId: string, identity: string) {
    yield* annotate({ "workspace.id": workspaceId })
    if (namesNothing(identity)) return null
    return yield* executor.execute(GET_IDENTITY, [workspaceId, identity], (rows) => {
      const row = rows[0]
      return row === undefined ? null : identityFromRow(readColumns, row, workspaceId)
    }).pipe(Effect.mapError((cause) => new StorageError({ operation: "getIdentity", cause })))
  })

  const listIdentities = traced("IdentityStore.listIdentities", function*(query: IdentityListQuery) {
    yield* annotate({ "workspace.id": query.workspaceId })
    const bounds = listBounds(query.cursor, query.search)
    if (bounds.matchesNothing) return { identities: [] }
    const limit = query.limit + 1
    const statement = bounds.needle === undefined
      ? executor.execute(LIST_IDENTITIES, [query.workspaceId, bounds.from, limit], (rows) => decodePage(rows, query))
      : executor.execute(
        SEARCH_IDENTITIES,
        [query.workspaceId, bounds.from, limit, bounds.needle],
        (rows) => decodePage(rows, query)
      )
    return yield* statement.pipe(Effect.mapError((cause) => new StorageError({ operation: "listIdentities", cause })))
  })

  // `now` is the audit entries' time only: `updated_at` is left as it was (see migrations.ts).
  const deleteIdentity = traced("IdentityStore.deleteIdentity", function*(
    workspaceId: string,
    identity: string,
    now: number,
    audit?: AuditContext | undefined
  ) {
    yield* annotate({ "workspace.id": workspaceId })
    if (namesNothing(identity)) return false
    return yield* retrySerializationFailures(
      executor.execute(
        DELETE_IDENTITY,
        [workspaceId, identity, ...auditParameters(audit, () => idArray("log", DELETE_AUDIT_IDS, now)), now],
        (rows) => deleteColumns.bool(rows[0]?.[0], "found")
      ).pipe(Effect.mapError((cause) => new StorageError({ operation: "deleteIdentity", cause })))
    )
  })

  // The position is `seq` (see `LIST_AUDIT_LOG`).
  const listAuditLog = traced("IdentityStore.listAuditLog", function*(workspaceId: string, query: KeysetQuery<number>) {
    yield* annotate({ "workspace.id": workspaceId })
    const found = yield* rows(
      "listAuditLog",
      AuditRows,
      sql.unsafe(LIST_AUDIT_LOG, [workspaceId, query.cursor ?? 0, query.limit + 1])
    )
    return keysetPage(found, query.limit, (row): AuditLogEntry => ({
      id: row.id,
      workspaceId: row.workspace_id,
      event: row.event,
      display: row.display,
      actorType: row.actor_type,
      actorId: row.actor_id,
      actorName: row.actor_name,
      remoteIp: row.remote_ip,
      userAgent: row.user_agent,
      requestId: row.request_id,
      hostRequestId: row.host_request_id,
      time: row.time,
      resources: row.resources
    }), (row) => row.seq)
  })

  const service: IdentityStoreService = {
    probe,
    findRootKey,
    updateIdentity,
    putWorkspace,
    updateWorkspace,
    listWorkspaces,
    putRootKey,
    listRootKeys,
    updateRootKey,
    createIdentity,
    getIdentity,
    deleteIdentity,
    listIdentities,
    listAuditLog
  }
  return service
})

/** `IdentityStore` on the `SqlClient` in context. Needs the tables: provide `layerMigrations` first. */
export const layerSql: Layer.Layer<IdentityStore, never, SqlClient.SqlClient> = Layer.effect(IdentityStore, makeSql)
