/**
 * Instant revocation with the root-key cache on (issue 7 item 5).
 *
 * - PGlite: a key revoked or disabled, or its workspace disabled, through `kit.admin` or by plain
 *   SQL on the same database, is refused by the next request.
 * - PostgreSQL (when `DATABASE_URL` is set, in a database of its own): kit A in this process, kit B
 *   in a child process, one database. B's cache is warm; the key is changed through A's
 *   `kit.admin` or by plain SQL; B must refuse every request that starts after the notification
 *   reached it, and a poll of B must see the refusal — with and without load on B. Then B's
 *   listening connection is killed: B reads storage for every request until it has reconnected,
 *   and honours a change made while it was disconnected.
 * - PostgreSQL, a listener whose connection goes silent (a frozen proxy: no error, no close): once
 *   its lease ran out, the cache stops serving and a key changed meanwhile is refused.
 * - The storage layers `layerPglite` and `layerPostgres` provide `RootKeyEvents` (the wiring).
 */
import { type ChildProcess, spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import * as Reactivity from "@effect/experimental/Reactivity"
import { SqlClient } from "@effect/sql"
import { afterAll, assert, beforeAll, describe, expect, it } from "@effect/vitest"
import { Context, Deferred, Duration, Effect, Layer, ManagedRuntime, Option, Schema } from "effect"
import { IdentityStore, type IdentityKit, makeIdentityKit, ROUTE } from "identity-kit"
import { layerPglite, makePglite } from "identity-kit/pglite"
import { layerPostgres, layerPostgresClient } from "identity-kit/postgres"
import { layerMigrations, layerSql, migrate, StatementExecutor } from "identity-kit/sql"
import { RootKeyEvents } from "../src/services/RootKeyEvents.js"
import { layerRootKeyEventsPglite, layerRootKeyEventsPostgres } from "../src/storage/notify.js"
import type { Command } from "./support/kit-process.js"
import { makeProxy } from "./support/postgres.js"

const DATABASE_URL = process.env["DATABASE_URL"]

/**
 * How long B's poll goes on before the test gives up (it stops at the first refusal). Not a latency
 * requirement: the property is `acceptedAfterNotify === 0` (no request that started after the
 * notification reached B was accepted); this bound only ends a poll whose notification never
 * comes. The measured latencies are printed after the suite.
 */
const POLL_LIMIT_MS = 10_000

const post = (kit: IdentityKit, key: string) =>
  kit.fetch(new Request(`http://localhost${ROUTE}`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify({ identity: "user_1" })
  })).then(async (response) => {
    await response.arrayBuffer()
    return response.status
  })

/** A workspace with `user_1` and a root key; answers the plaintext and the key's id. */
const prepare = async (kit: IdentityKit, workspaceId: string) => {
  await kit.admin.createWorkspace({ id: workspaceId })
  await kit.admin.createIdentity({ workspaceId, externalId: "user_1" })
  const { key, rootKey } = await kit.admin.issueRootKey({ workspaceId })
  return { key, keyId: rootKey.id, workspaceId }
}

const unique = (prefix: string) => `${prefix}_${randomBytes(4).toString("hex")}`

// --- PGlite ---------------------------------------------------------------------------------

describe("PGlite: the next request after a change is refused, with the cache on", () => {
  const state: { lookups: number; sql: SqlClient.SqlClient | undefined } = { lookups: 0, sql: undefined }
  const counting = Layer.effect(IdentityStore, Effect.map(IdentityStore, (store) => ({
    ...store,
    findRootKey: (hash: string) => {
      state.lookups++
      return store.findRootKey(hash)
    }
  })))
  const storage = Layer.unwrapScoped(Effect.map(makePglite(), ({ client, db, executor }) => {
    state.sql = client
    return layerRootKeyEventsPglite(db).pipe(
      Layer.provide(counting),
      Layer.provide(layerSql),
      // With the notify triggers (migration 0004).
      Layer.provide(layerMigrations),
      Layer.provide(Layer.succeedContext(Context.make(SqlClient.SqlClient, client).pipe(Context.add(StatementExecutor, executor))))
    )
  })).pipe(Layer.provide(Reactivity.layer))
  const kit = makeIdentityKit({ storage })
  afterAll(() => kit.dispose())

  const sql = (run: (sql: SqlClient.SqlClient) => Effect.Effect<unknown, unknown>) => {
    const client = state.sql
    if (client === undefined) throw new Error("PGlite is not started")
    return Effect.runPromise(Effect.orDie(run(client)))
  }

  /** A key whose lookup is cached: two requests, one lookup. */
  const warm = async (workspace: string) => {
    const prepared = await prepare(kit, unique(workspace))
    const before = state.lookups
    assert.strictEqual(await post(kit, prepared.key), 200)
    assert.strictEqual(await post(kit, prepared.key), 200)
    assert.strictEqual(state.lookups - before, 1, "the second request is answered from the cache")
    return prepared
  }

  it("through kit.admin: revoke → 401, disable → 403, workspace disabled (replaced or updated) → 403", async () => {
    const revoked = await warm("ws_pa")
    await kit.admin.revokeRootKey(revoked.keyId)
    assert.strictEqual(await post(kit, revoked.key), 401)

    const disabled = await warm("ws_pb")
    await kit.admin.updateRootKey(disabled.keyId, { enabled: false })
    assert.strictEqual(await post(kit, disabled.key), 403)

    const inWorkspace = await warm("ws_pc")
    await kit.admin.createWorkspace({ id: inWorkspace.workspaceId, enabled: false })
    assert.strictEqual(await post(kit, inWorkspace.key), 403)

    const updated = await warm("ws_pu")
    await kit.admin.updateWorkspace(updated.workspaceId, { enabled: false })
    assert.strictEqual(await post(kit, updated.key), 403)
  })

  it("by plain SQL on the same database (the trigger's notification alone)", async () => {
    const disabled = await warm("ws_ps")
    await sql((sql) => sql`UPDATE identity_kit_root_keys SET enabled = false WHERE id = ${disabled.keyId}`)
    assert.strictEqual(await post(kit, disabled.key), 403)

    const deleted = await warm("ws_pd")
    await sql((sql) => sql`DELETE FROM identity_kit_root_keys WHERE id = ${deleted.keyId}`)
    assert.strictEqual(await post(kit, deleted.key), 401)

    const inWorkspace = await warm("ws_pw")
    await sql((sql) => sql`UPDATE identity_kit_workspaces SET enabled = false WHERE id = ${inWorkspace.workspaceId}`)
    assert.strictEqual(await post(kit, inWorkspace.key), 403)

    // A rolled-back change is not a change: the entry stays (no lookup).
    const kept = await warm("ws_pr")
    await sql((sql) =>
      sql.withTransaction(Effect.zipRight(
        sql`UPDATE identity_kit_root_keys SET enabled = false WHERE id = ${kept.keyId}`,
        Effect.fail("roll back")
      )).pipe(Effect.ignore)
    )
    const before = state.lookups
    assert.strictEqual(await post(kit, kept.key), 200)
    assert.strictEqual(state.lookups, before)
  })
})

// --- The wiring: the storage layers provide RootKeyEvents -----------------------------------

/** Builds `storage`, subscribes, and answers whether `Connected` arrives within 10 seconds. */
const connects = (storage: Layer.Layer<IdentityStore, unknown>) =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const context = yield* Layer.build(storage)
    const events = Context.getOption(context, RootKeyEvents)
    if (Option.isNone(events)) return "no RootKeyEvents"
    const connected = yield* Deferred.make<void>()
    yield* events.value.subscribe((event) => {
      if (event._tag === "Connected") Deferred.unsafeDone(connected, Effect.void)
    })
    return yield* Deferred.await(connected).pipe(
      Effect.as("connected"),
      Effect.timeoutTo({ duration: Duration.seconds(10), onSuccess: (done) => done, onTimeout: () => "never connected" })
    )
  })))

describe("the storage layers provide RootKeyEvents (needs the wiring in pglite.ts and postgres.ts)", () => {
  it("layerPglite", async () => {
    expect(await connects(layerPglite())).toBe("connected")
  })
})

// --- PostgreSQL, two processes --------------------------------------------------------------

const StatsSchema = Schema.Struct({
  requests: Schema.Number,
  lookups: Schema.Number,
  connected: Schema.Boolean,
  connects: Schema.Number,
  disconnects: Schema.Number
})
const PollSchema = Schema.Struct({
  status: Schema.Number,
  attempts: Schema.Number,
  elapsedMs: Schema.Number,
  notifiedAt: Schema.optional(Schema.Number),
  acceptedAfterNotify: Schema.Number
})
const LoadSchema = Schema.Struct({
  requests: Schema.Number,
  statuses: Schema.Record({ key: Schema.String, value: Schema.Number }),
  acceptedAfterNotify: Schema.Number
})
const ReplySchema = Schema.Struct({
  seq: Schema.Number,
  result: Schema.optional(Schema.Unknown),
  error: Schema.optional(Schema.String)
})

/** Kit B: the child process, and a typed way to ask it things. */
const startKitProcess = (env: Record<string, string>) =>
  new Promise<{ readonly child: ChildProcess; readonly ask: (command: Command) => Promise<unknown> }>((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ["--import", "tsx", "--conditions=@identity-kit/source", "test/support/kit-process.ts"],
      { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe", "ipc"] }
    )
    let output = ""
    child.stdout?.on("data", (chunk: Buffer) => (output += chunk.toString()))
    child.stderr?.on("data", (chunk: Buffer) => (output += chunk.toString()))
    const pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>()
    let seq = 0
    const ask = (command: Command) =>
      new Promise<unknown>((resolveReply, rejectReply) => {
        seq++
        pending.set(seq, { resolve: resolveReply, reject: rejectReply })
        child.send({ seq, command })
      })
    const timer = setTimeout(() => reject(new Error(`kit process did not start:\n${output}`)), 45_000)
    child.on("message", (message: unknown) => {
      const reply = Schema.decodeUnknownSync(ReplySchema)(message)
      if (reply.seq === 0) {
        clearTimeout(timer)
        resolve({ child, ask })
        return
      }
      const waiting = pending.get(reply.seq)
      pending.delete(reply.seq)
      if (reply.error !== undefined) waiting?.reject(new Error(`${reply.error}\n${output}`))
      else waiting?.resolve(reply.result)
    })
    child.on("exit", (code) => {
      clearTimeout(timer)
      reject(new Error(`kit process exited with ${code}:\n${output}`))
      for (const waiting of pending.values()) waiting.reject(new Error(`kit process exited with ${code}:\n${output}`))
    })
  })

const adminUrl = DATABASE_URL ?? "postgres://unused@127.0.0.1/unused"
const database = `identity_kit_notify_${randomBytes(5).toString("hex")}`
const databaseUrl = (() => {
  const url = new URL(adminUrl)
  url.pathname = `/${database}`
  return url.toString()
})()

/** One statement on the server's own database (CREATE/DROP DATABASE). */
const onServer = (statement: string) =>
  Effect.runPromise(
    Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(statement)).pipe(
      Effect.provide(layerPostgresClient({ url: adminUrl, maxConnections: 1 }))
    )
  )

describe.runIf(DATABASE_URL)("PostgreSQL: two kits in two processes on one database", () => {
  const target = new URL(adminUrl)
  const proxy = makeProxy(target.hostname, Number(target.port || 5432))
  const latencies: Array<{ readonly label: string; readonly notifyMs: number; readonly refusedMs: number; readonly attempts: number }> = []
  let kitA: IdentityKit | undefined
  let b: Awaited<ReturnType<typeof startKitProcess>> | undefined
  let sqlRuntime: ManagedRuntime.ManagedRuntime<SqlClient.SqlClient, unknown> | undefined

  beforeAll(async () => {
    await onServer(`CREATE DATABASE ${database}`)
    sqlRuntime = ManagedRuntime.make(layerPostgresClient({ url: databaseUrl, maxConnections: 2 }))
    // Every migration, the notify triggers (0004) included.
    await sqlRuntime.runPromise(migrate)
    await proxy.start()
    const listenUrl = new URL(databaseUrl)
    listenUrl.hostname = "127.0.0.1"
    listenUrl.port = String(proxy.port)
    b = await startKitProcess({ KIT_DATABASE_URL: databaseUrl, KIT_LISTEN_URL: listenUrl.toString(), KIT_NAME: "kit-b" })
    kitA = makeIdentityKit({
      storage: layerRootKeyEventsPostgres({ url: databaseUrl, applicationName: "kit-a:listen" }).pipe(
        Layer.provide(layerSql),
        Layer.provide(layerPostgresClient({ url: databaseUrl, applicationName: "kit-a" }))
      )
    })
    await waitFor("B's listener connected", async () => (await stats()).connected)
  }, 90_000)

  afterAll(async () => {
    if (latencies.length > 0) {
      console.log(`[root-key invalidation] notify latency (commit in A → B notified) and B's refusal time (poll start → refused):
${latencies.map((l) => `  ${l.label}: notify ${l.notifyMs.toFixed(2)} ms, refused after ${l.refusedMs.toFixed(2)} ms (${l.attempts} request(s))`).join("\n")}`)
    }
    b?.child.removeAllListeners("exit")
    b?.child.disconnect()
    await kitA?.dispose()
    await sqlRuntime?.dispose()
    await proxy.stop()
    await onServer(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`)
  }, 60_000)

  const kitB = () => {
    if (b === undefined) throw new Error("kit B is not started")
    return b
  }
  const a = () => {
    if (kitA === undefined) throw new Error("kit A is not started")
    return kitA
  }
  const stats = async () => Schema.decodeUnknownSync(StatsSchema)(await kitB().ask({ op: "stats" }))
  const fetchB = async (key: string) => Schema.decodeUnknownSync(Schema.Number)(await kitB().ask({ op: "fetch", key }))
  const sql = (run: (sql: SqlClient.SqlClient) => Effect.Effect<unknown, unknown>) => {
    if (sqlRuntime === undefined) throw new Error("no SQL runtime")
    return sqlRuntime.runPromise(Effect.flatMap(SqlClient.SqlClient, (client) => Effect.orDie(run(client))))
  }

  /** Polls `check` every 20 ms for up to 15 seconds. */
  async function waitFor(what: string, check: () => Promise<boolean>) {
    const until = Date.now() + 15_000
    while (!(await check())) {
      if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }

  /**
   * A key in a fresh workspace, cached in B: requested until a request needs no lookup. (The first
   * lookup may not be kept: the notifications of A's inserts can arrive while it runs.)
   */
  const warmInB = async (prefix: string) => {
    const prepared = await prepare(a(), unique(prefix))
    for (let attempt = 0; attempt < 50; attempt++) {
      const before = (await stats()).lookups
      assert.strictEqual(await fetchB(prepared.key), 200)
      if ((await stats()).lookups === before) return prepared
    }
    throw new Error("B never answered from its cache")
  }

  type Prepared = Awaited<ReturnType<typeof prepare>>
  const changes: ReadonlyArray<readonly [label: string, expected: number, change: (key: Prepared) => Promise<unknown>]> = [
    ["revoked through A's kit.admin", 401, (key) => a().admin.revokeRootKey(key.keyId)],
    ["disabled through A's kit.admin", 403, (key) => a().admin.updateRootKey(key.keyId, { enabled: false })],
    ["workspace disabled through A's kit.admin", 403, (key) => a().admin.createWorkspace({ id: key.workspaceId, enabled: false })],
    ["workspace disabled through A's kit.admin.updateWorkspace", 403, (key) => a().admin.updateWorkspace(key.workspaceId, { enabled: false })],
    ["disabled by plain SQL", 403, (key) => sql((sql) => sql`UPDATE identity_kit_root_keys SET enabled = false WHERE id = ${key.keyId}`)],
    ["deleted by plain SQL", 401, (key) => sql((sql) => sql`DELETE FROM identity_kit_root_keys WHERE id = ${key.keyId}`)],
    ["workspace disabled by plain SQL", 403, (key) =>
      sql((sql) => sql`UPDATE identity_kit_workspaces SET enabled = false WHERE id = ${key.workspaceId}`)]
  ]

  /** Changes `key` (cached in B) and asserts B's refusal; answers the poll. */
  const changeAndPoll = async (label: string, key: Prepared, expected: number, change: (key: Prepared) => Promise<unknown>) => {
    await kitB().ask({ op: "arm", key: key.key, workspaceId: key.workspaceId })
    await change(key)
    const committedAt = performance.timeOrigin + performance.now()
    const poll = Schema.decodeUnknownSync(PollSchema)(await kitB().ask({ op: "poll", key: key.key, deadlineMs: POLL_LIMIT_MS }))
    const notified = poll.notifiedAt === undefined ? "never notified" : `notified ${(poll.notifiedAt - committedAt).toFixed(1)} ms after the commit`
    assert.strictEqual(
      poll.status,
      expected,
      `${label}: B never refused the key (${poll.attempts} requests; ${notified}; ${JSON.stringify(await stats())})`
    )
    assert.strictEqual(poll.acceptedAfterNotify, 0, `${label}: B accepted the key after the notification reached it`)
    assert.isDefined(poll.notifiedAt, `${label}: B never heard the notification`)
    latencies.push({ label, notifyMs: (poll.notifiedAt ?? 0) - committedAt, refusedMs: poll.elapsedMs, attempts: poll.attempts })
    return poll
  }

  describe.each([["without load", 0], ["with load on B", 8]] as const)("%s", (loadLabel, concurrency) => {
    it.each(changes)(`a key %s is refused by B (expects %i)`, async (label, expected, change) => {
      const key = await warmInB("ws_n")
      const other = await prepare(a(), unique("ws_o"))
      if (concurrency > 0) {
        const before = (await stats()).requests
        await kitB().ask({ op: "startLoad", keys: [key.key, other.key], concurrency })
        // Let the load get going before the change.
        await waitFor("load", async () => (await stats()).requests > before + 200)
      }
      try {
        await changeAndPoll(`${label}, ${loadLabel}`, key, expected, change)
      } finally {
        if (concurrency > 0) {
          const load = Schema.decodeUnknownSync(LoadSchema)(await kitB().ask({ op: "stopLoad" }))
          assert.strictEqual(load.acceptedAfterNotify, 0, `${label}: a loaded request was accepted after the notification`)
          assert.isAbove(load.requests, 0)
          assert.strictEqual(load.statuses["500"] ?? 0, 0)
        }
      }
      // Unrelated keys are unaffected.
      assert.strictEqual(await fetchB(other.key), 200)
    })
  })

  it("a killed listener: B reads storage until it reconnects, and honours what changed meanwhile", async () => {
    const first = await warmInB("ws_k1")
    const start = await stats()
    const terminated = await sql((sql) =>
      sql<{ readonly pid: number }>`SELECT pg_terminate_backend(pid) AS pid FROM pg_stat_activity
        WHERE application_name = 'kit-b:listen' AND datname = current_database()`
    )
    assert.lengthOf(Schema.decodeUnknownSync(Schema.Array(Schema.Unknown))(terminated), 1)
    await waitFor("B's listener reconnected", async () => {
      const now = await stats()
      return now.disconnects > start.disconnects && now.connects > start.connects && now.connected
    })
    // The cache was emptied on disconnection and works again: one lookup for two requests.
    const reconnected = (await stats()).lookups
    assert.strictEqual(await fetchB(first.key), 200)
    assert.strictEqual(await fetchB(first.key), 200)
    assert.strictEqual((await stats()).lookups - reconnected, 1)

    // Down for a while: the listener's connection is cut and cannot be made again.
    const cached = await warmInB("ws_k2")
    await proxy.stop()
    await waitFor("B's listener down", async () => !(await stats()).connected)
    const down = (await stats()).lookups
    assert.strictEqual(await fetchB(first.key), 200)
    assert.strictEqual(await fetchB(first.key), 200)
    assert.strictEqual((await stats()).lookups - down, 2, "no cache while disconnected")
    // Changes nobody can tell B about: both refused on the next request.
    await a().admin.updateRootKey(cached.keyId, { enabled: false })
    assert.strictEqual(await fetchB(cached.key), 403)
    await sql((sql) => sql`UPDATE identity_kit_root_keys SET deleted_at = 1 WHERE id = ${first.keyId}`)
    assert.strictEqual(await fetchB(first.key), 401)

    // Back: cached again, and invalidated again.
    const before = await stats()
    await proxy.start()
    await waitFor("B's listener back", async () => {
      const now = await stats()
      return now.connected && now.connects > before.connects
    })
    assert.strictEqual(await fetchB(cached.key), 403)
    const after = await warmInB("ws_k3")
    await changeAndPoll("revoked through A's kit.admin, after a reconnection", after, 401, (key) => a().admin.revokeRootKey(key.keyId))
  })

  it("a listener whose connection goes silent: once its lease ran out, the cache stops serving", async () => {
    const silent = makeProxy(target.hostname, Number(target.port || 5432))
    const listenUrl = new URL(databaseUrl)
    listenUrl.hostname = "127.0.0.1"
    listenUrl.port = String(await silent.start())
    const counter = { lookups: 0 }
    const counting = Layer.effect(IdentityStore, Effect.map(IdentityStore, (store) => ({
      ...store,
      findRootKey: (hash: string) => {
        counter.lookups++
        return store.findRootKey(hash)
      }
    })))
    // Kit C, in this process: its pool goes straight to the database, its listener through the proxy.
    const kitC = makeIdentityKit({
      storage: layerRootKeyEventsPostgres({
        url: listenUrl.toString(),
        applicationName: "kit-c:listen",
        heartbeat: "200 millis",
        // A check on the frozen connection waits this long before the connection is dropped, so
        // within the test only the lease can stop the cache.
        connectTimeout: "60 seconds"
      }).pipe(
        Layer.provide(counting),
        Layer.provide(layerSql),
        Layer.provide(layerPostgresClient({ url: databaseUrl, applicationName: "kit-c" }))
      )
    })
    try {
      const key = await prepare(a(), unique("ws_f"))
      // Requested until a request needs no lookup: C is connected and serves the key from its cache.
      await waitFor("C answers from its cache", async () => {
        const before = counter.lookups
        assert.strictEqual(await post(kitC, key.key), 200)
        return counter.lookups === before
      })
      silent.freeze()
      // Committed; its notification cannot reach C.
      await sql((sql) => sql`UPDATE identity_kit_root_keys SET enabled = false WHERE id = ${key.keyId}`)
      const before = counter.lookups
      await waitFor("C refusing the disabled key", async () => (await post(kitC, key.key)) === 403)
      assert.isAbove(counter.lookups, before, "the refusal was read from storage")
    } finally {
      await kitC.dispose()
      await silent.stop()
    }
  })

  it("layerPostgres provides RootKeyEvents (needs the wiring in postgres.ts)", async () => {
    expect(await connects(layerPostgres({ url: databaseUrl, applicationName: "kit-wiring" }))).toBe("connected")
  })
})
