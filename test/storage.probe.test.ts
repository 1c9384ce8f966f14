/**
 * The readiness probe (`IdentityStore.probe`) reads the schema's migration state: a database
 * migrated only part of the way (where the first request would fail on a missing function or
 * index) is not ready and says what to run, an empty one says it has no tables, and one migrated
 * by this version or a newer one is ready. On PGlite, and on PostgreSQL (when `DATABASE_URL` is set)
 * through `layerPostgresClient`'s prepared statements and through a host's own `PgClient`, each
 * test on a database (a schema) of its own.
 */
import { randomBytes } from "node:crypto"
import * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import * as PgClient from "@effect/sql-pg/PgClient"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Redacted } from "effect"
import { IdentityStore } from "identity-kit"
import { layerPgliteClient } from "identity-kit/pglite"
import { layerPostgresClient } from "identity-kit/postgres"
import { layerSql, migrate } from "identity-kit/sql"
import { MIGRATIONS_TABLE, migrations } from "../src/storage/migrations.js"
import { freshSchema, withSearchPath } from "./support/postgres.js"

const DATABASE_URL = process.env["DATABASE_URL"]

// Written out from the record, not from the code under test: `0009_workspace_foreign_keys`.
const KEYS = Object.keys(migrations).sort()
const LATEST_KEY = KEYS.at(-1) ?? ""
const LATEST_ID = Number.parseInt(LATEST_KEY, 10)

/** Applies the migrations up to `id` (included), with the migrator `migrate` uses. */
const migrateUpTo = (id: number) =>
  Migrator.make({})({
    loader: Migrator.fromRecord(Object.fromEntries(Object.entries(migrations).filter(([key]) => Number.parseInt(key, 10) <= id))),
    table: MIGRATIONS_TABLE
  })

/** The probe's failure: a `StorageError` of `probe`; answers its cause's message. */
const probeFailure = Effect.gen(function*() {
  const store = yield* IdentityStore
  const error = yield* Effect.flip(store.probe)
  assert.strictEqual(error._tag, "StorageError")
  assert.strictEqual(error.operation, "probe")
  assert.instanceOf(error.cause, Error)
  return error.cause instanceof Error ? error.cause.message : ""
})

const ready = Effect.flatMap(IdentityStore, (store) => store.probe)

const assertSaysWhatToRun = (message: string) => {
  assert.include(message, "`migrate` (or `layerMigrations`) from identity-kit/sql")
  assert.include(message, "`migrate: true`")
}

/** The probe tests on the `SqlClient` that `client()` builds over an empty database of its own. */
const probeSuite = <E>(name: string, client: () => Layer.Layer<SqlClient.SqlClient, E>) =>
  describe(`readiness probe: ${name}`, () => {
    const fresh = () => layerSql.pipe(Layer.provideMerge(client()))

    it.live("an empty database: no identity-kit tables, run the migrations", () =>
      Effect.gen(function*() {
        const missing = yield* probeFailure
        assert.match(missing, /^identity-kit: the database has no identity-kit tables \(no table identity_kit_migrations/)
        assertSaysWhatToRun(missing)

        // The migrator's table without a migration in it (a first migration that failed): the same.
        yield* migrateUpTo(0)
        const empty = yield* probeFailure
        assert.match(empty, /^identity-kit: the database has no identity-kit tables \(identity_kit_migrations is empty/)
        assertSaysWhatToRun(empty)
      }).pipe(Effect.provide(fresh())), 60_000)

    it.live("migrated part of the way: not ready, naming where it is, what this version needs and what to run", () =>
      Effect.gen(function*() {
        assert.isAbove(KEYS.length, 1)
        for (const key of KEYS.slice(0, -1)) {
          yield* migrateUpTo(Number.parseInt(key, 10))
          const message = yield* probeFailure
          assert.strictEqual(
            message.split(". ")[0],
            `identity-kit: the database is at migration ${key}, and this version of identity-kit needs ${LATEST_KEY}`
          )
          assertSaysWhatToRun(message)
        }
        // What the message says to run makes it ready.
        assert.deepStrictEqual((yield* migrate).map(([id]) => id), [LATEST_ID])
        yield* ready
        yield* ready
      }).pipe(Effect.provide(fresh())), 60_000)

    it.live("a database a newer version migrated further is ready (migrations are additive)", () =>
      Effect.gen(function*() {
        yield* migrate
        const sql = yield* SqlClient.SqlClient
        yield* sql`INSERT INTO identity_kit_migrations (migration_id, name) VALUES (${LATEST_ID + 1}, 'from_a_newer_version')`
        yield* ready
      }).pipe(Effect.provide(fresh())), 60_000)
  })

probeSuite("PGlite", () => layerPgliteClient())

describe.runIf(DATABASE_URL)("on PostgreSQL", () => {
  const url = DATABASE_URL ?? ""
  const schemaName = () => `identity_kit_probe_${randomBytes(6).toString("hex")}`
  // One connection: the probe's prepared statement is prepared again on it once the table exists.
  probeSuite("PostgreSQL (layerPostgresClient)", () => {
    const schema = schemaName()
    return layerPostgresClient({ url: withSearchPath(url, schema), maxConnections: 1 }).pipe(
      Layer.provide(freshSchema(url, schema))
    )
  })
  probeSuite("PostgreSQL (a host's own PgClient)", () => {
    const schema = schemaName()
    return PgClient.layer({ url: Redacted.make(withSearchPath(url, schema)), maxConnections: 1 }).pipe(
      Layer.provide(freshSchema(url, schema))
    )
  })
})
