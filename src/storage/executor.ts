/**
 * How the hot statements (root-key lookup, identity update) reach the database with as little
 * between them as each connection allows. `layerSql` takes the `StatementExecutor` in context when
 * there is one and falls back to the generic `SqlClient` otherwise:
 *
 * - `layerPostgresClient` (./postgres.ts): named prepared statements straight on its `pg` pool;
 * - `layerPgliteClient` (./pglite.ts): straight on the PGlite instance, under its one-permit lock;
 * - any other `SqlClient` (a host's own): `sql.unsafe(text, values)`.
 *
 * Rows come back as arrays of column values, in the statement's column order, and are decoded by
 * the caller's `decode` (built once, see sql.ts). A statement run inside a `SqlClient` transaction
 * always goes through the `SqlClient`, so it joins the transaction like any other statement.
 */
import { connect as connectSocket, type Socket } from "node:net"
import * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import { Context, Effect, Option } from "effect"

/** A statement of the hot path: a name unique to its text (the prepared statement's name), and the text. */
export interface Statement {
  readonly name: string
  readonly text: string
}

/** Rows as arrays of column values. */
export type Rows = ReadonlyArray<ReadonlyArray<unknown>>

/** Parameter values: text, numbers, `null`. */
export type Values = ReadonlyArray<string | number | boolean | null>

/** Runs hot-path statements. */
export interface StatementExecutorService {
  /**
   * Runs `statement` with `values` and answers `decode(rows)`. A database failure, or a `decode`
   * that throws (a row that does not decode), is a `SqlError`.
   */
  readonly execute: <A>(statement: Statement, values: Values, decode: (rows: Rows) => A) => Effect.Effect<A, SqlError>
}

/** The fastest way a layer's own connection can run hot-path statements (optional: see `layerSql`). */
export class StatementExecutor extends Context.Tag("identity-kit/StatementExecutor")<
  StatementExecutor,
  StatementExecutorService
>() {}

/** `decode(rows)`, with a throw turned into the `SqlError` every store maps to `StorageError`. */
export const decodeRows = <A>(rows: Rows, decode: (rows: Rows) => A): Effect.Effect<A, SqlError> => {
  try {
    return Effect.succeed(decode(rows))
  } catch (cause) {
    return Effect.fail(new SqlError({ cause, message: "Failed to decode the result" }))
  }
}

/** Statements through the `SqlClient`: the fallback for a host's own client, and inside transactions. */
export const fromSqlClient = (sql: SqlClient.SqlClient): StatementExecutorService => ({
  execute: (statement, values, decode) =>
    Effect.flatMap(sql.unsafe(statement.text, values).values, (rows) => decodeRows(rows, decode))
})

/**
 * `fast`, except inside a `SqlClient` transaction: there the statement must run on the
 * transaction's connection (another connection would not see its writes, and could wait forever on
 * a row lock the transaction holds).
 */
export const outsideTransactions = (
  fast: StatementExecutorService,
  sql: SqlClient.SqlClient
): StatementExecutorService => {
  const inTransaction = fromSqlClient(sql)
  return {
    execute: (statement, values, decode) =>
      Effect.contextWithEffect((context) =>
        Option.isSome(Context.getOption(context, SqlClient.TransactionConnection))
          ? inTransaction.execute(statement, values, decode)
          : fast.execute(statement, values, decode)
      )
  }
}

// --- node-postgres --------------------------------------------------------------------------
// The few members of `pg`'s `Pool` and `PoolClient` used here (`pg` ships no types of its own).

/** The result of a query run with `rowMode: "array"`. */
export interface PgArrayResult {
  readonly rows: Array<Array<unknown>>
}

/** A connection checked out of a `pg` pool. */
export interface PgPoolClient {
  /** The backend's process id, known once connected. */
  readonly processID?: number | null | undefined
  /** The backend's cancel key (BackendKeyData), known once connected. */
  readonly secretKey?: number | null | undefined
  /** Where the connection goes: a host name or address, or a Unix socket directory (`/…`). */
  readonly host?: string | undefined
  readonly port?: number | string | undefined
  query(
    config: { readonly name: string; readonly text: string; readonly values: Values; readonly rowMode: "array" },
    callback: (error: Error | null | undefined, result: PgArrayResult | undefined) => void
  ): unknown
  on(event: "error", listener: (error: Error) => void): unknown
}

/** A `pg` pool. */
export interface PgPool {
  readonly ending: boolean
  connect(
    callback: (error: Error | null | undefined, client: PgPoolClient | undefined, release: (error?: Error) => void) => void
  ): void
  query(text: string, values: ReadonlyArray<unknown>, callback: (error: Error | null | undefined) => void): unknown
}

const ignore = () => {}

// Clients given an "error" listener. A checked-out client that loses its connection emits "error"
// (and throws if nobody listens); the failure also reaches its running query's callback, and the
// pool drops a client that is no longer queryable when it is released, so the listener only
// has to exist.
const guarded = new WeakSet<PgPoolClient>()

/** The protocol's CancelRequest code (1234 << 16 | 5678). */
const CANCEL_REQUEST_CODE = 80877102

/** Longest life of a cancel request's socket: past it, the cancel counts as maybe still coming. */
const CANCEL_SOCKET_TIMEOUT_MS = 10_000

/**
 * Sends a protocol-level CancelRequest for `client`'s backend on a socket of its own: no pool
 * connection, no login, so it works when every pool connection is busy. Plain TCP (or the Unix
 * socket), as libpq's `PQcancel` sends it: PostgreSQL reads a cancel before any TLS. Calls
 * `settled(true)` when no cancel can reach the backend any more: the server closed the socket
 * after reading the request (it has then signalled the backend, or found nothing to cancel), or
 * the socket never connected; `settled(false)` when that is unknown (an error, or no close in
 * time, once connected). Answers false, without calling `settled`, when nothing was sent (no key
 * or address).
 */
export const sendCancelRequest = (client: PgPoolClient, settled: (final: boolean) => void): boolean => {
  const { host, processID, secretKey } = client
  const port = Number(client.port ?? 5432)
  if (
    typeof processID !== "number" || typeof secretKey !== "number" || typeof host !== "string" || host === "" ||
    !Number.isInteger(port)
  ) return false
  const message = Buffer.alloc(16)
  message.writeInt32BE(16, 0)
  message.writeInt32BE(CANCEL_REQUEST_CODE, 4)
  message.writeInt32BE(processID, 8)
  message.writeInt32BE(secretKey, 12)
  let socket: Socket
  try {
    // A host starting with "/" is the directory of PostgreSQL's Unix socket, as in node-postgres.
    socket = host.startsWith("/")
      ? connectSocket({ path: `${host}/.s.PGSQL.${port}` })
      : connectSocket({ host, port })
  } catch {
    return false
  }
  let connected = false
  let written = false
  let failed = false
  socket.setTimeout(CANCEL_SOCKET_TIMEOUT_MS, () => {
    failed = true
    socket.destroy()
  })
  socket.on("connect", () => {
    connected = true
    socket.write(message, (error) => {
      if (error === undefined || error === null) written = true
    })
  })
  socket.on("error", () => {
    failed = true
  })
  // The server answers nothing and closes the socket once it has handled the request.
  socket.on("close", () => settled(!connected || (written && !failed)))
  return true
}

/**
 * Named prepared statements on a `pg` pool: parsed and planned once per connection, then only
 * bound and executed. One `Effect.async` per statement, with no `AbortController`.
 *
 * Interruption cancels a running statement with a protocol-level CancelRequest on a socket of its
 * own, not through the pool (a cancel waiting for a pool connection, while every connection waits
 * for its cancel, would stall the pool). A connection whose statement answered once its cancel was
 * handled goes back to the pool; one that answered while its cancel may still be on the way is
 * released with an error, so the pool closes it: a late cancel can never hit another caller's
 * statement on a reused connection. A statement is one implicit transaction: cancelled, it either
 * committed or left nothing.
 */
export const fromPgPool = (
  pool: PgPool,
  options: {
    /**
     * Longest wait for a statement's answer once sent (client side). Past it the statement fails,
     * a cancel is sent, and the connection is closed rather than reused: it covers what the
     * server's own `statement_timeout` cannot, a server or network that stopped answering.
     * Default: none.
     */
    readonly timeoutMs?: number | undefined
  } = {}
): StatementExecutorService => ({
  execute: <A>(statement: Statement, values: Values, decode: (rows: Rows) => A) =>
    // One parameter: `Effect.async` creates an AbortController when the callback takes a second.
    Effect.async<A, SqlError>((resume) => {
      // 0: waiting for a connection; 1: statement sent; 2: answered, failed or interrupted.
      let state = 0
      let client: PgPoolClient | undefined
      let release: ((error?: Error) => void) | undefined
      // Whether a cancel request may still reach the connection's backend.
      let cancelPending = false

      pool.connect((error, acquired, releaseClient) => {
        if (state === 2) {
          // Interrupted while waiting for the connection.
          if (acquired !== undefined) releaseClient()
          return
        }
        if (error || acquired === undefined) {
          state = 2
          resume(Effect.fail(
            new SqlError({ cause: error ?? new Error("No client returned"), message: "Failed to acquire connection" })
          ))
          return
        }
        client = acquired
        release = releaseClient
        state = 1
        if (!guarded.has(acquired)) {
          acquired.on("error", ignore)
          guarded.add(acquired)
        }
        // The deadline, when there is one: the answer may never come (a server or network that
        // stopped answering), so the statement fails now and its connection is closed, not reused.
        // A statement is one implicit transaction: it committed or it left nothing.
        // It also frees the connection of a statement that was interrupted and never answered (a
        // frozen server): without it, that connection would stay checked out.
        const timer = options.timeoutMs === undefined ? undefined : setTimeout(() => {
          const done = release
          if (done === undefined) return
          release = undefined
          done(new Error("identity-kit: statement timed out"))
          sendCancelRequest(acquired, () => {})
          if (state !== 1) return
          state = 2
          resume(Effect.fail(new SqlError({ cause: new Error("statement timed out"), message: "Statement timed out" })))
        }, options.timeoutMs)
        // A statement interrupted before its deadline must not keep the process alive until then.
        timer?.unref()
        const onAnswer = (error: Error | null | undefined, result: PgArrayResult | undefined) => {
          if (timer !== undefined) clearTimeout(timer)
          const done = release
          release = undefined
          if (done !== undefined) {
            if (cancelPending) done(new Error("identity-kit: closing a connection whose cancel request may still arrive"))
            else done()
          }
          if (state === 2) return
          state = 2
          resume(
            error || result === undefined
              ? Effect.fail(new SqlError({ cause: error, message: "Failed to execute statement" }))
              : decodeRows(result.rows, decode)
          )
        }
        try {
          acquired.query({ name: statement.name, text: statement.text, values, rowMode: "array" }, onAnswer)
        } catch (cause) {
          // node-postgres reports its own errors through the callback; this is for anything else.
          onAnswer(cause instanceof Error ? cause : new Error(String(cause)), undefined)
        }
      })

      return Effect.sync(() => {
        const running = state === 1
        state = 2
        if (!running || client === undefined || release === undefined) return
        // Best effort, like @effect/sql-pg's cancel: a cancel that fails leaves the statement to
        // finish, and the connection goes back once it answered.
        cancelPending = sendCancelRequest(client, (final) => {
          // Not final: the request may still arrive, so the connection stays marked.
          if (final) cancelPending = false
        })
      })
    })
})
