/**
 * Demo data shared by the examples: a workspace, a root key allowed to use all five endpoints, and the
 * identity `user_123` — plus the curl that updates it. Safe to run again on persistent storage: the
 * workspace is replaced, the identity created only when missing, a fresh root key issued each time.
 */
import type { Server } from "node:net"
import { Redacted } from "effect"
import type { IdentityKit } from "identity-kit"
import { demoPermissions } from "../src/cli/demo.js"

// The same permissions and curls as `identity-kit serve --demo` prints.
export { curlFor, demoPermissions, listCurlFor } from "../src/cli/demo.js"

/** What `seedDemo` created. */
export interface Demo {
  readonly workspaceId: string
  /** The plaintext root key: shown once, only its hash is stored. */
  readonly rootKey: string
  readonly identityId: string
}

/** Seeds the demo workspace, a root key and `user_123` through the kit's admin API. */
export const seedDemo = async (kit: IdentityKit): Promise<Demo> => {
  const workspace = await kit.admin.createWorkspace({ id: "ws_demo", name: "demo" })
  const { key } = await kit.admin.issueRootKey({ workspaceId: workspace.id, name: "demo key", permissions: demoPermissions })
  const identity = (await kit.admin.getIdentity(workspace.id, "user_123")) ??
    (await kit.admin.createIdentity({
      workspaceId: workspace.id,
      externalId: "user_123",
      meta: { plan: "free" },
      ratelimits: [{ name: "requests", limit: 100, duration: 60_000 }]
    }))
  // The admin API hands the key out as a string, or `Redacted` in older versions.
  return { workspaceId: workspace.id, rootKey: typeof key === "string" ? key : Redacted.value(key), identityId: identity.id }
}

/** The port a listening server is bound to. */
export const portOf = (server: Server): number => {
  const address = server.address()
  if (address === null || typeof address === "string") throw new Error("the server is not listening on a TCP port")
  return address.port
}
