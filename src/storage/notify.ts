/**
 * Root-key change notifications from the database (`RootKeyEvents`), so every instance drops a
 * cached root key the moment it changes, whoever changed it: `kit.admin` in this process or
 * another, or plain SQL.
 *
 * - The migration `rootKeyNotifyMigration` puts a trigger on `identity_kit_root_keys` and
 *   `identity_kit_workspaces` that calls `pg_notify('identity_kit_root_keys', payload)`: `k:<hash>`
 *   for a key (old and new hash), `w:<id>` for a workspace, `*` for a truncate. Notifications are
 *   sent at commit, so a rolled-back change evicts nothing.
 * - PostgreSQL: `layerRootKeyEventsPostgres` holds one dedicated connection (not from the pool)
 *   that `LISTEN`s, reconnects with backoff, and checks every second that it is alive and the
 *   triggers are in place. "Connected" is a lease: each successful check vouches for the
 *   connection until a short time (`lease`) after it was sent, and when the lease runs out before
 *   the next check answered — a connection that died silently, whose socket reports nothing —
 *   `Disconnected` is reported, as it is when the connection fails: the cache is flushed and
 *   bypassed until a check succeeds again, so a change made meanwhile cannot be missed. Writes
 *   made through this process's `IdentityStore` are also reported in process, before the write
 *   returns.
 * - PGlite: `makeRootKeyEventsPglite` listens on the same channel in process (PGlite delivers the
 *   trigger's notification before the writing statement returns).
 *
 * The channel is per database, not per schema: kits in other schemas of the same database evict
 * each other's entries now and then (a lookup more, never a stale answer). `LISTEN` does not work
 * through a transaction-mode pooler (PgBouncer): give the listener a direct `url`, or turn the cache
 * off (`rootKeyCache: false`).
 */
import { createRequire } from "node:module"
import * as SqlClient from "@effect/sql/SqlClient"
import { Cause, Context, Data, Deferred, Duration, Effect, Exit, Layer, Redacted, Schedule, type Scope } from "effect"
import { causeMessages } from "../internal/log.js"
import { IdentityStore, type IdentityStoreService } from "../services/IdentityStore.js"
import {
  makeRootKeyEventHub,
  type RootKeyEvent,
  type RootKeyEventHub,
  RootKeyEvents
} from "../services/RootKeyEvents.js"

/** The `LISTEN/NOTIFY` channel of root-key and workspace changes. */
export const ROOT_KEY_CHANNEL = "identity_kit_root_keys"

const TRIGGERS = [
  "identity_kit_root_keys_notify",
  "identity_kit_root_keys_truncate_notify",
  "identity_kit_workspaces_notify",
  "identity_kit_workspaces_truncate_notify"
] as const

// One function for the four triggers. Each `IF` is nested rather than `AND`ed: SQL does not
// promise to short-circuit, and `NEW` has no fields in a DELETE (nor `OLD` in an INSERT).
// pg_notify drops a payload already sent in the same transaction, so an UPDATE that keeps the hash
// sends it once, and a bulk change sends each hash once.
const notifyFunction = `CREATE OR REPLACE FUNCTION identity_kit_notify_root_key_change()
RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  IF TG_LEVEL = 'STATEMENT' THEN
    PERFORM pg_notify('${ROOT_KEY_CHANNEL}', '*');
  ELSIF TG_TABLE_NAME = 'identity_kit_workspaces' THEN
    IF TG_OP <> 'INSERT' THEN
      PERFORM pg_notify('${ROOT_KEY_CHANNEL}', 'w:' || OLD.id);
    END IF;
    IF TG_OP <> 'DELETE' THEN
      PERFORM pg_notify('${ROOT_KEY_CHANNEL}', 'w:' || NEW.id);
    END IF;
  ELSE
    IF TG_OP <> 'INSERT' THEN
      PERFORM pg_notify('${ROOT_KEY_CHANNEL}', 'k:' || OLD.hash);
    END IF;
    IF TG_OP <> 'DELETE' THEN
      PERFORM pg_notify('${ROOT_KEY_CHANNEL}', 'k:' || NEW.hash);
    END IF;
  END IF;
  RETURN NULL;
END
$fn$`

const trigger = (name: string, table: string, events: string, level: "ROW" | "STATEMENT") => [
  `DROP TRIGGER IF EXISTS ${name} ON ${table}`,
  `CREATE TRIGGER ${name} AFTER ${events} ON ${table}
    FOR EACH ${level} EXECUTE FUNCTION identity_kit_notify_root_key_change()`
]

/**
 * The statements of the notify migration, in order. Idempotent (`CREATE OR REPLACE`, `DROP TRIGGER
 * IF EXISTS`), so running them again, or before the migrator records them, is harmless.
 */
export const rootKeyNotifyStatements: ReadonlyArray<string> = [
  notifyFunction,
  ...trigger(TRIGGERS[0], "identity_kit_root_keys", "INSERT OR UPDATE OR DELETE", "ROW"),
  ...trigger(TRIGGERS[1], "identity_kit_root_keys", "TRUNCATE", "STATEMENT"),
  ...trigger(TRIGGERS[2], "identity_kit_workspaces", "INSERT OR UPDATE OR DELETE", "ROW"),
  ...trigger(TRIGGERS[3], "identity_kit_workspaces", "TRUNCATE", "STATEMENT")
]

/** The migration `0004_root_key_notify`: the notify triggers on the root-key and workspace tables. */
export const rootKeyNotifyMigration: Effect.Effect<void, unknown, SqlClient.SqlClient> = Effect.flatMap(
  SqlClient.SqlClient,
  (sql) => Effect.forEach(rootKeyNotifyStatements, (text) => sql.unsafe(text), { discard: true })
)

// Whether this session's LISTEN is in force (committed) and the four triggers exist and are
// enabled. The tables are resolved through the connection's search_path, as every other statement
// is. A trigger disabled with ALTER TABLE … DISABLE TRIGGER ('D') reports nothing, so it does not count.
const READY_CHECK = `SELECT
  (SELECT count(*)::int FROM pg_catalog.pg_trigger
    WHERE tgname IN (${TRIGGERS.map((name) => `'${name}'`).join(", ")})
      AND tgenabled <> 'D'
      AND tgrelid IN (to_regclass('identity_kit_root_keys'), to_regclass('identity_kit_workspaces'))) AS triggers,
  EXISTS (SELECT 1 FROM pg_listening_channels() AS channel WHERE channel = '${ROOT_KEY_CHANNEL}') AS listening`

const isReady = (rows: ReadonlyArray<unknown>): boolean => {
  const row = rows[0]
  return typeof row === "object" && row !== null && "triggers" in row && "listening" in row &&
    row.triggers === TRIGGERS.length && row.listening === true
}

/** What a notification's payload means; anything unknown evicts everything. */
export const parseRootKeyPayload = (payload: string): RootKeyEvent =>
  payload.startsWith("k:")
    ? { _tag: "Invalidate", hash: payload.slice(2) }
    : payload.startsWith("w:")
    ? { _tag: "InvalidateWorkspace", workspaceId: payload.slice(2) }
    : { _tag: "InvalidateAll" }

/**
 * `store` with its root-key and workspace writes also reported through `hub` once they returned,
 * so this process's next request sees its own change without waiting for the notification.
 */
export const publishingWrites = (store: IdentityStoreService, hub: Pick<RootKeyEventHub, "publish">): IdentityStoreService => ({
  ...store,
  putWorkspace: (workspace) =>
    Effect.tap(store.putWorkspace(workspace), () => hub.publish({ _tag: "InvalidateWorkspace", workspaceId: workspace.id })),
  updateWorkspace: (id, patch) =>
    Effect.tap(store.updateWorkspace(id, patch), (workspace) => {
      if (workspace !== null) hub.publish({ _tag: "InvalidateWorkspace", workspaceId: workspace.id })
    }),
  putRootKey: (key) => Effect.tap(store.putRootKey(key), () => hub.publish({ _tag: "Invalidate", hash: key.hash })),
  updateRootKey: (id, patch) =>
    Effect.tap(store.updateRootKey(id, patch), (key) => {
      if (key !== null) hub.publish({ _tag: "Invalidate", hash: key.hash })
    })
})

// --- PostgreSQL: one dedicated node-postgres client ------------------------------------------

// node-postgres ships no types and this package does not depend on @types/pg: the little used here
// is described below and checked when the module is loaded.
interface PgNotification {
  readonly channel: string
  readonly payload?: string | undefined
}

interface PgListenClient {
  readonly processID: number | null
  connect(): Promise<unknown>
  query(text: string): Promise<{ readonly rows: ReadonlyArray<unknown> }>
  end(): Promise<unknown>
  on(event: "notification", listener: (message: PgNotification) => void): unknown
  on(event: "error", listener: (error: unknown) => void): unknown
  on(event: "end", listener: () => void): unknown
}

interface PgListenClientConfig {
  readonly connectionString: string
  readonly application_name: string
  readonly connectionTimeoutMillis: number
  readonly keepAlive: boolean
  readonly keepAliveInitialDelayMillis: number
}

type PgClientConstructor = new(config: PgListenClientConfig) => PgListenClient

const isPgModule = (value: unknown): value is { readonly Client: PgClientConstructor } =>
  typeof value === "object" && value !== null && "Client" in value && typeof value.Client === "function"

let pgClient: PgClientConstructor | undefined
const loadPgClient = (): PgClientConstructor => {
  if (pgClient !== undefined) return pgClient
  // The same `pg` that @effect/sql-pg uses (a dependency of this package).
  const loaded: unknown = createRequire(import.meta.url)("pg")
  if (!isPgModule(loaded)) throw new Error("the pg module has no Client")
  pgClient = loaded.Client
  return pgClient
}

/** How the PostgreSQL listener connects. */
export interface RootKeyListenerConfig {
  /** A direct connection (not through a transaction-mode pooler), with the tables' search_path. */
  readonly url: Redacted.Redacted<string> | string
  /**
   * Longest wait to connect, and for a check before the connection is dropped and made again.
   * Default 5 seconds. (The cache stops trusting a silent connection sooner: see `lease`.)
   */
  readonly connectTimeout?: Duration.DurationInput | undefined
  /** `application_name` of the listening connection. Default `identity-kit:listen`. */
  readonly applicationName?: string | undefined
  /** How often the connection and the triggers are checked. Default 1 second. */
  readonly heartbeat?: Duration.DurationInput | undefined
  /**
   * How long a successful check vouches for the connection, from when it was sent: without
   * another by then, `Disconnected` is reported (the cache is bypassed) until one succeeds. It
   * bounds how long a change can go unnoticed when the connection dies silently. Default
   * `heartbeat` + 1 second (the margin covers the next check's round trip).
   */
  readonly lease?: Duration.DurationInput | undefined
  /** Longest wait between two connection attempts (the wait doubles from 100 ms). Default 5 seconds. */
  readonly maxReconnectDelay?: Duration.DurationInput | undefined
}

/** Why a listening session ended (logged, never answered over HTTP). */
class ListenerLost extends Data.TaggedError("ListenerLost")<{ readonly reason: string; readonly cause?: unknown }> {
  override get message() {
    return this.reason
  }
}

/**
 * The PostgreSQL events source, running until the scope closes: starts disconnected and connects in
 * the background (a database that is down at start only means no cache until it is up).
 */
export const makeRootKeyEventsPostgres = (
  config: RootKeyListenerConfig
): Effect.Effect<RootKeyEventHub, never, Scope.Scope> =>
  Effect.gen(function*() {
    const hub = makeRootKeyEventHub()
    const url = typeof config.url === "string" ? config.url : Redacted.value(config.url)
    const timeout = Duration.decode(config.connectTimeout ?? Duration.seconds(5))
    const heartbeat = Duration.decode(config.heartbeat ?? Duration.seconds(1))
    const leaseMillis = Duration.toMillis(config.lease ?? Duration.sum(heartbeat, Duration.seconds(1)))
    const maxDelay = Duration.toMillis(config.maxReconnectDelay ?? Duration.seconds(5))
    const applicationName = config.applicationName ?? "identity-kit:listen"

    const request = <A>(what: string, evaluate: () => Promise<A>) =>
      Effect.tryPromise({ try: evaluate, catch: (cause) => new ListenerLost({ reason: what, cause }) }).pipe(
        Effect.timeoutFail({ duration: timeout, onTimeout: () => new ListenerLost({ reason: `${what}: no answer` }) })
      )

    // The lease: a timer that reports Disconnected `leaseMillis` after the last successful check
    // was sent, unless a later one moved it. A plain timer, so the cache's hit path checks
    // nothing more than whether its entry exists (Disconnected empties the cache).
    let leaseTimer: ReturnType<typeof setTimeout> | undefined
    const endLease = () => {
      if (leaseTimer !== undefined) clearTimeout(leaseTimer)
      leaseTimer = undefined
    }
    const renewLease = (sentAt: number) => {
      // Measured from the send: the answer proves only that LISTEN was in force, and every earlier
      // notification delivered, when the check ran.
      const left = sentAt + leaseMillis - Date.now()
      if (left <= 0) return // Too late to vouch for now; the next check may.
      endLease()
      leaseTimer = setTimeout(() => {
        leaseTimer = undefined
        hub.publish({ _tag: "Disconnected" })
      }, left)
      // Repeated while connected, it is dropped by the hub; after an expiry it trusts again.
      hub.publish({ _tag: "Connected" })
    }

    // One connection's life: connect, LISTEN, check the triggers, report Connected, then check
    // again every `heartbeat`, each success renewing the lease, until something fails. Fails with
    // the reason it ended.
    const session = (onConnected: () => void) =>
      Effect.gen(function*() {
        const Client = yield* Effect.try({ try: loadPgClient, catch: (cause) => new ListenerLost({ reason: "load pg", cause }) })
        const client = new Client({
          connectionString: url,
          application_name: applicationName,
          connectionTimeoutMillis: Duration.toMillis(timeout),
          // Probes an idle socket, so a peer that vanished is noticed even between checks.
          keepAlive: true,
          keepAliveInitialDelayMillis: Math.max(1000, Duration.toMillis(heartbeat))
        })
        const lost = yield* Deferred.make<never, ListenerLost>()
        // Stays attached after the session: node-postgres throws an `error` nobody listens to.
        client.on("error", (cause) => Deferred.unsafeDone(lost, Exit.fail(new ListenerLost({ reason: "connection error", cause }))))
        client.on("end", () => Deferred.unsafeDone(lost, Exit.fail(new ListenerLost({ reason: "connection closed" }))))
        client.on("notification", (message) => {
          if (message.channel === ROOT_KEY_CHANNEL) hub.publish(parseRootKeyPayload(message.payload ?? ""))
        })
        yield* Effect.addFinalizer(() =>
          Effect.promise(() => client.end().catch(() => undefined)).pipe(Effect.timeoutOption(Duration.seconds(1)))
        )
        yield* request("connect", () => client.connect())
        yield* request("listen", () => client.query(`LISTEN ${ROOT_KEY_CHANNEL}`))
        // A check, then the lease it buys: LISTEN is in force and the triggers exist, so every
        // change committed from then on is reported while the connection works.
        const check = Effect.suspend(() => {
          const sentAt = Date.now()
          return Effect.flatMap(
            request("check", () => client.query(READY_CHECK)),
            (result) =>
              isReady(result.rows)
                ? Effect.sync(() => renewLease(sentAt))
                : Effect.fail(new ListenerLost({ reason: "not listening, or the notify triggers are missing" }))
          )
        })
        yield* check
        onConnected()
        return yield* Effect.raceFirst(
          Deferred.await(lost),
          Effect.forever(Effect.zipRight(Effect.sleep(heartbeat), check))
        )
      }).pipe(
        // Before the connection is closed (which may take a while on a dead socket): from this
        // moment a change may go unreported.
        Effect.ensuring(Effect.sync(() => {
          endLease()
          hub.publish({ _tag: "Disconnected" })
        })),
        Effect.scoped
      )

    const loop = Effect.gen(function*() {
      let failures = 0
      for (;;) {
        const exit = yield* Effect.exit(session(() => {
          failures = 0
        }))
        // Once per outage, not once per attempt.
        if (failures === 0) {
          // The cause's messages, not a stack: a database restart is expected.
          yield* Effect.annotateLogs(
            Effect.logWarning("identity-kit: the root-key listener is down; the root-key cache is bypassed until it reconnects"),
            { error: Exit.isFailure(exit) ? causeMessages(Cause.squash(exit.cause)).join(": ") : "" }
          )
        }
        failures++
        yield* Effect.sleep(Duration.millis(Math.min(maxDelay, 100 * 2 ** Math.min(failures - 1, 16))))
      }
    })
    yield* Effect.forkScoped(loop)
    return hub
  })

/**
 * `RootKeyEvents` from PostgreSQL `LISTEN/NOTIFY`, beside the `IdentityStore` below it, whose
 * root-key and workspace writes are then also reported in process.
 */
export const layerRootKeyEventsPostgres = (
  config: RootKeyListenerConfig
): Layer.Layer<RootKeyEvents | IdentityStore, never, IdentityStore> =>
  Layer.scopedContext(Effect.gen(function*() {
    const store = yield* IdentityStore
    const hub = yield* makeRootKeyEventsPostgres(config)
    return Context.make(RootKeyEvents, hub.service).pipe(Context.add(IdentityStore, publishingWrites(store, hub)))
  }))

// --- PGlite: in process ----------------------------------------------------------------------

/**
 * What the PGlite events source uses of a PGlite instance. Declared here, not imported from
 * `@electric-sql/pglite`: it is an optional peer, and this module's types are part of
 * `identity-kit/sql` and `identity-kit/postgres`, which must type-check without it.
 */
export interface PgliteNotifications {
  readonly listen: (channel: string, callback: (payload: string) => void) => Promise<() => Promise<void>>
  readonly query: (sql: string) => Promise<{ readonly rows: ReadonlyArray<unknown> }>
}

/**
 * The PGlite events source on `db`, until the scope closes. Build it before any transaction runs
 * (its `LISTEN` must not land inside one). It reports `Connected` once the triggers exist (checked
 * again every second until then, so the migration may run after it).
 */
export const makeRootKeyEventsPglite = (
  db: PgliteNotifications
): Effect.Effect<RootKeyEventHub, never, Scope.Scope> =>
  Effect.gen(function*() {
    const hub = makeRootKeyEventHub()
    const listening = yield* Effect.acquireRelease(
      Effect.tryPromise(() => db.listen(ROOT_KEY_CHANNEL, (payload) => hub.publish(parseRootKeyPayload(payload)))),
      (unlisten) => Effect.promise(() => unlisten().catch(() => undefined))
    ).pipe(Effect.either)
    if (listening._tag === "Left") {
      // Without LISTEN nothing is reported: stay disconnected, so the cache stays off.
      yield* Effect.annotateLogs(Effect.logWarning("identity-kit: PGlite LISTEN failed; the root-key cache is off"), {
        error: causeMessages(listening.left).join(": ")
      })
      return hub
    }
    const check = Effect.tryPromise(() => db.query(READY_CHECK)).pipe(
      Effect.map((result) => isReady(result.rows)),
      Effect.orElseSucceed(() => false)
    )
    const connect = Effect.flatMap(check, (ok) =>
      ok ? Effect.sync(() => hub.publish({ _tag: "Connected" })) : Effect.fail("not listening, or triggers missing"))
    // Usually in place already (migrated before): then Connected is published before the layer is built.
    const first = yield* Effect.either(connect)
    if (first._tag === "Left") {
      yield* Effect.forkScoped(Effect.retry(connect, Schedule.spaced(Duration.seconds(1))))
    }
    return hub
  })

/**
 * `RootKeyEvents` from PGlite `db`, beside the `IdentityStore` below it (on the same `db`), whose
 * root-key and workspace writes are then also reported in process. Built after that store, so
 * after its migrations: no transaction is open when it runs `LISTEN`.
 */
export const layerRootKeyEventsPglite = (
  db: PgliteNotifications
): Layer.Layer<RootKeyEvents | IdentityStore, never, IdentityStore> =>
  Layer.scopedContext(Effect.gen(function*() {
    const store = yield* IdentityStore
    const hub = yield* makeRootKeyEventsPglite(db)
    return Context.make(RootKeyEvents, hub.service).pipe(Context.add(IdentityStore, publishingWrites(store, hub)))
  }))
