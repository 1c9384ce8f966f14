/**
 * The hosts the adapter scenarios run through: the fetch handler in process, and Node http,
 * Express 4/5 and Fastify 4/5 listening on 127.0.0.1 — each with the mount points and body parsers
 * a real app uses. Every socket host sets a CORS header before our handler and answers unknown
 * paths with its own 404, so the tests see what reached the host and what did not.
 */
import { createServer, type Server } from "node:http"
import type { ErrorRequestHandler, Express, RequestHandler } from "express"
import express4 from "express4"
import express5 from "express5"
import fastify4, { type FastifyPluginAsync as FastifyPluginAsync4 } from "fastify4"
import fastify5 from "fastify5"
import { type IdentityKit, type IdentityKitOptions, makeIdentityKit } from "identity-kit"
import { identityKit as expressKit } from "identity-kit/express"
import { identityKit as fastifyKit, type IdentityKitPluginOptions } from "identity-kit/fastify"
import { createNodeHandler } from "identity-kit/node"

/** The CORS origin every socket host sets before the request reaches identity-kit. */
export const HOST_ORIGIN = "https://app.example"

/** What a host parsed before identity-kit saw the request. */
export type BodyParser = "json" | "raw" | "text" | "urlencoded" | undefined

/** A running host. */
export interface Host {
  readonly name: string
  readonly kind: "fetch" | "node" | "express" | "fastify"
  /** Where the API lives: the SDK's `serverURL`. */
  readonly baseUrl: string
  /** The server's origin (no mount path). */
  readonly origin: string
  /** The body parser in front of identity-kit, if any. */
  readonly parser: BodyParser
  /**
   * Express only: whether a body parser's errors reach the host's error handler because
   * `identities.errors` is not mounted (kept to show what that setup does).
   */
  readonly parserErrorsToHost: boolean
  /** The peer address of the test client as the host sees it (the client IP when no proxy is trusted). */
  readonly peerAddress: string
  readonly kit: IdentityKit
  /** A request to `baseUrl + path`, or to `origin + path` with `{ fromOrigin: true }`. */
  readonly send: (path: string, init?: RequestInit & { readonly fromOrigin?: boolean }) => Promise<Response>
  /** A `fetch` that reaches this host (for the SDK's HTTP client). */
  readonly fetch: (input: Request) => Promise<Response>
  readonly close: () => Promise<void>
}

/** What the host itself is told, beside the kit options. */
export interface HostOptions {
  /**
   * Which proxies to trust for the client IP (`"nearest"`: only the peer, i.e. one hop), in each
   * host's own terms: the kit's `trustProxy` for the fetch and Node handlers (`1`),
   * `app.set("trust proxy", …)` for Express (`1`), `trustProxy` for Fastify (`"127.0.0.1"`: Fastify
   * 5.12 treats any hop count as "trust nobody").
   */
  readonly trustProxy?: boolean | "nearest"
}

/** How to start one host. */
export interface HostConfig {
  readonly name: string
  readonly kind: Host["kind"]
  /** Whether the API lives below a path (base path, mount point or prefix) rather than at the root. */
  readonly mounted: boolean
  readonly start: (options: IdentityKitOptions<never>, host?: HostOptions) => Promise<Host>
}

const listen = async (server: Server): Promise<string> => {
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => resolve())
  })
  const address = server.address()
  if (address === null || typeof address === "string") throw new Error("not listening on TCP")
  return `http://127.0.0.1:${address.port}`
}

const closeServer = (server: Server) =>
  new Promise<void>((resolve) => {
    server.close(() => resolve())
    server.closeAllConnections()
  })

const socketHost = (
  base: Omit<Host, "send" | "fetch" | "baseUrl" | "peerAddress" | "parserErrorsToHost"> & { readonly parserErrorsToHost?: boolean },
  mount: string
): Host => {
  const baseUrl = base.origin + mount.replace(/\/+$/, "")
  return {
    parserErrorsToHost: false,
    ...base,
    baseUrl,
    peerAddress: "127.0.0.1",
    send: (path, { fromOrigin, ...init } = {}) => fetch((fromOrigin === true ? base.origin : baseUrl) + path, init),
    fetch: (input) => fetch(input)
  }
}

/** The kit option for a host whose trust setting is the kit's own (fetch and Node handlers). */
const trustOf = (host: HostOptions | undefined) =>
  host?.trustProxy === undefined ? {} : { trustProxy: host.trustProxy === "nearest" ? 1 : host.trustProxy }

/** The fetch handler, called in process; `basePath` is the kit's. */
const fetchHost = (basePath: string): HostConfig => ({
  name: `fetch basePath=${JSON.stringify(basePath)}`,
  kind: "fetch",
  mounted: basePath !== "",
  start: async (options, host) => {
    const kit = makeIdentityKit({ ...options, basePath, ...trustOf(host) })
    const origin = "http://identity-kit.test"
    const remoteAddress = "192.0.2.10"
    return {
      name: `fetch ${basePath}`,
      kind: "fetch",
      baseUrl: origin + basePath,
      origin,
      parser: undefined,
      parserErrorsToHost: false,
      peerAddress: remoteAddress,
      kit,
      send: (path, { fromOrigin, ...init } = {}) =>
        kit.fetch(new Request((fromOrigin === true ? origin : origin + basePath) + path, init), { remoteAddress }),
      fetch: (input) => kit.fetch(input, { remoteAddress }),
      close: () => kit.dispose()
    }
  }
})

/** `http.createServer(createNodeHandler(...))`, behind a listener that sets a CORS header. */
const nodeHost = (basePath: string): HostConfig => ({
  name: `node basePath=${JSON.stringify(basePath)}`,
  kind: "node",
  mounted: basePath !== "",
  start: async (options, host) => {
    const handler = createNodeHandler({ ...options, basePath, ...trustOf(host) })
    const server = createServer((req, res) => {
      res.setHeader("access-control-allow-origin", HOST_ORIGIN)
      handler(req, res)
    })
    const origin = await listen(server)
    return socketHost({
      name: "node",
      kind: "node",
      origin,
      parser: undefined,
      kit: handler.kit,
      close: async () => {
        await closeServer(server)
        await handler.dispose()
      }
    }, basePath)
  }
})

type ExpressModule = typeof express5

interface ExpressVariant {
  readonly label: string
  /** `app.use(mount, …)`; `nested` mounts a router in a router: `/outer` → `/inner/`. */
  readonly mount: "/" | "/api" | "/api/" | "nested"
  readonly parser?: BodyParser
  /** `express.json()` registered after identity-kit (it must not matter). */
  readonly jsonAfter?: boolean
  /** Share one kit (`{ kit }`) instead of letting the middleware build its own. */
  readonly shared?: boolean
  /** Leave `identities.errors` out (mounted by default, right after the middleware, at its path). */
  readonly noErrors?: boolean
}

const expressHost = (name: string, express: ExpressModule, variant: ExpressVariant): HostConfig => ({
  name: `${name} ${variant.label}`,
  kind: "express",
  mounted: variant.mount !== "/",
  start: async (options, host) => {
    const sharedKit = variant.shared === true ? makeIdentityKit(options) : undefined
    const middleware = expressKit(sharedKit === undefined ? options : { kit: sharedKit })
    const app: Express = express()
    if (host?.trustProxy !== undefined) app.set("trust proxy", host.trustProxy === "nearest" ? 1 : host.trustProxy)
    const mounted = variant.noErrors === true ? [middleware] : [middleware, middleware.errors]
    const cors: RequestHandler = (_req, res, next) => {
      res.setHeader("access-control-allow-origin", HOST_ORIGIN)
      next()
    }
    app.use(cors)
    if (variant.parser === "json") app.use(express.json())
    if (variant.parser === "raw") app.use(express.raw({ type: "*/*" }))
    if (variant.parser === "text") app.use(express.text({ type: "*/*" }))
    // A parser that skips JSON requests but still sets `req.body` (`{}` in Express 4, `undefined`
    // in 5): the request stream is unread and must be read (trpc/trpc#7446).
    if (variant.parser === "urlencoded") app.use(express.urlencoded({ extended: false }))
    let mount: string
    if (variant.mount === "nested") {
      const outer = express.Router()
      const inner = express.Router()
      inner.use(mounted)
      outer.use("/inner/", inner)
      app.use("/outer", outer)
      mount = "/outer/inner"
    } else {
      app.use(variant.mount, mounted)
      mount = variant.mount
    }
    if (variant.jsonAfter === true) app.use(express.json())
    const notFound: RequestHandler = (_req, res) => {
      res.status(404).json({ host: "not-found" })
    }
    const onError: ErrorRequestHandler = (error: unknown, _req, res, _next) => {
      const status: unknown = typeof error === "object" && error !== null ? Reflect.get(error, "status") : undefined
      res.status(typeof status === "number" ? status : 500).json({ host: "error" })
    }
    app.use(notFound)
    app.use(onError)
    const server = createServer(app)
    const origin = await listen(server)
    return socketHost({
      name: `${name} ${variant.label}`,
      kind: "express",
      origin,
      parser: variant.parser,
      parserErrorsToHost: variant.noErrors === true && variant.parser === "json",
      kit: middleware.kit,
      close: async () => {
        await closeServer(server)
        await middleware.dispose()
        await sharedKit?.dispose()
      }
    }, mount)
  }
})

interface FastifyApp {
  readonly listen: (options: { port: number; host: string }) => Promise<string>
  readonly close: () => PromiseLike<undefined> | Promise<void>
}

const fastifyHost = (
  name: string,
  prefix: string,
  build: (kit: IdentityKit, options: IdentityKitOptions<never>, host: HostOptions) => Promise<FastifyApp>
): HostConfig => ({
  name: `${name} prefix=${JSON.stringify(prefix)}`,
  kind: "fastify",
  mounted: prefix !== "",
  start: async (options, host = {}) => {
    const kit = makeIdentityKit(options)
    const app = await build(kit, options, host)
    const origin = await app.listen({ port: 0, host: "127.0.0.1" })
    return socketHost({
      name: `${name} ${prefix}`,
      kind: "fastify",
      origin,
      parser: undefined,
      kit,
      close: async () => {
        await app.close()
        await kit.dispose()
      }
    }, prefix)
  }
})

const fastifyTrust = (host: HostOptions): boolean | string =>
  host.trustProxy === "nearest" ? "127.0.0.1" : host.trustProxy ?? false

// The same host for Fastify 4 and 5 (their instance types differ, so the setup is spelled twice):
// a CORS header set in a root hook, the host's own not-found handler, a host JSON route beside the
// plugin (Fastify's JSON parser must still apply to it), the plugin with a shared kit and, under
// `/owned`, the plugin building and disposing its own kit.
// The plugin is typed against the installed `fastify`: v5 in this workspace, while a Fastify 4 app
// compiles it against its own v4 types. Only this test workspace mixes the two.
// @ts-expect-error -- v5 plugin type used on a v4 instance (same runtime contract)
export const fastifyKitV4: FastifyPluginAsync4<IdentityKitPluginOptions> = fastifyKit

// `forceCloseConnections`: undici opens a spare connection after an abort and never sends on it;
// Fastify's default ("idle") would wait for undici's 4 s keep-alive to close it.
const fastify4Host = (prefix: string) =>
  fastifyHost("fastify4", prefix, async (kit, options, host) => {
    const app = fastify4({ forceCloseConnections: true, trustProxy: fastifyTrust(host) })
    app.addHook("onRequest", async (_request, reply) => {
      reply.header("access-control-allow-origin", HOST_ORIGIN)
    })
    app.setNotFoundHandler(async (_request, reply) => reply.code(404).send({ host: "not-found" }))
    app.post("/host/json", async (request) => ({ received: request.body }))
    await app.register(fastifyKitV4, { kit, prefix })
    await app.register(fastifyKitV4, { ...options, basePath: "/owned", prefix })
    return app
  })

const fastify5Host = (prefix: string) =>
  fastifyHost("fastify5", prefix, async (kit, options, host) => {
    const app = fastify5({ forceCloseConnections: true, trustProxy: fastifyTrust(host) })
    app.addHook("onRequest", async (_request, reply) => {
      reply.header("access-control-allow-origin", HOST_ORIGIN)
    })
    app.setNotFoundHandler(async (_request, reply) => reply.code(404).send({ host: "not-found" }))
    app.post("/host/json", async (request) => ({ received: request.body }))
    await app.register(fastifyKit, { kit, prefix })
    await app.register(fastifyKit, { ...options, basePath: "/owned", prefix })
    return app
  })

const expressVariants: ReadonlyArray<ExpressVariant> = [
  { label: "mount=/", mount: "/" },
  { label: "mount=/api", mount: "/api", shared: true },
  { label: "mount=/api/", mount: "/api/" },
  { label: "nested router", mount: "nested" },
  { label: "json() before", mount: "/api", parser: "json" },
  { label: "json() before, no errors handler", mount: "/api", parser: "json", noErrors: true },
  { label: "json() after", mount: "/api", jsonAfter: true },
  { label: "raw() before", mount: "/", parser: "raw" },
  { label: "text() before", mount: "/api", parser: "text" },
  { label: "urlencoded() before", mount: "/api/", parser: "urlencoded" }
]

/** Every host configuration the scenarios run through. */
export const hostConfigs: ReadonlyArray<HostConfig> = [
  fetchHost(""),
  fetchHost("/api"),
  nodeHost(""),
  nodeHost("/api"),
  ...expressVariants.map((variant) => expressHost("express4", express4, variant)),
  ...expressVariants.map((variant) => expressHost("express5", express5, variant)),
  fastify4Host(""),
  fastify4Host("/api"),
  fastify5Host(""),
  fastify5Host("/api")
]

/** One configuration per host kind and version: for the per-host tests (SDK, audit, abort, CORS). */
export const hostKinds: ReadonlyArray<HostConfig> = [
  fetchHost(""),
  nodeHost(""),
  expressHost("express4", express4, { label: "mount=/api", mount: "/api", parser: "json" }),
  expressHost("express5", express5, { label: "mount=/api", mount: "/api", parser: "json" }),
  fastify4Host("/api"),
  fastify5Host("/api")
]
