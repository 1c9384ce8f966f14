/**
 * PostgreSQL through a node-postgres pool of this layer's own: the generic `SqlClient`
 * (`@effect/sql-pg`'s `PgClient` on that pool) for migrations and admin statements, and the
 * `StatementExecutor` that runs the two statements of every request as named prepared statements
 * straight on the pool (see ./executor.ts); with bounded connection waits, migrations, and
 * `layerSql`, in one layer.
 *
 * To use a pool or client config of your own, skip this file and put `layerSql` (and
 * `layerMigrations`) on any `SqlClient`, e.g. `PgClient.layerFromPool({ acquire })` with your `pg`
 * pool, or `PgClient.layerConfig(...)` (the hot statements then go through that `SqlClient`):
 *
 * ```ts
 * const storage = layerSql.pipe(Layer.provide(layerMigrations), Layer.provide(PgClient.layerFromPool({ acquire })))
 * ```
 *
 * Poolers: the hot statements are named prepared statements, prepared once per server connection,
 * so `url` must reach PostgreSQL directly or through a pooler in session mode. In transaction mode
 * a pooler hands each statement to whichever server connection is free, where it may not be
 * prepared ("prepared statement … does not exist"); PgBouncer 1.21 or later with
 * `max_prepared_statements` above 0 tracks them and works in transaction mode too. The listener
 * (`listen`) needs session mode or a direct connection in any case.
 *
 * Migrations (`migrate`) run each in a transaction: 0004 creates the notify triggers on
 * `identity_kit_root_keys` and `identity_kit_workspaces`, and 0005 builds an index on
 * `identity_kit_identities` (a plain `CREATE INDEX`: `CONCURRENTLY` is refused in a transaction).
 * Both block writes to those tables until the transaction commits: a moment on small tables; on
 * large ones, apply them at a quiet time (`migrate` from `identity-kit/sql` on a `SqlClient`) and
 * build this layer with `migrate: false`.
 *
 * When the database is down, building `layerPostgres` fails within `connectTimeout` (the pool is
 * tested with `SELECT 1`), and `makeIdentityKit` answers 500 and builds it again on the next request.
 * Once built, a lost database makes each call fail with `StorageError` (500) within `connectTimeout`,
 * and the pool reconnects by itself when the database is back.
 *
 * @example
 * ```ts
 * import { makeIdentityKit } from "identity-kit"
 * import { layerPostgres } from "identity-kit/postgres"
 * const kit = makeIdentityKit({ storage: layerPostgres({ url: process.env.DATABASE_URL! }) })
 * ```
 */
import { createRequire } from "node:module"
import type * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import * as PgClient from "@effect/sql-pg/PgClient"
import { Duration, Effect, Layer, Redacted, type Scope } from "effect"
import { StorageError } from "../Errors.js"
import type { IdentityStore } from "../services/IdentityStore.js"
import { fromPgPool, type PgPool, StatementExecutor } from "./executor.js"
import { layerMigrations } from "./migrations.js"
import { layerRootKeyEventsPostgres } from "./notify.js"

export { layerRootKeyEventsPostgres } from "./notify.js"
import { layerSql } from "./sql.js"

/** How to reach PostgreSQL. */
export interface PostgresConfig {
  /** `postgres://user:password@host:port/database[?options=-c%20search_path%3Dmy_schema]`. */
  readonly url: Redacted.Redacted<string> | string
  /** Pool size. Default 10 (node-postgres' default). */
  readonly maxConnections?: number | undefined
  /** Longest wait for a connection (at start and per call). Default 5 seconds. */
  readonly connectTimeout?: Duration.DurationInput | undefined
  /** Close idle connections after this long. Default 30 seconds. */
  readonly idleTimeout?: Duration.DurationInput | undefined
  /**
   * Longest a statement may run. The server cancels it after this long (`statement_timeout` on
   * every connection), and the kit gives up on an answer one second later (a server or network that
   * stopped answering: the connection is then closed), so the request is answered 500 instead of
   * waiting for as long as the database hangs. Default 5 seconds; `0` for no bound. Anything but a
   * whole number of milliseconds up to ~24.8 days is a `TypeError` when the layer is made.
   */
  readonly statementTimeout?: Duration.DurationInput | undefined
  /** Apply pending migrations when the layer is built. Default `true`. */
  readonly migrate?: boolean | undefined
  /** `application_name` shown in `pg_stat_activity`. Default `identity-kit`. */
  readonly applicationName?: string | undefined
  /**
   * Listen for root-key and workspace changes on one more connection (`application_name`
   * `<applicationName>:listen`), which turns the root-key cache on. Default `true`. Turn it off
   * when `url` goes through a transaction-mode pooler, where LISTEN does not work.
   */
  readonly listen?: boolean | undefined
}

/** The default bound on a statement: a hung database answers 500 in about this long at most. */
export const DEFAULT_STATEMENT_TIMEOUT: Duration.Duration = Duration.seconds(5)

// setTimeout's largest delay, less the client's one-second grace.
const MAX_STATEMENT_TIMEOUT_MS = 2_147_483_647 - 1000

/** The statement bound in ms (0: none), checked: PostgreSQL and setTimeout both take a 32-bit int. */
const statementTimeoutMs = (config: PostgresConfig): number => {
  const ms = Duration.toMillis(config.statementTimeout ?? DEFAULT_STATEMENT_TIMEOUT)
  if (!Number.isInteger(ms) || ms < 0 || ms > MAX_STATEMENT_TIMEOUT_MS) {
    throw new TypeError(
      `identity-kit: statementTimeout must be a whole number of milliseconds from 0 (no bound) to ${MAX_STATEMENT_TIMEOUT_MS}, got ${ms}`
    )
  }
  return ms
}

/**
 * Checks `url` when the layer is made: a string (or `Redacted` one) that parses as a
 * `postgres://`/`postgresql://` URL, else a `TypeError` that never shows the URL (it may hold a password).
 */
const checkUrl = (url: unknown): void => {
  const text = typeof url === "string" ? url : Redacted.isRedacted(url) ? Redacted.value(url) : undefined
  // A `Redacted` of another copy of Effect (a host on Effect 4) prints as `<redacted>` but cannot be
  // read by ours: say so, rather than "must be a string" to someone who passed a Redacted.
  if (text === undefined && typeof url === "object" && url !== null && String(url) === "<redacted>") {
    throw new TypeError(
      "identity-kit: layerPostgres `url` is a Redacted from another copy of effect (e.g. Effect 4), which this " +
        "package's Effect 3 cannot read: pass the URL as a string"
    )
  }
  if (typeof text !== "string") {
    throw new TypeError("identity-kit: layerPostgres `url` must be a string or a Redacted string, e.g. postgres://user:password@host:5432/db")
  }
  let protocol: string
  try {
    protocol = new URL(text).protocol
  } catch {
    throw new TypeError("identity-kit: layerPostgres `url` is not a valid URL; expected postgres://user:password@host:5432/db")
  }
  if (protocol !== "postgres:" && protocol !== "postgresql:") {
    throw new TypeError(`identity-kit: layerPostgres \`url\` must start with postgres:// or postgresql://, got ${protocol}//…`)
  }
}

/** The default bound on connection waits: a down database answers 500 in about this long at most. */
export const DEFAULT_CONNECT_TIMEOUT: Duration.Duration = Duration.seconds(5)

// --- The pool ---------------------------------------------------------------------------------
// `pg` is the driver `@effect/sql-pg` runs on (and so always installed with it); it ships no types,
// so the members used here are declared in ./executor.ts and below.

/** The members of `pg`'s `Pool` this file uses beyond those of `PgPool`. */
interface OwnPool extends PgPool {
  on(event: "error", listener: (error: Error) => void): unknown
  end(): Promise<void>
}

interface PgModule {
  readonly Pool: new (config: {
    readonly connectionString: string
    readonly max?: number
    readonly connectionTimeoutMillis: number
    readonly idleTimeoutMillis: number
    readonly application_name: string
    readonly statement_timeout: number
    readonly keepAlive: boolean
    readonly keepAliveInitialDelayMillis: number
  }) => OwnPool
}

const requireCommonJs = createRequire(import.meta.url)

/** A pool for `config`, ended when the scope closes. Untested: see `testPool`. */
const acquirePool = (
  config: PostgresConfig,
  connectTimeout: Duration.Duration,
  statementTimeout: number
): Effect.Effect<OwnPool, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const pg: PgModule = requireCommonJs("pg")
      const pool = new pg.Pool({
        connectionString: typeof config.url === "string" ? config.url : Redacted.value(config.url),
        ...(config.maxConnections === undefined ? {} : { max: config.maxConnections }),
        // node-postgres waits forever for a connection by default; this bounds every wait, including
        // the `SELECT 1` with which the layer tests the pool at build.
        connectionTimeoutMillis: Duration.toMillis(connectTimeout),
        idleTimeoutMillis: Duration.toMillis(config.idleTimeout ?? Duration.seconds(30)),
        application_name: config.applicationName ?? "identity-kit",
        // The server's bound on every statement (sent as a startup parameter: no extra round trip).
        statement_timeout: statementTimeout,
        // A peer that vanished without closing (a dropped route) is noticed by TCP, not never.
        keepAlive: true,
        keepAliveInitialDelayMillis: 10_000
      })
      // An idle connection that breaks is dropped by the pool, which then emits "error": without a
      // listener that would crash the process.
      pool.on("error", () => {})
      return pool
    }),
    // Bounded: `end` waits for connections still checked out.
    (pool) => Effect.promise(() => pool.end()).pipe(Effect.interruptible, Effect.timeoutOption(1000))
  )

/** `SELECT 1` on the pool, failing after `connectTimeout` when the database does not answer. */
const testPool = (pool: OwnPool, connectTimeout: Duration.Duration): Effect.Effect<void, SqlError> =>
  Effect.async<void, SqlError>((resume) => {
    pool.query("SELECT 1", [], (error) => {
      resume(error ? Effect.fail(new SqlError({ cause: error, message: "PostgreSQL: failed to connect" })) : Effect.void)
    })
  }).pipe(
    Effect.timeoutFail({
      duration: connectTimeout,
      onTimeout: () => new SqlError({ cause: new Error("Connection timed out"), message: "PostgreSQL: connection timed out" })
    })
  )

/**
 * A `PgClient` (also a `SqlClient`) for `config`, and the `StatementExecutor` `layerSql` uses for
 * the hot path, on one pool; fails to build if the database does not answer within `connectTimeout`.
 */
export const layerPostgresClient = (
  config: PostgresConfig
): Layer.Layer<PgClient.PgClient | SqlClient.SqlClient | StatementExecutor, StorageError> => {
  checkUrl(config.url)
  const connectTimeout = Duration.decode(config.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT)
  // Checked at construction: a bad value is a TypeError now, not a failed connection later.
  const statementTimeout = statementTimeoutMs(config)
  // The client's bound: the server's plus a second for the server's own cancel to arrive (none
  // when the server has none).
  const clientTimeoutMs = statementTimeout === 0 ? undefined : statementTimeout + 1000
  return Layer.unwrapScoped(Effect.gen(function*() {
    const pool = yield* acquirePool(config, connectTimeout, statementTimeout)
    yield* testPool(pool, connectTimeout)
    return Layer.merge(
      PgClient.layerFromPool({ acquire: Effect.succeed(pool) }),
      Layer.succeed(StatementExecutor, fromPgPool(pool, { timeoutMs: clientTimeoutMs }))
    )
  })).pipe(Layer.mapError((cause) => new StorageError({ operation: "connect", cause })))
}

/**
 * `IdentityStore` on PostgreSQL: pool, migrations (unless `migrate: false`) and `layerSql`, with
 * `RootKeyEvents` from a listening connection (unless `listen: false`).
 */
export const layerPostgres = (config: PostgresConfig): Layer.Layer<IdentityStore, StorageError> => {
  const store = (config.migrate === false ? layerSql : layerSql.pipe(Layer.provide(layerMigrations))).pipe(
    Layer.provide(layerPostgresClient(config))
  )
  if (config.listen === false) return store
  return layerRootKeyEventsPostgres({
    url: config.url,
    connectTimeout: config.connectTimeout,
    applicationName: `${config.applicationName ?? "identity-kit"}:listen`
  }).pipe(Layer.provide(store))
}
