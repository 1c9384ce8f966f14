/**
 * The core as an Effect user mounts it: `httpApp` served by `@effect/platform`'s web handler with
 * the services provided as layers (no `makeIdentityKit`).
 */
import { HttpApp } from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger, ManagedRuntime, Redacted } from "effect"
import {
  Admin,
  IdentityStore,
  layerAuthorization,
  layerMemory,
  makeIdentityKit,
  makeMemory,
  ROUTE,
  StorageError
} from "identity-kit"
import { httpApp } from "identity-kit/platform"

describe("httpApp on an Effect user's own runtime", () => {
  it.effect("answers the route from services in the context", () =>
    Effect.gen(function*() {
      const services = layerAuthorization.pipe(Layer.provideMerge(layerMemory))
      const runtime = ManagedRuntime.make(services)
      const { key } = yield* Effect.promise(() =>
        runtime.runPromise(Effect.gen(function*() {
          yield* Admin.createWorkspace({ id: "ws_fx" })
          yield* Admin.createIdentity({ workspaceId: "ws_fx", externalId: "ext" })
          return yield* Admin.issueRootKey({ workspaceId: "ws_fx" })
        }))
      )
      const handler = HttpApp.toWebHandlerRuntime(yield* Effect.promise(() => runtime.runtime()))(httpApp({ basePath: "/api" }))
      const response = yield* Effect.promise(() =>
        handler(new Request(`http://localhost/api${ROUTE}`, {
          method: "POST",
          headers: { authorization: `Bearer ${Redacted.value(key)}`, "content-type": "application/json" },
          body: JSON.stringify({ identity: "ext", meta: { via: "effect" } })
        }))
      )
      assert.strictEqual(response.status, 200)
      const body = yield* Effect.promise(() => response.json())
      assert.deepStrictEqual(body.data.meta, { via: "effect" })
      yield* Effect.promise(() => runtime.dispose())
    }))
})

describe("the storage layer's runtime applies to requests", () => {
  it.effect("a logger provided with the storage layer receives the request's logs", () =>
    Effect.gen(function*() {
      const seen: Array<unknown> = []
      const hostLogger = Logger.replace(Logger.defaultLogger, Logger.make(({ message }) => void seen.push(message)))
      const failing = Layer.effect(
        IdentityStore,
        Effect.map(makeMemory, (memory) => ({
          ...memory,
          updateIdentity: () => Effect.fail(new StorageError({ operation: "updateIdentity", cause: "boom" }))
        }))
      ).pipe(Layer.merge(hostLogger))
      const kit = makeIdentityKit({ storage: failing })
      yield* Effect.promise(() => kit.admin.createWorkspace({ id: "ws_log" }))
      const { key } = yield* Effect.promise(() => kit.admin.issueRootKey({ workspaceId: "ws_log" }))
      const response = yield* Effect.promise(() =>
        kit.fetch(new Request(`http://localhost${ROUTE}`, {
          method: "POST",
          headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
          body: JSON.stringify({ identity: "anyone" })
        }))
      )
      assert.strictEqual(response.status, 500)
      assert.include(JSON.stringify(seen), "identity-kit: storage failure")
      yield* Effect.promise(() => kit.dispose())
    }))
})
