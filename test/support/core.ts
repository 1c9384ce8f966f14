/** Test helpers for the core: a memory-backed kit, seeded, and a typed `call`. */
import { Effect, type Layer } from "effect"
import { type IdentityKit, type IdentityStore, layerMemory, makeIdentityKit, ROUTE, type RootKeyEvents } from "identity-kit"

export interface Seeded {
  readonly kit: IdentityKit
  readonly workspaceId: string
  /** Plaintext of a key with exactly `identity.*.update_identity`. */
  readonly rootKey: string
  readonly keyId: string
}

/** A fresh memory kit with one workspace, one root key and identity `user_123`. */
export const seed = async (
  options: {
    readonly maxBodyBytes?: number
    readonly trustProxy?: boolean | number
    readonly storage?: Layer.Layer<IdentityStore | RootKeyEvents>
  } = {}
): Promise<Seeded> => {
  const kit = makeIdentityKit({ storage: layerMemory, ...options })
  const workspace = await kit.admin.createWorkspace({ id: "ws_test" })
  const { key, rootKey } = await kit.admin.issueRootKey({ workspaceId: workspace.id })
  await kit.admin.createIdentity({
    workspaceId: workspace.id,
    externalId: "user_123",
    meta: { plan: "free" },
    ratelimits: [
      { name: "requests", limit: 100, duration: 60_000, autoApply: true },
      { name: "tokens", limit: 5, duration: 1000 }
    ]
  })
  return { kit, workspaceId: workspace.id, rootKey: key, keyId: rootKey.id }
}

export interface Answer {
  readonly status: number
  readonly contentType: string | null
  // Parsed JSON body; tests inspect it structurally.
  readonly body: {
    readonly meta: { readonly requestId: string }
    readonly data?: Record<string, unknown> & { readonly ratelimits?: ReadonlyArray<Record<string, unknown>> }
    readonly error?: {
      readonly title: string
      readonly detail: string
      readonly status: number
      readonly type: string
      readonly errors?: ReadonlyArray<{ readonly location: string; readonly message: string; readonly fix?: string }>
    }
  }
}

/** POSTs a body (object → JSON, string/bytes as is) with the seeded key unless headers say otherwise. */
export const call = (
  seeded: Seeded,
  body: unknown,
  headers: Record<string, string | undefined> = {},
  init: { readonly method?: string; readonly path?: string } = {}
): Effect.Effect<Answer> =>
  Effect.promise(async () => {
    const all: Record<string, string> = {}
    const merged = { authorization: `Bearer ${seeded.rootKey}`, "content-type": "application/json", ...headers }
    for (const [name, value] of Object.entries(merged)) if (value !== undefined) all[name] = value
    const method = init.method ?? "POST"
    const payload = body === undefined || method === "GET" || method === "HEAD"
      ? null
      : typeof body === "string"
      ? body
      : body instanceof Uint8Array
      ? new Uint8Array(body)
      : JSON.stringify(body)
    const response = await seeded.kit.fetch(
      new Request(`http://localhost${init.path ?? ROUTE}`, { method, headers: all, body: payload })
    )
    const text = await response.text()
    return { status: response.status, contentType: response.headers.get("content-type"), body: JSON.parse(text) }
  })
