/**
 * PostgreSQL through `@effect/sql-pg` (node-postgres pool): a `SqlClient` with bounded connection
 * waits, migrations, and `layerSql`, in one layer.
 *
 * To use a pool or client config of your own, skip this file and put `layerSql` (and
 * `layerMigrations`) on any `SqlClient`, e.g. `PgClient.layerFromPool({ acquire })` with your `pg`
 * pool, or `PgClient.layerConfig(...)`:
 *
 * ```ts
 * const storage = layerSql.pipe(Layer.provide(layerMigrations), Layer.provide(PgClient.layerFromPool({ acquire })))
 * ```
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
import type { SqlClient } from "@effect/sql"
import * as PgClient from "@effect/sql-pg/PgClient"
import { Duration, Layer, Redacted } from "effect"
import { StorageError } from "../Errors.js"
import type { IdentityStore } from "../services/IdentityStore.js"
import { layerMigrations } from "./migrations.js"
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
  /** Apply pending migrations when the layer is built. Default `true`. */
  readonly migrate?: boolean | undefined
  /** `application_name` shown in `pg_stat_activity`. Default `identity-kit`. */
  readonly applicationName?: string | undefined
}

/** The default bound on connection waits: a down database answers 500 in about this long at most. */
export const DEFAULT_CONNECT_TIMEOUT: Duration.Duration = Duration.seconds(5)

/** A `PgClient` (also a `SqlClient`) for `config`; fails to build if the database does not answer. */
export const layerPostgresClient = (
  config: PostgresConfig
): Layer.Layer<PgClient.PgClient | SqlClient.SqlClient, StorageError> =>
  PgClient.layer({
    url: typeof config.url === "string" ? Redacted.make(config.url) : config.url,
    maxConnections: config.maxConnections,
    // node-postgres waits forever for a connection by default; this bounds every wait, including
    // the `SELECT 1` with which the layer tests the pool at build.
    connectTimeout: config.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT,
    idleTimeout: config.idleTimeout ?? Duration.seconds(30),
    applicationName: config.applicationName ?? "identity-kit"
  }).pipe(Layer.mapError((cause) => new StorageError({ operation: "connect", cause })))

/** `IdentityStore` on PostgreSQL: pool, migrations (unless `migrate: false`) and `layerSql`. */
export const layerPostgres = (config: PostgresConfig): Layer.Layer<IdentityStore, StorageError> =>
  (config.migrate === false ? layerSql : layerSql.pipe(Layer.provide(layerMigrations))).pipe(
    Layer.provide(layerPostgresClient(config))
  )
