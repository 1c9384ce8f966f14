/**
 * Fixtures for the adapter tests: a seeded kit (one workspace per error class, one key per key
 * state) and a storage layer whose write never finishes, to observe client aborts.
 */
import { Deferred, Effect, Layer } from "effect"
import { IdentityStore, type IdentityKit, makeMemory, UPDATE_IDENTITY_PERMISSION } from "identity-kit"
import { goneWorkspaceKey } from "./gone-workspace.js"

/** What `seed` created: the plaintext keys and the identities. */
export interface Seeded {
  readonly workspaceId: string
  /** A key with the permission, on an enabled workspace. */
  readonly rootKey: string
  readonly disabledKey: string
  readonly expiredKey: string
  readonly expiredAt: number
  /** Holds `a` and `b`, not the permission. */
  readonly unprivilegedKey: string
  readonly disabledWorkspaceKey: string
  /** A key of `GONE_WORKSPACE`: answered 404 workspace_not_found on `layerMemoryWithGoneWorkspace`. */
  readonly missingWorkspaceKey: string
  /** `user_123`, with one ratelimit. */
  readonly identityId: string
  /** The id of `user_123`'s `requests` ratelimit. */
  readonly requestsRatelimitId: string
  /** `user_plain`, no meta, no ratelimits. */
  readonly plainIdentityId: string
}

const key = async (kit: IdentityKit, workspaceId: string, options: { permissions?: ReadonlyArray<string>; enabled?: boolean; expiresAt?: number } = {}) => {
  const issued = await kit.admin.issueRootKey({ workspaceId, ...options })
  return issued.key
}

/** Seeds a kit with everything the scenarios need. */
export const seed = async (kit: IdentityKit): Promise<Seeded> => {
  const workspace = await kit.admin.createWorkspace({ name: "adapters" })
  const disabled = await kit.admin.createWorkspace({ name: "disabled", enabled: false })
  const identity = await kit.admin.createIdentity({
    workspaceId: workspace.id,
    externalId: "user_123",
    meta: { plan: "free" },
    ratelimits: [{ name: "requests", limit: 10, duration: 60_000 }]
  })
  const plain = await kit.admin.createIdentity({ workspaceId: workspace.id, externalId: "user_plain" })
  const expiredAt = Date.UTC(2024, 0, 2, 3, 4, 5)
  return {
    workspaceId: workspace.id,
    rootKey: await key(kit, workspace.id),
    disabledKey: await key(kit, workspace.id, { enabled: false }),
    expiredKey: await key(kit, workspace.id, { expiresAt: expiredAt }),
    expiredAt,
    unprivilegedKey: await key(kit, workspace.id, { permissions: ["a", "b"] }),
    disabledWorkspaceKey: await key(kit, disabled.id),
    missingWorkspaceKey: await goneWorkspaceKey(kit, { permissions: [UPDATE_IDENTITY_PERMISSION] }),
    identityId: identity.id,
    requestsRatelimitId: identity.ratelimits[0]?.id ?? "",
    plainIdentityId: plain.id
  }
}

/** What the hanging storage reports: its write started, and it was interrupted. */
export interface HangingProbe {
  readonly entered: Promise<void>
  readonly interrupted: Promise<void>
}

/**
 * Memory storage whose `updateIdentity` never completes and records its interruption: the only way
 * the probe's `interrupted` settles is the adapter interrupting the request's fiber.
 */
export const layerHanging = (): { readonly layer: Layer.Layer<IdentityStore>; readonly probe: HangingProbe } => {
  const entered = Effect.runSync(Deferred.make<void>())
  const interrupted = Effect.runSync(Deferred.make<void>())
  const layer = Layer.effect(
    IdentityStore,
    Effect.map(makeMemory, (memory) => ({
      ...memory,
      updateIdentity: () =>
        Deferred.succeed(entered, undefined).pipe(
          Effect.zipRight(Effect.never),
          Effect.onInterrupt(() => Deferred.succeed(interrupted, undefined))
        )
    }))
  )
  return {
    layer,
    probe: { entered: Effect.runPromise(Deferred.await(entered)), interrupted: Effect.runPromise(Deferred.await(interrupted)) }
  }
}

/** Memory storage that records when its layer is released, i.e. when the kit owning it is disposed. */
export const layerObserved = (): { readonly layer: Layer.Layer<IdentityStore>; readonly released: () => boolean } => {
  let released = false
  const layer = Layer.scoped(
    IdentityStore,
    Effect.acquireRelease(makeMemory, () => Effect.sync(() => {
      released = true
    }))
  )
  return { layer, released: () => released }
}
