/**
 * The request program: one `PlainRequest` in, one `PlainResponse` out, as one Effect. Routing, the
 * method, the size limit, the body read, validation (spec §2 V), the endpoint's handler, the success
 * envelope and every typed error rendered through the one table in `Errors.ts`. Every entry point
 * (the fetch handler, the Node handler, Express, Fastify, `httpApp`) is a thin wrapper over it.
 *
 * It runs on the kit's built runtime with `Runtime.runCallback`: no `HttpApp`, no `Scope`, no
 * per-request layer or runtime provided, and spans only when tracing is on (src/internal/trace.ts).
 */
import { Cause, Effect, Either } from "effect"
import {
  type ApiError,
  InternalError,
  InvalidInput,
  MethodNotAllowed,
  PayloadTooLarge,
  renderError,
  RouteNotFound,
  type ServiceUnavailable,
  type StorageError,
  ValidationIssue
} from "../Errors.js"
import { newId } from "../domain/Ids.js"
import { withSpan } from "../internal/trace.js"
import type { EndpointServices, Route } from "./endpoint.js"
import { headerValue, type PlainBody, type PlainRequest, type PlainResponse } from "./plain.js"
import { clientIpOf, parseRequest, schemaDetail, type TrustProxy } from "./request.js"

/** Options of the HTTP boundary, shared by every adapter. */
export interface HttpOptions {
  /** Path prefix the routes live under for the fetch and Node handlers, e.g. `"/api"`. Default `""`. */
  readonly basePath?: string | undefined
  /** Largest accepted body in bytes; larger ones get 413. Default 10 MiB (spec §1). */
  readonly maxBodyBytes?: number | undefined
  /** Base of `error.type` URLs. Default `https://unkey.com/docs/errors/`. */
  readonly errorTypeBaseUrl?: string | undefined
  /**
   * Which proxies the fetch and Node handlers trust to name the client in `X-Forwarded-For` for the
   * audit log: `false` (default) records the peer address, `true` the first `X-Forwarded-For`
   * value, a number `n` the value `n` hops from the server. Express and Fastify hand in their own
   * `req.ip` / `request.ip` (their `trust proxy` / `trustProxy` settings) instead.
   */
  readonly trustProxy?: TrustProxy | undefined
}

/** `HttpOptions` with the defaults filled in. */
export interface ResolvedHttpOptions {
  readonly basePath: string
  readonly maxBodyBytes: number
  readonly errorTypeBaseUrl: string
  readonly trustProxy: TrustProxy
}

const isTrustProxy = (value: unknown): value is TrustProxy =>
  typeof value === "boolean" || (typeof value === "number" && Number.isSafeInteger(value) && value >= 0)

/** Fills in the defaults of `HttpOptions` and checks them. */
export const resolveHttpOptions = (options: HttpOptions = {}): ResolvedHttpOptions => {
  const maxBodyBytes = options.maxBodyBytes ?? 10 * 1024 * 1024
  if (!Number.isSafeInteger(maxBodyBytes) || maxBodyBytes < 1) {
    throw new TypeError(`identity-kit: maxBodyBytes must be a positive integer, got ${options.maxBodyBytes}`)
  }
  const basePath = options.basePath ?? ""
  if (typeof basePath !== "string") throw new TypeError(`identity-kit: basePath must be a string`)
  const trustProxy: unknown = options.trustProxy ?? false
  if (!isTrustProxy(trustProxy)) {
    throw new TypeError(`identity-kit: trustProxy must be a boolean or a number of hops, got ${String(trustProxy)}`)
  }
  return {
    basePath: basePath.replace(/\/+$/, ""),
    maxBodyBytes,
    errorTypeBaseUrl: options.errorTypeBaseUrl ?? "https://unkey.com/docs/errors/",
    trustProxy
  }
}

/**
 * Gives the handler its services: on the kit's built runtime they are already there; before it is
 * built (or when it failed to build) this builds it, failing with the `StorageError` answered as
 * 500; once the kit is disposing, it fails with `ServiceUnavailable` (503).
 */
export type ProvideServices<R> = <A, E>(
  effect: Effect.Effect<A, E, EndpointServices>
) => Effect.Effect<A, E | StorageError | ServiceUnavailable, R>

/** The program for a set of routes: `(request, provide) => Effect<PlainResponse>` that never fails. */
export type RequestProgram = <R>(request: PlainRequest, provide: ProvideServices<R>) => Effect.Effect<PlainResponse, never, R>

const APPLICATION_JSON = "application/json"
const PROBLEM_JSON = "application/problem+json"
const JSON_HEADERS: Readonly<Record<string, string>> = { "content-type": APPLICATION_JSON }

const unreadable = () =>
  new InvalidInput({
    detail: "The request body could not be read.",
    errors: [new ValidationIssue({ location: "body", message: "the body stream failed or was aborted" })]
  })

/** The body bytes, failing with 413 past `limit`; an interrupted read stops the reader. */
const readBody = (body: PlainBody, limit: number): Effect.Effect<Uint8Array, PayloadTooLarge | InvalidInput> =>
  body instanceof Uint8Array
    ? body.length > limit ? Effect.fail(new PayloadTooLarge({ limit })) : Effect.succeed(body)
    : Effect.async<Uint8Array, PayloadTooLarge | InvalidInput>((resume) => {
      const stop = body(limit, (result) =>
        resume(
          result === "too-large"
            ? Effect.fail(new PayloadTooLarge({ limit }))
            : result instanceof Error
            ? Effect.fail(unreadable())
            : Effect.succeed(result)
        ))
      return typeof stop === "function" ? Effect.sync(stop) : undefined
    })

/** The `Content-Length` the client declared, when it is a valid number. */
const declaredLength = (request: PlainRequest): number | undefined => {
  const header = headerValue(request.headers, "content-length")
  return header !== undefined && /^\d+$/.test(header) ? Number(header) : undefined
}

/** Logs a storage failure with its cause (the answer never carries it). */
const logStorageFailure = (error: StorageError) =>
  Effect.logError("identity-kit: storage failure", error.operation, Cause.fail(error.cause))

/**
 * The `Content-Type` of an error (identities contract §0.5, as the reference negotiates it):
 * `application/problem+json` when `Accept` lists it, `application/*` or any type; else
 * `application/json`. Successes are always `application/json`.
 */
export const errorContentType = (accept: string | undefined): string => {
  if (accept !== undefined) {
    for (const item of accept.split(",")) {
      const semicolon = item.indexOf(";")
      const media = (semicolon === -1 ? item : item.slice(0, semicolon)).trim().toLowerCase()
      if (media === "application/problem+json" || media === "application/*" || media === "*/*") return PROBLEM_JSON
    }
  }
  return APPLICATION_JSON
}

const PROBLEM_JSON_HEADERS: Readonly<Record<string, string>> = { "content-type": "application/problem+json" }

/**
 * How the program answers an error: status, body and headers from the one error table; a storage
 * failure with the sentence of the endpoint it happened on.
 */
export const errorResponse = (
  error: ApiError,
  requestId: string,
  options: ResolvedHttpOptions,
  headers: PlainRequest["headers"],
  route?: Route
): PlainResponse => {
  const rendered = renderError(error, requestId, options.errorTypeBaseUrl)
  const failure = error._tag === "StorageError" ? route?.storageFailure : undefined
  const body = failure === undefined ? rendered.body : {
    ...rendered.body,
    error: {
      ...rendered.body.error,
      detail: failure.detail,
      type: failure.type === undefined ? rendered.body.error.type : options.errorTypeBaseUrl + failure.type
    }
  }
  const contentType = errorContentType(headerValue(headers, "accept"))
  const base = contentType === PROBLEM_JSON ? PROBLEM_JSON_HEADERS : JSON_HEADERS
  return {
    status: rendered.status,
    headers: error._tag === "MethodNotAllowed" ? { ...base, allow: "POST" } : base,
    body: JSON.stringify(body)
  }
}

/** Builds the request program for `routes` under `options`. */
export const makeRequestProgram = (options: ResolvedHttpOptions, routes: ReadonlyArray<Route>): RequestProgram => {
  const byPath = new Map(routes.map((route) => [options.basePath + route.path, route]))

  const answer = <R>(request: PlainRequest, requestId: string, provide: ProvideServices<R>) =>
    Effect.gen(function*() {
      const route = byPath.get(request.path)
      if (route === undefined) return yield* new RouteNotFound({ path: request.path })
      if (request.method !== "POST") return yield* new MethodNotAllowed({ method: request.method })
      const declared = declaredLength(request)
      if (declared !== undefined && declared > options.maxBodyBytes) {
        return yield* new PayloadTooLarge({ limit: options.maxBodyBytes })
      }
      const body = yield* readBody(request.body, options.maxBodyBytes)
      const parsed = parseRequest({
        authorization: headerValue(request.headers, "authorization"),
        contentType: headerValue(request.headers, "content-type"),
        body
      }, route.path)
      if (Either.isLeft(parsed)) return yield* parsed.left
      const decoded = route.decode(parsed.right.json)
      if (Either.isLeft(decoded)) {
        return yield* new InvalidInput({ detail: schemaDetail(route.path), errors: decoded.left })
      }
      // Storage joins only now (spec §2: V before H1), so a database that is down never turns a
      // client's mistake into a 500.
      // Logged inside `provide`: with the storage runtime's logger when the host put one there.
      const success = yield* provide(decoded.right({
        authorization: parsed.right.authorization,
        requestId,
        // The host's own answer when it has one (Express `req.ip`, Fastify `request.ip`).
        remoteIp: request.clientIp ??
          clientIpOf(headerValue(request.headers, "x-forwarded-for"), request.remoteAddress, options.trustProxy),
        userAgent: headerValue(request.headers, "user-agent") ?? ""
      }).pipe(Effect.tapErrorTag("StorageError", logStorageFailure)))
      const response: PlainResponse = {
        status: 200,
        headers: JSON_HEADERS,
        body: JSON.stringify({ meta: { requestId }, ...success })
      }
      return response
    })

  return <R>(request: PlainRequest, provide: ProvideServices<R>) => {
    const requestId = newId("req", Date.now())
    const fail = (error: ApiError) => errorResponse(error, requestId, options, request.headers, byPath.get(request.path))
    return answer(request, requestId, provide).pipe(
      Effect.catchAll((error) =>
        Effect.as(
          // A storage that failed to start never had a runtime to log in: logged here.
          error._tag === "StorageError" && error.operation === "startup" ? logStorageFailure(error) : Effect.void,
          fail(error)
        )
      ),
      Effect.catchAllDefect((defect) =>
        Effect.as(
          Effect.logError("identity-kit: unexpected defect", Cause.die(defect)),
          fail(new InternalError({ cause: defect }))
        )
      ),
      withSpan("identity-kit.request", { "request.id": requestId })
    )
  }
}
