/**
 * `identity-kit/platform`: the request program as an `@effect/platform` `HttpApp`, for Effect users
 * who run their own platform server: `HttpServer.serve(httpApp({ basePath: "/api" }))` with the
 * storage and `Authorization` layers provided. A thin wrapper: the platform request becomes a
 * `PlainRequest`, the `PlainResponse` a platform response. A subpath of its own, so hosts that do
 * not use it never load `@effect/platform` (~28 MiB of RSS).
 *
 * @example
 * ```ts
 * import { HttpApp } from "@effect/platform"
 * import { layerAuthorization, layerMemory } from "identity-kit"
 * import { httpApp } from "identity-kit/platform"
 * const runtime = ManagedRuntime.make(layerAuthorization.pipe(Layer.provideMerge(layerMemory)))
 * const handler = HttpApp.toWebHandlerRuntime(await runtime.runtime())(httpApp({ basePath: "/api" }))
 * ```
 */
import { HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { Effect, Option, Stream } from "effect"
import type { EndpointServices } from "./endpoint.js"
import { streamBody } from "./plain.js"
import { type HttpOptions, makeRequestProgram, resolveHttpOptions } from "./program.js"
import { type EndpointName, selectRoutes } from "./routes.js"

export type { HttpOptions } from "./program.js"

/** The app for Effect users: it takes `Authorization` and `IdentityStore` from the context. */
export const httpApp = (options?: HttpOptions & { readonly endpoints?: ReadonlyArray<EndpointName> | undefined }) => {
  const resolved = resolveHttpOptions(options)
  const program = makeRequestProgram(resolved, selectRoutes(options?.endpoints))
  const inContext = <A, E>(effect: Effect.Effect<A, E, EndpointServices>) => effect
  return Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const query = request.originalUrl.indexOf("?")
    const url = query === -1 ? request.originalUrl : request.originalUrl.slice(0, query)
    const response = yield* program({
      method: request.method,
      path: url.startsWith("/") ? url : new URL(url).pathname,
      headers: request.headers,
      body: streamBody(request.source instanceof Request ? request.source.body : Stream.toReadableStream(request.stream)),
      remoteAddress: Option.getOrUndefined(request.remoteAddress)
    }, inContext)
    return HttpServerResponse.text(response.body, {
      status: response.status,
      headers: response.headers,
      contentType: response.headers["content-type"] ?? "application/json"
    })
  }).pipe(
    // A raw HttpApp is uninterruptible: this lets a client abort interrupt the write.
    Effect.interruptible
  )
}
