/**
 * How a host app tests its own routes with identity-kit: start the app with `layerMemory` instead
 * of the production storage (say `layerSql` on PostgreSQL), seed what the test needs through
 * `kit.admin`, call the app over HTTP with Unkey's own SDK, and assert on the answer and on the
 * stored state. Each `start` gets a fresh, empty in-memory store: tests never share data.
 *
 * Run with vitest (this repository runs it from test/examples.test.ts).
 */
import { Unkey } from "@unkey/api"
import { NotFoundErrorResponse } from "@unkey/api/models/errors"
import { layerMemory } from "identity-kit"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { type StartedExample, start } from "./express-app.js"

describe("a host app's own tests, on in-memory storage", () => {
  let app: StartedExample
  let unkey: Unkey
  let workspaceId: string

  beforeEach(async () => {
    app = await start({ port: 0, storage: layerMemory })
    // The test's own data, independent of what the app seeds for its demo.
    const workspace = await app.kit.admin.createWorkspace({ name: "test" })
    workspaceId = workspace.id
    const { key } = await app.kit.admin.issueRootKey({
      workspaceId,
      permissions: ["identity.*.create_identity", "identity.*.read_identity", "identity.*.update_identity", "identity.*.delete_identity"]
    })
    await app.kit.admin.createIdentity({ workspaceId, externalId: "customer_42", meta: { plan: "free" } })
    // No retries: a test wants the first answer.
    unkey = new Unkey({ rootKey: key, serverURL: app.url, retryConfig: { strategy: "none" } })
  })

  afterEach(async () => {
    await app.close()
  })

  it("upgrades a customer's plan and rate limit", async () => {
    const { data } = await unkey.identities.updateIdentity({
      identity: "customer_42",
      meta: { plan: "pro" },
      ratelimits: [{ name: "requests", limit: 1000, duration: 60_000, autoApply: true }]
    })
    expect(data.meta).toEqual({ plan: "pro" })
    expect(data.ratelimits?.map((rl) => rl.name)).toEqual(["requests"])

    const stored = await app.kit.admin.getIdentity(workspaceId, "customer_42")
    expect(stored?.meta).toEqual({ plan: "pro" })
    const { items: audit } = await app.kit.admin.listAuditLog(workspaceId)
    expect(audit.map((entry) => entry.event)).toEqual(["identity.update", "ratelimit.create"])
  })

  it("signs a customer up and off again through the SDK", async () => {
    const { data } = await unkey.identities.createIdentity({ externalId: "customer_43", meta: { plan: "trial" } })
    expect((await unkey.identities.getIdentity({ identity: data.identityId })).data.externalId).toBe("customer_43")
    // Pages come by id; a search is a case-insensitive substring of the id or the externalId.
    const listed = await unkey.identities.listIdentities({ search: "CUSTOMER_4" })
    expect(listed.result.data.map((identity) => identity.externalId).sort()).toEqual(["customer_42", "customer_43"])
    await unkey.identities.deleteIdentity({ identity: "customer_43" })
    expect(await app.kit.admin.getIdentity(workspaceId, "customer_43")).toBeNull()
    const { items: audit } = await app.kit.admin.listAuditLog(workspaceId)
    expect(audit.map((entry) => entry.event)).toEqual(["identity.create", "identity.delete"])
  })

  it("reports an unknown customer as the SDK's NotFound error", async () => {
    await expect(unkey.identities.updateIdentity({ identity: "customer_404" })).rejects.toBeInstanceOf(NotFoundErrorResponse)
  })
})
