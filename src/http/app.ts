/**
 * The HTTP boundary of the core, on `@effect/platform`: route and method, body bytes under a size
 * limit, the handler, and every typed error rendered through the one table in `Errors.ts`.
 */
import { HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { Cause, Effect, Option, type Runtime, Stream } from "effect"
import {
  type ApiError,
  InternalError,
  InvalidInput,
  MethodNotAllowed,
  PayloadTooLarge,
  renderError,
  RouteNotFound,
  type StorageError,
  ValidationIssue
} from "../Errors.js"
import { newId } from "../domain/Ids.js"
import { handleValidated } from "../handler/updateIdentity.js"
import type { Authorization } from "../services/Authorization.js"
import type { IdentityStore } from "../services/IdentityStore.js"
import { ClientAddress, RequestContext, remoteIpOf } from "../services/RequestContext.js"
import { RequestValidator } from "../services/RequestValidator.js"

/** The route this package serves, below the base path. */
export const ROUTE = "/v2/identities.updateIdentity"

/** Options of the HTTP boundary, shared by every adapter. */
export interface HttpOptions {
  /** Path prefix the route lives under for the fetch handler, e.g. `"/api"`. Default `""`. */
  readonly basePath?: string | undefined
  /** Largest accepted body in bytes; larger ones get 413. Default 10 MiB (spec §1). */
  readonly maxBodyBytes?: number | undefined
  /** Base of `error.type` URLs. Default `https://unkey.com/docs/errors/`. */
  readonly errorTypeBaseUrl?: string | undefined
}

/** `HttpOptions` with the defaults filled in. */
export interface ResolvedHttpOptions {
  readonly basePath: string
  readonly maxBodyBytes: number
  readonly errorTypeBaseUrl: string
}

/** Fills in the defaults of `HttpOptions` and checks them. */
export const resolveHttpOptions = (options: HttpOptions = {}): ResolvedHttpOptions => {
  const maxBodyBytes = options.maxBodyBytes ?? 10 * 1024 * 1024
  if (!Number.isSafeInteger(maxBodyBytes) || maxBodyBytes < 1) {
    throw new TypeError(`identity-kit: maxBodyBytes must be a positive integer, got ${options.maxBodyBytes}`)
  }
  return {
    basePath: (options.basePath ?? "").replace(/\/+$/, ""),
    maxBodyBytes,
    errorTypeBaseUrl: options.errorTypeBaseUrl ?? "https://unkey.com/docs/errors/"
  }
}

/** Whether a pathname is this package's route under `basePath`. */
export const isRoute = (pathname: string, basePath: string): boolean => pathname === basePath + ROUTE

const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  HttpServerResponse.unsafeJson(body, { status, headers })

const unreadable = () =>
  new InvalidInput({
    detail: "The request body could not be read.",
    errors: [new ValidationIssue({ location: "body", message: "the body stream failed or was aborted" })]
  })

/**
 * Reads the body, failing with 413 as soon as it passes `limit` bytes (the declared length first).
 * A plain reader loop in one promise: an Effect stream here cost ~0.5 ms per request (bench/).
 * Interruption (a client abort) cancels the reader.
 */
const readBody = (request: HttpServerRequest.HttpServerRequest, limit: number) =>
  Effect.gen(function*() {
    const declared = Number(request.headers["content-length"] ?? "0")
    if (declared > limit) return yield* new PayloadTooLarge({ limit })
    // A web Request's own body; any other server's request (Node via @effect/platform-node, say)
    // through its Effect stream.
    const stream = request.source instanceof Request
      ? request.source.body
      : Stream.toReadableStream(request.stream)
    if (stream === null) return new Uint8Array(0)
    const bytes = yield* Effect.tryPromise({
      try: async (signal) => {
        const reader = stream.getReader()
        const cancel = () => void reader.cancel().catch(() => {})
        signal.addEventListener("abort", cancel, { once: true })
        try {
          const chunks: Array<Uint8Array> = []
          let size = 0
          for (;;) {
            const { done, value } = await reader.read()
            if (done) return Buffer.concat(chunks, size)
            size += value.length
            if (size > limit) {
              cancel()
              return null
            }
            chunks.push(value)
          }
        } finally {
          signal.removeEventListener("abort", cancel)
        }
      },
      catch: unreadable
    })
    return bytes ?? (yield* new PayloadTooLarge({ limit }))
  })

/** Logs a storage failure with its cause (the answer never carries it). */
const logStorageFailure = (error: StorageError) =>
  Effect.logError("identity-kit: storage failure", error.operation, Cause.fail(error.cause))

/**
 * The whole app: `POST <basePath>/v2/identities.updateIdentity`, everything else 404/405.
 *
 * `services` hands in the storage-backed services (authorization, storage) when the request first
 * needs them — after routing, the size limit and validation (spec §2: V before H1) — so a database
 * that is down never turns a client's mistake into a 500.
 */
export const makeHttpApp = <R = never>(
  options: ResolvedHttpOptions,
  services: Effect.Effect<Runtime.Runtime<Authorization | IdentityStore>, StorageError, R>
) => {
  const handle = Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const { pathname } = new URL(request.originalUrl, "http://localhost")
    if (!isRoute(pathname, options.basePath)) return yield* new RouteNotFound({ path: pathname })
    if (request.method !== "POST") return yield* new MethodNotAllowed({ method: request.method })
    const body = yield* readBody(request, options.maxBodyBytes)
    const validator = yield* RequestValidator
    const validated = yield* validator.validate({
      authorization: request.headers["authorization"],
      contentType: request.headers["content-type"],
      body
    })
    // The storage runtime's context *and* its FiberRefs: a logger or tracer the host put in the
    // storage layer applies to requests too, so storage failures are logged inside it.
    return yield* handleValidated(validated).pipe(
      Effect.tapErrorTag("StorageError", logStorageFailure),
      Effect.provide(yield* services)
    )
  })

  return Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const peer = yield* Effect.serviceOption(ClientAddress)
    const requestId = newId("req")
    const context = {
      requestId,
      remoteIp: remoteIpOf(request.headers["x-forwarded-for"], Option.getOrUndefined(peer)),
      userAgent: request.headers["user-agent"] ?? ""
    }
    const answerError = (error: ApiError) => {
      const { status, body } = renderError(error, requestId, options.errorTypeBaseUrl)
      return json(status, body, error._tag === "MethodNotAllowed" ? { allow: "POST" } : {})
    }
    return yield* handle.pipe(
      Effect.map((data) => json(200, { meta: { requestId }, data })),
      // Failures to start the storage happen before its runtime exists: logged here.
      Effect.tapErrorTag("StorageError", (error) => error.operation === "startup" ? logStorageFailure(error) : Effect.void),
      Effect.catchAll((error) => Effect.succeed(answerError(error))),
      Effect.catchAllDefect((defect) =>
        Effect.logError("identity-kit: unexpected defect", Cause.die(defect)).pipe(
          Effect.as(answerError(new InternalError({ cause: defect })))
        )),
      Effect.provideService(RequestContext, context),
      Effect.withSpan("identity-kit.request", { attributes: { "request.id": requestId } })
    )
  }).pipe(
    // A raw HttpApp is uninterruptible: this lets a client abort interrupt the write.
    Effect.interruptible
  )
}

/**
 * The app for Effect users who run their own `@effect/platform` server: it takes `Authorization`
 * and `IdentityStore` (and `RequestValidator`) from the context, e.g.
 * `HttpServer.serve(httpApp({ basePath: "/api" }))` with `layerMemory` and `Authorization.layer` provided.
 */
export const httpApp = (options?: HttpOptions) =>
  makeHttpApp(resolveHttpOptions(options), Effect.runtime<Authorization | IdentityStore>())
