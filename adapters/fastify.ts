/**
 * `identity-kit/fastify`: an encapsulated Fastify plugin (Fastify 4.26+ and 5) serving
 * `POST <prefix>/v2/identities.updateIdentity`, and 405 for its other methods. Unknown paths stay
 * with the host (its not-found handler).
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
import type { FastifyPluginAsync, FastifyReply } from "fastify"
import { InternalError, InvalidInput, MethodNotAllowed, PayloadTooLarge, ValidationIssue } from "../src/Errors.js"
import { ROUTE } from "../src/http/app.js"
import {
  abortSignalOf,
  errorResponse,
  fetchCanCarry,
  type KitOrOptions,
  resolveKit,
  responseHeaders,
  toWebRequest
} from "./node.js"

export type { IdentityKit, IdentityKitOptions, KitOrOptions } from "./node.js"

/** The plugin's options: the kit options (the plugin builds the kit and disposes it on close) or `{ kit }`. */
export type IdentityKitPluginOptions = KitOrOptions<unknown>

// Our value appended to one the host already set (its CORS and other headers survive).
const headerValue = (existing: unknown, value: string): string | Array<string> => {
  if (typeof existing === "string") return [existing, value]
  if (typeof existing === "number") return [String(existing), value]
  if (Array.isArray(existing)) return [...existing.filter((item): item is string => typeof item === "string"), value]
  return value
}

/** Writes a WHATWG `Response` through Fastify's reply (so the host's onSend hooks and logs see it). */
const sendResponse = async (reply: FastifyReply, response: Response): Promise<FastifyReply> => {
  const body = Buffer.from(await response.arrayBuffer())
  reply.status(response.status)
  for (const [name, value, replace] of responseHeaders(response)) {
    reply.header(name, replace ? value : headerValue(reply.getHeader(name), value))
  }
  return reply.send(body)
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

/**
 * The update-identity route as an encapsulated Fastify plugin. Register it with a `prefix` to mount it
 * below a path; `bodyLimit` is the kit's `maxBodyBytes`.
 */
export const identityKit: FastifyPluginAsync<IdentityKitPluginOptions> = async (fastify, options) => {
  const { kit, owned } = resolveKit(options)
  if (owned) fastify.addHook("onClose", async () => await kit.dispose())
  const limit = kit.options.maxBodyBytes
  const route = kit.options.basePath + ROUTE

  // Every body as raw bytes, whatever its Content-Type: the API answers a wrong Content-Type or bad
  // JSON with its own 400s (spec V2–V4). Only inside this plugin's scope.
  // Fastify routed it: the kit sees its own route (below the prefix), with the query kept.
  const kitUrl = (rawUrl: string | undefined): URL => {
    const query = rawUrl?.indexOf("?") ?? -1
    return new URL(route + (query === -1 || rawUrl === undefined ? "" : rawUrl.slice(query)), "http://localhost")
  }

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
    // A Content-Type Fastify cannot even parse: the API answers it, in the order of spec §2
    // (a missing Authorization first, then the content type), as on every other host.
    if (code === "FST_ERR_CTP_INVALID_MEDIA_TYPE") {
      const webRequest = toWebRequest(request.raw, { url: kitUrl(request.raw.url), maxBodyBytes: limit, body: new Uint8Array(0) })
      return await sendResponse(reply, await kit.fetch(webRequest, { remoteAddress: request.raw.socket.remoteAddress }))
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
    if (apiError._tag === "InternalError") request.log.error({ err: error }, "identity-kit: unexpected error")
    return await sendResponse(reply, errorResponse(kit, apiError))
  })

  fastify.all(route, { bodyLimit: limit }, async (request, reply) => {
    const signal = abortSignalOf(reply.raw)
    const url = kitUrl(request.raw.url)
    // A method fetch cannot carry (TRACE): 405, as for any other method but POST.
    if (!fetchCanCarry(request.method)) {
      return await sendResponse(reply, errorResponse(kit, new MethodNotAllowed({ method: request.method })))
    }
    // Our parser's Buffer; an empty body when Fastify had none to parse (never the spent stream).
    const body = Buffer.isBuffer(request.body) ? request.body : new Uint8Array(0)
    const webRequest = toWebRequest(request.raw, { url, maxBodyBytes: limit, signal, body })
    const response = await kit.fetch(webRequest, { remoteAddress: request.raw.socket.remoteAddress })
    // The client is gone and the kit's work was interrupted: nothing to write.
    if (reply.raw.destroyed) return reply.hijack()
    return await sendResponse(reply, response)
  })
}
