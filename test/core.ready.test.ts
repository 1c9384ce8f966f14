/**
 * Misconfiguration fails fast: `TypeError`s at construction, `kit.ready()` with a sentence that says
 * what to do, `kit.health()` and the `healthPath` route for readiness probes, and the request
 * deadline (`requestTimeout`) that answers a hung storage with the endpoint's 500.
 */
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import * as PgClient from "@effect/sql-pg/PgClient"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Redacted } from "effect"
import express5 from "express5"
import fastify5 from "fastify5"
import { IdentityStore, layerMemory, makeIdentityKit, makeMemory, ROUTE, StorageError } from "identity-kit"
import { identityKit as expressKit } from "identity-kit/express"
import { identityKit as fastifyKit } from "identity-kit/fastify"
import { createFetchHandler } from "identity-kit/fetch"
import { createNodeHandler } from "identity-kit/node"
import { layerPglite } from "identity-kit/pglite"
import { layerPostgres } from "identity-kit/postgres"
import { vi } from "vitest"
import { MIGRATIONS_TABLE, migrations } from "../src/storage/migrations.js"
import { freshSchema, withSearchPath } from "./support/postgres.js"

const DATABASE_URL = process.env["DATABASE_URL"]
const UNREACHABLE = "postgres://postgres:hunter2@127.0.0.1:1/x"

/** The error a function throws (or undefined). */
const thrown = (f: () => unknown): unknown => {
  try {
    f()
  } catch (error) {
    return error
  }
  return undefined
}

const assertTypeError = (error: unknown, pattern: RegExp) => {
  assert.instanceOf(error, TypeError)
  if (error instanceof TypeError) assert.match(error.message, pattern)
}

/** Any value, typed as what a function takes: how a JavaScript caller (or a bad cast) reaches it. */
const untyped = (value: unknown): never => value as never

describe("construction", () => {
  it("no argument or a non-object: the same TypeError on every entry point", () => {
    const required = /^identity-kit: options are required/
    assertTypeError(thrown(() => makeIdentityKit(untyped(undefined))), required)
    assertTypeError(thrown(() => makeIdentityKit(untyped("memory"))), required)
    assertTypeError(thrown(() => createNodeHandler(untyped(undefined))), required)
    assertTypeError(thrown(() => expressKit(untyped(undefined))), required)
    assertTypeError(thrown(() => createFetchHandler(untyped(null))), required)
  })

  it("storage missing or not a Layer: the storage TypeError on every entry point", async () => {
    const storage = /`storage` must be a Layer/
    assertTypeError(thrown(() => createNodeHandler(untyped({}))), storage)
    assertTypeError(thrown(() => expressKit(untyped({ storage: "memory" }))), storage)
    assertTypeError(thrown(() => createFetchHandler(untyped({}))), storage)
    const app = fastify5()
    const error = await app.register(fastifyKit, untyped({})).ready().then(() => undefined, (e: unknown) => e)
    assertTypeError(error, storage)
    await app.close()
  })

  it("bad requestTimeout, drainTimeout or healthPath: TypeError", () => {
    assertTypeError(thrown(() => makeIdentityKit({ storage: layerMemory, requestTimeout: untyped("soon") })), /requestTimeout/)
    assertTypeError(thrown(() => makeIdentityKit({ storage: layerMemory, requestTimeout: 0 })), /requestTimeout/)
    for (const drainTimeout of [untyped("x"), -1, untyped("-1 seconds"), Number.POSITIVE_INFINITY]) {
      assertTypeError(thrown(() => makeIdentityKit({ storage: layerMemory, drainTimeout })), /drainTimeout must be a duration/)
    }
    assert.doesNotThrow(() => makeIdentityKit({ storage: layerMemory, drainTimeout: 0 }))
    assertTypeError(thrown(() => makeIdentityKit({ storage: layerMemory, healthPath: "healthz" })), /healthPath/)
  })

  it("layerPostgres: a url that is not a string or not a postgres URL is a TypeError without the password", () => {
    assertTypeError(thrown(() => layerPostgres({ url: untyped(42) })), /`url` must be a string or a Redacted string/)
    for (const url of ["mysql://root:hunter2@db/x", "hunter2 is not a url", Redacted.make("http://u:hunter2@h/x")]) {
      const error = thrown(() => layerPostgres({ url }))
      assertTypeError(error, /layerPostgres `url`/)
      if (error instanceof Error) assert.notInclude(error.message, "hunter2")
    }
    assert.isUndefined(thrown(() => layerPostgres({ url: "postgresql://u:p@localhost/x" })))
  })
})

describe("kit.ready()", () => {
  it("resolves on memory and PGlite", async () => {
    for (const storage of [layerMemory, layerPglite()]) {
      const kit = makeIdentityKit({ storage })
      await kit.ready()
      await kit.ready()
      await kit.dispose()
    }
  })

  it("an unreachable database: says so, without the password, and tries again on the next call", async () => {
    const kit = makeIdentityKit({ storage: layerPostgres({ url: UNREACHABLE, connectTimeout: "1 second", listen: false }) })
    for (let attempt = 0; attempt < 2; attempt++) {
      const error = await kit.ready().then(() => undefined, (e: unknown) => e)
      assert.instanceOf(error, Error)
      if (error instanceof Error) {
        assert.match(error.message, /cannot reach the database/)
        assert.notInclude(error.message, "hunter2")
      }
    }
    await kit.dispose()
  })

  it.live.skipIf(DATABASE_URL === undefined)("tables not migrated (migrate: false): says to run the migrations", () =>
    Effect.scoped(Effect.gen(function*() {
      const url = DATABASE_URL ?? ""
      const schema = `ready_${process.pid}_${Date.now()}`
      yield* Layer.build(freshSchema(url, schema))
      const kit = makeIdentityKit({ storage: layerPostgres({ url: withSearchPath(url, schema), migrate: false, listen: false }) })
      const error = yield* Effect.promise(() => kit.ready().then(() => undefined, (e: unknown) => e))
      assert.instanceOf(error, Error)
      if (error instanceof Error) {
        assert.match(error.message, /no identity-kit tables/)
        assert.match(error.message, /`migrate` \(or `layerMigrations`\) from identity-kit\/sql/)
      }
      const health = yield* Effect.promise(() => kit.health())
      assert.strictEqual(health.status, "unavailable")
      yield* Effect.promise(() => kit.dispose())
    })))

  it.live.skipIf(DATABASE_URL === undefined)(
    "partly migrated (up to 0004 of the latest): names both migrations and says what to run; health unavailable",
    () =>
      Effect.scoped(Effect.gen(function*() {
        const url = DATABASE_URL ?? ""
        const schema = `ready_part_${process.pid}_${Date.now()}`
        yield* Layer.build(freshSchema(url, schema))
        const scoped = withSearchPath(url, schema)
        // The migrations up to 0004, with the migrator `migrate` uses, on a connection of this test.
        yield* Migrator.make({})({
          loader: Migrator.fromRecord(Object.fromEntries(Object.entries(migrations).filter(([key]) => Number.parseInt(key, 10) <= 4))),
          table: MIGRATIONS_TABLE
        }).pipe(Effect.provide(PgClient.layer({ url: Redacted.make(scoped) })))
        const kit = makeIdentityKit({ storage: layerPostgres({ url: scoped, migrate: false, listen: false }) })
        const error = yield* Effect.promise(() => kit.ready().then(() => undefined, (e: unknown) => e))
        assert.instanceOf(error, Error)
        if (error instanceof Error) {
          // The newest migration, from the record (a literal went stale with each new migration).
          const latest = Object.keys(migrations).sort().at(-1) ?? ""
          assert.include(error.message, `at migration 0004_root_key_notify, and this version of identity-kit needs ${latest}`)
          assert.match(error.message, /Run the migrations/)
        }
        assert.strictEqual((yield* Effect.promise(() => kit.health())).status, "unavailable")
        yield* Effect.promise(() => kit.dispose())
      }))
  )
})

describe("kit.health() during another instance's migration", () => {
  it.live.skipIf(DATABASE_URL === undefined)(
    "once the schema was verified, health stays ok while the migrations table is locked (a rolling upgrade)",
    () =>
      Effect.scoped(Effect.gen(function*() {
        const url = DATABASE_URL ?? ""
        const schema = `ready_lock_${process.pid}_${Date.now()}`
        yield* Layer.build(freshSchema(url, schema))
        const scoped = withSearchPath(url, schema)
        const kit = makeIdentityKit({ storage: layerPostgres({ url: scoped, listen: false }), requestTimeout: "2 seconds" })
        yield* Effect.promise(() => kit.ready())
        // What a newer version's migrator holds for its whole transaction, on a connection of this test.
        const health = yield* Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          return yield* sql.withTransaction(Effect.gen(function*() {
            yield* sql`LOCK TABLE identity_kit_migrations IN ACCESS EXCLUSIVE MODE`
            return yield* Effect.promise(() => kit.health())
          }))
        }).pipe(Effect.provide(PgClient.layer({ url: Redacted.make(scoped) })))
        assert.deepStrictEqual(health, { status: "ok" })
        yield* Effect.promise(() => kit.dispose())
      }))
  )
})

/** Memory storage whose root-key lookup fails: storage that is up but does not answer well. */
const failingStorage = Layer.effect(
  IdentityStore,
  Effect.map(makeMemory, (memory) => ({
    ...memory,
    findRootKey: () => Effect.fail(new StorageError({ operation: "findRootKey", cause: new Error("down") })),
    probe: Effect.fail(new StorageError({ operation: "probe", cause: new Error("down") }))
  }))
)

describe("kit.health()", () => {
  it("ok on memory; unavailable (never a rejection) on a failing or unreachable storage and after dispose", async () => {
    const kit = makeIdentityKit({ storage: layerMemory })
    assert.deepStrictEqual(await kit.health(), { status: "ok" })
    await kit.dispose()
    assert.strictEqual((await kit.health()).status, "unavailable")
    const failing = makeIdentityKit({ storage: failingStorage })
    assert.strictEqual((await failing.health()).status, "unavailable")
    await failing.dispose()
    const unreachable = makeIdentityKit({
      storage: layerPostgres({ url: UNREACHABLE, connectTimeout: "1 second", listen: false })
    })
    const health = await unreachable.health()
    assert.strictEqual(health.status, "unavailable")
    if (health.status === "unavailable") assert.notInclude(health.reason, "hunter2")
    await unreachable.dispose()
  })
})

describe("the health route (healthPath)", () => {
  const get = (kit: { fetch: (r: Request) => Promise<Response> }, method = "GET") =>
    kit.fetch(new Request("http://localhost/healthz", { method }))

  it("GET answers 200 ok or 503 unavailable as JSON; other methods 405; absent without the option", async () => {
    const kit = makeIdentityKit({ storage: layerMemory, healthPath: "/healthz", basePath: "/api" })
    const ok = await get(kit)
    assert.strictEqual(ok.status, 200)
    assert.strictEqual(ok.headers.get("content-type"), "application/json")
    assert.deepStrictEqual(await ok.json(), { status: "ok" })
    assert.strictEqual((await get(kit, "POST")).status, 405)
    await kit.dispose()
    const failing = makeIdentityKit({ storage: failingStorage, healthPath: "/healthz" })
    const unavailable = await get(failing)
    assert.strictEqual(unavailable.status, 503)
    assert.deepStrictEqual(await unavailable.json(), { status: "unavailable" })
    await failing.dispose()
    const none = makeIdentityKit({ storage: layerMemory })
    assert.strictEqual((await get(none)).status, 404)
    await none.dispose()
  })

  it("served by the Node handler, Express and Fastify with no extra code", async () => {
    const node = createNodeHandler({ storage: layerMemory, healthPath: "/healthz" })
    const app = express5()
    const middleware = expressKit({ storage: layerMemory, healthPath: "/healthz" })
    app.use("/api", middleware)
    for (const [handler, path] of [[node, "/healthz"], [app, "/api/healthz"]] as const) {
      const server = createServer(handler)
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
      const { port } = server.address() as AddressInfo
      const response = await fetch(`http://127.0.0.1:${port}${path}`)
      assert.strictEqual(response.status, 200)
      assert.deepStrictEqual(await response.json(), { status: "ok" })
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
    await node.dispose()
    await middleware.dispose()
    const fastify = fastify5()
    await fastify.register(fastifyKit, { storage: layerMemory, healthPath: "/healthz", prefix: "/api" })
    const reply = await fastify.inject({ method: "GET", url: "/api/healthz" })
    assert.strictEqual(reply.statusCode, 200)
    assert.deepStrictEqual(reply.json(), { status: "ok" })
    await fastify.close()
  })
})

describe("requestTimeout", () => {
  it("storage work past the deadline is interrupted and answered as the endpoint's storage 500, logged once", async () => {
    const hanging = Layer.effect(
      IdentityStore,
      Effect.map(makeMemory, (memory) => ({ ...memory, updateIdentity: () => Effect.never }))
    )
    const kit = makeIdentityKit({ storage: hanging, requestTimeout: "100 millis" })
    await kit.admin.createWorkspace({ id: "ws_deadline" })
    const { key } = await kit.admin.issueRootKey({ workspaceId: "ws_deadline" })
    const logged: Array<string> = []
    const spies = (["log", "error"] as const).map((level) =>
      vi.spyOn(console, level).mockImplementation((...args: Array<unknown>) => void logged.push(args.map(String).join(" ")))
    )
    try {
      const response = await kit.fetch(
        new Request(`http://localhost${ROUTE}`, {
          method: "POST",
          headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
          body: JSON.stringify({ identity: "x" })
        })
      )
      assert.strictEqual(response.status, 500)
      const body = await response.json()
      assert.strictEqual(body.error.detail, "We're unable to update the identity.")
      // The Node adapters' path: the body already in hand.
      const plain = await new Promise<{ status: number; body: string }>((resolve) => {
        kit.handle({
          method: "POST",
          path: ROUTE,
          headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
          body: new TextEncoder().encode(JSON.stringify({ identity: "x" }))
        }, resolve)
      })
      assert.strictEqual(plain.status, 500)
      assert.include(plain.body, "We're unable to update the identity.")
    } finally {
      for (const spy of spies) spy.mockRestore()
    }
    // Once per timed-out request.
    assert.strictEqual(logged.filter((line) => line.includes("identity-kit: request timed out")).length, 2)
    await kit.dispose()
  })
})
