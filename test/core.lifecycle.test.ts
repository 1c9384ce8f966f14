/**
 * The kit's request lifecycle: exactly one answer per request (whatever interrupts it), a host
 * callback that throws, no listener left on a request's signal, and `dispose` draining the
 * requests in flight before it closes the storage.
 */
import { getEventListeners } from "node:events"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Layer } from "effect"
import { IdentityStore, layerMemory, makeIdentityKit, makeMemory, ROUTE } from "identity-kit"

/** Memory storage whose `updateIdentity` waits for `gate` (and `getIdentity` interrupts itself). */
const gatedStorage = (gate: Deferred.Deferred<void>) =>
  Layer.effect(
    IdentityStore,
    Effect.map(makeMemory, (memory) => ({
      ...memory,
      updateIdentity: (update: Parameters<typeof memory.updateIdentity>[0]) =>
        Effect.zipRight(Deferred.await(gate), memory.updateIdentity(update)),
      getIdentity: () => Effect.interrupt
    }))
  )

const seedKit = async (storage: Layer.Layer<IdentityStore>) => {
  const kit = makeIdentityKit({ storage })
  await kit.admin.createWorkspace({ id: "ws_life" })
  await kit.admin.createIdentity({ workspaceId: "ws_life", externalId: "user_1" })
  const { key } = await kit.admin.issueRootKey({
    workspaceId: "ws_life",
    permissions: ["identity.*.update_identity", "identity.*.read_identity"]
  })
  return { kit, key }
}

const post = (key: string, path: string, body: object) =>
  new Request(`http://localhost${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify(body)
  })

describe("one answer per request", () => {
  it.effect("a request interrupted by something other than its own cancel still gets an answer (500)", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const { kit, key } = yield* Effect.promise(() => seedKit(gatedStorage(gate)))
      const response = yield* Effect.promise(() => kit.fetch(post(key, "/v2/identities.getIdentity", { identity: "user_1" })))
      assert.strictEqual(response.status, 500)
      const body = yield* Effect.promise(() => response.json())
      assert.strictEqual(body.error.type, "https://unkey.com/docs/errors/unkey/application/unexpected_error")
      yield* Effect.promise(() => kit.dispose())
    }))

  // it.live: these wait on real time (the test clock would never advance).
  it.live("a respond callback that throws is logged, never an uncaught exception", () =>
    Effect.gen(function*() {
      const kit = makeIdentityKit({ storage: layerMemory })
      const uncaught: Array<unknown> = []
      const onUncaught = (error: unknown) => void uncaught.push(error)
      process.on("uncaughtException", onUncaught)
      let calls = 0
      // Synchronous path (405) and asynchronous path (the body is read first).
      kit.handle({ method: "GET", path: ROUTE, headers: {}, body: new Uint8Array(0) }, () => {
        calls++
        throw new Error("host bug")
      })
      yield* Effect.async<void>((resume) => {
        kit.handle({
          method: "POST",
          path: ROUTE,
          headers: {},
          body: (_limit, done) => void setTimeout(() => done(new Uint8Array(0)), 5)
        }, () => {
          calls++
          resume(Effect.void)
          throw new Error("host bug, async")
        })
      })
      yield* Effect.sleep("20 millis")
      process.off("uncaughtException", onUncaught)
      assert.strictEqual(calls, 2)
      assert.deepStrictEqual(uncaught, [])
      yield* Effect.promise(() => kit.dispose())
    }))

  it.effect("kit.fetch leaves no abort listener on the request's signal", () =>
    Effect.gen(function*() {
      const kit = makeIdentityKit({ storage: layerMemory })
      const controller = new AbortController()
      const request = new Request(`http://localhost${ROUTE}`, { method: "GET", signal: controller.signal })
      const response = yield* Effect.promise(() => kit.fetch(request))
      assert.strictEqual(response.status, 405)
      assert.strictEqual(getEventListeners(request.signal, "abort").length, 0)
      yield* Effect.promise(() => kit.dispose())
    }))
})

describe("dispose drains", () => {
  it.live("requests in flight finish before the storage closes; later ones get 503, validation still 4xx", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const { kit, key } = yield* Effect.promise(() => seedKit(gatedStorage(gate)))
      const inFlight = Array.from({ length: 5 }, (_, i) => kit.fetch(post(key, ROUTE, { identity: "user_1", meta: { i } })))
      // Let them reach the storage, then start disposing.
      yield* Effect.sleep("20 millis")
      let disposed = false
      const disposing = kit.dispose().then(() => {
        disposed = true
      })
      yield* Effect.sleep("20 millis")
      assert.isFalse(disposed, "dispose must wait for the requests in flight")
      const late = yield* Effect.promise(() => kit.fetch(post(key, ROUTE, { identity: "user_1" })))
      assert.strictEqual(late.status, 503)
      const lateBody = yield* Effect.promise(() => late.json())
      assert.strictEqual(lateBody.error.type, "https://unkey.com/docs/errors/unkey/application/service_unavailable")
      const invalid = yield* Effect.promise(() => kit.fetch(post(key, ROUTE, { nope: true })))
      assert.strictEqual(invalid.status, 400)
      yield* Deferred.succeed(gate, undefined)
      const statuses = yield* Effect.promise(() => Promise.all(inFlight.map((response) => response.then((r) => r.status))))
      assert.deepStrictEqual(statuses, [200, 200, 200, 200, 200])
      yield* Effect.promise(() => disposing)
      assert.isTrue(disposed)
    }))

  it.live("requests still running at the drain deadline are interrupted and answered 503", () =>
    Effect.gen(function*() {
      const hanging = Layer.effect(
        IdentityStore,
        Effect.map(makeMemory, (memory) => ({ ...memory, updateIdentity: () => Effect.never }))
      )
      const kit = makeIdentityKit({ storage: hanging, drainTimeout: "50 millis" })
      yield* Effect.promise(() => kit.admin.createWorkspace({ id: "ws_hang" }))
      const { key } = yield* Effect.promise(() => kit.admin.issueRootKey({ workspaceId: "ws_hang" }))
      const inFlight = Array.from({ length: 3 }, () => kit.fetch(post(key, ROUTE, { identity: "x" })))
      yield* Effect.sleep("20 millis")
      yield* Effect.promise(() => kit.dispose())
      const statuses = yield* Effect.promise(() => Promise.all(inFlight.map((response) => response.then((r) => r.status))))
      assert.deepStrictEqual(statuses, [503, 503, 503])
    }))
})
