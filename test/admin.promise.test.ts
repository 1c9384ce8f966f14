/**
 * `kit.admin` and `kit.run` are Promise APIs for hosts that never write Effect (issue 10, item 1):
 * they reject with the error itself, so `instanceof IdentityConflict` and `error._tag` work without
 * unwrapping Effect's `FiberFailure`, and `kit.admin` takes and answers plain values only (the
 * issued key is a string; a key given may be a string or a `Redacted`).
 */
import { Effect, Redacted } from "effect"
import {
  hashRootKey,
  IdentityConflict,
  IdentityStore,
  InvalidInput,
  layerMemory,
  makeIdentityKit,
  RootKeyConflict,
  WorkspaceNotFound
} from "identity-kit"
import { assert, describe, it } from "vitest"

describe("kit.admin rejections", () => {
  it("a duplicate externalId rejects with the IdentityConflict itself", async () => {
    const kit = makeIdentityKit({ storage: layerMemory })
    const workspace = await kit.admin.createWorkspace({ name: "w" })
    await kit.admin.createIdentity({ workspaceId: workspace.id, externalId: "dup" })
    const error = await kit.admin.createIdentity({ workspaceId: workspace.id, externalId: "dup" }).then(
      () => undefined,
      (e: unknown) => e
    )
    assert.instanceOf(error, IdentityConflict)
    assert.strictEqual((error as IdentityConflict)._tag, "IdentityConflict")
    await kit.dispose()
  })

  it("kit.run: a typed failure rejects with the failure, a defect with what was thrown", async () => {
    const kit = makeIdentityKit({ storage: layerMemory })
    const failure = await kit.run(Effect.fail({ _tag: "Mine" as const, n: 1 })).catch((e: unknown) => e)
    assert.deepStrictEqual(failure, { _tag: "Mine", n: 1 })
    const boom = new RangeError("boom")
    assert.strictEqual(await kit.run(Effect.die(boom)).catch((e: unknown) => e), boom)
    await kit.dispose()
  })

  it("invalid input rejects with the InvalidInput itself, its message the detail", async () => {
    const kit = makeIdentityKit({ storage: layerMemory })
    const workspace = await kit.admin.createWorkspace()
    const error = await kit.admin.createIdentity({
      workspaceId: workspace.id,
      externalId: "ok",
      ratelimits: [{ name: "requests", limit: -1, duration: 0 }]
    }).then(() => undefined, (e: unknown) => e)
    assert.instanceOf(error, InvalidInput)
    assert.instanceOf(error, Error)
    if (error instanceof InvalidInput) {
      assert.strictEqual(error._tag, "InvalidInput")
      assert.deepStrictEqual(error.errors.map((issue) => issue.location), ["input.ratelimits[0].limit", "input.ratelimits[0].duration"])
      assert.strictEqual(error.message, "Invalid input to createIdentity: input.ratelimits[0].limit: minimum: got -1, want 1 (and 1 more)")
    }
    await kit.dispose()
  })

  it("a missing workspace rejects with the WorkspaceNotFound itself", async () => {
    const kit = makeIdentityKit({ storage: layerMemory })
    const error = await kit.admin.issueRootKey({ workspaceId: "ws_typo" }).then(() => undefined, (e: unknown) => e)
    assert.instanceOf(error, WorkspaceNotFound)
    assert.strictEqual((error as WorkspaceNotFound).workspaceId, "ws_typo")
    await kit.dispose()
  })
})

describe("kit.admin plain values", () => {
  it("issueRootKey answers the key as a string; a given key may be a string or a Redacted", async () => {
    const kit = makeIdentityKit({ storage: layerMemory })
    const { id: workspaceId } = await kit.admin.createWorkspace({ name: "plain" })
    const generated = await kit.admin.issueRootKey({ workspaceId })
    assert.typeOf(generated.key, "string")
    assert.match(generated.key, /^unkey_/)
    assert.strictEqual(generated.rootKey.hash, hashRootKey(generated.key))
    const fromString = await kit.admin.issueRootKey({ workspaceId, key: "my-own-key-0123456789" })
    assert.strictEqual(fromString.key, "my-own-key-0123456789")
    const fromRedacted = await kit.admin.issueRootKey({ workspaceId, key: Redacted.make("my-other-key-0123456789") })
    assert.strictEqual(fromRedacted.key, "my-other-key-0123456789")
    // The same plaintext again: the tagged conflict (a 4 on the command line), never naming the key.
    const again = await kit.admin.issueRootKey({ workspaceId, key: "my-own-key-0123456789" }).then(() => undefined, (e: unknown) => e)
    assert.instanceOf(again, RootKeyConflict)
    assert.strictEqual((again as Error).message, "a root key with this plaintext exists already: choose another")
    assert.notInclude(JSON.stringify(again), "my-own-key")
    // Both keys work over HTTP.
    for (const key of [generated.key, fromString.key, fromRedacted.key]) {
      const response = await kit.fetch(new Request("http://localhost/v2/identities.updateIdentity", {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body: JSON.stringify({ identity: "nobody" })
      }))
      assert.strictEqual(response.status, 404)
    }
    // A key too short, as a string: refused, and not echoed.
    const short = await kit.admin.issueRootKey({ workspaceId, key: "secret" }).then(() => undefined, (e: unknown) => e)
    assert.instanceOf(short, InvalidInput)
    assert.notInclude(JSON.stringify(short), "secret\"")
    assert.deepStrictEqual((short as InvalidInput).errors.map((issue) => issue.location), ["input.key"])
    await kit.dispose()
  })

  it("a Redacted from another copy of effect (a host on Effect 4) is refused with a way out, not a crash", async () => {
    const kit = makeIdentityKit({ storage: layerMemory })
    const { id: workspaceId } = await kit.admin.createWorkspace()
    // What this copy's `Redacted.isRedacted` recognises but cannot read: its registry has no value for it.
    const foreign = Object.create(Object.getPrototypeOf(Redacted.make("x")) as object) as Redacted.Redacted<string>
    const error = await kit.admin.issueRootKey({ workspaceId, key: foreign }).then(() => undefined, (e: unknown) => e)
    assert.instanceOf(error, InvalidInput)
    assert.deepStrictEqual((error as InvalidInput).errors.map((issue) => [issue.location, issue.fix]), [
      ["input.key", "Pass the key as a plain string to kit.admin.issueRootKey"]
    ])
    await kit.dispose()
  })

  it("the lists are on kit.admin: plain pages, root keys without their hash", async () => {
    const kit = makeIdentityKit({ storage: layerMemory })
    const { id: workspaceId } = await kit.admin.createWorkspace({ id: "ws_a" })
    await kit.admin.createWorkspace({ id: "ws_b" })
    await kit.admin.issueRootKey({ workspaceId })
    await kit.admin.createIdentity({ workspaceId, externalId: "user_1", meta: { plan: "free" } })
    await kit.admin.createIdentity({ workspaceId, externalId: "user_2" })
    // An audit entry, written as the HTTP endpoints write them.
    await kit.run(Effect.flatMap(IdentityStore, (store) =>
      store.deleteIdentity(workspaceId, "user_2", 1, { actorId: "key_x", actorName: "root key", remoteIp: "", userAgent: "" })))

    const workspaces = await kit.admin.listWorkspaces({ limit: 1 })
    assert.deepStrictEqual(workspaces.items.map((w) => w.id), ["ws_a"])
    assert.typeOf(workspaces.cursor, "string")
    const rest = await kit.admin.listWorkspaces({ limit: 1, cursor: workspaces.cursor ?? "" })
    assert.deepStrictEqual(rest.items.map((w) => w.id), ["ws_b"])
    assert.notProperty(rest, "cursor")
    const keys = await kit.admin.listRootKeys(workspaceId)
    assert.strictEqual(keys.items.length, 1)
    assert.notProperty(keys.items[0], "hash")
    const identities = await kit.admin.listIdentities(workspaceId, { search: "user" })
    assert.deepStrictEqual(identities.items.map((identity) => [identity.externalId, identity.meta]), [["user_1", { plan: "free" }]])
    assert.deepStrictEqual(Object.keys(identities.items[0] ?? {}).sort(), [
      "createdAt", "deleted", "environment", "externalId", "id", "meta", "ratelimits", "updatedAt", "workspaceId"
    ])
    const log = await kit.admin.listAuditLog(workspaceId)
    assert.deepStrictEqual(log.items.map((entry) => entry.event), ["identity.delete"])
    assert.notProperty(log, "cursor")
    await kit.dispose()
  })
})
