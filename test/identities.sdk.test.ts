/**
 * The identities API through the official `@unkey/api` SDK, unchanged (its `fetcher` hook hands
 * each request to `kit.fetch`, no socket), on memory, PGlite and (with `DATABASE_URL`) PostgreSQL:
 * the lifecycle of contract §5, the SDK's `for await` pagination over 250 identities, concurrent
 * creates of one externalId, a delete racing an update, and the SDK's typed errors.
 */
import { Unkey } from "@unkey/api"
import { HTTPClient } from "@unkey/api/lib/http.js"
import * as errors from "@unkey/api/models/errors"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import {
  bearer,
  codeUnitSort,
  ID,
  PATHS,
  PERMISSION,
  seedIdentity,
  storages,
  storedRows,
  useKit,
  workspace,
  type Ws
} from "./support/identities.js"
import { auditLogOf } from "./support/audit.js"

/** A request the SDK sent: its path and JSON body. */
interface Sent {
  readonly path: string
  readonly body: unknown
}

/** An SDK client whose requests go to `kit.fetch`; `sent` (when given) records each request. */
const client = (target: Pick<Ws, "kit" | "rootKey">, sent?: Array<Sent>) =>
  new Unkey({
    rootKey: target.rootKey,
    serverURL: "http://identity-kit.test",
    retryConfig: { strategy: "none" },
    httpClient: new HTTPClient({
      fetcher: async (input, init) => {
        const request = new Request(input, init)
        if (sent !== undefined) sent.push({ path: new URL(request.url).pathname, body: await request.clone().json() })
        return target.kit.fetch(request)
      }
    })
  })

const promise = <A>(f: () => Promise<A>) => Effect.promise(f)

/** Runs a call that must fail, returning what it threw. */
const thrown = (f: () => Promise<unknown>) =>
  Effect.promise(() => f().then(() => assert.fail("expected the SDK to throw"), (error: unknown) => error))

/** Never a 5XX, whatever the SDK made of it. */
const notServerError = (error: unknown) => {
  assert.notInstanceOf(error, errors.InternalServerErrorResponse, String(error))
  if (error instanceof errors.UnkeyError) assert.isBelow(error.statusCode, 500, error.body)
}

for (const storage of storages) {
  describe(`@unkey/api SDK on ${storage.name}`, () => {
    const env = useKit(storage)

    it.effect("§5 lifecycle: create → get by id and externalId → list with search → update → conflict → delete → 404 → create again", () =>
      Effect.gen(function*() {
        const ws = yield* workspace(env())
        const unkey = client(ws)
        const created = yield* promise(() =>
          unkey.identities.createIdentity({
            externalId: "user_1",
            meta: { plan: "pro" },
            ratelimits: [{ name: "requests", limit: 10, duration: 60_000 }]
          })
        )
        assert.match(created.meta.requestId, ID("req"))
        const identityId = created.data.identityId
        assert.match(identityId, ID("id"))

        const byId = yield* promise(() => unkey.identities.getIdentity({ identity: identityId }))
        const byExternal = yield* promise(() => unkey.identities.getIdentity({ identity: "user_1" }))
        assert.deepStrictEqual(byExternal.data, byId.data)
        const ratelimitId = byId.data.ratelimits?.[0]?.id ?? ""
        assert.match(ratelimitId, ID("rl"))
        assert.deepStrictEqual(byId.data, {
          id: identityId,
          externalId: "user_1",
          meta: { plan: "pro" },
          ratelimits: [{ id: ratelimitId, name: "requests", limit: 10, duration: 60_000, autoApply: false }]
        })

        const listed = yield* promise(async () => {
          const pages = []
          for await (const page of await unkey.identities.listIdentities({ search: "user_1" })) pages.push(page.result)
          return pages
        })
        assert.strictEqual(listed.length, 1)
        assert.deepStrictEqual(listed[0]?.data, [byId.data])
        assert.deepStrictEqual(listed[0]?.pagination, { hasMore: false })

        const updated = yield* promise(() =>
          unkey.identities.updateIdentity({
            identity: "user_1",
            meta: { plan: "enterprise" },
            ratelimits: [{ name: "requests", limit: 20, duration: 60_000, autoApply: true }]
          })
        )
        assert.deepStrictEqual(updated.data.meta, { plan: "enterprise" })
        const after = yield* promise(() => unkey.identities.getIdentity({ identity: identityId }))
        assert.deepStrictEqual(after.data, {
          id: identityId,
          externalId: "user_1",
          meta: { plan: "enterprise" },
          ratelimits: [{ id: ratelimitId, name: "requests", limit: 20, duration: 60_000, autoApply: true }]
        })

        const conflict = yield* thrown(() => unkey.identities.createIdentity({ externalId: "user_1" }))
        assert.instanceOf(conflict, errors.ConflictErrorResponse)
        if (conflict instanceof errors.ConflictErrorResponse) {
          assert.strictEqual(conflict.error.detail, "Identity with externalId 'user_1' already exists in this workspace.")
          assert.strictEqual(conflict.error.type, "https://unkey.com/docs/errors/unkey/data/identity_already_exists")
          assert.match(conflict.meta.requestId, ID("req"))
        }

        const deleted = yield* promise(() => unkey.identities.deleteIdentity({ identity: "user_1" }))
        assert.deepStrictEqual(Object.keys(deleted), ["meta"])
        assert.match(deleted.meta.requestId, ID("req"))

        const gone = yield* thrown(() => unkey.identities.getIdentity({ identity: identityId }))
        assert.instanceOf(gone, errors.NotFoundErrorResponse)
        if (gone instanceof errors.NotFoundErrorResponse) assert.strictEqual(gone.error.detail, "This identity does not exist.")

        const again = yield* promise(() => unkey.identities.createIdentity({ externalId: "user_1" }))
        assert.notStrictEqual(again.data.identityId, identityId)
        const fresh = yield* promise(() => unkey.identities.getIdentity({ identity: "user_1" }))
        // Nothing carried over: no ratelimits, empty meta.
        assert.deepStrictEqual(fresh.data, { id: again.data.identityId, externalId: "user_1", meta: {} })
        const rows = yield* storedRows(env(), identityId)
        if (rows !== undefined) assert.deepStrictEqual(rows, { deleted: true, ratelimits: 1 })
      }))

    it.effect("pagination: 250 identities, for await with the default limit → 100/100/50, each id once, no 4th request", () =>
      Effect.gen(function*() {
        const ws = yield* workspace(env())
        const created: Array<string> = []
        for (let batch = 0; batch < 5; batch++) {
          const identities = yield* promise(() =>
            Promise.all(Array.from({ length: 50 }, (_, i) =>
              ws.kit.admin.createIdentity({ workspaceId: ws.workspaceId, externalId: `paged_${batch * 50 + i}` })))
          )
          created.push(...identities.map((identity) => identity.id))
        }
        const sent: Array<Sent> = []
        const unkey = client(ws, sent)
        const walked = yield* promise(async () => {
          const sizes: Array<number> = []
          const seen: Array<string> = []
          for await (const page of await unkey.identities.listIdentities({})) {
            sizes.push(page.result.data.length)
            seen.push(...page.result.data.map((identity) => identity.id))
          }
          return { sizes, seen }
        })
        assert.deepStrictEqual(walked.sizes, [100, 100, 50])
        assert.strictEqual(new Set(walked.seen).size, 250)
        assert.deepStrictEqual(walked.seen, codeUnitSort(created))
        // Three requests: the first with the SDK's default limit, then each with the previous page's cursor.
        assert.deepStrictEqual(sent, [
          { path: PATHS.listIdentities, body: { limit: 100 } },
          { path: PATHS.listIdentities, body: { limit: 100, cursor: walked.seen[100] } },
          { path: PATHS.listIdentities, body: { limit: 100, cursor: walked.seen[200] } }
        ])
      }))

    it.effect("concurrent creates of one externalId: exactly one 200, the rest 409; one identity, one audit entry", () =>
      Effect.gen(function*() {
        const ws = yield* workspace(env())
        const unkey = client(ws)
        const results = yield* promise(() =>
          Promise.allSettled(Array.from({ length: 12 }, (_, n) =>
            unkey.identities.createIdentity({ externalId: "racer", meta: { n }, ratelimits: [{ name: "requests", limit: n + 1, duration: 1000 }] })))
        )
        const winners = results.flatMap((result) => result.status === "fulfilled" ? [result.value.data.identityId] : [])
        const losers = results.flatMap((result) => result.status === "rejected" ? [result.reason] : [])
        assert.strictEqual(winners.length, 1, JSON.stringify(losers.map(String)))
        assert.strictEqual(losers.length, 11)
        for (const loser of losers) assert.instanceOf(loser, errors.ConflictErrorResponse, String(loser))
        const stored = yield* promise(() => ws.kit.admin.getIdentity(ws.workspaceId, "racer"))
        assert.strictEqual(stored?.id, winners[0])
        assert.strictEqual(stored?.ratelimits.length, 1)
        const log = yield* promise(() => auditLogOf(ws.kit, ws.workspaceId))
        assert.deepStrictEqual(log.map((entry) => entry.event).sort(), ["identity.create", "ratelimit.create"])
      }))

    it.effect("delete racing update on one identity: no 500, and the outcome is one of the two orders", () =>
      Effect.gen(function*() {
        const ws = yield* workspace(env())
        const unkey = client(ws)
        const rounds = yield* promise(() =>
          Promise.all(Array.from({ length: 8 }, async (_, round) => {
            const externalId = `race_${round}`
            const identity = await ws.kit.admin.createIdentity({
              workspaceId: ws.workspaceId,
              externalId,
              ratelimits: [{ name: "alpha", limit: 1, duration: 1000 }, { name: "beta", limit: 1, duration: 1000 }]
            })
            const remove = () => unkey.identities.deleteIdentity({ identity: externalId })
            const update = () =>
              unkey.identities.updateIdentity({
                identity: externalId,
                meta: { round },
                ratelimits: [{ name: "gamma", limit: 2, duration: 2000, autoApply: false }]
              })
            // Alternate which request starts first.
            if (round % 2 === 0) {
              const [deleted, updated] = await Promise.allSettled([remove(), update()])
              return { identity, deleted, updated }
            }
            const [updated, deleted] = await Promise.allSettled([update(), remove()])
            return { identity, deleted, updated }
          }))
        )
        const log = yield* promise(() => auditLogOf(ws.kit, ws.workspaceId))
        for (const { deleted, identity, updated } of rounds) {
          if (deleted.status === "rejected") notServerError(deleted.reason)
          if (updated.status === "rejected") notServerError(updated.reason)
          // Only one delete was sent, so it succeeds in both orders.
          assert.strictEqual(deleted.status, "fulfilled", deleted.status === "rejected" ? String(deleted.reason) : "")
          const entries = log.filter((entry) => entry.resources[0]?.id === identity.id)
          const deleteAt = entries.findIndex((entry) => entry.event === "identity.delete")
          assert.isAtLeast(deleteAt, 0)
          const deletedRatelimits = entries.slice(deleteAt + 1).filter((entry) => entry.event === "ratelimit.delete")
            .map((entry) => entry.resources[1]?.name).sort()
          if (updated.status === "fulfilled") {
            // Update, then delete: the delete saw (and audited) the updated set.
            assert.deepStrictEqual(updated.value.data.ratelimits?.map((r) => r.name), ["gamma"])
            const updateAt = entries.findIndex((entry) => entry.event === "identity.update")
            assert.isAtLeast(updateAt, 0)
            assert.isBelow(updateAt, deleteAt)
            assert.deepStrictEqual(deletedRatelimits, ["gamma"])
          } else {
            // Delete, then update: the update found nothing (404) and wrote nothing.
            assert.instanceOf(updated.reason, errors.NotFoundErrorResponse, String(updated.reason))
            assert.isFalse(entries.some((entry) => entry.event === "identity.update"))
            assert.deepStrictEqual(deletedRatelimits, ["alpha", "beta"])
          }
          assert.isNull(yield* promise(() => ws.kit.admin.getIdentity(ws.workspaceId, identity.id)))
          const rows = yield* storedRows(env(), identity.id)
          if (rows !== undefined) {
            assert.deepStrictEqual(rows, { deleted: true, ratelimits: updated.status === "fulfilled" ? 1 : 2 })
          }
        }
      }))

    it.effect("typed errors: 400, 401, 403, 404 on create/get/list; deleteIdentity errors are APIError (§0.5)", () =>
      Effect.gen(function*() {
        const ws = yield* workspace(env())
        yield* seedIdentity(ws, "present")
        const unkey = client(ws)
        const duplicate = yield* thrown(() =>
          unkey.identities.createIdentity({
            externalId: "dups",
            ratelimits: [{ name: "same", limit: 1, duration: 1000 }, { name: "same", limit: 2, duration: 1000 }]
          })
        )
        assert.instanceOf(duplicate, errors.BadRequestErrorResponse)
        if (duplicate instanceof errors.BadRequestErrorResponse) {
          assert.strictEqual(duplicate.error.detail, "Ratelimit with name 'same' is already defined in the request")
          assert.deepStrictEqual(duplicate.error.errors, [])
        }
        const tooBig = yield* thrown(() => unkey.identities.listIdentities({ limit: 101 }))
        assert.instanceOf(tooBig, errors.BadRequestErrorResponse)
        assert.instanceOf(yield* thrown(() => client({ kit: ws.kit, rootKey: "unkey_wrong" }).identities.getIdentity({ identity: "present" })), errors.UnauthorizedErrorResponse)
        const unprivileged = client({ kit: ws.kit, rootKey: (yield* bearer(ws, [PERMISSION.update])).slice("Bearer ".length) })
        assert.instanceOf(yield* thrown(() => unprivileged.identities.listIdentities({})), errors.ForbiddenErrorResponse)
        assert.instanceOf(yield* thrown(() => unprivileged.identities.getIdentity({ identity: "present" })), errors.ForbiddenErrorResponse)
        assert.instanceOf(yield* thrown(() => unprivileged.identities.createIdentity({ externalId: "nope" })), errors.ForbiddenErrorResponse)
        assert.instanceOf(yield* thrown(() => unkey.identities.getIdentity({ identity: "absent" })), errors.NotFoundErrorResponse)

        // The SDK sends Accept: application/json, gets application/json, and its deleteIdentity
        // matchers only know problem+json: a generic APIError with the status, as against Unkey.
        const missingOne = yield* thrown(() => unkey.identities.deleteIdentity({ identity: "absent" }))
        assert.instanceOf(missingOne, errors.APIError)
        assert.notInstanceOf(missingOne, errors.NotFoundErrorResponse)
        if (missingOne instanceof errors.APIError) {
          assert.strictEqual(missingOne.statusCode, 404)
          assert.strictEqual(missingOne.contentType, "application/json")
          assert.include(missingOne.body, "This identity does not exist.")
        }
        const forbidden = yield* thrown(() => unprivileged.identities.deleteIdentity({ identity: "present" }))
        assert.instanceOf(forbidden, errors.APIError)
        if (forbidden instanceof errors.APIError) assert.strictEqual(forbidden.statusCode, 403)
        assert.isNotNull(yield* promise(() => ws.kit.admin.getIdentity(ws.workspaceId, "present")))
      }))
  })
}
