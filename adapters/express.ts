/**
 * `identity-kit/express`: an Express middleware (Express 4 and 5) serving the kit's routes, e.g.
 * `POST <mount>/v2/identities.updateIdentity`. Every other path goes on to the host's next handler.
 *
 * Mount it with `app.use` (or `router.use`) at any path — the routes are matched below the mount
 * point — before or after `express.json()` / `express.raw()` / `express.text()`: a body a parser
 * already read is re-encoded from `req.body`. Mounted before the body parsers, every malformed body
 * gets the API's own 400 JSON; mounted after `express.json()`, a body that parser rejects (bad JSON,
 * over the parser's own `limit`) is answered by the host's error handler, and an empty chunked body
 * reads as the `{}` the parser made of it. Put CORS middleware before it: it answers every method on
 * its routes (405 for all but POST).
 *
 * @example
 * ```ts
 * import express from "express"
 * import { layerMemory } from "identity-kit"
 * import { identityKit } from "identity-kit/express"
 * const identities = identityKit({ storage: layerMemory })
 * const app = express()
 * app.use("/api", identities) // POST /api/v2/identities.updateIdentity
 * const server = app.listen(3000)
 * // on shutdown: server.close(); await identities.dispose()
 * ```
 */
import type { RequestHandler } from "express"
import { handleNodeRequest, type KitOrOptions, rawPathname, resolveKit } from "./node.js"
import type { IdentityKit } from "./node.js"

export type { IdentityKit, IdentityKitOptions, KitOrOptions } from "./node.js"

/** The middleware, with the kit it serves and its `dispose`. */
export type IdentityKitMiddleware = RequestHandler & {
  /** The kit behind the middleware (for `kit.admin`, or to share it with another adapter). */
  readonly kit: IdentityKit
  /** Disposes the kit if this middleware built it; a kit passed in as `{ kit }` is its owner's to dispose. */
  readonly dispose: () => Promise<void>
}

/**
 * Express middleware for the kit's routes. Takes the kit options (it then builds and owns
 * its kit) or `{ kit }` to share a kit with other adapters.
 */
export const identityKit = <E = never>(options: KitOrOptions<E>): IdentityKitMiddleware => {
  const { kit, owned } = resolveKit(options)
  const middleware: RequestHandler = (req, res, next) => {
    // `req.url` is relative to the mount point in Express 4 and 5, nested routers included. It is
    // matched as sent: dot segments are not resolved, so `/x/../v2/…` is not a route.
    const path = rawPathname(req.url)
    if (!kit.handles(path)) return next()
    // Never throws (Express 4 would not catch a rejection either); errors are answered as JSON.
    handleNodeRequest(kit, req, res, path)
  }
  return Object.assign(middleware, { kit, dispose: owned ? kit.dispose : () => Promise.resolve() })
}
