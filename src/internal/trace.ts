/**
 * Spans that cost nothing when tracing is off. `Effect.fn("name")` and `Effect.withSpan` build a span
 * (and capture a stack trace) on every call even with no tracer installed: ~200 µs and ~70 KiB a
 * request on the hot path (bench/). The kit turns `FiberRef.currentTracerEnabled` off unless the
 * host configured a tracer; these helpers then run the body bare.
 */
import { Effect, FiberRef, Tracer } from "effect"
import type { YieldWrap } from "effect/Utils"

/** Wraps `self` in a span named `name` only when the fiber's tracer is enabled. */
export const withSpan = (name: string, attributes?: Record<string, unknown>) =>
<A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.withFiberRuntime((fiber) =>
    fiber.getFiberRef(FiberRef.currentTracerEnabled)
      ? Effect.withSpan(self, name, attributes === undefined ? {} : { attributes })
      : self
  )

/** Span attributes, only when tracing is on. */
export const annotate = (attributes: Record<string, unknown>): Effect.Effect<void> =>
  Effect.withFiberRuntime((fiber) =>
    fiber.getFiberRef(FiberRef.currentTracerEnabled) ? Effect.annotateCurrentSpan(attributes) : Effect.void
  )

/**
 * `Effect.fn(name)(body)` with the span opened only when tracing is on: `traced("Store.get", function*(id) {…})`.
 */
export const traced = <Eff extends YieldWrap<Effect.Effect<any, any, any>>, AEff, Args extends Array<any>>(
  name: string,
  body: (...args: Args) => Generator<Eff, AEff, never>
) => {
  const untraced = Effect.fnUntraced(body)
  const span = withSpan(name)
  return (...args: Args) => span(untraced(...args))
}

// W3C trace context: version 00 (later versions keep these fields first), 32 hex trace id, 16 hex
// parent id, 2 hex flags; all-zero ids are invalid.
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-|$)/
const ZERO_TRACE = "0".repeat(32)
const ZERO_SPAN = "0".repeat(16)

/** The caller's span from a W3C `traceparent` header, or undefined when absent or malformed. */
export const parseTraceparent = (header: string | undefined): Tracer.ExternalSpan | undefined => {
  if (header === undefined) return undefined
  // Lower-case hex only (W3C HEXDIGLC): a header with upper-case digits is ignored, as OpenTelemetry does.
  const match = TRACEPARENT.exec(header.trim())
  if (match === null) return undefined
  const [, version, traceId, spanId, flags] = match
  if (version === "ff" || traceId === undefined || spanId === undefined || flags === undefined) return undefined
  if (traceId === ZERO_TRACE || spanId === ZERO_SPAN) return undefined
  // Version 00 has exactly four fields; a later version may add more after a dash.
  if (version === "00" && header.trim().length !== 55) return undefined
  return Tracer.externalSpan({ traceId, spanId, sampled: (Number.parseInt(flags, 16) & 1) === 1 })
}

/** What the request span reads of a request (a `PlainRequest`). */
interface SpanRequest {
  readonly method: string
  readonly path: string
  readonly headers: Readonly<Record<string, string | ReadonlyArray<string> | undefined>>
  readonly hostRequestId?: string | undefined
}

/**
 * The request's server span, only when tracing is on (its attributes are built only then): its
 * parent is the caller's span from `traceparent` when `continueTrace`, and its status code is
 * recorded from the answer.
 */
export const withRequestSpan = (name: string, request: SpanRequest, requestId: string, continueTrace: boolean) =>
<A extends { readonly status: number }, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.withFiberRuntime((fiber) => {
    if (!fiber.getFiberRef(FiberRef.currentTracerEnabled)) return self
    const header = continueTrace ? request.headers["traceparent"] : undefined
    const parent = parseTraceparent(typeof header === "string" ? header : undefined)
    const attributes: Record<string, unknown> = {
      "http.request.method": request.method,
      "url.path": request.path,
      "identity_kit.request_id": requestId
    }
    if (request.hostRequestId !== undefined) attributes["identity_kit.host_request_id"] = request.hostRequestId
    return Effect.withSpan(
      Effect.tap(self, (response) => Effect.annotateCurrentSpan("http.response.status_code", response.status)),
      name,
      parent === undefined ? { attributes, kind: "server" } : { attributes, kind: "server", parent }
    )
  })
