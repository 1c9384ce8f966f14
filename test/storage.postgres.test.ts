/**
 * The storage contract and the SQL failure tests on a real PostgreSQL (when `DATABASE_URL` is set),
 * each run in a schema of its own, dropped afterwards: on `layerPostgresClient` (the hot statements
 * prepared on its own pool) and on a host's own `PgClient` (the hot statements through the
 * `SqlClient`); and what an unreachable database does to the HTTP answer (always).
 */
import { randomBytes } from "node:crypto"
import { createServer, type Socket } from "node:net"
import * as SqlClient from "@effect/sql/SqlClient"
import * as PgClient from "@effect/sql-pg/PgClient"
import { assert, describe, expect, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Layer, Redacted } from "effect"
import { IdentityStore, makeIdentityKit, ROUTE } from "identity-kit"
import { layerPostgres, layerPostgresClient } from "identity-kit/postgres"
import { layerMigrations, layerSql, migrate } from "identity-kit/sql"
import { migrations } from "../src/storage/migrations.js"
import {
  postgresRaceSuite,
  sqlFailureSuite,
  sqlHotPathSuite,
  sqlIdentitiesSuite,
  storageContract
} from "./storage-contract.js"
import { freshSchema, makeProxy, withSearchPath } from "./support/postgres.js"
import { auditLogOf, storeAuditLog } from "./support/audit.js"

const DATABASE_URL = process.env["DATABASE_URL"]

const schema = `identity_kit_test_${randomBytes(6).toString("hex")}`
// Where DATABASE_URL is unset the suites below are skipped, but vitest still runs their bodies to
// collect them: the layers they make need a valid URL (never connected to).
const DB = DATABASE_URL ?? "postgres://unused@127.0.0.1:1/unused"
const schemaUrl = withSearchPath(DATABASE_URL ?? "postgres://unused@127.0.0.1/unused", schema)

describe.runIf(DATABASE_URL)("postgres", () => {
  const postgres = layerSql.pipe(
    Layer.provide(layerMigrations),
    Layer.provideMerge(layerPostgresClient({ url: schemaUrl, maxConnections: 10 })),
    Layer.provide(freshSchema(DB, schema))
  )
  storageContract("postgres", postgres, (it) => {
    sqlFailureSuite(it)
    sqlHotPathSuite(it)
    sqlIdentitiesSuite(it)
    postgresRaceSuite(it)

    it.effect("migrations are idempotent: a second run applies nothing", () =>
      Effect.gen(function*() {
        assert.deepStrictEqual(yield* migrate, [])
        const sql = yield* SqlClient.SqlClient
        const applied = yield* sql<{ readonly migration_id: number }>`SELECT migration_id FROM identity_kit_migrations ORDER BY 1`
        assert.deepStrictEqual(
          applied.map((row) => row.migration_id),
          Object.keys(migrations).map((key) => Number.parseInt(key, 10)).sort((a, b) => a - b)
        )
        assert.includeMembers(applied.map((row) => row.migration_id), [1, 2, 3])
      }))
  })
})

describe.runIf(DATABASE_URL)("postgres through a host's own PgClient", () => {
  const ownSchema = `${schema}_own`
  const storage = layerSql.pipe(
    Layer.provide(layerMigrations),
    Layer.provideMerge(PgClient.layer({ url: Redacted.make(withSearchPath(DB, ownSchema)) })),
    Layer.provide(freshSchema(DB, ownSchema))
  )
  storageContract("postgres (host's PgClient)", storage, (it) => {
    sqlFailureSuite(it)
    sqlHotPathSuite(it)
    sqlIdentitiesSuite(it)
    postgresRaceSuite(it)
  })
})

describe.runIf(DATABASE_URL)("postgres with REPEATABLE READ as the default isolation", () => {
  const rrSchema = `${schema}_rr`
  /** A URL whose connections use `schema` and REPEATABLE READ by default. */
  const rrUrl = (schemaName: string) => {
    const parsed = new URL(withSearchPath(DATABASE_URL ?? "postgres://unused@127.0.0.1/unused", schemaName))
    parsed.searchParams.set("options", `-c search_path=${schemaName} -c default_transaction_isolation=repeatable\\ read`)
    return parsed.toString()
  }
  const url = new URL(rrUrl(rrSchema))
  const storage = layerSql.pipe(
    Layer.provide(layerMigrations),
    Layer.provide(layerPostgresClient({ url: url.toString(), maxConnections: 10 })),
    Layer.provide(freshSchema(DB, rrSchema))
  )

  it("concurrent updates of one identity all succeed: serialization failures are retried", async () => {
    const kit = makeIdentityKit({ storage })
    try {
      await kit.admin.createWorkspace({ id: "ws_rr" })
      const { key } = await kit.admin.issueRootKey({ workspaceId: "ws_rr" })
      await kit.admin.createIdentity({ workspaceId: "ws_rr", externalId: "hot" })
      const isolation = await Effect.runPromise(
        Effect.flatMap(SqlClient.SqlClient, (sql) => sql<{ readonly i: string }>`SELECT current_setting('transaction_isolation') AS i`).pipe(
          Effect.provide(layerPostgresClient({ url: url.toString(), maxConnections: 1 }))
        )
      )
      expect(isolation[0]?.i).toBe("repeatable read")
      const statuses = await Promise.all(Array.from({ length: 40 }, async (_, i) => {
        const response = await kit.fetch(new Request(`http://localhost${ROUTE}`, {
          method: "POST",
          headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
          body: JSON.stringify({ identity: "hot", meta: { i }, ratelimits: [{ name: `rl${i % 4}`, limit: i + 1, duration: 1000 }] })
        }))
        return response.status
      }))
      expect(statuses.filter((status) => status !== 200)).toEqual([])
      const log = await auditLogOf(kit, "ws_rr")
      expect(log.filter((entry) => entry.event === "identity.update")).toHaveLength(40)
    } finally {
      await kit.dispose()
    }
  }, 60_000)
  it("concurrent admin updates of one workspace and one root key all succeed, each field as the last write left it", async () => {
    const kit = makeIdentityKit({ storage })
    try {
      await kit.admin.createWorkspace({ id: "ws_rr_admin" })
      const { rootKey } = await kit.admin.issueRootKey({ workspaceId: "ws_rr_admin" })
      // 20 of each at once: under REPEATABLE READ most would fail with 40001 without the retry.
      await Promise.all(Array.from({ length: 20 }, (_, i) =>
        Promise.all([
          kit.admin.updateWorkspace("ws_rr_admin", i % 2 === 0 ? { name: `name ${i}` } : { enabled: i % 4 === 1 }),
          kit.admin.updateRootKey(rootKey.id, i % 2 === 0 ? { permissions: [`p${i}`] } : { enabled: i % 4 === 1 })
        ])))
      const workspace = (await kit.admin.listWorkspaces()).items.find((ws) => ws.id === "ws_rr_admin")
      expect(workspace?.name).toMatch(/^name \d+$/)
      expect(typeof workspace?.enabled).toBe("boolean")
      const key = (await kit.admin.listRootKeys("ws_rr_admin")).items[0]
      expect(key?.permissions).toHaveLength(1)
    } finally {
      await kit.dispose()
    }
  }, 60_000)
  // A writer that changes only ratelimits locks the identity row without writing it. Under
  // REPEATABLE READ the next writer's snapshot predates that lock wait; were the row not written,
  // it would get the lock without a serialization failure and replace the set it saw (here: none),
  // leaving the first writer's ratelimit behind with no delete in the audit log.
  it.live("a ratelimit-only update waiting on another replaces the set the other left (no stale snapshot)", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const store = yield* IdentityStore
      const now = Date.now()
      const audit = { actorId: "key_rr", actorName: "root key", remoteIp: "", userAgent: "" }
      yield* store.putWorkspace({ id: "ws_rr_sets", name: "rr", enabled: true, createdAt: now })
      const identity = yield* store.createIdentity({ workspaceId: "ws_rr_sets", externalId: "sets", now })
      const write = (name: string) =>
        store.updateIdentity({
          workspaceId: "ws_rr_sets",
          identity: identity.id,
          ratelimits: [{ name, limit: 1, duration: 1000, autoApply: false }],
          audit,
          now
        })
      // The first writer holds the row lock (inside a transaction that sleeps before committing)...
      const locked = yield* Deferred.make<void>()
      const first = yield* Effect.fork(sql.withTransaction(
        write("first_set").pipe(Effect.zipLeft(Deferred.succeed(locked, undefined)), Effect.zipLeft(sql`SELECT pg_sleep(0.5)`))
      ))
      yield* Deferred.await(locked)
      // ...while the second one starts: its snapshot is older than the first one's commit.
      const second = yield* write("second_set")
      yield* first.await
      assert.deepStrictEqual(second.ratelimits.map((rl) => rl.name), ["second_set"])
      const stored = yield* store.getIdentity("ws_rr_sets", identity.id)
      assert.deepStrictEqual(stored?.ratelimits.map((rl) => rl.name), ["second_set"])
      const events = (yield* storeAuditLog(store, "ws_rr_sets")).map((entry) => entry.event)
      assert.deepStrictEqual(events.filter((event) => event.startsWith("ratelimit.")), [
        "ratelimit.create",
        "ratelimit.create",
        "ratelimit.delete"
      ])
    }).pipe(Effect.provide(
      layerSql.pipe(
        Layer.provide(layerMigrations),
        Layer.provideMerge(layerPostgresClient({ url: rrUrl(`${rrSchema}_sets`), maxConnections: 4 })),
        Layer.provide(freshSchema(DB, `${rrSchema}_sets`))
      )
    )), 60_000)
})

// --- an unreachable database ----------------------------------------------------------------

const request = () =>
  new Request(`http://localhost${ROUTE}`, {
    method: "POST",
    headers: { authorization: "Bearer unkey_not_a_real_key", "content-type": "application/json" },
    body: JSON.stringify({ identity: "user_1", meta: { a: 1 } })
  })

/**
 * A hang guard, not a latency bound: every call below is bounded by a `connectTimeout` of a few
 * seconds, so only a call that never ends (no bound at all) gets this far.
 */
const HANG_GUARD = Duration.seconds(20)

/** `kit`'s answer to one request; fails only if no answer comes within `HANG_GUARD`. */
const answerOf = (kit: ReturnType<typeof makeIdentityKit>) =>
  Effect.runPromise(Effect.promise(async () => {
    const response = await kit.fetch(request())
    const body: unknown = await response.json()
    return { status: response.status, body }
  }).pipe(Effect.timeoutFail({ duration: HANG_GUARD, onTimeout: () => new Error("the request never got an answer") })))

/** The error building `storage` fails with; fails the test if it builds, or hangs past `HANG_GUARD`. */
const buildError = <A, E>(storage: Layer.Layer<A, E>) =>
  Effect.runPromise(Layer.build(storage).pipe(
    Effect.scoped,
    Effect.flip,
    Effect.timeoutFail({ duration: HANG_GUARD, onTimeout: () => new Error("building the storage never ended") })
  ))

const internalError = {
  meta: { requestId: expect.stringMatching(/^req_/) },
  error: {
    title: "Internal Server Error",
    detail: expect.any(String),
    status: 500,
    type: "https://unkey.com/docs/errors/unkey/application/unexpected_error"
  }
}

describe("postgres unreachable", () => {
  it("the layer fails with StorageError; the kit answers 500 every time, and never hangs", async () => {
    const storage = layerPostgres({ url: "postgres://postgres@127.0.0.1:1/test", connectTimeout: "3 seconds" })
    const error = await buildError(storage)
    assert.strictEqual(error._tag, "StorageError")
    const kit = makeIdentityKit({ storage })
    try {
      for (let i = 0; i < 2; i++) {
        const answer = await answerOf(kit)
        assert.strictEqual(answer.status, 500)
        expect(answer.body).toStrictEqual(internalError)
      }
    } finally {
      await kit.dispose()
    }
  }, 60_000)

  it("a host that never answers is bounded by connectTimeout", async () => {
    // A listener that accepts connections and never speaks: the worst case for a client.
    const sockets = new Set<Socket>()
    const silent = createServer((socket) => {
      sockets.add(socket)
    })
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve))
    const address = silent.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    // Without a bound node-postgres would wait for the server's first byte forever.
    const storage = layerPostgres({ url: `postgres://postgres@127.0.0.1:${port}/test`, connectTimeout: "1 second" })
    const kit = makeIdentityKit({ storage })
    try {
      const error = await buildError(storage)
      assert.strictEqual(error._tag, "StorageError")
      const answer = await answerOf(kit)
      assert.strictEqual(answer.status, 500)
      expect(answer.body).toStrictEqual(internalError)
    } finally {
      await kit.dispose()
      for (const socket of sockets) socket.destroy()
      await new Promise((resolve) => silent.close(resolve))
    }
  }, 60_000)
})

// --- a database that goes away and comes back -----------------------------------------------


/** Runs one statement on `DATABASE_URL` with a short-lived client. */
const admin = (statement: string) =>
  Effect.runPromise(
    Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(statement)).pipe(
      Effect.provide(layerPostgresClient({ url: DB, maxConnections: 1 }))
    )
  )

describe.runIf(DATABASE_URL)("postgres outage", () => {
  it("answers 500 while the database is away and recovers by itself when it is back", async () => {
    const target = new URL(DB)
    const proxy = makeProxy(target.hostname, Number(target.port || 5432))
    await proxy.start() // learn a free port, then close it: the database is "down" at start
    await proxy.stop()
    const outageSchema = `${schema}_outage`
    await admin(`CREATE SCHEMA "${outageSchema}"`)
    const through = new URL(withSearchPath(DB, outageSchema))
    through.hostname = "127.0.0.1"
    through.port = String(proxy.port)
    const kit = makeIdentityKit({
      storage: layerPostgres({ url: through.toString(), connectTimeout: "2 seconds", migrate: true })
    })
    try {
      // Down at start: the layer cannot be built, the kit answers 500 and tries again next time.
      const down = await answerOf(kit)
      assert.strictEqual(down.status, 500)

      // Up: the store answers (401: an unknown key, looked up in the database).
      await proxy.start()
      const up = await answerOf(kit)
      assert.strictEqual(up.status, 401, JSON.stringify(up.body))

      // Down again after start: each call fails with StorageError (the spec's 500), not hanging.
      await proxy.stop()
      const lost = await answerOf(kit)
      assert.strictEqual(lost.status, 500)
      expect(lost.body).toStrictEqual({
        ...internalError,
        error: { ...internalError.error, detail: "We're unable to update the identity." }
      })

      // Back: the pool reconnects without a restart.
      await proxy.start()
      const back = await answerOf(kit)
      assert.strictEqual(back.status, 401, JSON.stringify(back.body))
    } finally {
      await kit.dispose()
      await proxy.stop()
      await admin(`DROP SCHEMA "${outageSchema}" CASCADE`)
    }
  }, 90_000)
})

describe.runIf(DATABASE_URL)("postgres that stops answering", () => {
  // A server or network that goes silent (no byte, no close): without a statement bound, a request
  // would wait for as long as that lasts. The proxy freezes; PostgreSQL itself is never touched.
  it("a request is answered 500 once its statement timed out, never held for as long as the silence lasts", async () => {
    const target = new URL(DB)
    const proxy = makeProxy(target.hostname, Number(target.port || 5432))
    await proxy.start()
    const frozenSchema = `${schema}_frozen`
    await admin(`CREATE SCHEMA "${frozenSchema}"`)
    const through = new URL(withSearchPath(DB, frozenSchema))
    through.hostname = "127.0.0.1"
    through.port = String(proxy.port)
    const kit = makeIdentityKit({
      storage: layerPostgres({ url: through.toString(), connectTimeout: "1 second", statementTimeout: "500 millis" })
    })
    try {
      // Up: an unknown key is looked up in the database (401).
      assert.strictEqual((await answerOf(kit)).status, 401)
      proxy.freeze()
      const frozen = await answerOf(kit)
      assert.strictEqual(frozen.status, 500, JSON.stringify(frozen.body))
      expect(frozen.body).toStrictEqual({
        ...internalError,
        error: { ...internalError.error, detail: "We're unable to update the identity." }
      })
    } finally {
      await kit.dispose()
      await proxy.stop()
      await admin(`DROP SCHEMA "${frozenSchema}" CASCADE`)
    }
  }, 60_000)

  it("a statement waiting on a lock past statementTimeout is cancelled by the server: 500, the lock holder unharmed", async () => {
    const lockSchema = `${schema}_lockwait`
    const url = withSearchPath(DB, lockSchema)
    await admin(`CREATE SCHEMA "${lockSchema}"`)
    const kit = makeIdentityKit({ storage: layerPostgres({ url, statementTimeout: "300 millis" }) })
    try {
      await kit.admin.createWorkspace({ id: "ws_lock" })
      const { key } = await kit.admin.issueRootKey({ workspaceId: "ws_lock" })
      const identity = await kit.admin.createIdentity({ workspaceId: "ws_lock", externalId: "locked" })
      const update = () =>
        kit.fetch(new Request(`http://localhost${ROUTE}`, {
          method: "POST",
          headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
          body: JSON.stringify({ identity: "locked", meta: { a: 1 } })
        })).then((response) => response.status)
      assert.strictEqual(await update(), 200)
      // Another session holds the identity's row lock for a while.
      const held = Effect.runPromise(Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql.withTransaction(Effect.zipRight(
          sql`SELECT id FROM identity_kit_identities WHERE id = ${identity.id} FOR UPDATE`,
          sql`SELECT pg_sleep(1.5)`
        ))
      }).pipe(Effect.provide(PgClient.layer({ url: Redacted.make(url) }))))
      await new Promise((resolve) => setTimeout(resolve, 200))
      assert.strictEqual(await update(), 500)
      await held
      // Once the lock is released the same update goes through.
      assert.strictEqual(await update(), 200)
    } finally {
      await kit.dispose()
      await admin(`DROP SCHEMA "${lockSchema}" CASCADE`)
    }
  }, 60_000)

  it("statementTimeout is checked when the layer is made: 0 is no bound, past a 32-bit delay a TypeError", () => {
    expect(() => layerPostgres({ url: DB, statementTimeout: Duration.infinity })).toThrow(TypeError)
    expect(() => layerPostgres({ url: DB, statementTimeout: "30 days" })).toThrow(TypeError)
    expect(() => layerPostgres({ url: DB, statementTimeout: 0 })).not.toThrow()
  })

  it("migrations are not bound by statementTimeout: they wait for another instance's migration lock", async () => {
    const migrating = `${schema}_migrating`
    const url = withSearchPath(DB, migrating)
    await admin(`CREATE SCHEMA "${migrating}"`)
    try {
      // The tables exist; another session holds the migrator's table lock for longer than the bound.
      await Effect.runPromise(Layer.build(layerPostgres({ url, listen: false })).pipe(Effect.scoped))
      const held = Effect.runPromise(Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql.withTransaction(Effect.zipRight(
          sql.unsafe("LOCK TABLE identity_kit_migrations IN ACCESS EXCLUSIVE MODE"),
          sql`SELECT pg_sleep(1)`
        ))
      }).pipe(Effect.provide(PgClient.layer({ url: Redacted.make(url) }))))
      await new Promise((resolve) => setTimeout(resolve, 200))
      const built = await Effect.runPromise(
        Layer.build(layerPostgres({ url, listen: false, statementTimeout: "200 millis" })).pipe(Effect.scoped, Effect.either)
      )
      await held
      expect(built._tag).toBe("Right")
    } finally {
      await admin(`DROP SCHEMA "${migrating}" CASCADE`)
    }
  }, 60_000)
})
