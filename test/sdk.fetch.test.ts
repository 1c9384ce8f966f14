/**
 * The official `@unkey/api` SDK against the fetch handler (its `fetcher` hook routes requests to
 * `kit.fetch`, no socket): parsed data on 200 and the SDK's typed error for each error class.
 */
import { Unkey } from "@unkey/api"
import { HTTPClient } from "@unkey/api/lib/http.js"
import * as errors from "@unkey/api/models/errors"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { IdentityStore, layerMemory, makeIdentityKit, makeMemory, StorageError } from "identity-kit"
import { Layer } from "effect"
import { seed, type Seeded } from "./support/core.js"

const client = (kit: Seeded["kit"], rootKey: string) =>
  new Unkey({
    rootKey,
    serverURL: "http://identity-kit.test",
    retryConfig: { strategy: "none" },
    httpClient: new HTTPClient({ fetcher: (input, init) => kit.fetch(new Request(input, init)) })
  })

/** Runs a call that must fail, returning what it threw. */
const thrown = (f: () => Promise<unknown>) =>
  Effect.promise(() => f().then(() => assert.fail("expected the SDK to throw"), (error: unknown) => error))

describe("@unkey/api SDK against the fetch handler", () => {
  it.effect("200: parsed data", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      const unkey = client(s.kit, s.rootKey)
      const result = yield* Effect.promise(() =>
        unkey.identities.updateIdentity({
          identity: "user_123",
          meta: { plan: "premium" },
          ratelimits: [{ name: "requests", limit: 1000, duration: 3_600_000, autoApply: true }]
        })
      )
      assert.match(result.meta.requestId, /^req_/)
      assert.strictEqual(result.data.externalId, "user_123")
      assert.deepStrictEqual(result.data.meta, { plan: "premium" })
      assert.strictEqual(result.data.ratelimits?.length, 1)
      assert.strictEqual(result.data.ratelimits?.[0]?.name, "requests")
      assert.strictEqual(result.data.ratelimits?.[0]?.autoApply, true)
      // Empty ratelimits are left out, and the SDK accepts that.
      const cleared = yield* Effect.promise(() => unkey.identities.updateIdentity({ identity: "user_123", ratelimits: [] }))
      assert.isUndefined(cleared.data.ratelimits)
    }))

  it.effect("typed errors: 400, 401, 403, 404, 500", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      const unkey = client(s.kit, s.rootKey)

      const bad = yield* thrown(() =>
        unkey.identities.updateIdentity({ identity: "user_123", ratelimits: [{ name: "ab", limit: 1, duration: 1000, autoApply: false }] })
      )
      // The SDK validates some fields itself; either way it is a 400-class typed error or its own validation error.
      assert.isTrue(bad instanceof errors.BadRequestErrorResponse || bad instanceof errors.SDKValidationError, String(bad))

      const dup = yield* thrown(() =>
        unkey.identities.updateIdentity({
          identity: "user_123",
          ratelimits: [
            { name: "same", limit: 1, duration: 1000, autoApply: false },
            { name: "same", limit: 2, duration: 1000, autoApply: false }
          ]
        })
      )
      assert.instanceOf(dup, errors.BadRequestErrorResponse)
      if (dup instanceof errors.BadRequestErrorResponse) {
        assert.strictEqual(dup.error.detail, "Ratelimit with name 'same' is already defined in the request")
        assert.match(dup.meta.requestId, /^req_/)
      }

      const unauthorized = yield* thrown(() => client(s.kit, "unkey_wrong").identities.updateIdentity({ identity: "user_123" }))
      assert.instanceOf(unauthorized, errors.UnauthorizedErrorResponse)

      const { key } = yield* Effect.promise(() => s.kit.admin.issueRootKey({ workspaceId: s.workspaceId, permissions: ["*"] }))
      const forbidden = yield* thrown(() =>
        client(s.kit, key).identities.updateIdentity({ identity: "user_123" })
      )
      assert.instanceOf(forbidden, errors.ForbiddenErrorResponse)

      const notFound = yield* thrown(() => unkey.identities.updateIdentity({ identity: "nobody" }))
      assert.instanceOf(notFound, errors.NotFoundErrorResponse)
      if (notFound instanceof errors.NotFoundErrorResponse) {
        assert.strictEqual(notFound.error.type, "https://unkey.com/docs/errors/unkey/data/identity_not_found")
      }

      const failing = makeIdentityKit({
        storage: Layer.effect(
          IdentityStore,
          Effect.map(makeMemory, (memory) => ({
            ...memory,
            updateIdentity: () => Effect.fail(new StorageError({ operation: "updateIdentity", cause: "down" }))
          }))
        )
      })
      yield* Effect.promise(() => failing.admin.createWorkspace({ id: "ws_f" }))
      const issued = yield* Effect.promise(() => failing.admin.issueRootKey({ workspaceId: "ws_f" }))
      const internal = yield* thrown(() =>
        client(failing, issued.key).identities.updateIdentity({ identity: "user_123" })
      )
      assert.instanceOf(internal, errors.InternalServerErrorResponse)
      yield* Effect.promise(() => failing.dispose())
    }))

  it.effect("no rootKey: the SDK sends no Authorization header and gets the V1 400", () =>
    Effect.gen(function*() {
      const kit = makeIdentityKit({ storage: layerMemory })
      const error = yield* thrown(() => client(kit, "").identities.updateIdentity({ identity: "user_123" }))
      assert.instanceOf(error, errors.BadRequestErrorResponse)
      if (error instanceof errors.BadRequestErrorResponse) {
        assert.strictEqual(error.error.detail, "Authorization header for 'bearer' scheme")
        assert.strictEqual(error.error.errors[0]?.location, "security")
      }
    }))
})
