/**
 * `identity-kit/node`: the bridge between Node's `http` and the kit's fetch handler, shared by the
 * Express and Fastify adapters. `IncomingMessage` → WHATWG `Request` (mount-relative URL, every
 * header, the body streamed or re-encoded from a body parser), `Response` → `ServerResponse`
 * (headers appended to the host's, cookies one by one), client abort → the request fiber interrupted.
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
import type { IncomingMessage, ServerResponse } from "node:http"
import { TLSSocket } from "node:tls"
import { type ApiError, InternalError, MethodNotAllowed, renderError, RouteNotFound } from "../src/Errors.js"
import { type IdentityKit, type IdentityKitOptions, makeIdentityKit } from "../src/IdentityKit.js"
import { newId } from "../src/domain/Ids.js"

export type { ConnectionInfo, IdentityKit, IdentityKitOptions } from "../src/IdentityKit.js"

/** What every adapter takes: the options to build its own kit, or `{ kit }` to share one. */
export type KitOrOptions<E = never> = IdentityKitOptions<E> | { readonly kit: IdentityKit }

/** The kit an adapter uses, and whether the adapter built it (and so disposes it). */
export const resolveKit = <E>(options: KitOrOptions<E>): { readonly kit: IdentityKit; readonly owned: boolean } =>
  "kit" in options ? { kit: options.kit, owned: false } : { kit: makeIdentityKit(options), owned: true }

/**
 * The request's URL with `path` (default `req.url`) as path and query. Express hands in its
 * mount-relative `req.url`, so the kit sees the same path whatever the mount point.
 */
export const requestUrl = (req: IncomingMessage, path: string = req.url ?? "/"): URL => {
  const url = new URL(req.socket instanceof TLSSocket ? "https://localhost" : "http://localhost")
  // Best effort only: the kit routes on the path, so an odd Host header must not fail the request.
  if (req.headers.host !== undefined) url.host = req.headers.host
  // Set path and query separately: `new URL("//x/y", base)` would read "x" as a host.
  const query = path.indexOf("?")
  url.pathname = query === -1 ? path : path.slice(0, query)
  url.search = query === -1 ? "" : path.slice(query)
  return url
}

/** The path of a request target as sent (no query), without resolving `.` or `..` segments. */
export const rawPathname = (target: string | undefined): string => {
  const path = target ?? "/"
  const query = path.indexOf("?")
  return query === -1 ? path : path.slice(0, query)
}

/** Every request header, repeated ones appended in order (`rawHeaders` keeps them apart). */
export const requestHeaders = (req: IncomingMessage): Headers => {
  const headers = new Headers()
  const raw = req.rawHeaders
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]
    const value = raw[i + 1]
    // HTTP/2 pseudo-headers (":path") are not headers a Request can carry.
    if (name === undefined || value === undefined || name.startsWith(":")) continue
    try {
      headers.append(name, value)
    } catch {
      // Node accepts a few bytes WHATWG Headers rejects; such a header is left out rather than
      // failing a request that does not need it.
    }
  }
  return headers
}

/**
 * Whether something (a body parser) already read the body stream. Express 4's body-parser marks
 * `req._body`; Express 5's sets no marker but leaves the stream ended. `'body' in req` says nothing:
 * body-parser sets `req.body` even when it skipped the request (trpc/trpc#7446).
 */
export const bodyConsumed = (req: IncomingMessage): boolean =>
  Reflect.get(req, "_body") === true || req.readableEnded || (req.complete && !req.readable)

/**
 * A body a parser left in `req.body`, as bytes again: Buffer as is, string as UTF-8, anything else
 * as JSON. `undefined` (Express 5 when nothing was parsed) is an empty body.
 */
export const encodeParsedBody = (body: unknown): Uint8Array => {
  if (body === undefined) return new Uint8Array(0)
  if (body instanceof Uint8Array) return body
  if (typeof body === "string") return new TextEncoder().encode(body)
  const json: unknown = JSON.stringify(body)
  return typeof json === "string" ? new TextEncoder().encode(json) : new Uint8Array(0)
}

/**
 * The body stream as a web stream, pulled with backpressure. Cancelling it (the kit stops at its
 * size limit) discards the rest instead of leaving the connection stalled.
 */
export const streamBody = (req: IncomingMessage): ReadableStream<Uint8Array> => {
  let settled = false
  let controller: ReadableStreamDefaultController<Uint8Array> | undefined
  const onData = (chunk: Buffer | string) => {
    controller?.enqueue(typeof chunk === "string" ? Buffer.from(chunk) : chunk)
    if ((controller?.desiredSize ?? 0) <= 0) req.pause()
  }
  const settle = () => {
    settled = true
    req.off("data", onData)
    req.off("end", onEnd)
    req.off("error", onError)
    req.off("close", onClose)
  }
  const onEnd = () => {
    if (settled) return
    settle()
    controller?.close()
  }
  const onError = (error: unknown) => {
    if (settled) return
    settle()
    controller?.error(error)
  }
  // 'close' without 'end': the client went away in the middle of the body.
  const onClose = () => onError(new Error("the request body was not received in full"))
  return new ReadableStream<Uint8Array>({
    start(c) {
      controller = c
      if (req.destroyed) return onClose()
      req.on("data", onData)
      req.on("end", onEnd)
      req.on("error", onError)
      req.on("close", onClose)
    },
    pull() {
      req.resume()
    },
    cancel() {
      settle()
      // Drain what is still coming: the answer (413) is written with `Connection: close` when the
      // client is still sending, see `writeWebResponse`.
      req.resume()
    }
  })
}

// Methods the fetch standard forbids: `new Request` throws for them.
const forbiddenMethods = new Set(["CONNECT", "TRACE", "TRACK"])

/** Whether a WHATWG `Request` can carry this method (`TRACE`, `CONNECT`, `TRACK` it cannot). */
export const fetchCanCarry = (method: string): boolean => !forbiddenMethods.has(method.toUpperCase())

/** How `toWebRequest` builds the request. */
export interface ToWebRequestOptions {
  /** The URL the kit sees; default `requestUrl(req)`. */
  readonly url?: URL | undefined
  /** A body declared (`Content-Length`) larger than this is not read: the kit answers 413 from the header. */
  readonly maxBodyBytes: number
  /** Aborted when the client goes away; interrupts the kit's work on this request. */
  readonly signal?: AbortSignal | undefined
  /** The body when the framework already has it (Fastify's content-type parser). */
  readonly body?: Uint8Array | undefined
}

/** The `Content-Length` the client declared, if it declared a valid one. */
const declaredLength = (req: IncomingMessage): number | undefined => {
  const header = req.headers["content-length"]
  return header !== undefined && /^\d+$/.test(header) ? Number(header) : undefined
}

const copy = (bytes: Uint8Array): Uint8Array<ArrayBuffer> => new Uint8Array(bytes)

/**
 * `IncomingMessage` → WHATWG `Request`. The body is the one a parser left (re-encoded) when the
 * stream was consumed, else the stream itself — never a wait on an ended stream (better-auth#3295).
 * Throws a `TypeError` for methods fetch cannot carry: check `fetchCanCarry` first.
 */
export const toWebRequest = (req: IncomingMessage, options: ToWebRequestOptions): Request => {
  const method = req.method ?? "GET"
  const headers = requestHeaders(req)
  const init: RequestInit & { duplex?: "half" } = { method, headers }
  if (options.signal !== undefined) init.signal = options.signal
  if (method !== "GET" && method !== "HEAD") {
    const declared = declaredLength(req)
    if (options.body !== undefined) {
      init.body = copy(options.body)
    } else if (bodyConsumed(req)) {
      // A parser's value for an empty body (`{}` from express.json()) is not what the client sent.
      init.body = declared === 0 ? new Uint8Array(0) : copy(encodeParsedBody(Reflect.get(req, "body")))
    } else {
      // Too large by its own account: leave the stream unread, the kit answers 413 from the header.
      if (declared === undefined || declared <= options.maxBodyBytes) {
        init.body = streamBody(req)
        init.duplex = "half"
      }
    }
  }
  return new Request(options.url ?? requestUrl(req), init)
}

/** An answer rendered through the kit's error table (same JSON shape, type URLs and request id). */
export const errorResponse = (kit: IdentityKit, error: ApiError): Response => {
  const { status, body } = renderError(error, newId("req"), kit.options.errorTypeBaseUrl)
  return Response.json(body, { status, headers: error._tag === "MethodNotAllowed" ? { allow: "POST" } : {} })
}

/** A signal aborted when the response is closed before it was completely written (client abort). */
export const abortSignalOf = (res: ServerResponse): AbortSignal => {
  const controller = new AbortController()
  // The response's 'close', not the request's: the request's fires as soon as its body has been
  // read (trpc/trpc#6432).
  if (res.destroyed) controller.abort()
  else res.once("close", () => res.writableEnded || controller.abort())
  return controller.signal
}

// Headers we do not copy from the Response: Node frames the body itself, cookies go one by one.
const notCopied = new Set(["content-length", "transfer-encoding", "connection", "keep-alive", "set-cookie"])
// Headers that describe our body: ours replace the host's. Every other one is appended to it.
const replaced = new Set(["content-type", "content-encoding", "content-language", "content-location"])

/** The headers to write, with the rule for each: replace or append to what the host has set. */
export const responseHeaders = (response: Response): ReadonlyArray<readonly [name: string, value: string, replace: boolean]> => {
  const out: Array<readonly [string, string, boolean]> = []
  response.headers.forEach((value, name) => {
    if (!notCopied.has(name)) out.push([name, value, replaced.has(name)])
  })
  for (const cookie of response.headers.getSetCookie()) out.push(["set-cookie", cookie, false])
  return out
}

/**
 * Writes a WHATWG `Response` to a `ServerResponse`: status, headers appended to those the host set
 * (CORS and the like survive), cookies one by one, body. Nothing is written once the client is gone.
 * When `req` is given and the client is still sending its body, the answer closes the connection
 * (as Fastify does) instead of reading a body nobody wants.
 */
export const writeWebResponse = async (res: ServerResponse, response: Response, req?: IncomingMessage): Promise<void> => {
  // The kit's answers are small JSON documents: buffer them and let Node set Content-Length.
  const body = response.body === null ? undefined : Buffer.from(await response.arrayBuffer())
  if (res.destroyed || res.writableEnded) return
  if (res.headersSent) {
    res.end()
    return
  }
  res.statusCode = response.status
  for (const [name, value, replace] of responseHeaders(response)) {
    if (replace || !res.hasHeader(name)) res.setHeader(name, value)
    else res.appendHeader(name, value)
  }
  if (req !== undefined && !req.complete) res.setHeader("connection", "close")
  res.end(body)
}

/** Answers a failure of the adapter itself: 500 with the fixed sentence, logged, never echoed. */
const answerDefect = async (kit: IdentityKit, res: ServerResponse, cause: unknown): Promise<void> => {
  console.error("identity-kit: the Node adapter failed", cause)
  if (res.headersSent) {
    res.destroy()
    return
  }
  await writeWebResponse(res, errorResponse(kit, new InternalError({ cause })))
}

/**
 * Serves one request through a kit and writes the answer. `url` is the URL the kit sees (default
 * from `req.url`). Never rejects: a failure of the bridge itself is answered 500 and logged.
 */
export const handleNodeRequest = async (
  kit: IdentityKit,
  req: IncomingMessage,
  res: ServerResponse,
  requestedUrl?: URL
): Promise<void> => {
  try {
    const url = requestedUrl ?? requestUrl(req)
    const signal = abortSignalOf(res)
    const method = req.method ?? "GET"
    // Route on the path as sent: a URL resolves `/x/../v2/…` to the route, and a proxy rule on the
    // exact path must not be bypassed that way.
    if (requestedUrl === undefined && !kit.handles(rawPathname(req.url))) {
      return await writeWebResponse(res, errorResponse(kit, new RouteNotFound({ path: rawPathname(req.url) })), req)
    }
    if (!fetchCanCarry(method)) {
      // Answered as the kit answers any method but POST: 405 on the route, 404 elsewhere.
      const error = kit.handles(url.pathname) ? new MethodNotAllowed({ method }) : new RouteNotFound({ path: url.pathname })
      return await writeWebResponse(res, errorResponse(kit, error), req)
    }
    const request = toWebRequest(req, { url, maxBodyBytes: kit.options.maxBodyBytes, signal })
    const response = await kit.fetch(request, { remoteAddress: req.socket.remoteAddress })
    await writeWebResponse(res, response, req)
  } catch (cause) {
    await answerDefect(kit, res, cause).catch(() => res.destroy())
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
 * A request listener for `http.createServer` (or `https`): the route, and a 404 JSON for any other
 * path (this handler owns the whole server; use the Express or Fastify adapter to share one).
 */
export const createNodeHandler = <E = never>(options: KitOrOptions<E>): NodeHandler => {
  const { kit, owned } = resolveKit(options)
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    void handleNodeRequest(kit, req, res)
  }
  return Object.assign(handler, { kit, dispose: owned ? kit.dispose : () => Promise.resolve() })
}
