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
import { randomUUID } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { PGlite } from "@electric-sql/pglite"
import * as Reactivity from "@effect/experimental/Reactivity"
import * as SqlClient from "@effect/sql/SqlClient"
import type { Connection } from "@effect/sql/SqlConnection"
import { SqlError } from "@effect/sql/SqlError"
import * as PgClient from "@effect/sql-pg/PgClient"
import { Context, Effect, Layer, type Scope, Stream } from "effect"
import { StorageError } from "../Errors.js"
import { causeMessages } from "../internal/log.js"
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

/** The lock file `makePglite` keeps in a data directory while it has the directory open. */
export const PGLITE_LOCK_FILE = "identity-kit.lock"

// The directory PGlite will open, or `undefined` when it keeps the database elsewhere (memory,
// IndexedDB, OPFS): mirrors PGlite's own reading of `dataDir`.
const directoryOf = (dataDir: string | undefined): string | undefined => {
  if (dataDir === undefined || dataDir === "") return undefined
  if (dataDir.startsWith("file://")) return dataDir.slice(7) || undefined
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(dataDir) ? undefined : dataDir
}

// Directories this process holds, by real path. A second kit in the same process finds its own,
// living pid in the lock file, so the file alone cannot tell it apart from a leftover. Kept on
// globalThis: two copies of this package in one process (two installs) must share it.
const heldDirectories: Set<string> = (() => {
  const key = Symbol.for("identity-kit/pglite/heldDirectories")
  const existing: unknown = Reflect.get(globalThis, key)
  if (existing instanceof Set) return existing
  const created = new Set<string>()
  Reflect.set(globalThis, key, created)
  return created
})()
const HOST = os.hostname()

interface DataDirLock {
  readonly directory: string
  readonly file: string
  /** What we wrote (pid, start time, a random token): the file is still ours only if it still says this. */
  readonly content: string
  readonly onExit: () => void
}

const codeOf = (error: unknown): unknown =>
  typeof error === "object" && error !== null && "code" in error ? error.code : undefined

const readIfExists = (file: string): string | undefined => {
  try {
    return fs.readFileSync(file, "utf8")
  } catch (error) {
    if (codeOf(error) === "ENOENT") return undefined
    throw error
  }
}

/** The holder a lock file names: its pid and host (a lock written before hosts were recorded has none). */
const holderIn = (content: string): { readonly pid: number; readonly host: string | undefined } | undefined => {
  try {
    const parsed: unknown = JSON.parse(content)
    if (
      typeof parsed !== "object" || parsed === null || !("pid" in parsed) ||
      typeof parsed.pid !== "number" || !Number.isSafeInteger(parsed.pid) || parsed.pid <= 0
    ) return undefined
    const host = "host" in parsed && typeof parsed.host === "string" ? parsed.host : undefined
    return { pid: parsed.pid, host }
  } catch {
    return undefined
  }
}

// Signal 0 checks existence only. EPERM: it exists but belongs to another user, so it is alive.
const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return codeOf(error) === "EPERM"
  }
}

// Creates `file` with `content` only if it does not exist. Written aside and hard-linked in, so a
// reader never sees a half-written lock; `wx` where the file system has no hard links.
const createExclusive = (file: string, content: string): boolean => {
  const aside = `${file}.${process.pid}.${randomUUID()}`
  fs.writeFileSync(aside, content, { flag: "wx" })
  try {
    fs.linkSync(aside, file)
    return true
  } catch (error) {
    if (codeOf(error) === "EEXIST") return false
    if (!["EPERM", "ENOTSUP", "EOPNOTSUPP", "ENOSYS"].includes(String(codeOf(error)))) throw error
    try {
      fs.writeFileSync(file, content, { flag: "wx" })
      return true
    } catch (fallback) {
      if (codeOf(fallback) === "EEXIST") return false
      throw fallback
    }
  } finally {
    fs.rmSync(aside, { force: true })
  }
}

// Removes a stale lock, unless another process replaced it since we read it: moved aside first
// (atomic), and put back if what was moved is no longer the stale one.
const removeStale = (file: string, stale: string): void => {
  const aside = `${file}.stale.${process.pid}.${randomUUID()}`
  try {
    fs.renameSync(file, aside)
  } catch (error) {
    if (codeOf(error) === "ENOENT") return
    throw error
  }
  try {
    if (readIfExists(aside) !== stale) fs.linkSync(aside, file)
  } catch (error) {
    if (codeOf(error) !== "EEXIST") throw error
  } finally {
    fs.rmSync(aside, { force: true })
  }
}

const releaseFile = (file: string, content: string): void => {
  try {
    if (readIfExists(file) === content) fs.unlinkSync(file)
  } catch {
    // Best effort: a lock left behind names a dead process and is taken over by the next start.
  }
}

const inUse = (directory: string, pid: number | undefined, host?: string): SqlError => {
  const holder = pid === undefined ? "another process" : host !== undefined && host !== HOST
    ? `process ${pid} on host ${host}`
    : pid === process.pid
    ? `process ${pid} (this process: another PGlite layer has it open)`
    : `process ${pid}`
  const message = `the PGlite data directory ${directory} is in use by ${holder} (${PGLITE_LOCK_FILE}); ` +
    `stop it or use another PGLITE_DATA_DIR / dataDir` +
    (host !== undefined && host !== HOST ? `; if that process is gone, delete ${PGLITE_LOCK_FILE}` : "")
  return new SqlError({ cause: new Error(message), message })
}

/**
 * What in `directory` keeps PGlite from making a database there: nothing when it holds one already
 * (`PG_VERSION`), else every entry but the lock's own files, hidden ones (`.gitkeep`) and a mount
 * point's `lost+found`. As initdb, a database is made only in an empty directory: a mistyped
 * `--data-dir` must not scatter a cluster's files among a project's own.
 */
const foreignEntries = (directory: string): ReadonlyArray<string> => {
  const entries = fs.readdirSync(directory)
  if (entries.includes("PG_VERSION")) return []
  return entries.filter((name) => !name.startsWith(PGLITE_LOCK_FILE) && !name.startsWith(".") && name !== "lost+found").sort()
}

// PGlite has no lock of its own: two instances on one directory corrupt it. Taken before PGlite
// opens the directory and released after it closed it.
const lockDataDir = (dataDir: string): DataDirLock | SqlError => {
  const refuse = (message: string) => new SqlError({ cause: new Error(message), message })
  if (fs.statSync(dataDir, { throwIfNoEntry: false })?.isDirectory() === false) {
    return refuse(`the PGlite data directory ${dataDir} is a file, not a directory`)
  }
  fs.mkdirSync(dataDir, { recursive: true })
  const directory = fs.realpathSync(dataDir)
  if (heldDirectories.has(directory)) return inUse(directory, process.pid)
  const file = path.join(directory, PGLITE_LOCK_FILE)
  const content = JSON.stringify({ pid: process.pid, host: HOST, startedAt: new Date().toISOString(), token: randomUUID() })
  // A few rounds: a holder may release, or a racing process take over a stale lock, in between.
  for (let round = 0; round < 3; round++) {
    if (createExclusive(file, content)) {
      // Checked under the lock: a directory another process is initialising is "in use", never
      // "other files".
      const foreign = foreignEntries(directory)
      if (foreign.length > 0) {
        releaseFile(file, content)
        return refuse(
          `the PGlite data directory ${directory} holds other files (${foreign.slice(0, 3).join(", ")}` +
            `${foreign.length > 3 ? ", …" : ""}) and no database: give an empty or new directory ` +
            "(or, if a first start was interrupted, empty this one)"
        )
      }
      heldDirectories.add(directory)
      // `exit` runs on process.exit and a normal end, not on a fatal signal; a lock left by one
      // names a dead process and is taken over.
      const onExit = () => releaseFile(file, content)
      process.on("exit", onExit)
      return { directory, file, content, onExit }
    }
    const existing = readIfExists(file)
    if (existing === undefined) continue
    const holder = holderIn(existing)
    // Another host's process (a shared volume) cannot be checked from here: refused.
    if (holder?.host !== undefined && holder.host !== HOST) return inUse(directory, holder.pid, holder.host)
    // Our own pid without an entry in `heldDirectories`: a previous process that had the same pid
    // (a container restarted as pid 1). An unreadable file is not one we write (see createExclusive).
    if (holder !== undefined && holder.pid !== process.pid && isAlive(holder.pid)) return inUse(directory, holder.pid)
    removeStale(file, existing)
  }
  return inUse(directory, undefined)
}

const acquireDataDirLock = (dataDir: string): Effect.Effect<DataDirLock, SqlError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.try({
      try: () => lockDataDir(dataDir),
      catch: (cause) => new SqlError({ cause, message: `PGlite: failed to lock the data directory ${dataDir}` })
    }).pipe(Effect.flatMap((lock) => lock instanceof SqlError ? Effect.fail(lock) : Effect.succeed(lock))),
    (lock) =>
      Effect.sync(() => {
        process.off("exit", lock.onExit)
        releaseFile(lock.file, lock.content)
        heldDirectories.delete(lock.directory)
      })
  )

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

/** The message when `@electric-sql/pglite` is not installed (it is an optional peer dependency). */
export const PGLITE_MISSING =
  "identity-kit/pglite needs the package @electric-sql/pglite (an optional peer dependency of identity-kit, " +
  "so that hosts on PostgreSQL do not install it): npm install @electric-sql/pglite"

/**
 * PGlite's module, loaded when a PGlite layer is first built: `@electric-sql/pglite` is an optional
 * peer dependency (27 MB), and importing `identity-kit/pglite` must not fail without it.
 */
const loadPglite = Effect.tryPromise({
  try: () => import("@electric-sql/pglite"),
  catch: (cause) => {
    const missing = typeof cause === "object" && cause !== null && Reflect.get(cause, "code") === "ERR_MODULE_NOT_FOUND" &&
      String(Reflect.get(cause, "message")).includes("@electric-sql/pglite")
    return new SqlError({ cause, message: missing ? PGLITE_MISSING : "PGlite: failed to load @electric-sql/pglite" })
  }
})

/**
 * A fresh PGlite instance with a `SqlClient` and a `StatementExecutor` on it, closed when the scope
 * closes. A `dataDir` is locked (`identity-kit.lock` in it) until then; one that another process or
 * layer holds fails with a `SqlError` naming the holder's pid.
 */
export const makePglite = (
  options: PgliteOptions = {}
): Effect.Effect<PgliteConnection, SqlError, Reactivity.Reactivity | Scope.Scope> =>
  Effect.gen(function*() {
    const { PGlite } = yield* loadPglite
    const directory = directoryOf(options.dataDir)
    // Acquired first, so released last: after PGlite has closed the directory.
    if (directory !== undefined) yield* acquireDataDirLock(directory)
    const db = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () => PGlite.create(options.dataDir === undefined ? {} : { dataDir: options.dataDir }),
        catch: (cause) => new SqlError({ cause, message: "PGlite: failed to start" })
      }),
      (db) =>
        Effect.tryPromise(() => db.close()).pipe(
          Effect.catchAll((cause) =>
            Effect.annotateLogs(Effect.logWarning("identity-kit: PGlite failed to close"), {
              error: causeMessages(cause).join(": ")
            })
          )
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
