/**
 * `identity-kit/express`: an Express middleware (Express 4 and 5) serving the kit's routes, e.g.
 * `POST <mount>/v2/identities.updateIdentity`. Every other path goes on to the host's next handler.
 *
 * Mount it with `app.use` (or `router.use`) at any path — the routes are matched below the mount
 * point — before or after `express.json()` / `express.raw()` / `express.text()`: a body a parser
 * already read is re-encoded from `req.body`. A body a parser in front *rejects* (bad JSON, over the
 * parser's own `limit`, a charset it refuses) never reaches a middleware: Express hands the error to
 * the error handlers. `identities.errors`, mounted at the same path, answers those on the kit's
 * routes with the API's own JSON errors and passes every other error on. Put CORS middleware before
 * it: it answers every method on its routes (405 for all but POST).
 *
 * The client IP in the audit log is Express's `req.ip`, which follows the app's `trust proxy`.
 *
 * @example
 * ```ts
 * import express from "express"
 * import { layerMemory } from "identity-kit"
 * import { identityKit } from "identity-kit/express"
 * const identities = identityKit({ storage: layerMemory })
 * const app = express()
 * app.use(express.json())
 * app.use("/api", identities, identities.errors) // POST /api/v2/identities.updateIdentity
 * const server = app.listen(3000)
 * // on shutdown: server.close(); await identities.dispose()
 * ```
 */
import type { ErrorRequestHandler, Request, RequestHandler } from "express"
import { InvalidInput, PayloadTooLarge, ValidationIssue } from "../src/Errors.js"
import {
  answerNodeError,
  handleNodeRequest,
  handleNodeRequestWithBody,
  type KitOrOptions,
  type NodeRequestFacts,
  noteMount,
  rawPathname,
  readRequestBody,
  resolveKit,
  warnBasePathAndMount
} from "./node.js"
import type { IdentityKit } from "./node.js"

export type { IdentityKit, IdentityKitOptions, KitOrOptions } from "./node.js"

/** The middleware, with the kit it serves, its error handler and its `dispose`. */
export type IdentityKitMiddleware = RequestHandler & {
  /** The kit behind the middleware (for `kit.admin`, or to share it with another adapter). */
  readonly kit: IdentityKit
  /**
   * Error-handling middleware for body parsers in front of the kit (`express.json()` and friends):
   * mount it at the same path as the middleware, after it (`app.use("/api", identities,
   * identities.errors)`). On the kit's routes a body parser's 4xx error is answered as the API's own
   * JSON error; any other error, and every error on other paths, goes on to `next(error)`.
   */
  readonly errors: ErrorRequestHandler
  /** Disposes the kit if this middleware built it; a kit passed in as `{ kit }` is its owner's to dispose. */
  readonly dispose: () => Promise<void>
}

/** A body-parser error the kit answers itself, read off an unknown value. */
interface ParserFailure {
  readonly type: string
  readonly message: string
  /** The parser's `limit` (entity.too.large). */
  readonly limit: number | undefined
  /** The text the parser failed on (entity.parse.failed, parameters.too.many), as bytes. */
  readonly body: Uint8Array | undefined
}

// body-parser's client-side failures (http-errors with a `type`). Left to the host: `entity.verify.failed`
// (the host's own `verify` refused the body) and the 500s (`stream.not.readable`: something else read
// the stream first — a host configuration error its own handler should see).
const answered = new Set([
  "entity.parse.failed",
  "entity.too.large",
  "parameters.too.many",
  "encoding.unsupported",
  "charset.unsupported",
  "request.aborted",
  "request.size.invalid"
])

const parserFailure = (error: unknown): ParserFailure | undefined => {
  if (typeof error !== "object" || error === null) return undefined
  const status: unknown = Reflect.get(error, "status")
  // A body that does not inflate (a bad gzip/deflate stream) comes as a 400 with zlib's code and no type.
  const code: unknown = Reflect.get(error, "code")
  const type: unknown = Reflect.get(error, "type") ?? (typeof code === "string" && code.startsWith("Z_") ? "encoding.invalid" : undefined)
  if (
    typeof type !== "string" || !(answered.has(type) || type === "encoding.invalid") ||
    typeof status !== "number" || status < 400 || status > 499
  ) {
    return undefined
  }
  const message: unknown = Reflect.get(error, "message")
  const limit: unknown = Reflect.get(error, "limit")
  const body: unknown = Reflect.get(error, "body")
  return {
    type,
    // http-errors' 4xx messages are meant for the client (`expose`): body-parser's own sentences.
    message: typeof message === "string" ? message : "the request body could not be parsed",
    limit: typeof limit === "number" && Number.isSafeInteger(limit) && limit > 0 ? limit : undefined,
    body: typeof body === "string" ? Buffer.from(body, "utf8") : body instanceof Uint8Array ? body : undefined
  }
}

/**
 * Whether the request stream is untouched: body-parser refuses some requests (a charset, a
 * Content-Encoding) before it reads a byte. `req._body` (Express 4) is set by then, so it is not a
 * sign here; the stream's own state is.
 */
const streamUnread = (req: Request): boolean => !req.readableEnded && !req.readableDidRead && !req.destroyed

const EMPTY = new Uint8Array(0)

/**
 * What Express knows that `IncomingMessage` does not: `req.ip` (the client under the app's `trust
 * proxy`) and a request id a logger middleware set (pino-http's `req.id`).
 */
const facts = (req: Request): NodeRequestFacts => ({ clientIp: req.ip, requestId: Reflect.get(req, "id") })

/**
 * Express middleware for the kit's routes. Takes the kit options (it then builds and owns
 * its kit) or `{ kit }` to share a kit with other adapters.
 */
export const identityKit = <E = never>(options: KitOrOptions<E>): IdentityKitMiddleware => {
  const { kit, owned } = resolveKit(options)
  // Each misconfiguration is said once per middleware, not per request.
  let warnedBasePath = false
  const middleware: RequestHandler = (req, res, next) => {
    // `req.url` is relative to the mount point in Express 4 and 5, nested routers included. It is
    // matched as sent: dot segments are not resolved, so `/x/../v2/…` is not a route.
    const path = rawPathname(req.url)
    if (!kit.handles(path)) {
      // A route requested as if there were no basePath, below a mount path: basePath and the mount
      // path were both set to the same prefix (`app.use("/api", identityKit({ basePath: "/api" }))`).
      if (!warnedBasePath && req.baseUrl !== "" && kit.options.basePath !== "" && kit.handles(kit.options.basePath + path)) {
        warnedBasePath = true
        warnBasePathAndMount(kit, req.baseUrl, "Express")
      }
      return next()
    }
    noteMount(kit, req.app, middleware, req.baseUrl === "" ? "/" : req.baseUrl, "Express")
    // Never throws (Express 4 would not catch a rejection either); errors are answered as JSON.
    // `req.ip`: the client under the app's `trust proxy` setting.
    handleNodeRequest(kit, req, res, path, facts(req))
  }
  // Four parameters: that is how Express tells an error handler from a middleware.
  const errors: ErrorRequestHandler = (error: unknown, req, res, next) => {
    const path = rawPathname(req.url)
    const failure = kit.handles(path) && !res.headersSent ? parserFailure(error) : undefined
    if (failure === undefined) return next(error)
    // Refused before a byte was read: read it ourselves, as if no parser had been there.
    if (streamUnread(req)) return handleNodeRequestWithBody(kit, req, res, path, readRequestBody(req, res), facts(req))
    // The text the parser could not parse: the program runs V1–V4 on it in the spec's order (a
    // missing Authorization is V1 and comes first), with the same answers as without the parser.
    if (failure.body !== undefined) return handleNodeRequestWithBody(kit, req, res, path, failure.body, facts(req))
    // The route, but not POST: the program's 405 comes before anything about the body.
    if (req.method !== "POST") return handleNodeRequestWithBody(kit, req, res, path, EMPTY, facts(req))
    // The bytes are gone (the parser drained them). Over its limit: our 413 with the smaller of
    // the two limits, the one the client must stay under. Else the body could not be read.
    const limit = Math.min(failure.limit ?? kit.options.maxBodyBytes, kit.options.maxBodyBytes)
    answerNodeError(
      kit,
      req,
      res,
      failure.type === "entity.too.large"
        ? new PayloadTooLarge({ limit })
        : new InvalidInput({
          detail: "The request body could not be read.",
          errors: [new ValidationIssue({ location: "body", message: failure.message })]
        })
    )
  }
  return Object.assign(middleware, { kit, errors, dispose: owned ? kit.dispose : () => Promise.resolve() })
}
