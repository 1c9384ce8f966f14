/**
 * The embedded default: PostgreSQL compiled to WebAssembly (PGlite), in memory or in a directory,
 * behind a small `SqlClient` so the same `layerSql` and migrations run on it as on a server.
 *
 * PGlite is one connection. Statements from concurrent fibers are queued; a transaction
 * (`withTransaction`, or a `reserve`d connection) holds the connection until it ends, so no other
 * fiber's statement can land inside it.
 *
 * @example
 * ```ts
 * import { makeIdentityKit } from "identity-kit"
 * import { layerPglite } from "identity-kit/pglite"
 * const kit = makeIdentityKit({ storage: layerPglite({ dataDir: "./.data" }) })
 * ```
 */
import { PGlite } from "@electric-sql/pglite"
import * as Reactivity from "@effect/experimental/Reactivity"
import * as SqlClient from "@effect/sql/SqlClient"
import type { Connection } from "@effect/sql/SqlConnection"
import { SqlError } from "@effect/sql/SqlError"
import * as PgClient from "@effect/sql-pg/PgClient"
import { Context, Effect, Layer, type Scope, Stream } from "effect"
import { StorageError } from "../Errors.js"
import type { IdentityStore } from "../services/IdentityStore.js"
import {
  decodeRows,
  type Rows,
  type Statement,
  StatementExecutor,
  type StatementExecutorService,
  type Values
} from "./executor.js"
import { layerMigrations } from "./migrations.js"
import { layerRootKeyEventsPglite } from "./notify.js"

export { layerRootKeyEventsPglite } from "./notify.js"
import { layerSql } from "./sql.js"

/** Where PGlite keeps its data. */
export interface PgliteOptions {
  /** A directory for the database files; `undefined` keeps the database in memory. */
  readonly dataDir?: string | undefined
}

type Row = Record<string, unknown>

/** A PGlite instance with what runs statements on it. */
export interface PgliteConnection {
  /** The instance (e.g. for `db.listen`). Run statements through `client` or `executor`, which queue them. */
  readonly db: PGlite
  readonly client: SqlClient.SqlClient
  /** The hot-path statements, straight on `db` under the same lock as `client`'s statements. */
  readonly executor: StatementExecutorService
}

// PGlite attaches the statement's parameters (request data, e.g. meta) to its errors; errors end
// up in logs, which must not carry them. Code, detail, constraint stay.
const toSqlError = (cause: unknown): SqlError => {
  if (typeof cause === "object" && cause !== null && "params" in cause) Reflect.deleteProperty(cause, "params")
  return new SqlError({ cause, message: "Failed to execute statement" })
}

/** A fresh PGlite instance with a `SqlClient` and a `StatementExecutor` on it, closed when the scope closes. */
export const makePglite = (
  options: PgliteOptions = {}
): Effect.Effect<PgliteConnection, SqlError, Reactivity.Reactivity | Scope.Scope> =>
  Effect.gen(function*() {
    const db = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () => PGlite.create(options.dataDir === undefined ? {} : { dataDir: options.dataDir }),
        catch: (cause) => new SqlError({ cause, message: "PGlite: failed to start" })
      }),
      (db) =>
        Effect.tryPromise(() => db.close()).pipe(
          Effect.catchAll((cause) => Effect.logWarning("PGlite: failed to close", cause))
        )
    )

    // One permit = the connection. A plain statement holds it for itself; a transaction holds it
    // from BEGIN to COMMIT/ROLLBACK (see `transactionAcquirer`).
    const connection = yield* Effect.makeSemaphore(1)

    const run = <A>(evaluate: () => Promise<A>) => Effect.tryPromise({ try: evaluate, catch: toSqlError })

    const makeConnection = (
      guard: <A>(self: Effect.Effect<A, SqlError>) => Effect.Effect<A, SqlError>
    ): Connection => {
      const execute = (
        sql: string,
        params: ReadonlyArray<unknown>,
        transformRows: (<A extends object>(rows: ReadonlyArray<A>) => ReadonlyArray<A>) | undefined
      ) =>
        guard(run(() => db.query<Row>(sql, [...params]))).pipe(
          Effect.map((result) => (transformRows ? transformRows(result.rows) : result.rows))
        )
      return {
        execute,
        executeRaw: (sql, params) => guard(run(() => db.query<Row>(sql, [...params]))),
        executeValues: (sql, params) =>
          guard(run(() => db.query<Array<unknown>>(sql, [...params], { rowMode: "array" }))).pipe(
            Effect.map((result) => result.rows)
          ),
        executeUnprepared: execute,
        executeStream: (sql, params, transformRows) => Stream.fromIterableEffect(execute(sql, params, transformRows))
      }
    }

    const shared = makeConnection(connection.withPermits(1))
    const exclusive = makeConnection((self) => self)

    const client = yield* SqlClient.make({
      acquirer: Effect.succeed(shared),
      // Held until the transaction's scope closes, i.e. after COMMIT or ROLLBACK.
      transactionAcquirer: Effect.as(
        Effect.acquireRelease(connection.take(1), () => connection.release(1)),
        exclusive
      ),
      compiler: PgClient.makeCompiler(),
      spanAttributes: [["db.system.name", "postgresql"], ["db.namespace", "pglite"]]
    })

    const executor: StatementExecutorService = {
      execute: <A>(statement: Statement, values: Values, decode: (rows: Rows) => A) =>
        connection.withPermits(1)(
          // One parameter: `Effect.async` creates an AbortController when the callback takes a second.
          Effect.async<A, SqlError>((resume) => {
            let interrupted = false
            let settled = false
            let onSettled: (() => void) | undefined
            const settle = () => {
              settled = true
              onSettled?.()
            }
            db.query<Array<unknown>>(statement.text, [...values], { rowMode: "array" }).then(
              (result) => {
                settle()
                if (!interrupted) resume(decodeRows(result.rows, decode))
              },
              (cause: unknown) => {
                settle()
                if (!interrupted) resume(Effect.fail(toSqlError(cause)))
              }
            )
            // PGlite cannot stop a statement: an interrupted one keeps the permit until it is done,
            // so whoever takes the connection next (a transaction's BEGIN) comes after it.
            return Effect.async<void>((done) => {
              interrupted = true
              if (settled) done(Effect.void)
              else onSettled = () => done(Effect.void)
            })
          })
        )
    }

    return { db, client, executor }
  })

/** A `SqlClient` on a fresh PGlite instance, closed when the scope closes. */
export const makePgliteClient = (
  options: PgliteOptions = {}
): Effect.Effect<SqlClient.SqlClient, SqlError, Reactivity.Reactivity | Scope.Scope> =>
  Effect.map(makePglite(options), ({ client }) => client)

/**
 * `SqlClient` on PGlite (in memory unless `dataDir`), and the `StatementExecutor` `layerSql` uses
 * for the hot path. Closes PGlite when the layer is released.
 */
export const layerPgliteClient = (
  options: PgliteOptions = {}
): Layer.Layer<SqlClient.SqlClient | StatementExecutor, SqlError> =>
  Layer.scopedContext(
    Effect.map(makePglite(options), ({ client, executor }) =>
      Context.make(SqlClient.SqlClient, client).pipe(Context.add(StatementExecutor, executor)))
  ).pipe(Layer.provide(Reactivity.layer))

/**
 * `IdentityStore` on PGlite, migrated when built, with `RootKeyEvents` (so the root-key cache is on
 * and a change is honoured by the next request). The default storage of the examples.
 */
export const layerPglite = (options: PgliteOptions = {}): Layer.Layer<IdentityStore, StorageError> =>
  Layer.unwrapScoped(
    Effect.map(
      makePglite(options).pipe(Effect.mapError((cause) => new StorageError({ operation: "connect", cause }))),
      ({ client, db, executor }) =>
        // The events layer is built after the store, so after the migrations: no transaction is
        // open when it runs LISTEN, and the triggers exist.
        layerRootKeyEventsPglite(db).pipe(
          Layer.provide(layerSql),
          Layer.provide(layerMigrations),
          Layer.provide(Layer.succeedContext(
            Context.make(SqlClient.SqlClient, client).pipe(Context.add(StatementExecutor, executor))
          ))
        )
    )
  ).pipe(Layer.provide(Reactivity.layer))
