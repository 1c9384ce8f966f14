/**
 * The storage hot path beyond the contract: ids made in Node (exactly the old base58), the pool
 * executor's cancel against stand-ins (a pool and a server), and on PostgreSQL (when
 * `DATABASE_URL` is set) the pool executor of `layerPostgresClient`: named prepared statements, a
 * statement cancelled in the database when its fiber is interrupted, and a pool whose every
 * connection was interrupted still serving the next statement.
 */
import { randomBytes } from "node:crypto"
import { createServer, type Socket } from "node:net"
import { SqlClient } from "@effect/sql"
import { assert, describe, it, layer } from "@effect/vitest"
import { Context, Deferred, Effect, Either, Exit, Fiber, Layer } from "effect"
import { type IdentityPage, IdentityStore, newId } from "identity-kit"
import { layerPostgresClient } from "identity-kit/postgres"
import { layerMigrations, layerSql, StatementExecutor } from "identity-kit/sql"
import { base58 } from "../src/domain/Ids.js"
import { fromPgPool, type PgArrayResult, type PgPool, type PgPoolClient, sendCancelRequest } from "../src/storage/executor.js"
import { LIST_AUDIT_LOG, LIST_ROOT_KEYS, LIST_WORKSPACES } from "../src/storage/sql.js"

/** The textbook base58 (one BigInt step per byte and per digit): the reference for the fast one. */
const referenceBase58 = (bytes: Uint8Array): string => {
  const alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
  let value = 0n
  for (const byte of bytes) value = (value << 8n) | BigInt(byte)
  let out = ""
  while (value > 0n) {
    out = alphabet[Number(value % 58n)] + out
    value /= 58n
  }
  for (const byte of bytes) {
    if (byte !== 0) break
    out = "1" + out
  }
  return out
}

const fromBigInt = (value: bigint): Uint8Array => {
  const hex = value.toString(16)
  return Buffer.from(hex.length % 2 === 0 ? hex : `0${hex}`, "hex")
}

describe("ids", () => {
  it("base58 equals the reference on random bytes of every length up to 40", () => {
    for (let length = 0; length <= 40; length++) {
      for (let round = 0; round < 50; round++) {
        const bytes = randomBytes(length)
        bytes.fill(0, 0, round % (length + 1)) // leading zero bytes
        assert.strictEqual(base58(bytes), referenceBase58(bytes), bytes.toString("hex"))
      }
    }
  })

  it("base58 equals the reference around every power of 58 and at the edges", () => {
    const cases: Array<Uint8Array> = [new Uint8Array(0), new Uint8Array(1), new Uint8Array(12), new Uint8Array(12).fill(255)]
    for (let k = 1n; k <= 40n; k++) {
      for (const value of [58n ** k - 1n, 58n ** k, 58n ** k + 1n, 2n ** k - 1n]) cases.push(fromBigInt(value))
    }
    for (const bytes of cases) assert.strictEqual(base58(bytes), referenceBase58(bytes), Buffer.from(bytes).toString("hex"))
  })

  it("newId: prefix, base58 of 4 bytes of seconds since 1.7e9 and 8 random bytes; unique", () => {
    const now = 1_750_000_000_123
    const ids = Array.from({ length: 2000 }, () => newId("log", now))
    assert.strictEqual(new Set(ids).size, ids.length)
    for (const id of ids.slice(0, 500)) {
      assert.match(id, /^log_[1-9A-HJ-NP-Za-km-z]+$/)
      // Decode and check the time bytes.
      let value = 0n
      for (const char of id.slice(4)) value = value * 58n + BigInt("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz".indexOf(char))
      assert.strictEqual(Number(value >> 64n), 50_000_000)
      // The fast encoder of newId agrees with the reference on the id's 12 bytes.
      const bytes = Uint8Array.from({ length: 12 }, (_, i) => Number((value >> BigInt(88 - 8 * i)) & 0xffn))
      assert.strictEqual(referenceBase58(bytes), id.slice(4))
    }
    // Before the epoch: 4 zero bytes, written as four leading "1"s.
    assert.match(newId("rl", 0), /^rl_1111[1-9A-HJ-NP-Za-km-z]+$/)
  })
})

// --- the pool executor's cancel, against stand-ins ----------------------------------------------

/** A TCP server in the place of PostgreSQL's postmaster: records each request of 16 bytes. */
const cancelTarget = (onRequest: (socket: Socket) => void) =>
  Effect.gen(function*() {
    const received: Array<Buffer> = []
    const sockets = new Set<Socket>()
    const server = createServer((socket) => {
      sockets.add(socket)
      let data = Buffer.alloc(0)
      socket.on("error", () => {})
      socket.on("data", (chunk) => {
        data = Buffer.concat([data, chunk])
        if (data.length < 16) return
        received.push(data)
        onRequest(socket)
      })
    })
    const port = yield* Effect.acquireRelease(
      Effect.async<number>((resume) => {
        server.listen(0, "127.0.0.1", () => {
          const address = server.address()
          resume(Effect.succeed(typeof address === "object" && address !== null ? address.port : 0))
        })
      }),
      () =>
        Effect.async<void>((resume) => {
          for (const socket of sockets) socket.destroy()
          server.close(() => resume(Effect.void))
        })
    )
    return { port, received }
  })

/** A pool of one stand-in connection whose statements answer only when the test says so. */
const standInPool = (port: number) => {
  const state: {
    answer: ((error: Error | null | undefined, result: PgArrayResult | undefined) => void) | undefined
    readonly releases: Array<{ readonly error: Error | undefined }>
  } = { answer: undefined, releases: [] }
  const client: PgPoolClient = {
    processID: 4242,
    secretKey: -123_456_789,
    host: "127.0.0.1",
    port,
    query: (_config, callback) => {
      state.answer = callback
      return undefined
    },
    on: () => undefined
  }
  const pool: PgPool = {
    ending: false,
    connect: (callback) => callback(undefined, client, (error) => state.releases.push({ error })),
    // A cancel through the pool would wait here forever, as it does on a pool whose every
    // connection is held by an interrupted statement.
    query: () => undefined
  }
  return { pool, state }
}

/** The CancelRequest the protocol defines: length 16, code 80877102, process id, secret key. */
const cancelRequest = (processID: number, secretKey: number) => {
  const message = Buffer.alloc(16)
  message.writeInt32BE(16, 0)
  message.writeInt32BE(80877102, 4)
  message.writeInt32BE(processID, 8)
  message.writeInt32BE(secretKey, 12)
  return message
}

const SLEEP = { name: "identity_kit_test_sleep", text: "SELECT pg_sleep($1::float8)" }
const ONE = { name: "identity_kit_test_one", text: "SELECT 1" }

describe("the pool executor's cancel", () => {
  it.live("sendCancelRequest: a CancelRequest on a socket of its own; final once the server closed it", () =>
    Effect.scoped(Effect.gen(function*() {
      const target = yield* cancelTarget((socket) => socket.end())
      const settled = yield* Deferred.make<boolean>()
      const sent = sendCancelRequest(
        { processID: 77, secretKey: -5, host: "127.0.0.1", port: target.port, query: () => undefined, on: () => undefined },
        (final) => Deferred.unsafeDone(settled, Effect.succeed(final))
      )
      assert.isTrue(sent)
      assert.isTrue(yield* Deferred.await(settled))
      assert.deepStrictEqual(target.received, [cancelRequest(77, -5)])
    })))

  it.effect("sendCancelRequest: nothing sent without the backend's key", () =>
    Effect.sync(() => {
      const client: PgPoolClient = { processID: 77, host: "127.0.0.1", port: 1, query: () => undefined, on: () => undefined }
      assert.isFalse(sendCancelRequest(client, () => assert.fail("settled")))
    }))

  it.live("an interrupted statement is cancelled outside the pool, and the connection closed if it answers first", () =>
    Effect.scoped(Effect.gen(function*() {
      // The server reads the request and keeps the socket open: the cancel may still be on its way.
      const target = yield* cancelTarget(() => {})
      const { pool, state } = standInPool(target.port)
      const running = yield* Effect.fork(fromPgPool(pool).execute(SLEEP, [60], () => "answered"))
      yield* eventually(Effect.sync(() => state.answer !== undefined))
      yield* Fiber.interrupt(running)
      yield* eventually(Effect.sync(() => target.received.length === 1))
      assert.deepStrictEqual(target.received, [cancelRequest(4242, -123_456_789)])
      assert.deepStrictEqual(state.releases, [], "held until the statement answers")
      // The statement answers (as a cancelled one does) while the cancel may still arrive.
      state.answer?.(new Error("canceling statement due to user request"), undefined)
      assert.strictEqual(state.releases.length, 1)
      assert.instanceOf(state.releases[0]?.error, Error, "released with an error: the pool closes it")
    })))

  it.live("a statement that never answers frees its connection at the deadline, interrupted or not", () =>
    Effect.scoped(Effect.gen(function*() {
      // A server that reads everything and never answers: a frozen database.
      const target = yield* cancelTarget(() => {})
      for (const interrupted of [false, true]) {
        const { pool, state } = standInPool(target.port)
        const running = yield* Effect.fork(fromPgPool(pool, { timeoutMs: 100 }).execute(SLEEP, [60], () => "answered"))
        yield* eventually(Effect.sync(() => state.answer !== undefined))
        if (interrupted) yield* Fiber.interrupt(running)
        else assert.strictEqual(Exit.isFailure(yield* Fiber.await(running)), true, "the statement fails at its deadline")
        // Closed (released with an error), not left checked out for as long as the server is silent.
        yield* eventually(Effect.sync(() => state.releases.length === 1))
        assert.instanceOf(state.releases[0]?.error, Error)
      }
    })))
})

// --- the pool executor on PostgreSQL ---------------------------------------------------------

const DATABASE_URL = process.env["DATABASE_URL"]
const schema = `identity_kit_hotpath_${randomBytes(6).toString("hex")}`
// This file's own application_name, to find its backends among those of other test files.
const applicationName = `identity-kit-hotpath-${randomBytes(4).toString("hex")}`

/** A store on `layerPostgresClient` in a schema of its own, created before and dropped after. */
const storageIn = (schema: string, maxConnections: number) => {
  const parsed = new URL(DATABASE_URL ?? "postgres://unused@127.0.0.1/unused")
  parsed.searchParams.set("options", `-c search_path=${schema}`)
  const freshSchema = Layer.scopedDiscard(Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* Effect.acquireRelease(
      sql.unsafe(`CREATE SCHEMA "${schema}"`),
      () => sql.unsafe(`DROP SCHEMA "${schema}" CASCADE`).pipe(Effect.orDie)
    )
  })).pipe(Layer.provide(layerPostgresClient({ url: DATABASE_URL ?? parsed.toString(), maxConnections: 1 })))
  return layerSql.pipe(
    Layer.provide(layerMigrations),
    Layer.provideMerge(layerPostgresClient({ url: parsed.toString(), maxConnections, applicationName })),
    Layer.provide(freshSchema)
  )
}

const T0 = 1_750_000_000_000
const audit = { actorId: "key_hotpath", actorName: "root key", remoteIp: "203.0.113.7", userAgent: "hotpath/1.0" }

/** Polls `probe` until it answers true (the test's timeout bounds the wait). */
const eventually = <E>(probe: Effect.Effect<boolean, E>) =>
  Effect.gen(function*() {
    while (!(yield* probe)) yield* Effect.sleep("10 millis")
  })

const seed = Effect.gen(function*() {
  const store = yield* IdentityStore
  const workspaceId = newId("ws")
  yield* store.putWorkspace({ id: workspaceId, name: "hotpath", enabled: true, createdAt: T0 })
  const identity = yield* store.createIdentity({ workspaceId, externalId: "user_1", meta: { a: 1 }, now: T0 })
  return { store, workspaceId, identity }
})

describe.runIf(DATABASE_URL)("postgres pool executor", () => {
  // One connection: the statements and the question about them meet on it.
  layer(storageIn(`${schema}_one`, 1), { excludeTestServices: true })((it) => {
    it.effect("the hot statements run as named prepared statements", () =>
      Effect.gen(function*() {
        const { store, workspaceId } = yield* seed
        const sql = yield* SqlClient.SqlClient
        const before = yield* sql<{ readonly name: string }>`SELECT name FROM pg_prepared_statements`
        assert.deepStrictEqual(before.map((row) => row.name), ["identity_kit_create_identity_2"], "the seed's create")
        assert.isNull(yield* store.findRootKey("no-such-hash"))
        yield* store.updateIdentity({ workspaceId, identity: "user_1", meta: `{"i":1}`, audit, now: T0 + 1 })
        yield* store.updateIdentity({ workspaceId, identity: "user_1", ratelimits: [], audit, now: T0 + 2 })
        const prepared = yield* sql<{ readonly name: string }>`SELECT name FROM pg_prepared_statements ORDER BY name`
        assert.deepStrictEqual(prepared.map((row) => row.name), [
          "identity_kit_create_identity_2",
          "identity_kit_find_root_key_1",
          "identity_kit_update_identity_4"
        ])
        // The other endpoints' statements too.
        yield* store.getIdentity(workspaceId, "user_1")
        yield* store.listIdentities({ workspaceId, limit: 10 })
        yield* store.listIdentities({ workspaceId, limit: 10, search: "user" })
        yield* store.deleteIdentity(workspaceId, "user_1", T0 + 3, audit)
        const all = yield* sql<{ readonly name: string }>`SELECT name FROM pg_prepared_statements ORDER BY name`
        assert.deepStrictEqual(all.map((row) => row.name), [
          "identity_kit_create_identity_2",
          "identity_kit_delete_identity_2",
          "identity_kit_find_root_key_1",
          "identity_kit_get_identity_1",
          "identity_kit_list_identities_1",
          "identity_kit_search_identities_1",
          "identity_kit_update_identity_4"
        ])
      }))

    it.effect("a page of a 10,000-identity workspace is an index scan that reads limit + 1 rows", () =>
      Effect.gen(function*() {
        const store = yield* IdentityStore
        const sql = yield* SqlClient.SqlClient
        const workspaceId = newId("ws")
        // The workspace, soft-deleted rows in it, and a neighbour as big, with ratelimits.
        yield* sql`INSERT INTO identity_kit_workspaces (id, name, enabled, created_at)
                   VALUES (${workspaceId}, 'big', true, ${T0}::bigint), ('ws_neighbour', 'neighbour', true, ${T0}::bigint)`
        yield* sql`INSERT INTO identity_kit_identities (id, workspace_id, external_id, meta, deleted, created_at)
                   SELECT 'id_' || md5(w || ':' || g), CASE w WHEN 0 THEN ${workspaceId} ELSE 'ws_neighbour' END,
                          'ext_' || g, '{}', g % 10 = 0 AND w = 0, ${T0}::bigint
                   FROM generate_series(0, 1) w, generate_series(1, 11000) g`
        yield* sql`INSERT INTO identity_kit_ratelimits (id, workspace_id, identity_id, name, "limit", duration, created_at)
                   SELECT 'rl_' || md5(i.id), i.workspace_id, i.id, 'requests', 10, 1000, ${T0}::bigint
                   FROM identity_kit_identities i WHERE i.workspace_id IN (${workspaceId}, 'ws_neighbour')`
        yield* sql`ANALYZE identity_kit_identities`
        yield* sql`ANALYZE identity_kit_ratelimits`

        // Through the store: the statement is prepared on the pool's one connection, the one
        // `sql` uses too, where EXPLAIN can execute it by name.
        const first = yield* store.listIdentities({ workspaceId, limit: 100 })
        assert.strictEqual(first.identities.length, 100)
        assert.isDefined(first.cursor)
        const cursor = first.cursor ?? ""
        const plans: Array<string> = []
        for (const mode of ["force_custom_plan", "force_generic_plan"]) {
          yield* sql.unsafe(`SET plan_cache_mode = ${mode}`)
          for (const from of ["", cursor]) {
            const rows = yield* sql.unsafe<{ readonly "QUERY PLAN": string }>(
              `EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF)
               EXECUTE identity_kit_list_identities_1('${workspaceId}', '${from}', 101)`
            )
            const plan = rows.map((row) => row["QUERY PLAN"]).join("\n")
            plans.push(`${mode}, cursor ${from === "" ? "none" : "mid"}:\n${plan}`)
            const lines = plan.split("\n")
            assert.match(lines[0] ?? "", /^Limit \(actual rows=101 loops=1\)/, plan)
            const scan = lines.find((line) => line.includes("on identity_kit_identities i"))
            assert.match(scan ?? "", /Index Scan using identity_kit_identities_live_workspace_id on identity_kit_identities i \(actual rows=101 loops=1\)/, plan)
            assert.notMatch(plan, /Seq Scan on identity_kit_identities|Sort/, plan)
          }
        }
        yield* sql`RESET plan_cache_mode`
        if (process.env["SHOW_PLANS"] !== undefined) console.log(plans.join("\n\n"))

        // And the pages walk the whole workspace: 9,900 live identities, each once, in order.
        let seen = first.identities.length
        let last = first.identities.at(-1)?.id ?? ""
        let next: string | undefined = first.cursor
        while (next !== undefined) {
          const page: IdentityPage = yield* store.listIdentities({ workspaceId, limit: 100, cursor: next })
          assert.isTrue(last < (page.identities[0]?.id ?? ""))
          seen += page.identities.length
          last = page.identities.at(-1)?.id ?? last
          next = page.cursor
        }
        assert.strictEqual(seen, 9900)
      }), 60_000)
  })

  layer(storageIn(`${schema}_admin`, 1), { excludeTestServices: true })((it) => {
    it.effect("a page of each admin list is an index scan that reads limit + 1 rows, whatever the table's size", () =>
      Effect.gen(function*() {
        const store = yield* IdentityStore
        const sql = yield* SqlClient.SqlClient
        const workspaceId = newId("ws")
        // 5,000 workspaces, 5,000 keys in this one and as many in a neighbour, 5,000 audit entries in each.
        yield* sql`INSERT INTO identity_kit_workspaces (id, name, enabled, created_at)
                   SELECT 'ws_' || md5(g::text), 'w', true, ${T0}::bigint FROM generate_series(1, 5000) g
                   UNION ALL VALUES (${workspaceId}, 'admin', true, ${T0}::bigint), ('ws_neighbour', 'n', true, ${T0}::bigint)`
        yield* sql`INSERT INTO identity_kit_root_keys (id, workspace_id, hash, name, permissions, created_at)
                   SELECT 'key_' || md5(w || ':' || g), CASE w WHEN 0 THEN ${workspaceId} ELSE 'ws_neighbour' END,
                          md5(w || ':' || g), 'k', '[]', ${T0}::bigint
                   FROM generate_series(0, 1) w, generate_series(1, 5000) g`
        yield* sql`INSERT INTO identity_kit_audit_log
                     (id, workspace_id, event, display, actor_type, actor_id, actor_name, remote_ip, user_agent, time, resources)
                   SELECT 'log_' || w || '_' || g, CASE w WHEN 0 THEN ${workspaceId} ELSE 'ws_neighbour' END,
                          'identity.update', 'Updated identity x', 'rootkey', 'key_x', 'root key', '', '', ${T0}::bigint, '[]'
                   FROM generate_series(1, 5000) g, generate_series(0, 1) w`
        for (const table of ["identity_kit_workspaces", "identity_kit_root_keys", "identity_kit_audit_log"]) {
          yield* sql.unsafe(`ANALYZE ${table}`)
        }

        const workspaces = yield* store.listWorkspaces({ limit: 100 })
        const keys = yield* store.listRootKeys(workspaceId, { limit: 100 })
        const audit = yield* store.listAuditLog(workspaceId, { limit: 100 })
        const cases = [
          ["workspaces", LIST_WORKSPACES, "text, integer", [[`''`], [`'${workspaces.cursor}'`]], "identity_kit_workspaces_id_c on identity_kit_workspaces"],
          ["root keys", LIST_ROOT_KEYS, "text, text, integer", [[`'${workspaceId}'`, `''`], [`'${workspaceId}'`, `'${keys.cursor}'`]], "identity_kit_root_keys_workspace_id on identity_kit_root_keys"],
          ["audit log", LIST_AUDIT_LOG, "text, bigint, integer", [[`'${workspaceId}'`, "0"], [`'${workspaceId}'`, `${audit.cursor}`]], "identity_kit_audit_log_workspace_seq on identity_kit_audit_log"]
        ] as const
        const plans: Array<string> = []
        for (const [name, text, types, argumentSets, index] of cases) {
          yield* sql.unsafe(`PREPARE identity_kit_admin_page (${types}) AS ${text}`)
          for (const mode of ["force_custom_plan", "force_generic_plan"]) {
            yield* sql.unsafe(`SET plan_cache_mode = ${mode}`)
            for (const args of argumentSets) {
              const rows = yield* sql.unsafe<{ readonly "QUERY PLAN": string }>(
                `EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE identity_kit_admin_page(${[...args, "101"].join(", ")})`
              )
              const plan = rows.map((row) => row["QUERY PLAN"]).join("\n")
              plans.push(`${name}, ${mode}, ${args.join(" ")}:\n${plan}`)
              assert.match(plan.split("\n")[0] ?? "", /^Limit \(actual rows=101 loops=1\)/, plan)
              assert.include(plan, `Index Scan using ${index}`, plan)
              assert.match(plan, /Index Scan using [^\n]*\(actual rows=101 loops=1\)/, plan)
              assert.notMatch(plan, /Seq Scan|Sort|Bitmap/, plan)
            }
          }
          yield* sql`RESET plan_cache_mode`
          yield* sql.unsafe(`DEALLOCATE identity_kit_admin_page`)
        }
        if (process.env["SHOW_PLANS"] !== undefined) console.log(plans.join("\n\n"))
      }), 60_000)
  })

  layer(storageIn(`${schema}_cancel`, 4), { excludeTestServices: true })((it) => {
    it.effect("an interrupted update is cancelled in the database and writes nothing", () =>
      Effect.gen(function*() {
        const { identity, store, workspaceId } = yield* seed
        const sql = yield* SqlClient.SqlClient
        const locked = yield* Deferred.make<void>()
        const unlock = yield* Deferred.make<void>()
        // Another connection holds the identity's row lock until told otherwise.
        const holder = yield* Effect.fork(sql.withTransaction(Effect.gen(function*() {
          yield* sql`SELECT id FROM identity_kit_identities WHERE id = ${identity.id} FOR UPDATE`
          yield* Deferred.succeed(locked, undefined)
          yield* Deferred.await(unlock)
        })))
        yield* Deferred.await(locked)

        const waiting = sql<{ readonly n: number }>`
          SELECT count(*)::int AS n FROM pg_stat_activity
          WHERE application_name = ${applicationName} AND wait_event_type = 'Lock'
            AND query LIKE '%identity_kit_update_identity_v4%'`.pipe(Effect.map((rows) => rows[0]?.n ?? 0))

        const writer = yield* Effect.fork(
          store.updateIdentity({ workspaceId, identity: "user_1", meta: `{"b":2}`, audit, now: T0 + 1 })
        )
        yield* eventually(Effect.map(waiting, (n) => n === 1))
        yield* Fiber.interrupt(writer)
        // The lock is still held: only a cancel in the database ends the wait.
        yield* eventually(Effect.map(waiting, (n) => n === 0))

        yield* Deferred.succeed(unlock, undefined)
        yield* Fiber.join(holder)
        const after = yield* store.getIdentity(workspaceId, "user_1")
        assert.deepStrictEqual(after?.meta, { a: 1 })
        assert.strictEqual(after?.updatedAt, null)
        assert.deepStrictEqual((yield* store.listAuditLog(workspaceId, { limit: 10 })).items, [])

        // The pool is whole: the same update now goes through.
        const updated = yield* store.updateIdentity({ workspaceId, identity: "user_1", meta: `{"b":2}`, audit, now: T0 + 2 })
        assert.deepStrictEqual(updated.meta, { b: 2 })
        assert.strictEqual((yield* store.listAuditLog(workspaceId, { limit: 10 })).items.length, 1)
      }))
  })

  // Every connection of the pool runs a statement that is then interrupted: the cancels must not
  // need a pool connection themselves, or nothing is cancelled and the next statement waits for
  // `connectTimeout` and fails.
  for (const size of [1, 2]) {
    it.effect(`a pool of ${size} whose every statement was interrupted runs the next statement`, () =>
      Effect.scoped(Effect.gen(function*() {
        const name = `identity-kit-wedge-${randomBytes(4).toString("hex")}`
        const pool = yield* Layer.build(
          layerPostgresClient({ url: DATABASE_URL ?? "", maxConnections: size, applicationName: name, connectTimeout: "3 seconds" })
        )
        const executor = Context.get(pool, StatementExecutor)
        const observer = Context.get(yield* Layer.build(layerPostgresClient({ url: DATABASE_URL ?? "", maxConnections: 1 })), SqlClient.SqlClient)
        const sleeping = observer<{ readonly n: number }>`
          SELECT count(*)::int AS n FROM pg_stat_activity
          WHERE application_name = ${name} AND state = 'active' AND query LIKE '%pg_sleep%'`.pipe(
          Effect.map((rows) => rows[0]?.n ?? 0)
        )
        const sleepers = yield* Effect.forEach(
          Array.from({ length: size }),
          () => Effect.fork(executor.execute(SLEEP, [30], () => "slept")),
          { concurrency: "unbounded" }
        )
        yield* eventually(Effect.map(sleeping, (n) => n === size))
        yield* Fiber.interruptAll(sleepers)

        const next = yield* Effect.either(executor.execute(ONE, [], (rows) => rows[0]?.[0]))
        assert.deepStrictEqual(next, Either.right(1), "the next statement succeeds")
        // And the interrupted statements were cancelled in the database.
        yield* eventually(Effect.map(sleeping, (n) => n === 0))
      })), 60_000)
  }
})
