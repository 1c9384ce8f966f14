/**
 * Demo data shared by the examples: a workspace, a root key allowed to use all five endpoints, and the
 * identity `user_123` — plus the curl that updates it. Safe to run again on persistent storage: the
 * workspace is replaced, the identity created only when missing, a fresh root key issued each time.
 */
import type { Server } from "node:net"
import { Redacted } from "effect"
import { type IdentityKit, permissions } from "identity-kit"

/** Every permission of the identities API: the demo key may create, read, update and delete. */
export const demoPermissions: ReadonlyArray<string> = Object.values(permissions)

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
  return { workspaceId: workspace.id, rootKey: Redacted.value(key), identityId: identity.id }
}

/** A curl that lists the identities through the API at `url` (the mount point). */
export const listCurlFor = (url: string, rootKey: string): string =>
  [
    `curl -X POST '${url}/v2/identities.listIdentities'`,
    `  -H "Authorization: Bearer ${rootKey}"`,
    `  -H 'Content-Type: application/json'`,
    `  -d '{"limit":10}'`
  ].join(" \\\n")

/** A curl that updates `user_123` through the API at `url` (the mount point). */
export const curlFor = (url: string, rootKey: string): string =>
  [
    `curl -X POST '${url}/v2/identities.updateIdentity'`,
    `  -H "Authorization: Bearer ${rootKey}"`,
    `  -H 'Content-Type: application/json'`,
    `  -d '{"identity":"user_123","meta":{"plan":"premium"},"ratelimits":[{"name":"requests","limit":1000,"duration":3600000,"autoApply":true}]}'`
  ].join(" \\\n")

/** The port a listening server is bound to. */
export const portOf = (server: Server): number => {
  const address = server.address()
  if (address === null || typeof address === "string") throw new Error("the server is not listening on a TCP port")
  return address.port
}
