/**
 * Migration 0009 (foreign keys root keys → workspaces and identities → workspaces) on a database
 * that already holds what the admin API accepted before it: a root key and an identity of a
 * workspace that does not exist. The migration applies; those rows stay and keep working as before
 * (the key answered 404 workspace_not_found, spec A9; the identity updated); every new row is
 * checked; the constraints can be validated once the missing workspace exists. On PGlite, and on
 * PostgreSQL (when `DATABASE_URL` is set), each in a database (a schema) of its own.
 */
import { randomBytes } from "node:crypto"
import * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import { Cause, Context, Deferred, Duration, Effect, Exit, Fiber, Layer, Logger, Option } from "effect"
import { Admin, hashRootKey, IdentityStore, makeIdentityKit, ROUTE } from "identity-kit"
import { layerPgliteClient } from "identity-kit/pglite"
import { layerPostgresClient } from "identity-kit/postgres"
import { layerSql, migrate } from "identity-kit/sql"
import {
  IDENTITIES_WORKSPACE_FK,
  MIGRATIONS_TABLE,
  migrateWith,
  migrations,
  ROOT_KEYS_WORKSPACE_FK
} from "../src/storage/migrations.js"
import { freshSchema, withSearchPath } from "./support/postgres.js"

const DATABASE_URL = process.env["DATABASE_URL"]
const T0 = 1_750_000_000_000
const ORPHAN_KEY = "legacy-orphan-root-key-0123456789"

/** Applies the migrations up to `id` (included), with the migrator `migrate` uses. */
const migrateUpTo = (id: number) =>
  Migrator.make({})({
    loader: Migrator.fromRecord(Object.fromEntries(Object.entries(migrations).filter(([key]) => Number.parseInt(key, 10) <= id))),
    table: MIGRATIONS_TABLE
  })

/** Rows as the admin API of versions before 0009 wrote them: a key and an identity of `ws_gone`. */
const legacyRows = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`INSERT INTO identity_kit_workspaces (id, name, enabled, created_at) VALUES ('ws_here', 'here', true, ${T0})`
  yield* sql`INSERT INTO identity_kit_root_keys (id, workspace_id, hash, name, permissions, enabled, created_at)
             VALUES ('key_orphan', 'ws_gone', ${hashRootKey(ORPHAN_KEY)}, 'orphan', '["identity.*.update_identity"]', true, ${T0})`
  yield* sql`INSERT INTO identity_kit_identities (id, workspace_id, external_id, meta, created_at)
             VALUES ('id_orphan', 'ws_gone', 'user_gone', '{}', ${T0})`
  yield* sql`INSERT INTO identity_kit_ratelimits (id, workspace_id, identity_id, name, "limit", duration, created_at)
             VALUES ('rl_orphan', 'ws_gone', 'id_orphan', 'requests', 10, 60000, ${T0})`
})

const validated = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const rows = yield* sql<{ readonly conname: string; readonly convalidated: boolean }>`
    SELECT conname, convalidated FROM pg_constraint
    WHERE conname IN (${ROOT_KEYS_WORKSPACE_FK}, ${IDENTITIES_WORKSPACE_FK})
      AND connamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
    ORDER BY conname`
  return rows.map((row) => [row.conname, row.convalidated] as const)
})

const migrationSuite = <E>(name: string, client: () => Layer.Layer<SqlClient.SqlClient, E>) =>
  describe(`migration 0009: ${name}`, () => {
    it.live("rows of a missing workspace survive it and work as before; new ones are checked; validation once fixed", () =>
      Effect.gen(function*() {
        yield* migrateUpTo(8)
        yield* legacyRows
        assert.deepStrictEqual((yield* migrate).map(([id]) => id), [9])
        assert.deepStrictEqual(yield* validated, [[IDENTITIES_WORKSPACE_FK, false], [ROOT_KEYS_WORKSPACE_FK, false]])

        const store = yield* IdentityStore
        yield* store.probe
        // The orphan key is still found without a workspace: answered 404 (A9), as before.
        const found = yield* store.findRootKey(hashRootKey(ORPHAN_KEY))
        assert.strictEqual(found?.key.id, "key_orphan")
        assert.isNull(found?.workspace)
        const kit = makeIdentityKit({ storage: Layer.succeed(IdentityStore, store) })
        const response = yield* Effect.promise(() =>
          kit.fetch(new Request(`http://localhost${ROUTE}`, {
            method: "POST",
            headers: { authorization: `Bearer ${ORPHAN_KEY}`, "content-type": "application/json" },
            body: JSON.stringify({ identity: "user_gone" })
          }))
        )
        yield* Effect.promise(() => kit.dispose())
        assert.strictEqual(response.status, 404)
        assert.include(yield* Effect.promise(() => response.text()), "unkey/data/workspace_not_found")
        // It can still be changed and listed.
        assert.isFalse((yield* store.updateRootKey("key_orphan", { enabled: false }))?.enabled)
        assert.deepStrictEqual((yield* Admin.listRootKeys("ws_gone")).items.map((key) => key.id), ["key_orphan"])
        // The orphan identity is still read and written (the update's inserts are not checked against workspaces).
        const updated = yield* store.updateIdentity({
          workspaceId: "ws_gone",
          identity: "user_gone",
          meta: `{"still":"here"}`,
          ratelimits: [{ name: "requests", limit: 20, duration: 60_000, autoApply: false }, { name: "burst", limit: 5, duration: 1000, autoApply: true }],
          audit: { actorId: "key_orphan", actorName: "root key", remoteIp: "", userAgent: "" },
          now: T0 + 1
        })
        assert.deepStrictEqual(updated.ratelimits.map((rl) => [rl.name, rl.limit]), [["burst", 5], ["requests", 20]])
        assert.isTrue(yield* store.deleteIdentity("ws_gone", "user_gone", T0 + 2))

        // Every new row is checked.
        const key = yield* Effect.flip(Admin.issueRootKey({ workspaceId: "ws_gone" }))
        assert.strictEqual(key._tag, "WorkspaceNotFound")
        const identity = yield* Effect.flip(Admin.createIdentity({ workspaceId: "ws_gone", externalId: "user_new" }))
        assert.strictEqual(identity._tag, "WorkspaceNotFound")

        // What the README says to do: create the missing workspace (or delete its rows), then validate.
        yield* Admin.createWorkspace({ id: "ws_gone", name: "restored", enabled: false })
        const sql = yield* SqlClient.SqlClient
        yield* sql.unsafe(`ALTER TABLE identity_kit_root_keys VALIDATE CONSTRAINT ${ROOT_KEYS_WORKSPACE_FK}`)
        yield* sql.unsafe(`ALTER TABLE identity_kit_identities VALIDATE CONSTRAINT ${IDENTITIES_WORKSPACE_FK}`)
        assert.deepStrictEqual(yield* validated, [[IDENTITIES_WORKSPACE_FK, true], [ROOT_KEYS_WORKSPACE_FK, true]])
      }).pipe(Effect.provide(layerSql.pipe(Layer.provideMerge(client())))), 60_000)

    it.live("validating while an orphan remains fails and names the constraint (what the README warns of)", () =>
      Effect.gen(function*() {
        yield* migrateUpTo(8)
        yield* legacyRows
        yield* migrate
        const sql = yield* SqlClient.SqlClient
        const error = yield* Effect.flip(sql.unsafe(`ALTER TABLE identity_kit_root_keys VALIDATE CONSTRAINT ${ROOT_KEYS_WORKSPACE_FK}`))
        assert.include(String(error.cause), ROOT_KEYS_WORKSPACE_FK)
      }).pipe(Effect.provide(layerSql.pipe(Layer.provideMerge(client())))), 60_000)
  })

migrationSuite("PGlite", () => layerPgliteClient())

describe("migrateWith", () => {
  it("refuses bounds PostgreSQL would misread: an infinite or sub-millisecond lockTimeout, a non-whole lockAttempts", () => {
    assert.throws(() => migrateWith({ lockTimeout: Duration.infinity }), TypeError, /lockTimeout must be finite and at least 1 ms/)
    assert.throws(() => migrateWith({ lockTimeout: "500 micros" }), TypeError, /lockTimeout/)
    for (const lockAttempts of [0, 1.5, Number.NaN]) {
      assert.throws(() => migrateWith({ lockAttempts }), TypeError, /lockAttempts must be a whole number/)
    }
    assert.doesNotThrow(() => migrateWith({ lockTimeout: "1 millis", lockAttempts: 1 }))
  })
})

describe.runIf(DATABASE_URL)("on PostgreSQL", () => {
  const url = DATABASE_URL ?? ""
  migrationSuite("PostgreSQL", () => {
    const schema = `identity_kit_migration_${randomBytes(6).toString("hex")}`
    return layerPostgresClient({ url: withSearchPath(url, schema), maxConnections: 2 }).pipe(
      Layer.provide(freshSchema(url, schema))
    )
  })

  // Migration 0008 alters the audit log. PostgreSQL queues lock requests in order, so an ALTER TABLE
  // waiting behind a long reader would hold every write to the table behind itself; a migration
  // waits at most its lock_timeout, rolls back and tries again, and the writes go on meanwhile.
  describe("a migration blocked by a long reader", () => {
    const schemaLayer = () => {
      const schema = `identity_kit_migration_${randomBytes(6).toString("hex")}`
      return {
        schema,
        layer: layerPostgresClient({ url: withSearchPath(url, schema), maxConnections: 2 }).pipe(
          Layer.provide(freshSchema(url, schema))
        )
      }
    }
    /** A client of its own (one connection) in `schema`, released with the scope. */
    const connection = (schema: string) =>
      Effect.map(
        Layer.build(layerPostgresClient({ url: withSearchPath(url, schema), maxConnections: 1 })),
        (context) => Context.get(context, SqlClient.SqlClient)
      )
    /** A transaction that has read the audit log and stays open (holding its lock) until `release`. */
    const longReader = (schema: string) =>
      Effect.gen(function*() {
        const sql = yield* connection(schema)
        const holding = yield* Deferred.make<void>()
        const release = yield* Deferred.make<void>()
        const fiber = yield* sql.withTransaction(
          sql`SELECT count(*) FROM identity_kit_audit_log`.pipe(
            Effect.zipRight(Deferred.succeed(holding, undefined)),
            Effect.zipRight(Deferred.await(release))
          )
        ).pipe(Effect.forkScoped)
        yield* Deferred.await(holding)
        return Deferred.succeed(release, undefined).pipe(Effect.zipRight(Fiber.join(fiber)))
      })
    /** Migration ids recorded, and whether 0008's column exists: what the database is at. */
    const state = Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const ids = yield* sql<{ readonly migration_id: number }>`SELECT migration_id FROM ${sql(MIGRATIONS_TABLE)} ORDER BY 1`
      const columns = yield* sql<{ readonly n: number }>`
        SELECT count(*)::int AS n FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = 'identity_kit_audit_log' AND column_name = 'request_id'`
      return { ids: ids.map((row) => row.migration_id), requestIdColumn: columns[0]?.n === 1 }
    })

    it.live("gives way to the writes, retries, and applies once the reader is gone", () => {
      const { layer, schema } = schemaLayer()
      const warnings: Array<string> = []
      const collect = Logger.make(({ logLevel, message }) => {
        if (logLevel._tag === "Warning") warnings.push(String(message))
      })
      return Effect.gen(function*() {
        yield* migrateUpTo(7)
        const endReader = yield* longReader(schema)

        const migrating = yield* migrateWith({ lockTimeout: "150 millis", lockAttempts: 1000 }).pipe(
          Effect.provide(Logger.replace(Logger.defaultLogger, collect)),
          Effect.fork
        )
        // Until the migration has given way at least once (20 s at most).
        for (let waited = 0; warnings.length === 0 && waited < 400; waited++) yield* Effect.sleep("50 millis")
        assert.isNotEmpty(warnings, "the migration gave way to the reader")

        // A write takes ROW EXCLUSIVE on the table: it goes through while the reader is still open.
        // (Behind an ALTER TABLE that waits without a bound it would wait as long as the reader: the
        // statement_timeout turns that into a failure here.)
        const writer = yield* connection(schema)
        for (let i = 0; i < 3; i++) {
          yield* writer.withTransaction(
            writer.unsafe("SET LOCAL statement_timeout = '20s'").pipe(
              Effect.zipRight(writer.unsafe("LOCK TABLE identity_kit_audit_log IN ROW EXCLUSIVE MODE"))
            )
          )
        }
        assert.isTrue(Option.isNone(yield* Fiber.poll(migrating)), "the migration waits for the reader")
        assert.deepStrictEqual(yield* state, { ids: [1, 2, 3, 4, 5, 6, 7], requestIdColumn: false })
        assert.match(
          warnings[0] ?? "",
          /^identity-kit: migration 0008_audit_request_ids waited 150ms for a table lock .* trying again \(try 2 of 1000\)$/
        )

        yield* endReader
        assert.deepStrictEqual((yield* Fiber.join(migrating)).map(([id]) => id), [8, 9])
        assert.deepStrictEqual(yield* state, { ids: [1, 2, 3, 4, 5, 6, 7, 8, 9], requestIdColumn: true })
      }).pipe(Effect.scoped, Effect.provide(layer))
    }, 60_000)

    it.live("gives up after its tries with a sentence that says what to do, and changes nothing", () => {
      const { layer, schema } = schemaLayer()
      return Effect.gen(function*() {
        yield* migrateUpTo(7)
        const endReader = yield* longReader(schema)
        const exit = yield* Effect.exit(migrateWith({ lockTimeout: "100 millis", lockAttempts: 2 }).pipe(
          Effect.provide(Logger.replace(Logger.defaultLogger, Logger.none))
        ))
        assert.isTrue(Exit.isFailure(exit))
        const error = Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined
        assert.strictEqual(error?._tag, "StorageError")
        assert.match(
          String(error?.cause instanceof Error ? error.cause.message : ""),
          /^identity-kit: the migrations could not get their table locks in 2 tries .*pg_stat_activity.*nothing was changed\.$/
        )
        yield* endReader
        assert.deepStrictEqual(yield* state, { ids: [1, 2, 3, 4, 5, 6, 7], requestIdColumn: false })
      }).pipe(Effect.scoped, Effect.provide(layer))
    }, 60_000)
  })
})
