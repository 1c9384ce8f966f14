/**
 * `kit.admin` and `kit.run` are Promise APIs for hosts that never write Effect: they reject with the
 * error itself (issue 10, item 1), so `instanceof IdentityConflict` and `error._tag` work without
 * unwrapping Effect's `FiberFailure`.
 */
import { Effect } from "effect"
import { IdentityConflict, layerMemory, makeIdentityKit } from "identity-kit"
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
})
