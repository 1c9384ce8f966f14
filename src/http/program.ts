/**
 * The request program: one `PlainRequest` in, one `PlainResponse` out, as one Effect. Routing, the
 * method, the size limit, the body read, validation (spec §2 V), the endpoint's handler, the success
 * envelope and every typed error rendered through the one table in `Errors.ts`. Every entry point
 * (the fetch handler, the Node handler, Express, Fastify, `httpApp`) is a thin wrapper over it.
 *
 * It runs on the kit's built runtime with `Runtime.runCallback`: no `HttpApp`, no `Scope`, no
 * per-request layer or runtime provided, and spans only when tracing is on (src/internal/trace.ts).
 */
import { Cause, Duration, Effect, Either, FiberId, HashSet } from "effect"
import {
  type ApiError,
  InternalError,
  InvalidInput,
  MethodNotAllowed,
  PayloadTooLarge,
  renderError,
  RouteNotFound,
  type ServiceUnavailable,
  StorageError,
  ValidationIssue
} from "../Errors.js"
import { newId } from "../domain/Ids.js"
import { causeMessages, type FailureLog, makeFailureLog } from "../internal/log.js"
import { withRequestSpan } from "../internal/trace.js"
import { IdentityStore } from "../services/IdentityStore.js"
import type { EndpointServices, Route } from "./endpoint.js"
import { headerValue, type PlainBody, type PlainRequest, type PlainResponse } from "./plain.js"
import { acceptRequest, clientIpOf, type TrustProxy } from "./request.js"

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
  /**
   * The request deadline: from the request's start when the adapter hands in the body's bytes (Node,
   * Express, Fastify), else from the storage step (a slow upload is not cut off). Past it the
   * request (its storage work, building the storage included) is interrupted and answered as the
   * endpoint's storage failure (500), logged once as "identity-kit: request timed out". Checked by
   * one coarse timer per kit: up to 25% late. Default 10 seconds.
   */
  readonly requestTimeout?: Duration.DurationInput | undefined
  /**
   * A health route, e.g. `"/healthz"`, matched as is (not under `basePath`; below the mount point
   * in Express and the prefix in Fastify): GET/HEAD answer 200 `{"status":"ok"}` when storage
   * answers, else 503 `{"status":"unavailable"}`. Default: none.
   */
  readonly healthPath?: string | undefined
}

/** `HttpOptions` with the defaults filled in. */
export interface ResolvedHttpOptions {
  readonly basePath: string
  readonly maxBodyBytes: number
  readonly errorTypeBaseUrl: string
  readonly trustProxy: TrustProxy
  /** The request deadline in milliseconds. */
  readonly requestTimeoutMs: number
  readonly healthPath: string | undefined
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
  const requestTimeoutMs = durationMs(options.requestTimeout ?? DEFAULT_REQUEST_TIMEOUT)
  if (requestTimeoutMs === undefined || requestTimeoutMs < 1 || requestTimeoutMs > MAX_TIMER_MS) {
    throw new TypeError(
      `identity-kit: requestTimeout must be a duration from 1 millisecond to ${MAX_TIMER_MS} ms, e.g. "10 seconds"`
    )
  }
  const healthPath: unknown = options.healthPath
  if (healthPath !== undefined && (typeof healthPath !== "string" || !healthPath.startsWith("/"))) {
    throw new TypeError(`identity-kit: healthPath must be a path starting with "/", e.g. "/healthz"`)
  }
  return {
    basePath: basePath.replace(/\/+$/, ""),
    maxBodyBytes,
    errorTypeBaseUrl: options.errorTypeBaseUrl ?? "https://unkey.com/docs/errors/",
    trustProxy,
    requestTimeoutMs,
    healthPath
  }
}

/** The default request deadline. */
export const DEFAULT_REQUEST_TIMEOUT: Duration.Duration = Duration.seconds(10)

// setTimeout's largest delay.
export const MAX_TIMER_MS = 2_147_483_647

/** A duration input in milliseconds, or undefined when it is not one (a host's typo must not throw from Effect). */
export const durationMs = (input: Duration.DurationInput): number | undefined => {
  const decoded = Duration.decodeUnknown(input)
  if (decoded._tag === "None") return undefined
  const ms = Duration.toMillis(decoded.value)
  return Number.isFinite(ms) ? ms : undefined
}

/**
 * The cheap storage round trip behind `kit.health()`, `kit.ready()` and the health route: the
 * storage answers and its schema is at the migration this version needs (a partly migrated
 * database fails here, not on the first request).
 */
export const probeStorage: Effect.Effect<void, StorageError, IdentityStore> = Effect.flatMap(
  IdentityStore,
  (store) => store.probe
)

/** A hash no root key can have (hashes are base64): an indexed lookup that finds nothing. */
const PING_HASH = "identity-kit:health-probe"

/**
 * A round trip to storage that takes no lock another instance's migration holds (the root-key
 * lookup of every request): the health check once the schema was verified.
 */
export const pingStorage: Effect.Effect<void, StorageError, IdentityStore> = Effect.flatMap(
  IdentityStore,
  (store) => Effect.asVoid(store.findRootKey(PING_HASH))
)

/**
 * Gives the handler its services: on the kit's built runtime they are already there; before it is
 * built (or when it failed to build) this builds it, failing with the `StorageError` answered as
 * 500; once the kit is disposing, it fails with `ServiceUnavailable` (503).
 */
export type ProvideServices<R> = <A, E>(
  effect: Effect.Effect<A, E, EndpointServices>
) => Effect.Effect<A, E | StorageError | ServiceUnavailable, R>

/** Told when a request's storage work starts (the kit's request deadline runs from then). */
export interface StorageStart {
  startStorage(): void
}

/**
 * The program for a set of routes: `(request, provide, deadline?) => Effect<PlainResponse>` that
 * never fails. `deadline.startStorage()` is called as the handler is handed to `provide`.
 */
export type RequestProgram = <R>(
  request: PlainRequest,
  provide: ProvideServices<R>,
  deadline?: StorageStart,
  requestId?: string
) => Effect.Effect<PlainResponse, never, R>

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

/** The facts a request's log lines carry: the kit's request id and the host's, when it has one. */
export const requestAnnotations = (requestId: string, request: PlainRequest): Record<string, unknown> =>
  request.hostRequestId === undefined
    ? { requestId, method: request.method, path: request.path }
    : { requestId, hostRequestId: request.hostRequestId, method: request.method, path: request.path }

/**
 * Logs a storage failure (the answer never carries its cause): one line per failure, rate-limited,
 * the cause's messages instead of a stack (a database that is down is expected, not a bug).
 */
export const logStorageFailure = (
  log: FailureLog,
  error: StorageError,
  annotations: Record<string, unknown>
): Effect.Effect<void> =>
  log.error("identity-kit: storage failure", {
    ...annotations,
    operation: error.operation,
    error: causeMessages(error.cause).join(": ")
  })

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

/**
 * The response header carrying the request id of the body's `meta.requestId`, as Unkey's API sends
 * it: on every answer of an endpoint, success or error.
 */
export const REQUEST_ID_HEADER = "x-unkey-request-id"

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
  return {
    status: rendered.status,
    headers: error._tag === "MethodNotAllowed"
      ? { "content-type": contentType, [REQUEST_ID_HEADER]: requestId, allow: "POST" }
      : { "content-type": contentType, [REQUEST_ID_HEADER]: requestId },
    body: JSON.stringify(body)
  }
}

const HEALTH_OK: PlainResponse = { status: 200, headers: JSON_HEADERS, body: JSON.stringify({ status: "ok" }) }
/** The health route's answer when storage does not answer. */
export const HEALTH_UNAVAILABLE: PlainResponse = { status: 503, headers: JSON_HEADERS, body: JSON.stringify({ status: "unavailable" }) }
const HEALTH_METHOD_NOT_ALLOWED: PlainResponse = {
  status: 405,
  headers: { ...JSON_HEADERS, allow: "GET, HEAD" },
  body: JSON.stringify({ status: "method_not_allowed" })
}

/** The fiber id the request deadline interrupts a request with: how the kit tells it from a client abort. */
export const DEADLINE: FiberId.FiberId = FiberId.make(-1, 0)

/** Whether a request's fiber ended because its deadline passed (see `DEADLINE`). */
export const interruptedByDeadline = (cause: Cause.Cause<unknown>): boolean =>
  HashSet.has(Cause.interruptors(cause), DEADLINE)

/** What a request is answered when its deadline passed: that endpoint's storage failure (500). */
export const deadlineError = (ms: number): StorageError =>
  new StorageError({ operation: "timeout", cause: new Error(`no answer from storage within ${ms} ms`) })

/** Builds the request program for `routes` under `options`. */
/** What a kit gives its program besides the options and routes. */
export interface ProgramHooks {
  /** Where expected failures are logged (rate-limited). Default: a limiter of the program's own. */
  readonly log?: FailureLog | undefined
  /** Whether a request's span continues an incoming `traceparent`. Default `true`. */
  readonly continueTrace?: boolean | undefined
  /** The health route's storage check. Default `probeStorage`. */
  readonly healthCheck?: Effect.Effect<void, StorageError, IdentityStore> | undefined
}

export const makeRequestProgram = (
  options: ResolvedHttpOptions,
  routes: ReadonlyArray<Route>,
  hooks: ProgramHooks = {}
): RequestProgram => {
  const log = hooks.log ?? makeFailureLog()
  const continueTrace = hooks.continueTrace ?? true
  const healthCheck = hooks.healthCheck ?? probeStorage
  const byPath = new Map(routes.map((route) => [options.basePath + route.path, route]))

  // The request deadline is the kit's (a coarse sweep over the requests in flight, see IdentityKit.ts);
  // the health route is no hot path: a plain timeout keeps its answer a 503.
  const timeoutMs = options.requestTimeoutMs
  const healthDeadline = Effect.timeoutFail({ duration: timeoutMs, onTimeout: () => deadlineError(timeoutMs) })

  const health = <R>(request: PlainRequest, provide: ProvideServices<R>): Effect.Effect<PlainResponse, never, R> =>
    request.method !== "GET" && request.method !== "HEAD"
      ? Effect.succeed(HEALTH_METHOD_NOT_ALLOWED)
      : provide(healthCheck).pipe(
        healthDeadline,
        Effect.match({ onFailure: () => HEALTH_UNAVAILABLE, onSuccess: () => HEALTH_OK })
      )

  const answer = <R>(request: PlainRequest, requestId: string, provide: ProvideServices<R>, deadline: StorageStart | undefined) =>
    Effect.gen(function*() {
      const route = byPath.get(request.path)
      if (route === undefined) {
        if (request.path === options.healthPath) return yield* health(request, provide)
        return yield* new RouteNotFound({ path: request.path })
      }
      if (request.method !== "POST") return yield* new MethodNotAllowed({ method: request.method })
      const declared = declaredLength(request)
      if (declared !== undefined && declared > options.maxBodyBytes) {
        return yield* new PayloadTooLarge({ limit: options.maxBodyBytes })
      }
      const body = yield* readBody(request.body, options.maxBodyBytes)
      const accepted = acceptRequest({
        authorization: headerValue(request.headers, "authorization"),
        contentType: headerValue(request.headers, "content-type"),
        body
      }, route)
      if (Either.isLeft(accepted)) return yield* accepted.left
      // Storage joins only now (spec §2: V before H1), so a database that is down never turns a
      // client's mistake into a 500.
      // Logged inside `provide`: with the storage runtime's logger when the host put one there.
      deadline?.startStorage()
      const success = yield* provide(accepted.right.handler({
        authorization: accepted.right.authorization,
        requestId,
        hostRequestId: request.hostRequestId,
        // The host's own answer when it has one (Express `req.ip`, Fastify `request.ip`).
        remoteIp: request.clientIp ??
          clientIpOf(headerValue(request.headers, "x-forwarded-for"), request.remoteAddress, options.trustProxy),
        userAgent: headerValue(request.headers, "user-agent") ?? ""
      }).pipe(Effect.tapErrorTag("StorageError", (error) =>
        logStorageFailure(log, error, { ...requestAnnotations(requestId, request), endpoint: route.name }))))
      const response: PlainResponse = {
        status: 200,
        headers: { "content-type": APPLICATION_JSON, [REQUEST_ID_HEADER]: requestId },
        body: JSON.stringify({ meta: { requestId }, ...success })
      }
      return response
    })

  return <R>(
    request: PlainRequest,
    provide: ProvideServices<R>,
    deadline?: StorageStart,
    requestId: string = newId("req", Date.now())
  ) => {
    const fail = (error: ApiError) => errorResponse(error, requestId, options, request.headers, byPath.get(request.path))
    return answer(request, requestId, provide, deadline).pipe(
      Effect.catchAll((error) =>
        // A storage that failed to start was logged once by the kit (not once per waiting request).
        Effect.succeed(fail(error))
      ),
      Effect.catchAllDefect((defect) =>
        Effect.as(
          Effect.annotateLogs(
            Effect.logError("identity-kit: unexpected defect", Cause.die(defect)),
            requestAnnotations(requestId, request)
          ),
          fail(new InternalError({ cause: defect }))
        )
      ),
      withRequestSpan("identity-kit.request", request, requestId, continueTrace)
    )
  }
}
