/**
 * The storage contract, the SQL failure and hot-path tests and the PGlite client's transactions,
 * on one in-memory PGlite (the hot statements on its `StatementExecutor`).
 */
import { SqlClient } from "@effect/sql"
import { assert } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { layerPgliteClient } from "identity-kit/pglite"
import { layerMigrations, layerSql } from "identity-kit/sql"
import { sqlFailureSuite, sqlHotPathSuite, sqlIdentitiesSuite, storageContract } from "./storage-contract.js"

// One PGlite for the whole file (it takes seconds to boot); the SqlClient is exposed for the
// failure tests, which install a trigger, and for the transaction tests.
const pglite = layerSql.pipe(Layer.provide(layerMigrations), Layer.provideMerge(layerPgliteClient()))

storageContract("pglite", pglite, (it) => {
  sqlFailureSuite(it)
  sqlHotPathSuite(it)
  sqlIdentitiesSuite(it)

  it.effect("a statement from another fiber never lands inside a transaction", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE pglite_probe_a (n integer NOT NULL)`
      const failing = sql.withTransaction(Effect.gen(function*() {
        yield* sql`INSERT INTO pglite_probe_a VALUES (1)`
        yield* Effect.sleep("50 millis")
        return yield* Effect.fail("roll back")
      }))
      // Starts while the transaction is open; it must neither run in it nor be rolled back with it.
      const beside = Effect.zipRight(Effect.sleep("10 millis"), sql`INSERT INTO pglite_probe_a VALUES (2)`)
      const [failure] = yield* Effect.all([Effect.flip(failing), beside], { concurrency: "unbounded" })
      assert.strictEqual(failure, "roll back")
      const rows = yield* sql<{ readonly n: number }>`SELECT n FROM pglite_probe_a ORDER BY n`
      assert.deepStrictEqual(rows.map((row) => row.n), [2])
    }))

  it.effect("concurrent transactions run one after another (no lost read-modify-write)", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE pglite_probe_b (n integer NOT NULL)`
      yield* sql`INSERT INTO pglite_probe_b VALUES (0)`
      const increment = sql.withTransaction(Effect.gen(function*() {
        const [row] = yield* sql<{ readonly n: number }>`SELECT n FROM pglite_probe_b`
        yield* Effect.sleep("2 millis")
        // A nested transaction is a savepoint on the same connection.
        yield* sql.withTransaction(sql`UPDATE pglite_probe_b SET n = ${(row?.n ?? 0) + 1}`)
      }))
      yield* Effect.all(Array.from({ length: 10 }, () => increment), { concurrency: "unbounded" })
      const [row] = yield* sql<{ readonly n: number }>`SELECT n FROM pglite_probe_b`
      assert.strictEqual(row?.n, 10)
    }))
})
