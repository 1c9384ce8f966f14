/**
 * The bench data and request mix, shared by the runner (`run.ts`), the server under test
 * (`server.ts`, memory storage) and the in-process run (`inprocess.ts`), so all three load the same
 * volume and send the same bodies as the peers in `bench/peers`.
 */
import { type IdentityKit, UPDATE_IDENTITY_PERMISSION } from "identity-kit"

/** Identities seeded, `user_1` … `user_10000`, each with ratelimits `rl1` and `rl2`. */
export const IDENTITIES = 10_000
/** The workspace of the seeded identities and the root key. */
export const WORKSPACE_ID = "ws_bench"
/** The identity every request of the hot mix updates. */
export const HOT_N = 77
/** The update route and the list route, below the mount point. */
export const UPDATE_ROUTE = "/v2/identities.updateIdentity"
export const LIST_ROUTE = "/v2/identities.listIdentities"
/** The bench root key may update and list (issue 8's endpoint needs the read permission). */
export const ROOT_KEY_PERMISSIONS: ReadonlyArray<string> = [UPDATE_IDENTITY_PERMISSION, "identity.*.read_identity"]

/** spread: `n` uniform in 1..10,000; hot: `n` = 77 for every request (all writers on one row). */
export type Mix = "spread" | "hot"
/** The `n` of the next request of a mix. */
export const nextN = (mix: Mix): number => (mix === "hot" ? HOT_N : 1 + Math.floor(Math.random() * IDENTITIES))

/** The update body of `bench/peers/README.md` for identity `user_<n>`. */
export const updateBody = (n: number): string =>
  JSON.stringify({
    identity: `user_${n}`,
    meta: { plan: "premium", n },
    ratelimits: [
      { name: "rl1", limit: 1000, duration: 3600000, autoApply: true },
      { name: "rl2", limit: 50, duration: 60000, autoApply: false }
    ]
  })

/**
 * Creates the workspace, a root key (the given one, or a new one) and the identities through the
 * admin API, `concurrency` calls at a time. Answers the `Authorization` header value and the key id.
 */
export const seed = async (
  kit: IdentityKit,
  options: { readonly key?: string | undefined; readonly concurrency: number }
): Promise<{ readonly authorization: string; readonly keyId: string }> => {
  await kit.admin.createWorkspace({ id: WORKSPACE_ID, name: "bench" })
  const { key, rootKey } = await kit.admin.issueRootKey({
    workspaceId: WORKSPACE_ID,
    name: "bench",
    permissions: ROOT_KEY_PERMISSIONS,
    ...(options.key === undefined ? {} : { key: options.key })
  })
  let next = 1
  const worker = async () => {
    while (next <= IDENTITIES) {
      const n = next++
      await kit.admin.createIdentity({
        workspaceId: WORKSPACE_ID,
        externalId: `user_${n}`,
        meta: { plan: "free" },
        ratelimits: [
          { name: "rl1", limit: 100, duration: 60000, autoApply: false },
          { name: "rl2", limit: 100, duration: 60000, autoApply: false }
        ]
      })
    }
  }
  await Promise.all(Array.from({ length: options.concurrency }, worker))
  return { authorization: `Bearer ${key}`, keyId: rootKey.id }
}
