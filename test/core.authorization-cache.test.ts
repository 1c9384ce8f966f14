/**
 * The root-key cache. With a TTL only (storage that reports no changes): one lookup per key per
 * TTL (by `TestClock`). With `RootKeyEvents` (on by default): an entry dropped on every change of
 * its key or workspace, nothing cached while the source is disconnected, no answer read before an
 * invalidation cached after it. Always: unknown keys and failures never remembered, expiry checked
 * against the clock.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Deferred, Effect, Fiber, Layer, Redacted, TestClock } from "effect"
import {
  Admin,
  Authorization,
  IdentityStore,
  type IdentityStoreService,
  KeyDisabled,
  KeyExpired,
  KeyNotFound,
  layerAuthorizationWith,
  makeIdentityKit,
  makeMemory,
  ROUTE,
  StorageError,
  UPDATE_IDENTITY_PERMISSION,
  WorkspaceDisabled
} from "identity-kit"
import type { AuthorizationOptions } from "../src/services/Authorization.js"
import { makeRootKeyEventHub, RootKeyEvents } from "../src/services/RootKeyEvents.js"
import { layerMemory, makeMemoryWithEvents } from "../src/storage/memory.js"

interface Counter {
  lookups: number
  failing: boolean
  /** When set, a lookup reads storage at once, then waits for this before answering what it read. */
  gate: Deferred.Deferred<void> | undefined
}

const newCounter = (): Counter => ({ lookups: 0, failing: false, gate: undefined })

const counting = (store: IdentityStoreService, state: Counter): IdentityStoreService => ({
  ...store,
  findRootKey: (hash) => {
    state.lookups++
    if (state.failing) return Effect.fail(new StorageError({ operation: "findRootKey", cause: "down" }))
    const gate = state.gate
    return gate === undefined ? store.findRootKey(hash) : Effect.zipLeft(store.findRootKey(hash), Deferred.await(gate))
  }
})

/** Memory storage that counts root-key lookups and can be told to fail them; reports no changes. */
const counted = () => {
  const state = newCounter()
  const layer = Layer.effect(IdentityStore, Effect.map(makeMemory, (memory) => counting(memory, state)))
  return { state, layer }
}

/** Memory storage that reports its changes in process (as `layerMemory` does), counting lookups. */
const countedWithEvents = () => {
  const state = newCounter()
  const layer = Layer.effectContext(Effect.map(makeMemoryWithEvents, ({ events, store }) =>
    Context.make(IdentityStore, counting(store, state)).pipe(Context.add(RootKeyEvents, events))))
  return { state, layer }
}

/** Memory storage that reports nothing by itself, beside a hub the test publishes on. */
const countedWithHub = () => {
  const state = newCounter()
  const hub = makeRootKeyEventHub()
  const layer = Layer.effectContext(Effect.map(makeMemory, (memory) =>
    Context.make(IdentityStore, counting(memory, state)).pipe(Context.add(RootKeyEvents, hub.service))))
  return { state, hub, layer }
}

const services = <R>(storage: Layer.Layer<R>, options?: AuthorizationOptions) =>
  layerAuthorizationWith(options).pipe(Layer.provideMerge(storage))

const authorize = (key: string) =>
  Effect.flatMap(Authorization, (auth) => auth.authorize(Redacted.make(`Bearer ${key}`), UPDATE_IDENTITY_PERMISSION))

const refusal = (key: string) => Effect.flip(authorize(key))

/** A workspace and a key on it; answers the plaintext and the key's id. */
const issue = (workspaceId: string, options: { readonly expiresAt?: number } = {}) =>
  Effect.gen(function*() {
    yield* Admin.createWorkspace({ id: workspaceId })
    const { key, rootKey } = yield* Admin.issueRootKey({ workspaceId, ...options })
    return { plaintext: Redacted.value(key), keyId: rootKey.id }
  })

describe("rootKeyCache with a TTL (storage without change reports)", () => {
  const { layer, state } = counted()

  it.effect("looks a key up once per TTL, never remembers unknown keys or failures", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(1_800_000_000_000)
      const { plaintext } = yield* issue("ws_c", { expiresAt: 1_800_000_015_000 })
      state.lookups = 0

      yield* authorize(plaintext)
      yield* authorize(plaintext)
      assert.strictEqual(state.lookups, 1)

      // After the TTL the key is looked up again.
      yield* TestClock.adjust("11 seconds")
      yield* authorize(plaintext)
      assert.strictEqual(state.lookups, 2)

      // Expiry is checked against the clock even for a cached key.
      yield* TestClock.adjust("5 seconds")
      assert.instanceOf(yield* refusal(plaintext), KeyExpired)
      assert.strictEqual(state.lookups, 2)

      // Unknown keys are looked up every time.
      assert.instanceOf(yield* refusal("unkey_nope"), KeyNotFound)
      assert.instanceOf(yield* refusal("unkey_nope"), KeyNotFound)
      assert.strictEqual(state.lookups, 4)

      // Failures are not remembered either.
      state.failing = true
      assert.instanceOf(yield* refusal("unkey_other"), StorageError)
      state.failing = false
      assert.instanceOf(yield* refusal("unkey_other"), KeyNotFound)
      assert.strictEqual(state.lookups, 6)
    }).pipe(Effect.provide(services(layer, { rootKeyCache: { ttl: "10 seconds" } }))))

  it.effect("off by default: every request reads storage, a disabled key is refused at once", () => {
    const { layer, state } = counted()
    return Effect.gen(function*() {
      const { keyId, plaintext } = yield* issue("ws_d")
      state.lookups = 0
      yield* authorize(plaintext)
      yield* authorize(plaintext)
      assert.strictEqual(state.lookups, 2)
      yield* Admin.updateRootKey(keyId, { enabled: false })
      assert.instanceOf(yield* refusal(plaintext), KeyDisabled)
    }).pipe(Effect.provide(services(layer)))
  })
})

describe("rootKeyCache with change reports (RootKeyEvents)", () => {
  it.effect("on by default: one lookup, then every change is honoured by the next request", () => {
    const { layer, state } = countedWithEvents()
    return Effect.gen(function*() {
      const { keyId, plaintext } = yield* issue("ws_e")
      state.lookups = 0
      yield* authorize(plaintext)
      yield* authorize(plaintext)
      yield* authorize(plaintext)
      assert.strictEqual(state.lookups, 1)

      yield* Admin.updateRootKey(keyId, { enabled: false })
      assert.instanceOf(yield* refusal(plaintext), KeyDisabled)
      assert.strictEqual(state.lookups, 2)
      yield* Admin.updateRootKey(keyId, { enabled: true })
      yield* authorize(plaintext)

      // A workspace change drops its keys.
      yield* Admin.createWorkspace({ id: "ws_e", enabled: false })
      assert.instanceOf(yield* refusal(plaintext), WorkspaceDisabled)
      yield* Admin.createWorkspace({ id: "ws_e" })
      yield* authorize(plaintext)
      yield* authorize(plaintext)
      const before = state.lookups

      assert.isTrue(yield* Admin.revokeRootKey(keyId))
      assert.instanceOf(yield* refusal(plaintext), KeyNotFound)
      // A revoked (deleted) key is answered as unknown, so it is not cached either.
      assert.instanceOf(yield* refusal(plaintext), KeyNotFound)
      assert.strictEqual(state.lookups, before + 2)
    }).pipe(Effect.provide(services(layer)))
  })

  it.effect("a change to another workspace's key keeps this entry", () => {
    const { layer, state } = countedWithEvents()
    return Effect.gen(function*() {
      const first = yield* issue("ws_f1")
      const second = yield* issue("ws_f2")
      yield* authorize(first.plaintext)
      state.lookups = 0
      yield* Admin.updateRootKey(second.keyId, { enabled: false })
      yield* Admin.createWorkspace({ id: "ws_f2", enabled: false })
      yield* authorize(first.plaintext)
      assert.strictEqual(state.lookups, 0)
    }).pipe(Effect.provide(services(layer)))
  })

  it.effect("expiry is checked against the clock; the safety TTL (5 minutes) bounds an entry's life", () => {
    const { layer, state } = countedWithEvents()
    return Effect.gen(function*() {
      yield* TestClock.setTime(1_800_000_000_000)
      const { plaintext } = yield* issue("ws_x", { expiresAt: 1_800_000_400_000 })
      state.lookups = 0
      yield* authorize(plaintext)
      yield* TestClock.adjust("4 minutes")
      yield* authorize(plaintext)
      assert.strictEqual(state.lookups, 1)
      yield* TestClock.adjust("61 seconds")
      yield* authorize(plaintext)
      assert.strictEqual(state.lookups, 2)
      yield* TestClock.adjust("2 minutes")
      assert.instanceOf(yield* refusal(plaintext), KeyExpired)
      assert.strictEqual(state.lookups, 2)
    }).pipe(Effect.provide(services(layer)))
  })

  it.effect("unknown keys and failures are never remembered", () => {
    const { layer, state } = countedWithEvents()
    return Effect.gen(function*() {
      assert.instanceOf(yield* refusal("unkey_nope"), KeyNotFound)
      assert.instanceOf(yield* refusal("unkey_nope"), KeyNotFound)
      assert.strictEqual(state.lookups, 2)
      const { plaintext } = yield* issue("ws_u")
      state.failing = true
      assert.instanceOf(yield* refusal(plaintext), StorageError)
      state.failing = false
      yield* authorize(plaintext)
      yield* authorize(plaintext)
      assert.strictEqual(state.lookups, 4)
    }).pipe(Effect.provide(services(layer)))
  })

  it.effect("rootKeyCache: false turns it off", () => {
    const { layer, state } = countedWithEvents()
    return Effect.gen(function*() {
      const { plaintext } = yield* issue("ws_off")
      state.lookups = 0
      yield* authorize(plaintext)
      yield* authorize(plaintext)
      assert.strictEqual(state.lookups, 2)
    }).pipe(Effect.provide(services(layer, { rootKeyCache: false })))
  })

  it.effect("capacity: the oldest entry leaves first", () => {
    const { layer, state } = countedWithEvents()
    return Effect.gen(function*() {
      const a = yield* issue("ws_cap")
      const { key: b } = yield* Admin.issueRootKey({ workspaceId: "ws_cap" })
      const { key: c } = yield* Admin.issueRootKey({ workspaceId: "ws_cap" })
      state.lookups = 0
      yield* authorize(a.plaintext)
      yield* authorize(Redacted.value(b))
      yield* authorize(Redacted.value(c)) // evicts a
      yield* authorize(Redacted.value(c))
      yield* authorize(Redacted.value(b))
      assert.strictEqual(state.lookups, 3)
      yield* authorize(a.plaintext)
      assert.strictEqual(state.lookups, 4)
    }).pipe(Effect.provide(services(layer, { rootKeyCache: { ttl: "1 minute", capacity: 2 } })))
  })

  it.effect("a lookup that read storage before an invalidation is not cached after it", () => {
    const { layer, state } = countedWithEvents()
    return Effect.gen(function*() {
      const { keyId, plaintext } = yield* issue("ws_race")
      state.gate = yield* Deferred.make<void>()
      // The lookup reads the enabled key, then stalls; the key is disabled meanwhile.
      const stale = yield* Effect.fork(authorize(plaintext))
      yield* Effect.yieldNow()
      assert.strictEqual(state.lookups, 1)
      yield* Admin.updateRootKey(keyId, { enabled: false })
      yield* Deferred.succeed(state.gate, undefined)
      state.gate = undefined
      // It answers what it read (it started before the change)…
      yield* Fiber.join(stale)
      // …but did not cache it: the next request reads storage and is refused.
      assert.instanceOf(yield* refusal(plaintext), KeyDisabled)
      assert.strictEqual(state.lookups, 2)
    }).pipe(Effect.provide(services(layer)))
  })

  it.effect("nothing is cached until Connected, nor while Disconnected; reconnecting starts empty", () => {
    const { hub, layer, state } = countedWithHub()
    return Effect.gen(function*() {
      const { keyId, plaintext } = yield* issue("ws_h")
      state.lookups = 0
      // Not connected yet: every request reads storage.
      yield* authorize(plaintext)
      yield* authorize(plaintext)
      assert.strictEqual(state.lookups, 2)

      hub.publish({ _tag: "Connected" })
      yield* authorize(plaintext)
      yield* authorize(plaintext)
      assert.strictEqual(state.lookups, 3)

      // While disconnected, a change nobody reported is honoured at once.
      hub.publish({ _tag: "Disconnected" })
      yield* Admin.updateRootKey(keyId, { enabled: false })
      assert.instanceOf(yield* refusal(plaintext), KeyDisabled)
      assert.strictEqual(state.lookups, 4)
      yield* Admin.updateRootKey(keyId, { enabled: true })
      yield* authorize(plaintext)
      yield* authorize(plaintext)
      assert.strictEqual(state.lookups, 6)

      // Connected again: cached again, and an unreported change made before is honoured.
      yield* Admin.updateRootKey(keyId, { permissions: [] })
      hub.publish({ _tag: "Connected" })
      const refused = yield* refusal(plaintext)
      assert.strictEqual(refused._tag, "InsufficientPermissions")
      yield* Admin.updateRootKey(keyId, { permissions: [UPDATE_IDENTITY_PERMISSION] })
      hub.publish({ _tag: "Invalidate", hash: "not-this-one" })
      hub.publish({ _tag: "InvalidateAll" })
      yield* authorize(plaintext)
      yield* authorize(plaintext)
      assert.strictEqual(state.lookups, 8)
    }).pipe(Effect.provide(services(layer)))
  })

  it.effect("a lookup running across a disconnection is not cached", () => {
    const { hub, layer, state } = countedWithHub()
    return Effect.gen(function*() {
      const { plaintext } = yield* issue("ws_hd")
      hub.publish({ _tag: "Connected" })
      state.gate = yield* Deferred.make<void>()
      state.lookups = 0
      const running = yield* Effect.fork(authorize(plaintext))
      yield* Effect.yieldNow()
      hub.publish({ _tag: "Disconnected" })
      hub.publish({ _tag: "Connected" })
      yield* Deferred.succeed(state.gate, undefined)
      state.gate = undefined
      yield* Fiber.join(running)
      yield* authorize(plaintext)
      assert.strictEqual(state.lookups, 2)
    }).pipe(Effect.provide(services(layer)))
  })

  it.effect("authenticate: every check but the permission, through the same cache", () => {
    const { layer, state } = countedWithEvents()
    return Effect.gen(function*() {
      yield* Admin.createWorkspace({ id: "ws_auth" })
      const { key, rootKey } = yield* Admin.issueRootKey({ workspaceId: "ws_auth", permissions: ["other"] })
      const header = Redacted.make(`Bearer ${Redacted.value(key)}`)
      const auth = yield* Authorization
      state.lookups = 0
      const found = yield* auth.authenticate(header)
      assert.deepStrictEqual(found.permissions, ["other"])
      yield* auth.authenticate(header)
      assert.strictEqual(state.lookups, 1)
      const refused = yield* Effect.flip(auth.authorize(header, UPDATE_IDENTITY_PERMISSION))
      assert.strictEqual(refused._tag, "InsufficientPermissions")
      yield* Admin.updateRootKey(rootKey.id, { enabled: false })
      assert.instanceOf(yield* Effect.flip(auth.authenticate(header)), KeyDisabled)
    }).pipe(Effect.provide(services(layer)))
  })
})

describe("layerMemory: a kit refuses a changed key on the next request", () => {
  const post = (kit: ReturnType<typeof makeIdentityKit>, key: string) =>
    kit.fetch(new Request(`http://localhost${ROUTE}`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ identity: "user_1", meta: { a: 1 } })
    })).then((response) => response.status)

  it("revoke → 401, disable → 403, workspace disabled → 403, each on the next request", async () => {
    const kit = makeIdentityKit({ storage: layerMemory })
    try {
      await kit.admin.createWorkspace({ id: "ws_kit" })
      await kit.admin.createIdentity({ workspaceId: "ws_kit", externalId: "user_1" })
      const issue = async () => {
        const { key, rootKey } = await kit.admin.issueRootKey({ workspaceId: "ws_kit" })
        const plaintext = key
        // Twice: the second answer comes from the cache.
        assert.strictEqual(await post(kit, plaintext), 200)
        assert.strictEqual(await post(kit, plaintext), 200)
        return { plaintext, id: rootKey.id }
      }

      const revoked = await issue()
      await kit.admin.revokeRootKey(revoked.id)
      assert.strictEqual(await post(kit, revoked.plaintext), 401)

      const disabled = await issue()
      await kit.admin.updateRootKey(disabled.id, { enabled: false })
      assert.strictEqual(await post(kit, disabled.plaintext), 403)

      const inWorkspace = await issue()
      await kit.admin.createWorkspace({ id: "ws_kit", enabled: false })
      assert.strictEqual(await post(kit, inWorkspace.plaintext), 403)

      await kit.admin.updateWorkspace("ws_kit", { enabled: true })
      const viaUpdate = await issue()
      await kit.admin.updateWorkspace("ws_kit", { enabled: false })
      assert.strictEqual(await post(kit, viaUpdate.plaintext), 403)
    } finally {
      await kit.dispose()
    }
  })
})
