/**
 * Where the kit's log lines and spans go: the host's logger (an Effect `Logger`, or a plain
 * `{ error, warn, info }` object such as pino's or `console`), a minimum level, and the host's
 * tracer. Nothing here runs per request unless something is logged: a kit without these options
 * costs what it did before (the request program never logs on success).
 */
import { Cause, Effect, FiberRef, HashMap, Layer, Logger, LogLevel, Runtime, type Tracer } from "effect"

/**
 * A plain logger, called as pino, bunyan and `console` are: `(fields, message)`. Levels below
 * `info` go to `debug` when there is one, else nowhere.
 */
export interface LogSink {
  readonly error: (fields: Record<string, unknown>, message: string) => void
  readonly warn: (fields: Record<string, unknown>, message: string) => void
  readonly info: (fields: Record<string, unknown>, message: string) => void
  readonly debug?: ((fields: Record<string, unknown>, message: string) => void) | undefined
}

/** A level name: pino's (`warn`) or Effect's (`Warning`), any case. */
export type LogLevelName =
  | "all"
  | "trace"
  | "debug"
  | "info"
  | "warn"
  | "warning"
  | "error"
  | "fatal"
  | "none"
  | LogLevel.Literal

/** The observability options of a kit. */
export interface TelemetryOptions {
  /**
   * Where log lines go: an Effect `Logger` (e.g. `Logger.json`, `Logger.logfmt`) or a plain
   * `{ error, warn, info, debug? }` object called as `(fields, message)` (pino, `console`). Default:
   * Effect's default logger (stderr-like `console` lines). Every line has one message string and its
   * facts as annotations (`requestId`, `hostRequestId`, `operation`, `error`, …).
   */
  readonly logger?: Logger.Logger<unknown, unknown> | LogSink | undefined
  /** Lines below this level are dropped. Default `"info"`. */
  readonly minimumLogLevel?: LogLevelName | undefined
  /**
   * An Effect tracer for the kit's spans (`identity-kit.request`, `identity-kit.startup`, the storage
   * steps), e.g. `@effect/opentelemetry`'s. Default: none, and spans cost nothing. A tracer the
   * storage layer installs is used too.
   */
  readonly tracer?: Tracer.Tracer | undefined
  /**
   * Whether a request's span continues an incoming W3C `traceparent` header. Default `true`. Turn it
   * off when the host's own OpenTelemetry HTTP instrumentation already continues it: the kit's spans
   * then nest under the host's server span (the OpenTelemetry tracer takes the active span as parent).
   */
  readonly continueTrace?: boolean | undefined
}

const LEVELS: Readonly<Record<string, LogLevel.LogLevel>> = {
  all: LogLevel.All,
  trace: LogLevel.Trace,
  debug: LogLevel.Debug,
  info: LogLevel.Info,
  warn: LogLevel.Warning,
  warning: LogLevel.Warning,
  error: LogLevel.Error,
  fatal: LogLevel.Fatal,
  none: LogLevel.None
}

/** A level from its name, or a `TypeError` naming the accepted ones. */
export const parseLogLevel = (name: unknown): LogLevel.LogLevel => {
  const level = typeof name === "string" ? LEVELS[name.toLowerCase()] : undefined
  if (level === undefined) {
    throw new TypeError(
      `identity-kit: minimumLogLevel must be one of ${Object.keys(LEVELS).join(", ")}, got ${String(name)}`
    )
  }
  return level
}

const isEffectLogger = (value: unknown): value is Logger.Logger<unknown, unknown> =>
  typeof value === "object" && value !== null && Logger.LoggerTypeId in value

const isLogSink = (value: unknown): value is LogSink =>
  typeof value === "object" && value !== null &&
  ["error", "warn", "info"].every((name) => typeof Reflect.get(value, name) === "function")

/** A log message as one string: Effect keeps `log(a, b)` as an array, which `Logger.json` would print as one. */
export const messageText = (message: unknown): string =>
  Array.isArray(message) ? message.map(messageText).join(" ") : typeof message === "string" ? message : String(message)

/** An Effect logger that hands each line to a plain `(fields, message)` logger. */
export const sinkLogger = (sink: LogSink): Logger.Logger<unknown, void> =>
  Logger.make(({ annotations, cause, logLevel, message }) => {
    const fields: Record<string, unknown> = {}
    for (const [key, value] of HashMap.toEntries(annotations)) fields[key] = value
    // `err` as pino serialises errors (message, stack): only defects carry a cause here.
    if (!Cause.isEmpty(cause)) fields["err"] = Cause.squash(cause)
    const level = logLevel.ordinal
    const write = level >= LogLevel.Error.ordinal
      ? sink.error
      : level >= LogLevel.Warning.ordinal
      ? sink.warn
      : level >= LogLevel.Info.ordinal
      ? sink.info
      : sink.debug
    try {
      write?.call(sink, fields, messageText(message))
    } catch {
      // A host logger that throws must not fail the request that logged.
    }
  })

/** The host's logger and tracer as a Layer (built before the storage, so start-up is covered). */
export const telemetryLayer = (options: TelemetryOptions): Layer.Layer<never> => {
  const layers: Array<Layer.Layer<never>> = []
  const logger: unknown = options.logger
  if (logger !== undefined) {
    if (isEffectLogger(logger)) layers.push(Logger.replace(Logger.defaultLogger, logger))
    else if (isLogSink(logger)) layers.push(Logger.replace(Logger.defaultLogger, sinkLogger(logger)))
    else {
      throw new TypeError(
        "identity-kit: logger must be an Effect Logger or an object with error, warn and info methods (pino, console)"
      )
    }
  }
  if (options.minimumLogLevel !== undefined) layers.push(Logger.minimumLogLevel(parseLogLevel(options.minimumLogLevel)))
  const tracer: unknown = options.tracer
  if (tracer !== undefined) {
    if (typeof tracer !== "object" || tracer === null || typeof Reflect.get(tracer, "span") !== "function") {
      throw new TypeError("identity-kit: tracer must be an Effect Tracer, e.g. from @effect/opentelemetry")
    }
    layers.push(Layer.setTracer(options.tracer as Tracer.Tracer))
  }
  const continueTrace: unknown = options.continueTrace
  if (continueTrace !== undefined && typeof continueTrace !== "boolean") {
    throw new TypeError("identity-kit: continueTrace must be a boolean")
  }
  return layers.length === 0 ? Layer.empty : Layer.mergeAll(...(layers as [Layer.Layer<never>]))
}

/**
 * A runtime with the host's logger and tracer, for what runs before the storage is built or outside
 * a request (a request that builds it, the deadline's log line). The tracer is off unless the host
 * gave one, so spans cost nothing.
 */
export const telemetryRuntime = (layer: Layer.Layer<never>, traced: boolean): Runtime.Runtime<never> => {
  const runtime = Effect.runSync(Effect.scoped(Layer.toRuntime(layer)))
  return traced ? runtime : Runtime.setFiberRef(runtime, FiberRef.currentTracerEnabled, false)
}

// Credentials in a URL inside a driver's message: never shown.
// Up to the last `@` before the host: a password may itself hold `@` (`//alice:p@ss@db/x`).
const hideCredentials = (text: string): string => text.replace(/(\/\/[^:/@\s]*):[^\s/]*@/g, "$1:***@")

/**
 * The messages along a failure's chain of causes (FiberFailure → StorageError → SqlError → driver
 * error), credentials hidden: what a log line says about an expected failure instead of a stack.
 */
export const causeMessages = (error: unknown): ReadonlyArray<string> => {
  const messages: Array<string> = []
  let current: unknown = error
  for (let depth = 0; depth < 8 && current !== undefined && current !== null; depth++) {
    if (Runtime.isFiberFailure(current)) {
      current = Cause.squash(current[Runtime.FiberFailureCauseId])
      continue
    }
    if (typeof current !== "object") {
      messages.push(String(current))
      break
    }
    const message: unknown = Reflect.get(current, "message")
    const code: unknown = Reflect.get(current, "code")
    // A tagged error's own message is a dump of its fields (`{ "operation": …, "cause": … }`): its
    // cause says it better, next.
    const dump = typeof message === "string" && message.startsWith("{") && Reflect.get(current, "cause") !== undefined
    if (typeof message === "string" && message !== "" && !dump && !messages.includes(message)) messages.push(message)
    if (typeof code === "string" && code !== "" && !messages.some((m) => m.includes(code))) messages.push(code)
    current = Reflect.get(current, "cause")
  }
  return messages.map(hideCredentials)
}

/**
 * Logs expected failures (storage down, a request past its deadline) at most `burst` lines per
 * `windowMs` per kit: an outage under load must not become a log flood. Lines dropped are counted
 * and the next line logged says how many (`suppressed`).
 */
export interface FailureLog {
  readonly error: (message: string, annotations: Record<string, unknown>) => Effect.Effect<void>
}

/** A `FailureLog` with its own window. */
export const makeFailureLog = (burst = 10, windowMs = 10_000): FailureLog => {
  let windowStart = 0
  let logged = 0
  let suppressed = 0
  // The count of a window that ended in silence is said when it ends, not left for a next failure
  // that may never come (an outage that stopped would look smaller than it was).
  let flush: ReturnType<typeof setTimeout> | undefined
  return {
    error: (message, annotations) =>
      Effect.withFiberRuntime((fiber) => {
        const now = Date.now()
        if (now - windowStart >= windowMs) {
          windowStart = now
          logged = 0
        }
        if (logged >= burst) {
          suppressed++
          if (flush === undefined) {
            // Said on the runtime (logger, level) of the fiber that was silenced.
            const runtime = Runtime.make({
              context: fiber.getFiberRef(FiberRef.currentContext),
              fiberRefs: fiber.getFiberRefs(),
              runtimeFlags: Runtime.defaultRuntimeFlags
            })
            flush = setTimeout(() => {
              flush = undefined
              if (suppressed === 0) return
              const count = suppressed
              suppressed = 0
              Runtime.runFork(runtime)(
                Effect.annotateLogs(Effect.logError("identity-kit: more failures were not logged"), { suppressed: count })
              )
            }, Math.max(1, windowStart + windowMs - now))
            flush.unref()
          }
          return Effect.void
        }
        logged++
        const fields = suppressed > 0 ? { ...annotations, suppressed } : annotations
        suppressed = 0
        return Effect.annotateLogs(Effect.logError(message), fields)
      })
  }
}

/** What a failure to start or reach the storage is, read from its chain of causes. */
export type StorageFailureKind =
  /** The storage's own sentence, e.g. the probe's "at migration 0004 … needs 0009 …". */
  | { readonly kind: "own"; readonly message: string }
  | { readonly kind: "pglite-missing"; readonly detail: string }
  | { readonly kind: "no-tables"; readonly relation: string }
  | { readonly kind: "unreachable"; readonly detail: string }
  | { readonly kind: "other"; readonly detail: string }

const UNREACHABLE = /ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|EHOSTUNREACH|timed out|timeout|connect|terminated/i

/**
 * Classifies a storage failure once, for every place that words it for its reader (`kit.ready()`
 * for code, the command line for a person): each says what to do in its own terms.
 */
export const classifyStorageFailure = (error: unknown): StorageFailureKind => {
  const messages = causeMessages(error)
  const detail = messages.join(": ")
  const own = messages.find((m) => m.startsWith("identity-kit: "))
  if (own !== undefined) return { kind: "own", message: own }
  if (messages.some((m) => m.startsWith("identity-kit/pglite needs the package @electric-sql/pglite"))) {
    return { kind: "pglite-missing", detail }
  }
  const relation = messages.find((m) => /relation "[^"]*" does not exist/.test(m))
  if (relation !== undefined) return { kind: "no-tables", relation }
  if (messages.some((m) => UNREACHABLE.test(m))) return { kind: "unreachable", detail }
  return { kind: "other", detail }
}
