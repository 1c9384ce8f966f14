/**
 * The core as an Effect user mounts it: `httpApp` served by `@effect/platform`'s web handler with
 * the services provided as layers (no `makeIdentityKit`).
 */
import { HttpApp } from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, ManagedRuntime, Redacted } from "effect"
import { Admin, httpApp, layerAuthorization, layerMemory, layerRequestValidator, ROUTE } from "identity-kit"

describe("httpApp on an Effect user's own runtime", () => {
  it.effect("answers the route from services in the context", () =>
    Effect.gen(function*() {
      const services = Layer.mergeAll(layerAuthorization, layerRequestValidator).pipe(Layer.provideMerge(layerMemory))
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
