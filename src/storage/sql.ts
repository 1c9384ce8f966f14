/**
 * `IdentityStore` on any `@effect/sql` `SqlClient` speaking PostgreSQL: `PgClient.layer`,
 * `PgClient.layerFromPool` (a host's own `pg` pool), or the PGlite client of `./pglite.ts`. The
 * tables and the write function come from `./migrations.ts`; run `migrate` (or `layerMigrations`)
 * first.
 *
 * Every method is one statement, so one round trip and atomic without `BEGIN`/`COMMIT`: the update
 * is one call of the `identity_kit_update_identity` function (see migrations.ts for why it is a
 * function), creating an identity is one statement with a data-modifying CTE. Every `SqlError`
 * (and a row that does not decode) becomes a `StorageError` here, at the edge.
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
import { SqlClient } from "@effect/sql"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect, Layer, ParseResult, Schedule, Schema } from "effect"
import { IdentityConflict, IdentityNotFound, StorageError } from "../Errors.js"
import { newId } from "../domain/Ids.js"
import { isJsonObject, type JsonObject } from "../domain/Json.js"
import type { AuditLogEntry, Identity, IdentityUpdate, Ratelimit, RootKey, RootKeyLookup, Workspace } from "../domain/Model.js"
import { IdentityStore, type IdentityStoreService, type NewIdentity, type RootKeyPatch } from "../services/IdentityStore.js"
import { LIVE_EXTERNAL_ID_INDEX } from "./migrations.js"

export { layerMigrations, migrate } from "./migrations.js"

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

const RatelimitJson = Schema.Struct({
  id: Schema.String,
  name: Schema.String,
  limit: SafeInteger,
  duration: SafeInteger,
  autoApply: Schema.Boolean,
  createdAt: SafeInteger,
  updatedAt: Schema.NullOr(SafeInteger)
})

const IdentityRow = Schema.Struct({
  id: Schema.String,
  external_id: Schema.String,
  environment: Schema.String,
  meta: Schema.parseJson(JsonObjectFromSelf),
  created_at: SafeInteger,
  updated_at: Schema.NullOr(SafeInteger),
  ratelimits: Schema.parseJson(Schema.Array(RatelimitJson))
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

const AuditRow = Schema.Struct({
  id: Schema.String,
  workspace_id: Schema.String,
  event: Schema.Literal("identity.update", "ratelimit.create", "ratelimit.update", "ratelimit.delete"),
  display: Schema.String,
  actor_type: Schema.Literal("rootkey"),
  actor_id: Schema.String,
  actor_name: Schema.String,
  remote_ip: Schema.String,
  user_agent: Schema.String,
  time: SafeInteger,
  resources: Schema.parseJson(Schema.Array(Schema.Struct({
    type: Schema.Literal("identity", "ratelimit"),
    id: Schema.String,
    name: Schema.String
  })))
})

const IdRow = Schema.Struct({ id: Schema.String })

const MetaJson = Schema.parseJson(JsonObjectFromSelf)

// JavaScript's string order (UTF-16 code units), as the memory layer sorts. SQL sorts by
// `COLLATE "C"` (UTF-8 bytes), which differs for characters above U+FFFF against U+E000–U+FFFF,
// so the final order is set here.
const byName = (a: Ratelimit, b: Ratelimit) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)

const toRootKey = (row: typeof RootKeyRow.Type): RootKey => ({
  id: row.id,
  workspaceId: row.workspace_id,
  hash: row.hash,
  name: row.name,
  permissions: row.permissions,
  enabled: row.enabled,
  expiresAt: row.expires_at,
  deletedAt: row.deleted_at,
  createdAt: row.created_at
})

// Row arrays as constants, built once (see `rows`).
const IdentityRows = Schema.Array(IdentityRow)
const RootKeyRows = Schema.Array(RootKeyRow)
const AuditRows = Schema.Array(AuditRow)
const IdRows = Schema.Array(IdRow)

const toIdentity = (workspaceId: string, row: typeof IdentityRow.Type): Identity => ({
  id: row.id,
  workspaceId,
  externalId: row.external_id,
  environment: row.environment,
  meta: row.meta,
  deleted: false,
  createdAt: row.created_at,
  updatedAt: row.updated_at,
  ratelimits: [...row.ratelimits].sort(byName)
})

// PostgreSQL text is UTF-8 and cannot hold a lone UTF-16 surrogate. Drivers already turn one in a
// text parameter into U+FFFD; inside JSON it would stay an escape (`\ud800`) that fails when SQL
// reads it as text. Names are replaced the same way here, so such input is never a 500.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g
const wellFormed = (text: string): string => text.replace(LONE_SURROGATE, "\uFFFD")

const isLiveExternalIdConflict = (error: SqlError): boolean => {
  const cause = error.cause
  return typeof cause === "object" && cause !== null &&
    "code" in cause && cause.code === "23505" &&
    (!("constraint" in cause) || cause.constraint === undefined || cause.constraint === LIVE_EXTERNAL_ID_INDEX)
}

// SQLSTATE serialization_failure and deadlock_detected: the transaction was rolled back as a whole.
const RETRYABLE_SQLSTATES: ReadonlySet<string> = new Set(["40001", "40P01"])

/** Whether a storage failure is a rolled-back transaction that may simply be run again. */
const isSerializationFailure = (error: StorageError): boolean => {
  let cause: unknown = error.cause
  for (let depth = 0; depth < 4 && typeof cause === "object" && cause !== null; depth++) {
    const code: unknown = Reflect.get(cause, "code")
    if (typeof code === "string" && RETRYABLE_SQLSTATES.has(code)) return true
    cause = Reflect.get(cause, "cause")
  }
  return false
}

/** `IdentityStore` on the `SqlClient` in context (its name/JSON transforms are bypassed). */
export const makeSql: Effect.Effect<IdentityStoreService, never, SqlClient.SqlClient> = Effect.gen(function*() {
  const sql = (yield* SqlClient.SqlClient).withoutTransforms()

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

  const ratelimitsJson = sql.literal(`(
    SELECT coalesce(json_agg(json_build_object(
             'id', r.id, 'name', r.name, 'limit', r."limit", 'duration', r.duration,
             'autoApply', r.auto_apply, 'createdAt', r.created_at, 'updatedAt', r.updated_at)
           ORDER BY r.name COLLATE "C"), '[]'::json)::text
    FROM identity_kit_ratelimits r WHERE r.identity_id = i.id
  )`)

  const findRootKey = Effect.fn("IdentityStore.findRootKey")(function*(hash: string) {
    const [row] = yield* rows(
      "findRootKey",
      RootKeyRows,
      sql`SELECT k.id, k.workspace_id, k.hash, k.name, k.permissions::text AS permissions, k.enabled,
                 k.expires_at, k.deleted_at, k.created_at,
                 w.name AS workspace_name, w.enabled AS workspace_enabled, w.created_at AS workspace_created_at
          FROM identity_kit_root_keys k
          LEFT JOIN identity_kit_workspaces w ON w.id = k.workspace_id
          WHERE k.hash = ${hash}`
    )
    if (row === undefined) return null
    const key = toRootKey(row)
    const workspace: Workspace | null =
      row.workspace_name === null || row.workspace_enabled === null || row.workspace_created_at === null
        ? null
        : { id: row.workspace_id, name: row.workspace_name, enabled: row.workspace_enabled, createdAt: row.workspace_created_at }
    const lookup: RootKeyLookup = { key, workspace }
    return lookup
  })

  // One statement: each field is replaced only when the patch has it.
  const updateRootKey = Effect.fn("IdentityStore.updateRootKey")(function*(id: string, patch: RootKeyPatch) {
    const [row] = yield* rows(
      "updateRootKey",
      RootKeyRows,
      sql`UPDATE identity_kit_root_keys SET
            enabled = CASE WHEN ${patch.enabled !== undefined}::boolean THEN ${patch.enabled ?? false}::boolean ELSE enabled END,
            permissions = CASE WHEN ${patch.permissions !== undefined}::boolean
              THEN ${JSON.stringify(patch.permissions ?? [])}::text::json ELSE permissions END,
            expires_at = CASE WHEN ${patch.expiresAt !== undefined}::boolean THEN ${patch.expiresAt ?? null}::bigint ELSE expires_at END,
            deleted_at = CASE WHEN ${patch.deletedAt !== undefined}::boolean THEN ${patch.deletedAt ?? null}::bigint ELSE deleted_at END
          WHERE id = ${id}
          RETURNING id, workspace_id, hash, name, permissions::text AS permissions, enabled, expires_at, deleted_at,
                    created_at, NULL::text AS workspace_name, NULL::boolean AS workspace_enabled,
                    NULL::bigint AS workspace_created_at`
    )
    return row === undefined ? null : toRootKey(row)
  })

  const updateIdentity = Effect.fn("IdentityStore.updateIdentity")(function*(update: IdentityUpdate) {
    yield* Effect.annotateCurrentSpan({ "workspace.id": update.workspaceId })
    const ratelimits = update.ratelimits === undefined
      ? null
      : JSON.stringify(update.ratelimits.map((rl) => ({
        name: wellFormed(rl.name),
        limit: rl.limit,
        duration: rl.duration,
        autoApply: rl.autoApply
      })))
    // JSON goes in as text and is cast in SQL, so no driver re-serialises it.
    const [row] = yield* rows(
      "updateIdentity",
      IdentityRows,
      sql`SELECT * FROM identity_kit_update_identity(
            ${update.workspaceId}::text, ${update.identity}::text,
            ${update.meta ?? null}::text::json, ${ratelimits}::text::json,
            ${update.audit.actorId}::text, ${update.audit.actorName}::text,
            ${update.audit.remoteIp}::text, ${update.audit.userAgent}::text,
            ${update.now}::bigint)`
    ).pipe(
      // Under REPEATABLE READ or SERIALIZABLE (a database whose default isolation is not READ
      // COMMITTED), a concurrent update of the same identity aborts the call instead of waiting.
      // The call is one transaction that changed nothing, so it is safe to run again.
      Effect.retry({
        while: isSerializationFailure,
        times: 8,
        schedule: Schedule.jittered(Schedule.exponential("5 millis"))
      })
    )
    if (row === undefined) return yield* new IdentityNotFound()
    return toIdentity(update.workspaceId, row)
  })

  const putWorkspace = Effect.fn("IdentityStore.putWorkspace")(function*(workspace: Workspace) {
    yield* sql`INSERT INTO identity_kit_workspaces (id, name, enabled, created_at)
               VALUES (${workspace.id}, ${workspace.name}, ${workspace.enabled}, ${workspace.createdAt}::bigint)
               ON CONFLICT (id) DO UPDATE
               SET name = excluded.name, enabled = excluded.enabled, created_at = excluded.created_at`.pipe(
      Effect.mapError((cause) => new StorageError({ operation: "putWorkspace", cause }))
    )
    return workspace
  })

  const putRootKey = Effect.fn("IdentityStore.putRootKey")(function*(key: RootKey) {
    yield* sql`INSERT INTO identity_kit_root_keys
                 (id, workspace_id, hash, name, permissions, enabled, expires_at, deleted_at, created_at)
               VALUES (${key.id}, ${key.workspaceId}, ${key.hash}, ${key.name},
                       ${JSON.stringify(key.permissions)}::text::json, ${key.enabled},
                       ${key.expiresAt}::bigint, ${key.deletedAt}::bigint, ${key.createdAt}::bigint)`.pipe(
      Effect.mapError((cause) => new StorageError({ operation: "putRootKey", cause }))
    )
    return key
  })

  const createIdentity = Effect.fn("IdentityStore.createIdentity")(function*(
    input: NewIdentity & { readonly now: number }
  ) {
    const id = newId("id", input.now)
    const metaJson = JSON.stringify(input.meta ?? {})
    const ratelimits = (input.ratelimits ?? []).map((rl) => ({
      id: newId("rl", input.now),
      name: wellFormed(rl.name),
      limit: rl.limit,
      duration: rl.duration,
      autoApply: rl.autoApply
    }))
    // One statement: the identity and its ratelimits, or nothing.
    yield* sql`WITH identity AS (
                 INSERT INTO identity_kit_identities
                   (id, workspace_id, external_id, environment, meta, deleted, created_at, updated_at)
                 VALUES (${id}, ${input.workspaceId}, ${input.externalId}, ${input.environment ?? "default"},
                         ${metaJson}::text::json, false, ${input.now}::bigint, NULL)
                 RETURNING id
               )
               INSERT INTO identity_kit_ratelimits
                 (id, workspace_id, identity_id, name, "limit", duration, auto_apply, position, created_at, updated_at)
               SELECT e.value->>'id', ${input.workspaceId}, (SELECT id FROM identity), e.value->>'name',
                      (e.value->>'limit')::bigint, (e.value->>'duration')::bigint, (e.value->>'autoApply')::boolean,
                      e.ord - 1, ${input.now}::bigint, NULL
               FROM json_array_elements(${JSON.stringify(ratelimits)}::text::json) WITH ORDINALITY AS e(value, ord)`
      .pipe(
        Effect.mapError((cause) =>
          isLiveExternalIdConflict(cause)
            ? new IdentityConflict({ workspaceId: input.workspaceId, externalId: input.externalId })
            : new StorageError({ operation: "createIdentity", cause })
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
      environment: input.environment ?? "default",
      meta,
      deleted: false,
      createdAt: input.now,
      updatedAt: null,
      ratelimits: ratelimits.map((rl): Ratelimit => ({ ...rl, createdAt: input.now, updatedAt: null })).sort(byName)
    }
    return identity
  })

  const getIdentity = Effect.fn("IdentityStore.getIdentity")(function*(workspaceId: string, identity: string) {
    const [row] = yield* rows(
      "getIdentity",
      IdentityRows,
      sql`SELECT i.id, i.external_id, i.environment, i.meta::text AS meta, i.created_at, i.updated_at,
                 ${ratelimitsJson} AS ratelimits
          FROM identity_kit_identities i
          WHERE i.workspace_id = ${workspaceId} AND NOT i.deleted
            AND (i.id = ${identity} OR i.external_id = ${identity})
          ORDER BY i.id = ${identity} DESC
          LIMIT 1`
    )
    return row === undefined ? null : toIdentity(workspaceId, row)
  })

  const deleteIdentity = Effect.fn("IdentityStore.deleteIdentity")(function*(
    workspaceId: string,
    identity: string,
    now: number
  ) {
    const deleted = yield* rows(
      "deleteIdentity",
      IdRows,
      sql`UPDATE identity_kit_identities SET deleted = true, updated_at = ${now}::bigint
          WHERE NOT deleted AND id = (
            SELECT i.id FROM identity_kit_identities i
            WHERE i.workspace_id = ${workspaceId} AND NOT i.deleted
              AND (i.id = ${identity} OR i.external_id = ${identity})
            ORDER BY i.id = ${identity} DESC
            LIMIT 1)
          RETURNING id`
    )
    return deleted.length > 0
  })

  const listAuditLog = Effect.fn("IdentityStore.listAuditLog")(function*(workspaceId: string) {
    const found = yield* rows(
      "listAuditLog",
      AuditRows,
      sql`SELECT id, workspace_id, event, display, actor_type, actor_id, actor_name, remote_ip, user_agent,
                 time, resources::text AS resources
          FROM identity_kit_audit_log
          WHERE workspace_id = ${workspaceId}
          ORDER BY seq`
    )
    return found.map((row): AuditLogEntry => ({
      id: row.id,
      workspaceId: row.workspace_id,
      event: row.event,
      display: row.display,
      actorType: row.actor_type,
      actorId: row.actor_id,
      actorName: row.actor_name,
      remoteIp: row.remote_ip,
      userAgent: row.user_agent,
      time: row.time,
      resources: row.resources
    }))
  })

  const service: IdentityStoreService = {
    findRootKey,
    updateIdentity,
    putWorkspace,
    putRootKey,
    updateRootKey,
    createIdentity,
    getIdentity,
    deleteIdentity,
    listAuditLog
  }
  return service
})

/** `IdentityStore` on the `SqlClient` in context. Needs the tables: provide `layerMigrations` first. */
export const layerSql: Layer.Layer<IdentityStore, never, SqlClient.SqlClient> = Layer.effect(IdentityStore, makeSql)
