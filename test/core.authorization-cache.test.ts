/**
 * The opt-in root-key cache: one lookup per key per TTL (by `TestClock`), unknown keys never
 * remembered, storage failures never remembered, expiry still checked against the current time.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Redacted, TestClock } from "effect"
import {
  Admin,
  Authorization,
  IdentityStore,
  KeyDisabled,
  KeyExpired,
  KeyNotFound,
  layerAuthorizationWith,
  makeMemory,
  StorageError,
  UPDATE_IDENTITY_PERMISSION
} from "identity-kit"

/** Memory storage that counts root-key lookups and can be told to fail them. */
const counted = () => {
  const state = { lookups: 0, failing: false }
  const layer = Layer.effect(
    IdentityStore,
    Effect.map(makeMemory, (memory) => ({
      ...memory,
      findRootKey: (hash: string) => {
        state.lookups++
        return state.failing ? Effect.fail(new StorageError({ operation: "findRootKey", cause: "down" })) : memory.findRootKey(hash)
      }
    }))
  )
  return { state, layer }
}

describe("rootKeyCache", () => {
  const { state, layer } = counted()
  const services = layerAuthorizationWith({ rootKeyCache: { ttl: "10 seconds" } }).pipe(Layer.provideMerge(layer))
  const authorize = (key: string) =>
    Effect.flatMap(Authorization, (auth) => auth.authorize(Redacted.make(`Bearer ${key}`), UPDATE_IDENTITY_PERMISSION))

  it.effect("looks a key up once per TTL, never remembers unknown keys or failures", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(1_800_000_000_000)
      yield* Admin.createWorkspace({ id: "ws_c" })
      const { key } = yield* Admin.issueRootKey({ workspaceId: "ws_c", expiresAt: 1_800_000_015_000 })
      const plaintext = Redacted.value(key)
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
      assert.instanceOf(yield* Effect.flip(authorize(plaintext)), KeyExpired)
      assert.strictEqual(state.lookups, 2)

      // Unknown keys are looked up every time.
      assert.instanceOf(yield* Effect.flip(authorize("unkey_nope")), KeyNotFound)
      assert.instanceOf(yield* Effect.flip(authorize("unkey_nope")), KeyNotFound)
      assert.strictEqual(state.lookups, 4)

      // Failures are not remembered either.
      state.failing = true
      assert.instanceOf(yield* Effect.flip(authorize("unkey_other")), StorageError)
      state.failing = false
      assert.instanceOf(yield* Effect.flip(authorize("unkey_other")), KeyNotFound)
      assert.strictEqual(state.lookups, 6)
    }).pipe(Effect.provide(services)))

  it.effect("a disabled key is refused without the cache at once", () =>
    Effect.gen(function*() {
      yield* Admin.createWorkspace({ id: "ws_d" })
      const { key } = yield* Admin.issueRootKey({ workspaceId: "ws_d", enabled: false })
      assert.instanceOf(yield* Effect.flip(authorize(Redacted.value(key))), KeyDisabled)
    }).pipe(Effect.provide(layerAuthorizationWith().pipe(Layer.provideMerge(counted().layer)))))
})
