/**
 * `identity-kit/node`: Node's `http` straight into the kit's request program, shared by the Express
 * and Fastify adapters. `IncomingMessage` → `PlainRequest` (path as sent below the mount point, Node's
 * own header object, the body read with plain listeners or re-encoded from a body parser), the
 * `PlainResponse` written with `writeHead`/`end` (headers added to the host's), client abort → the
 * request fiber interrupted. No WHATWG `Request`/`Response` on this path: that bridge cost ~120 µs
 * and ~35 KiB a request (issue 7); it lives on only in `kit.fetch`.
 *
 * @example
 * ```ts
 * import { createServer } from "node:http"
 * import { layerMemory } from "identity-kit"
 * import { createNodeHandler } from "identity-kit/node"
 * const handler = createNodeHandler({ storage: layerMemory })
 * const server = createServer(handler).listen(3000)
 * // on shutdown: server.close(); await handler.dispose()
 * ```
 */
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from "node:http"
import { Cause, Effect } from "effect"
import { type ApiError, InternalError } from "../src/Errors.js"
import { type BodyReader, headerValue, hostRequestIdOf, type PlainBody, type PlainRequest, type PlainResponse } from "../src/http/plain.js"
import { type IdentityKit, type IdentityKitOptions, makeIdentityKit } from "../src/IdentityKit.js"

export type { ConnectionInfo, IdentityKit, IdentityKitOptions } from "../src/IdentityKit.js"

/** What every adapter takes: the options to build its own kit, or `{ kit }` to share one. */
export type KitOrOptions<E = never> = IdentityKitOptions<E> | { readonly kit: IdentityKit }

/** The kit an adapter uses, and whether the adapter built it (and so disposes it). */
export const resolveKit = <E>(options: KitOrOptions<E>): { readonly kit: IdentityKit; readonly owned: boolean } => {
  // Checked here, not left to `in` (whose own TypeError names no option): the same sentence on every adapter.
  if (typeof options !== "object" || options === null) {
    throw new TypeError("identity-kit: options are required, e.g. { storage: layerMemory } or { kit }")
  }
  return "kit" in options ? { kit: options.kit, owned: false } : { kit: makeIdentityKit(options), owned: true }
}

/**
 * Where each kit is mounted, per server (an Express app, a Fastify root instance): a kit may serve
 * several servers, but the same kit twice in one server is almost always a mistake (two mount paths
 * serving the same routes, one of them usually by accident). Keyed by `kit.handle`, which copies of
 * a kit (`createFetchHandler({ kit })`) share.
 */
const mounts = new WeakMap<IdentityKit["handle"], WeakMap<object, { first: object; where: string; warned: boolean }>>()

/**
 * Records that `kit` serves `server` through `mount` (a middleware, a plugin registration) at
 * `where`; warns once (a Node process warning, `IDENTITY_KIT_MOUNTED_TWICE`) when the same server
 * already has it through another mount. One mount seen at several paths (Express `/:tenant`, or a
 * case-insensitive match) is one mount.
 */
export const noteMount = (kit: IdentityKit, server: object, mount: object, where: string, framework: string): void => {
  let byServer = mounts.get(kit.handle)
  if (byServer === undefined) {
    byServer = new WeakMap()
    mounts.set(kit.handle, byServer)
  }
  const seen = byServer.get(server)
  if (seen === undefined) return void byServer.set(server, { first: mount, where, warned: false })
  if (seen.first === mount || seen.warned) return
  seen.warned = true
  const before = seen.where
  process.emitWarning(
    `identity-kit: one kit is mounted twice in the same ${framework} app (at ${JSON.stringify(before)} and ` +
      `${JSON.stringify(where)}): both serve its routes. Mount it once, or build a kit per mount point.`,
    { code: "IDENTITY_KIT_MOUNTED_TWICE" }
  )
}

/**
 * Warns once (`IDENTITY_KIT_BASE_PATH_AND_MOUNT`) when a kit with a `basePath` is also mounted below a
 * path by the framework: its routes are then at mount path + basePath (`/api/api/v2/…`).
 */
export const warnBasePathAndMount = (kit: IdentityKit, mountPath: string, framework: string): void => {
  const basePath = kit.options.basePath
  process.emitWarning(
    `identity-kit: the kit has basePath ${JSON.stringify(basePath)} and is mounted by ${framework} at ` +
      `${JSON.stringify(mountPath)}: its routes are at ${mountPath}${basePath}/v2/identities.*. ` +
      `Let ${framework}'s mount path do it alone: drop basePath.`,
    { code: "IDENTITY_KIT_BASE_PATH_AND_MOUNT" }
  )
}

/** The path of a request target as sent (no query), without resolving `.` or `..` segments. */
export const rawPathname = (target: string | undefined): string => {
  const path = target ?? "/"
  const query = path.indexOf("?")
  return query === -1 ? path : path.slice(0, query)
}

/**
 * Whether something (a body parser) already read the body stream. Express 4's body-parser marks
 * `req._body`; Express 5's sets no marker but leaves the stream ended. `'body' in req` says nothing:
 * body-parser sets `req.body` even when it skipped the request (trpc/trpc#7446).
 */
const bodyConsumed = (req: IncomingMessage): boolean =>
  Reflect.get(req, "_body") === true || req.readableEnded || (req.complete && !req.readable)

/**
 * A body a parser left in `req.body`, as bytes again: Buffer as is, string as UTF-8, anything else
 * as JSON. `undefined` (Express 5 when nothing was parsed) is an empty body.
 */
const encodeParsedBody = (body: unknown): Uint8Array => {
  if (body === undefined) return new Uint8Array(0)
  if (body instanceof Uint8Array) return body
  if (typeof body === "string") return Buffer.from(body, "utf8")
  const json: unknown = JSON.stringify(body)
  return typeof json === "string" ? Buffer.from(json, "utf8") : new Uint8Array(0)
}

/** The `Content-Length` the client declared, if it declared a valid one. */
const declaredLength = (req: IncomingMessage): number | undefined => {
  const header = req.headers["content-length"]
  return header !== undefined && /^\d+$/.test(header) ? Number(header) : undefined
}

/**
 * Reads the request stream with plain listeners, counting bytes against the limit. Past it: stops,
 * answers "too-large" and lets the rest drain (`resume()`), so the connection is not stalled; the
 * answer then closes the connection (see `writePlainResponse`). The response's 'close' before the
 * end means the client went away mid-body (the request's own 'close' fires only after its body).
 */
export const readRequestBody = (req: IncomingMessage, res: ServerResponse): BodyReader => (limit, done) => {
  if (req.destroyed || res.destroyed) return done(new Error("the request body was not received in full"))
  const chunks: Array<Buffer> = []
  let size = 0
  let settled = false
  const settle = () => {
    settled = true
    req.off("data", onData)
    req.off("end", onEnd)
    req.off("error", onError)
    res.off("close", onClose)
  }
  const onData = (chunk: Buffer | string) => {
    const bytes = typeof chunk === "string" ? Buffer.from(chunk, "utf8") : chunk
    size += bytes.length
    if (size > limit) {
      settle()
      req.resume()
      return done("too-large")
    }
    chunks.push(bytes)
  }
  const onEnd = () => {
    settle()
    const first = chunks[0]
    done(chunks.length === 1 && first !== undefined ? first : Buffer.concat(chunks, size))
  }
  const onError = (error: unknown) => {
    settle()
    done(error instanceof Error ? error : new Error("the request body stream failed"))
  }
  const onClose = () => onError(new Error("the request body was not received in full"))
  req.on("data", onData)
  req.on("end", onEnd)
  req.on("error", onError)
  res.on("close", onClose)
  return () => {
    if (settled) return
    settle()
    req.resume()
  }
}

/** A body whose read already ended without bytes: the program gets the same outcome when it reads. */
const readOutcome = (outcome: "too-large" | Error): BodyReader => (_limit, done) => done(outcome)

// Headers Node frames itself (or that only the server may set).
const framing = new Set(["content-length", "transfer-encoding", "connection", "keep-alive"])
// Headers that describe our body: ours replace the host's. Every other one is added to the host's.
const describesBody = new Set(["content-type", "content-encoding", "content-language", "content-location"])

/**
 * The value to set for one of our headers, given what the host already set under that name (its
 * CORS and other headers survive): ours alone for the headers that describe our body or when the host
 * set none, else the host's values followed by ours. `undefined`: a framing header, not ours to set.
 */
export const mergedHeader = (
  name: string,
  value: string,
  existing: number | string | ReadonlyArray<string> | undefined
): string | Array<string> | undefined => {
  if (framing.has(name)) return undefined
  if (existing === undefined || describesBody.has(name)) return value
  if (typeof existing === "string") return [existing, value]
  if (typeof existing === "number") return [String(existing), value]
  return [...existing, value]
}

/**
 * Writes a `PlainResponse` to a `ServerResponse` in one `writeHead` and one `end`: our headers added
 * to those the host set, Content-Length from the body. Nothing is written once the client is gone.
 * When the client is still sending its body (we stopped reading at the limit, or never read it),
 * the answer closes the connection (as Fastify does) instead of reading a body nobody wants.
 */
const writePlainResponse = (res: ServerResponse, response: PlainResponse, req: IncomingMessage): void => {
  if (res.destroyed || res.writableEnded) return
  if (res.headersSent) {
    res.end()
    return
  }
  const headers: OutgoingHttpHeaders = {}
  const ours = response.headers
  for (const name in ours) {
    const value = ours[name]
    if (value === undefined) continue
    const merged = mergedHeader(name, value, res.getHeader(name))
    if (merged !== undefined) headers[name] = merged
  }
  // Node would frame a string passed to `end` itself, but not after `writeHead`; HEAD has no body.
  if (req.method !== "HEAD") headers["content-length"] = Buffer.byteLength(response.body, "utf8")
  if (!req.complete) headers["connection"] = "close"
  res.writeHead(response.status, headers)
  res.end(response.body, "utf8")
}

/** A bug in an adapter, logged with its stack through the kit's logger (its `logger` option). */
export const logDefect = (kit: IdentityKit, message: string, cause: unknown): void => {
  kit.run(Effect.logError(message, Cause.die(cause))).catch(() => {
    // The kit is disposed or its storage cannot start: the defect must still be seen.
    console.error(message, cause)
  })
}

/** Answers a failure of the adapter itself: 500 with the fixed sentence, logged, never echoed. */
const answerDefect = (kit: IdentityKit, req: IncomingMessage, res: ServerResponse, cause: unknown): void => {
  logDefect(kit, "identity-kit: the Node adapter failed", cause)
  try {
    if (res.headersSent) res.destroy()
    else writePlainResponse(res, kit.answerError(new InternalError({ cause }), req.headers), req)
  } catch {
    res.destroy()
  }
}

/** What a framework on top of Node knows about a request that `IncomingMessage` does not say. */
export interface NodeRequestFacts {
  /**
   * The client address under the framework's own proxy settings (Express `req.ip` with its
   * `trust proxy`): recorded as is. Absent, the kit's `trustProxy` option decides.
   */
  readonly clientIp?: string | undefined
  /** The framework's id for the request (e.g. pino-http's `req.id`); absent, an `X-Request-Id` header. */
  readonly requestId?: unknown
}

/** Runs the program on one request and writes its answer; a client abort interrupts it. */
const serve = (
  kit: IdentityKit,
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  body: PlainBody,
  facts: NodeRequestFacts | undefined
): void => {
  const request: PlainRequest = {
    method: req.method ?? "GET",
    path,
    headers: req.headers,
    body,
    remoteAddress: req.socket.remoteAddress,
    clientIp: facts?.clientIp,
    hostRequestId: hostRequestIdOf(facts?.requestId ?? headerValue(req.headers, "x-request-id"))
  }
  const cancel = kit.handle(request, (response) => {
    try {
      writePlainResponse(res, response, req)
    } catch (cause) {
      answerDefect(kit, req, res, cause)
    }
  })
  // Answered already (the program often completes synchronously once it has the bytes).
  if (res.writableEnded) return
  // The response's 'close', not the request's: the request's fires as soon as its body has been
  // read (trpc/trpc#6432). Closed before our answer was written in full: the client went away.
  res.once("close", () => {
    if (!res.writableEnded) cancel()
  })
}

/**
 * Serves one request through a kit and writes the answer. `path` is the path the kit routes on: the
 * request target as sent, without the query (Express hands in its mount-relative one). Never throws:
 * a failure of the adapter itself is answered 500 and logged.
 *
 * The body: the one a parser left (re-encoded) when the stream was consumed — never a wait on an
 * ended stream (better-auth#3295). Else, for a POST to a served route whose declared length is within
 * the limit (the only requests the program reads), the stream is read first and the program starts
 * with the bytes: it then runs to its answer without waiting in the middle. A request fiber
 * suspended across the body's arrival cost ~20 µs and ~5 KiB more a request (memory storage): its
 * objects outlive young-generation collections and V8 starts allocating them in the old generation.
 * Any other request gets a reader the program does not call: it answers 404, 405 or 413 (from the
 * header) without the body. `facts.clientIp`: the client as the framework on top determined it
 * (Express `req.ip`); without it the kit's `trustProxy` option decides.
 */
export const handleNodeRequest = (
  kit: IdentityKit,
  req: IncomingMessage,
  res: ServerResponse,
  path: string = rawPathname(req.url),
  facts?: NodeRequestFacts
): void => {
  try {
    // The client is already gone: nobody to answer.
    if (res.destroyed) return
    if (bodyConsumed(req)) {
      // A parser's value for an empty body (`{}` from express.json()) is not what the client sent.
      const body = declaredLength(req) === 0 ? new Uint8Array(0) : encodeParsedBody(Reflect.get(req, "body"))
      return serve(kit, req, res, path, body, facts)
    }
    const limit = kit.options.maxBodyBytes
    const declared = declaredLength(req)
    if (req.method !== "POST" || (declared !== undefined && declared > limit) || !kit.handles(path)) {
      return serve(kit, req, res, path, readRequestBody(req, res), facts)
    }
    readRequestBody(req, res)(limit, (result) => {
      try {
        // The client went away in the middle of its body: nobody to answer, nothing to run.
        if (res.destroyed) return
        serve(kit, req, res, path, result instanceof Uint8Array ? result : readOutcome(result), facts)
      } catch (cause) {
        answerDefect(kit, req, res, cause)
      }
    })
  } catch (cause) {
    answerDefect(kit, req, res, cause)
  }
}

/**
 * Serves one request with a body the caller chose (for a framework that met the body first: the
 * text a body parser failed on, or `readRequestBody` when that parser left the stream unread).
 * Never throws.
 */
export const handleNodeRequestWithBody = (
  kit: IdentityKit,
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  body: PlainBody,
  facts?: NodeRequestFacts
): void => {
  try {
    if (res.destroyed) return
    serve(kit, req, res, path, body, facts)
  } catch (cause) {
    answerDefect(kit, req, res, cause)
  }
}

/** Answers an API error a framework met before the program ran (its body parser's), as the program would. Never throws. */
export const answerNodeError = (kit: IdentityKit, req: IncomingMessage, res: ServerResponse, error: ApiError): void => {
  try {
    writePlainResponse(res, kit.answerError(error, req.headers), req)
  } catch (cause) {
    answerDefect(kit, req, res, cause)
  }
}

/** A `(req, res)` handler for `http.createServer`, with the kit it serves and its `dispose`. */
export interface NodeHandler {
  (req: IncomingMessage, res: ServerResponse): void
  /** The kit behind the handler (for `kit.admin`, or to share it with another adapter). */
  readonly kit: IdentityKit
  /** Disposes the kit if this handler built it; a kit passed in as `{ kit }` is its owner's to dispose. */
  readonly dispose: () => Promise<void>
}

/**
 * A request listener for `http.createServer` (or `https`): the routes, and a 404 JSON for any other
 * path (this handler owns the whole server; use the Express or Fastify adapter to share one). The
 * audit log records the socket's peer address, or an `X-Forwarded-For` value when the kit's
 * `trustProxy` option says the proxies in front are trusted.
 */
export const createNodeHandler = <E = never>(options: KitOrOptions<E>): NodeHandler => {
  const { kit, owned } = resolveKit(options)
  const handler = (req: IncomingMessage, res: ServerResponse): void => handleNodeRequest(kit, req, res)
  return Object.assign(handler, { kit, dispose: owned ? kit.dispose : () => Promise.resolve() })
}
