/**
 * A root key whose workspace is gone (spec A9, 404 workspace_not_found). Since migration 0009 no
 * storage lets one be made: a key needs its workspace, and workspaces are never deleted. It remains
 * what a database from before 0009 may hold (test/storage.migration.test.ts reaches A9 through such
 * rows on PGlite and PostgreSQL). For the HTTP tests on memory storage, this layer is the memory
 * store in which `GONE_WORKSPACE` was there when its keys were issued and has vanished since: its
 * root-key lookup answers those keys without a workspace, as SQL answers a legacy row.
 */
import { Context, Effect, Layer } from "effect"
import { type IdentityKit, IdentityStore, makeMemoryWithEvents, RootKeyEvents } from "identity-kit"

/** The workspace this layer reports gone. */
export const GONE_WORKSPACE = "ws_gone"

/** Memory storage (with its root-key events) in which `GONE_WORKSPACE`'s keys are found without their workspace. */
export const layerMemoryWithGoneWorkspace: Layer.Layer<IdentityStore | RootKeyEvents> = Layer.effectContext(
  Effect.map(makeMemoryWithEvents, ({ events, store }) =>
    Context.make(IdentityStore, {
      ...store,
      findRootKey: (hash) =>
        Effect.map(store.findRootKey(hash), (found) =>
          found !== null && found.key.workspaceId === GONE_WORKSPACE ? { ...found, workspace: null } : found)
    }).pipe(Context.add(RootKeyEvents, events)))
)

/** A key of `GONE_WORKSPACE` (created first, if need be): its plaintext. */
export const goneWorkspaceKey = async (
  kit: IdentityKit,
  options: { readonly permissions?: ReadonlyArray<string> } = {}
): Promise<string> => {
  await kit.admin.createWorkspace({ id: GONE_WORKSPACE, name: "gone" })
  return (await kit.admin.issueRootKey({ workspaceId: GONE_WORKSPACE, ...options })).key
}
