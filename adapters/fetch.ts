/**
 * `identity-kit/fetch`: a WHATWG fetch handler, `(request) => Promise<Response>`, for Node's http
 * (through any Request/Response bridge), Bun, Deno, Cloudflare-style runtimes and tests.
 *
 * @example
 * ```ts
 * import { createFetchHandler } from "identity-kit/fetch"
 * import { layerMemory } from "identity-kit"
 * const handler = createFetchHandler({ storage: layerMemory, basePath: "/api" })
 * Bun.serve({ fetch: handler.fetch })
 * // on shutdown: await handler.dispose()
 * ```
 */
import { type IdentityKit, type IdentityKitOptions, makeIdentityKit } from "../src/IdentityKit.js"

export type { ConnectionInfo, IdentityKit, IdentityKitOptions } from "../src/IdentityKit.js"

/**
 * A fetch handler built once from a storage layer (or sharing an existing kit's runtime).
 * Unknown paths answer 404 JSON, other methods on the route 405. `dispose()` releases a kit the
 * handler built; a kit passed in as `{ kit }` stays its owner's to dispose. The audit log records
 * `fetch(request, { remoteAddress })`'s address, or an `X-Forwarded-For` value under `trustProxy`.
 */
export const createFetchHandler = <E>(options: IdentityKitOptions<E> | { readonly kit: IdentityKit }): IdentityKit => {
  // Checked here, not left to `in` (whose own TypeError names no option): the Node adapters' sentence.
  if (typeof options !== "object" || options === null) {
    throw new TypeError("identity-kit: options are required, e.g. { storage: layerMemory } or { kit }")
  }
  return "kit" in options ? { ...options.kit, dispose: () => Promise.resolve() } : makeIdentityKit(options)
}
