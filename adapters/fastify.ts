/**
 * `identity-kit/fastify`: an encapsulated Fastify plugin (Fastify 4.26+ and 5) serving the kit's
 * routes, e.g. `POST <prefix>/v2/identities.updateIdentity`, and 405 for their other methods. Unknown
 * paths stay with the host (its not-found handler): the plugin registers exactly the kit's routes.
 *
 * The plugin is deliberately not wrapped in `fastify-plugin`: its content-type parser (every body
 * taken raw, so the API checks Content-Type and JSON itself) and its error handler (the API's 413
 * JSON for Fastify's `bodyLimit`) stay inside its own scope and never reach the host's routes
 * (trpc/trpc#1715).
 *
 * @example
 * ```ts
 * import Fastify from "fastify"
 * import { layerMemory } from "identity-kit"
 * import { identityKit } from "identity-kit/fastify"
 * const app = Fastify()
 * await app.register(identityKit, { storage: layerMemory, prefix: "/api" })
 * await app.listen({ port: 3000 }) // POST /api/v2/identities.updateIdentity; app.close() disposes the kit
 * ```
 */
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from "fastify"
import { InternalError, InvalidInput, PayloadTooLarge, ValidationIssue } from "../src/Errors.js"
import { hostRequestIdOf, type PlainRequest, type PlainResponse } from "../src/http/plain.js"
import {
  type IdentityKit,
  type KitOrOptions,
  logDefect,
  mergedHeader,
  noteMount,
  resolveKit,
  warnBasePathAndMount
} from "./node.js"

export type { IdentityKit, IdentityKitOptions, KitOrOptions } from "./node.js"

/** The plugin's options: the kit options (the plugin builds the kit and disposes it on close) or `{ kit }`. */
export type IdentityKitPluginOptions = KitOrOptions<unknown>

/**
 * Writes a `PlainResponse` through Fastify's reply (so the host's onSend hooks and logs see it): our
 * headers added to those the host set (its CORS survives), the JSON as the payload.
 */
const sendPlainResponse = (reply: FastifyReply, response: PlainResponse): FastifyReply => {
  reply.status(response.status)
  const ours = response.headers
  for (const name in ours) {
    const value = ours[name]
    if (value === undefined) continue
    const merged = mergedHeader(name, value, reply.getHeader(name))
    if (merged !== undefined) reply.header(name, merged)
  }
  // Bytes, as before: a string payload would make Fastify append `; charset=utf-8` to our Content-Type.
  return reply.send(Buffer.from(response.body, "utf8"))
}

// What Fastify's errors carry, read off an unknown value.
const errorOf = (error: unknown): { readonly code: string | undefined; readonly statusCode: number | undefined; readonly message: string } => {
  if (typeof error !== "object" || error === null) return { code: undefined, statusCode: undefined, message: String(error) }
  const code: unknown = Reflect.get(error, "code")
  const statusCode: unknown = Reflect.get(error, "statusCode")
  const message: unknown = Reflect.get(error, "message")
  return {
    code: typeof code === "string" ? code : undefined,
    statusCode: typeof statusCode === "number" ? statusCode : undefined,
    message: typeof message === "string" ? message : "the request could not be read"
  }
}

// The route config key under which each registered route keeps the kit's own path for it (the
// error handler is shared by every route of the plugin, and Fastify's URL carries the prefix).
const KIT_PATH = "identityKitPath"

/** The kit's path for the route Fastify matched (registered in `config`), else the kit's first route. */
const kitPathOf = (kit: IdentityKit, request: FastifyRequest): string => {
  const path: unknown = Reflect.get(request.routeOptions.config, KIT_PATH)
  return typeof path === "string" ? path : kit.routes[0] ?? "/"
}

/**
 * The plain request for one Fastify request: Fastify routed it, the kit sees its own path. The
 * client IP is Fastify's `request.ip`, which follows the host's `trustProxy` setting.
 */
const plainRequest = (request: FastifyRequest, path: string, body: Uint8Array): PlainRequest => ({
  method: request.raw.method ?? request.method,
  path,
  headers: request.raw.headers,
  body,
  remoteAddress: request.raw.socket.remoteAddress,
  clientIp: request.ip,
  // Fastify's own id (its `genReqId`, or the header its `requestIdHeader` names): what its logs carry.
  hostRequestId: hostRequestIdOf(request.id)
})

/**
 * The kit's routes as an encapsulated Fastify plugin. Register it with a `prefix` to mount them below
 * a path; `bodyLimit` is the kit's `maxBodyBytes`.
 */
export const identityKit: FastifyPluginAsync<IdentityKitPluginOptions> = async (fastify, options) => {
  const { kit, owned } = resolveKit(options)
  if (owned) fastify.addHook("onClose", async () => await kit.dispose())
  // Misconfigurations Fastify lets us see at registration (its `prefix`; the root instance owns
  // the HTTP server every encapsulated instance shares).
  const prefix = fastify.prefix
  if (prefix !== "" && kit.options.basePath !== "") warnBasePathAndMount(kit, prefix, "Fastify")
  noteMount(kit, fastify.server, fastify, prefix === "" ? "/" : prefix, "Fastify")
  const limit = kit.options.maxBodyBytes

  // Every body as raw bytes, whatever its Content-Type: the API answers a wrong Content-Type or bad
  // JSON with its own 400s (spec V2–V4). Only inside this plugin's scope.
  fastify.removeAllContentTypeParsers()
  fastify.addContentTypeParser("*", { parseAs: "buffer", bodyLimit: limit }, (_request, body, done) => {
    done(null, body)
  })

  // Errors Fastify raises before our handler runs (body over `bodyLimit`, a body cut short), in the
  // API's JSON shape. Fastify has already set `Connection: close` for those.
  // Only Fastify's own body errors (FST_ERR_CTP_*) are ours to answer; anything else — a host hook's
  // 401 or 429, say — goes back to the host's error handler unchanged.
  fastify.setErrorHandler(async (error: unknown, request, reply) => {
    const { code, statusCode, message } = errorOf(error)
    // The client went away in the middle of its body: nobody to answer, nothing for the host to log.
    if (request.raw.destroyed || reply.raw.destroyed) return reply.hijack()
    // A Content-Type Fastify cannot even parse: the program answers it with an empty body, in the
    // order of spec §2 (a missing Authorization first, then the content type), as on every other host.
    if (code === "FST_ERR_CTP_INVALID_MEDIA_TYPE") {
      const plain = plainRequest(request, kitPathOf(kit, request), new Uint8Array(0))
      return await new Promise<FastifyReply>((resolve) => {
        kit.handle(plain, (response) => resolve(sendPlainResponse(reply, response)))
      })
    }
    if (code === undefined || !code.startsWith("FST_ERR_CTP_")) throw error
    const apiError = code === "FST_ERR_CTP_BODY_TOO_LARGE"
      ? new PayloadTooLarge({ limit })
      : statusCode !== undefined && statusCode >= 400 && statusCode < 500
      ? new InvalidInput({
        detail: "The request body could not be read.",
        errors: [new ValidationIssue({ location: "body", message })]
      })
      : new InternalError({ cause: error })
    if (apiError._tag === "InternalError") logDefect(kit, "identity-kit: unexpected error", error)
    return sendPlainResponse(reply, kit.answerError(apiError, request.raw.headers))
  })

  // The kit's health route (`healthPath`), when set: answered by the program like the others.
  const healthPath = kit.options.healthPath
  const paths = healthPath === undefined ? kit.routes : [...kit.routes, healthPath]
  for (const path of paths) {
    // A plain (not async) handler that sends when the program answers: no promise per request, and
    // nothing left pending for Fastify when a client abort cancels the request.
    fastify.all(path, { bodyLimit: limit, config: { [KIT_PATH]: path } }, (request, reply) => {
      // Our parser's Buffer; an empty body when Fastify had none to parse (never the spent stream).
      const body = Buffer.isBuffer(request.body) ? request.body : new Uint8Array(0)
      const res = reply.raw
      let answered = false
      const cancel = kit.handle(plainRequest(request, path, body), (response) => {
        answered = true
        // The client is gone (its request was interrupted before this answer): nothing to write.
        if (res.destroyed) return
        try {
          sendPlainResponse(reply, response)
        } catch (cause) {
          // As a rejected async handler would: Fastify's error handling, then the host's handler.
          reply.send(cause instanceof Error ? cause : new Error("identity-kit: the answer could not be sent"))
        }
      })
      // Closed before the answer was written: the client went away, interrupt the request.
      if (!answered) {
        res.once("close", () => {
          if (!answered && !res.writableEnded) cancel()
        })
      }
    })
  }
}
