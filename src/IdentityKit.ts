/**
 * An identity-kit instance: one `ManagedRuntime` built from a storage layer, the request program
 * for the served routes, and the entry points every adapter uses (`handle` for plain requests,
 * `fetch` for WHATWG ones). Build it once, mount it in one or several servers, dispose it when the
 * host closes.
 */
import { Cause, Duration, Effect, Exit, type FiberId, FiberRef, Layer, ManagedRuntime, Redacted, Runtime } from "effect"
import * as Admin from "./Admin.js"
import { type ApiError, InternalError, ServiceUnavailable, StorageError } from "./Errors.js"
import { newId } from "./domain/Ids.js"
import type {
  AuditLogEntry,
  Identity,
  IdentityPageQuery,
  Page,
  PageQuery,
  RootKey,
  RootKeyInfo,
  Workspace
} from "./domain/Model.js"
import { classifyStorageFailure, makeFailureLog, type TelemetryOptions, telemetryLayer, telemetryRuntime } from "./internal/log.js"
import type { EndpointServices } from "./http/endpoint.js"
import { hostRequestIdOf, type PlainRequest, type PlainResponse, streamBody } from "./http/plain.js"
import {
  DEADLINE,
  deadlineError,
  durationMs,
  errorResponse,
  HEALTH_UNAVAILABLE,
  type HttpOptions,
  requestAnnotations,
  interruptedByDeadline,
  makeRequestProgram,
  MAX_TIMER_MS,
  logStorageFailure,
  pingStorage,
  probeStorage,
  type ProvideServices,
  resolveHttpOptions,
  type ResolvedHttpOptions,
  type StorageStart
} from "./http/program.js"
import { type EndpointName, selectRoutes } from "./http/routes.js"
import * as Authorization from "./services/Authorization.js"
import type { IdentityStore } from "./services/IdentityStore.js"

/** What every adapter takes: a storage layer, the HTTP options and the authorization options. */
export interface IdentityKitOptions<E = never> extends HttpOptions, Authorization.AuthorizationOptions, TelemetryOptions {
  /** Where data lives: `layerMemory`, `layerSql` with a `SqlClient`, `layerPglite(...)`, … */
  readonly storage: Layer.Layer<IdentityStore, E>
  /** The endpoints this kit serves, by operation name. Default: all of them. */
  readonly endpoints?: ReadonlyArray<EndpointName> | undefined
  /**
   * How long `dispose()` lets requests in flight finish before it interrupts them (they then get
   * 503). Default 10 seconds.
   */
  readonly drainTimeout?: Duration.DurationInput | undefined
}

/** Connection facts a Node adapter knows and a `Request` does not carry. */
export interface ConnectionInfo {
  /** The peer address: the client in the audit log unless the kit's `trustProxy` defers to `X-Forwarded-For`. */
  readonly remoteAddress?: string | undefined
}

/** The services `kit.run` provides: storage and authorization. */
export type IdentityKitServices = IdentityStore | Authorization.Authorization

/** A running identity-kit. */
export interface IdentityKit {
  /** Answers one WHATWG request: a route, else 404/405 JSON. Never rejects. */
  readonly fetch: (request: Request, connection?: ConnectionInfo) => Promise<Response>
  /**
   * Answers one plain request (the Node adapters' path): calls `respond` exactly once, unless the
   * returned function is called first (a client abort), which interrupts the request. Never throws.
   */
  readonly handle: (request: PlainRequest, respond: (response: PlainResponse) => void) => () => void
  /** Whether a path (below the adapter's mount point, as sent, no query) is one of the served routes. */
  readonly handles: (path: string) => boolean
  /** The served routes' paths, base path included, e.g. `/api/v2/identities.updateIdentity`. */
  readonly routes: ReadonlyArray<string>
  /** An error answered as the program answers it, for errors an adapter meets first (a framework's body errors). */
  readonly answerError: (error: ApiError, headers: PlainRequest["headers"]) => PlainResponse
  /** The options in force (defaults filled in). */
  readonly options: ResolvedHttpOptions
  /**
   * Runs an Effect with the kit's services, e.g. `kit.run(Admin.createWorkspace())`. Rejects with
   * the Effect's error itself (a tagged error such as `IdentityConflict`; a defect's thrown value).
   */
  readonly run: <A, E>(effect: Effect.Effect<A, E, IdentityKitServices>) => Promise<A>
  /**
   * Builds the storage now (connects, migrates or finds the tables) and checks it answers; rejects
   * with an `Error` that says what is wrong and what to do (run the migrations, check the URL).
   * Idempotent; after a failure the next call tries again.
   */
  readonly ready: () => Promise<void>
  /**
   * A cheap storage round trip for readiness probes (builds the storage if needed, bounded by
   * `requestTimeout`). Never rejects: `{ status: "unavailable", reason }` says why.
   */
  readonly health: () => Promise<HealthStatus>
  /**
   * Promise versions of the admin operations (`Admin.*`), on this kit's storage, with plain values
   * only: the issued key is a string, and a key given may be a string or a `Redacted`. Each rejects
   * with the tagged error itself (`InvalidInput`, `WorkspaceNotFound`, `IdentityConflict`, …).
   */
  readonly admin: IdentityKitAdmin
  /**
   * Stops taking storage work (such requests get 503; routing and validation still answer), lets
   * the requests in flight finish (up to `drainTimeout`, then interrupts them: 503), and releases
   * the runtime (closes pools, PGlite). Close your server first. Idempotent.
   */
  readonly dispose: () => Promise<void>
}

/** `kit.admin`: the admin operations as promises of plain values (see `Admin` for each one). */
export interface IdentityKitAdmin {
  readonly createWorkspace: (input?: Admin.CreateWorkspace) => Promise<Workspace>
  readonly updateWorkspace: (workspaceId: string, patch: Admin.WorkspaceUpdate) => Promise<Workspace | null>
  /** `key` is the plaintext, shown this once: only its SHA-256 hash is stored. */
  readonly issueRootKey: (input: Admin.IssueRootKeyPlain) => Promise<{ readonly rootKey: RootKey; readonly key: string }>
  readonly updateRootKey: (keyId: string, patch: Admin.RootKeyUpdate) => Promise<RootKey | null>
  readonly revokeRootKey: (keyId: string) => Promise<boolean>
  readonly createIdentity: (input: Admin.CreateIdentity) => Promise<Identity>
  readonly getIdentity: (workspaceId: string, identity: string) => Promise<Identity | null>
  readonly deleteIdentity: (workspaceId: string, identity: string) => Promise<boolean>
  readonly listWorkspaces: (query?: PageQuery) => Promise<Page<Workspace>>
  readonly listRootKeys: (workspaceId: string, query?: PageQuery) => Promise<Page<RootKeyInfo>>
  readonly listIdentities: (workspaceId: string, query?: IdentityPageQuery) => Promise<Page<Identity>>
  readonly listAuditLog: (workspaceId: string, query?: PageQuery) => Promise<Page<AuditLogEntry>>
}

/** What `kit.health()` resolves with. */
export type HealthStatus =
  | { readonly status: "ok" }
  | { readonly status: "unavailable"; readonly reason: string }

const EMPTY = new Uint8Array(0)

/**
 * `kit.admin.issueRootKey`'s input as `Admin.issueRootKey` takes it: a string key wrapped in a
 * `Redacted` of this package's copy of effect. Anything else goes on unchanged, for
 * `Admin.issueRootKey` to accept (a `Redacted`) or refuse with `InvalidInput`.
 */
const plainKeyInput = (input: Admin.IssueRootKeyPlain): Admin.IssueRootKey => {
  // A JavaScript caller's non-object goes on as it is, for `InvalidInput` at `input`.
  if (typeof input !== "object" || input === null) return input
  const { key, ...rest } = input
  return key === undefined ? rest : { ...rest, key: typeof key === "string" ? Redacted.make(key) : key }
}

/** Why the storage is not ready, as one sentence with what to do about it. */
const describeFailure = (error: unknown): string => {
  const failure = classifyStorageFailure(error)
  switch (failure.kind) {
    // The storage's own sentence (the probe) already says what is wrong and what to run.
    case "own":
      return failure.message
    case "no-tables":
      return `identity-kit: the database has no identity-kit tables (${failure.relation}). Run the migrations: ` +
        "`migrate` from identity-kit/sql (or `npx identity-kit migrate`), or build the storage with `migrate: true` (the default)."
    case "unreachable":
      return `identity-kit: cannot reach the database (${failure.detail}). Check the URL, that the server runs and accepts connections from here.`
    case "pglite-missing":
    case "other":
      return `identity-kit: the storage is not ready (${failure.detail}).`
  }
}


/** A WHATWG `Request` as a plain request. */
const fromWebRequest = (request: Request, connection: ConnectionInfo | undefined): PlainRequest => {
  const headers: Record<string, string> = {}
  request.headers.forEach((value, name) => {
    headers[name] = value
  })
  return {
    method: request.method,
    path: new URL(request.url).pathname,
    headers,
    body: request.method === "GET" || request.method === "HEAD" ? EMPTY : streamBody(request.body),
    remoteAddress: connection?.remoteAddress,
    hostRequestId: hostRequestIdOf(request.headers.get("x-request-id") ?? undefined)
  }
}

// What `fetch` resolves with when its request was aborted: nobody reads it (499: client closed request).
const aborted = () => new Response(null, { status: 499 })

const defaultTracer = Runtime.runSync(Runtime.defaultRuntime)(Effect.tracer)

/**
 * Builds an identity-kit from a storage layer.
 *
 * @example
 * ```ts
 * import { makeIdentityKit, layerMemory } from "identity-kit"
 * const kit = makeIdentityKit({ storage: layerMemory })
 * const response = await kit.fetch(new Request("http://localhost/v2/identities.updateIdentity", { method: "POST" }))
 * ```
 */
export const makeIdentityKit = <E>(options: IdentityKitOptions<E>): IdentityKit => {
  if (typeof options !== "object" || options === null) {
    throw new TypeError("identity-kit: options are required, e.g. makeIdentityKit({ storage: layerMemory })")
  }
  const storage: unknown = options.storage
  if (!Layer.isLayer(storage)) {
    throw new TypeError("identity-kit: `storage` must be a Layer, e.g. layerMemory, layerPglite(...) or layerPostgres(...)")
  }
  const resolved = resolveHttpOptions(options)
  const routes = selectRoutes(options.endpoints)
  // The host's logger and tracer: for the storage's start-up (built under them) and every request.
  const telemetry = telemetryLayer(options)
  const failureLog = makeFailureLog()
  // The schema is checked (the migration state: `probeStorage`) until it once passes; after that a
  // health check is a plain lookup. Migrations only move forward, and the migrations table is locked
  // while another instance migrates: checking it on every probe would take every running instance
  // out of its load balancer for the length of a rolling upgrade's migration.
  let schemaVerified = false
  const checkStorage: Effect.Effect<void, StorageError, IdentityStore> = Effect.suspend(() =>
    schemaVerified ? pingStorage : Effect.tap(probeStorage, () => {
      schemaVerified = true
    })
  )
  const program = makeRequestProgram(resolved, routes, {
    log: failureLog,
    continueTrace: options.continueTrace ?? true,
    healthCheck: checkStorage
  })
  const drainTimeoutMs = durationMs(options.drainTimeout ?? Duration.seconds(10))
  // Effect reads a negative duration as zero: refused here rather than draining for no time.
  const negative = typeof options.drainTimeout === "number" ? options.drainTimeout < 0 : /^\s*-/.test(String(options.drainTimeout))
  if (drainTimeoutMs === undefined || negative || drainTimeoutMs > MAX_TIMER_MS) {
    throw new TypeError(`identity-kit: drainTimeout must be a duration from 0 to ${MAX_TIMER_MS} ms, e.g. "10 seconds"`)
  }
  // The served routes by full path (base path included); the health route is served too.
  const routeByPath = new Map(routes.map((route) => [resolved.basePath + route.path, route]))
  const paths = [...routeByPath.keys()]
  const handles = (path: string) => routeByPath.has(path) || path === resolved.healthPath

  const built = Authorization.layerWith({ rootKeyCache: options.rootKeyCache }).pipe(Layer.provideMerge(options.storage))
  // With the `tracer` option, the start-up in a span of its own (`Layer.withSpan` would end it only
  // when the kit is disposed). Not otherwise: a tracer the storage layer installs would see its
  // spans under a parent made by Effect's own tracer, which it never exports.
  const services = (options.tracer === undefined
    ? built
    : Layer.scopedContext(Effect.withSpan(Layer.build(built), "identity-kit.startup"))).pipe(Layer.provide(telemetry))
  let runtime = ManagedRuntime.make(services)
  let building: Promise<Runtime.Runtime<IdentityKitServices>> | undefined
  let disposed = false

  // Built on first use. A layer that failed to build (say, the database was down at start) is
  // built again on the next use instead of failing forever.
  // A failure rejects with the error itself, not Effect's `FiberFailure`.
  const getRuntime = (): Promise<Runtime.Runtime<IdentityKitServices>> => {
    if (disposed) return Promise.reject(new ServiceUnavailable())
    building ??= runtime.runtime().then((rt) => {
      adopt(rt)
      return rt
    }, (failure: unknown) => {
      const failed = runtime
      building = undefined
      runtime = ManagedRuntime.make(services)
      void failed.dispose().catch(() => {})
      throw Runtime.isFiberFailure(failure) ? Cause.squash(failure[Runtime.FiberFailureCauseId]) : failure
    })
    return building
  }

  // Requests run on the built runtime (its context and FiberRefs: a logger or tracer the host put in
  // the storage layer applies to them), with the tracer off unless the host installed one.
  let runBuilt: ReturnType<typeof Runtime.runCallback<EndpointServices>> | undefined
  const adopt = (rt: Runtime.Runtime<IdentityKitServices>) => {
    if (disposed || runBuilt !== undefined) return
    const traced = Runtime.runSync(rt)(Effect.tracer) !== defaultTracer
    runBuilt = Runtime.runCallback(traced ? rt : Runtime.setFiberRef(rt, FiberRef.currentTracerEnabled, false))
  }
  const inContext: ProvideServices<EndpointServices> = (effect) => effect
  // Before the runtime is built: routing and validation run at once, the services are built when
  // a request first needs them; a failure to build is that request's 500.
  // A failed start-up that requests needed is logged once per attempt, not once per request waiting
  // on it; one `ready()`, `run` or `admin` met is theirs to report (it rejects with it).
  const loggedStartups = new WeakSet<object>()
  const building$: ProvideServices<never> = (effect) =>
    Effect.tryPromise({
      try: getRuntime,
      // Disposed while this request waited (its body still arriving): 503, as after `dispose()`.
      catch: (cause) => cause instanceof ServiceUnavailable ? cause : new StorageError({ operation: "startup", cause })
    }).pipe(
      Effect.tapErrorTag("StorageError", (error) => {
        const key = typeof error.cause === "object" && error.cause !== null ? error.cause : error
        if (loggedStartups.has(key)) return Effect.void
        loggedStartups.add(key)
        return logStorageFailure(failureLog, error, {})
      }),
      Effect.flatMap((rt) => Effect.provide(effect, rt))
    )
  // Before the storage is built, and outside requests: the host's logger and tracer (or neither).
  const runUnbuilt = Runtime.runCallback(telemetryRuntime(telemetry, options.tracer !== undefined))
  // A log line outside a request's fiber: on the built runtime when there is one (a logger the
  // storage layer installs applies), else with the kit's options.
  const log = (effect: Effect.Effect<void>): void => void (runBuilt ?? runUnbuilt)(effect)

  // Once disposing: routing and validation still answer, requests that need storage get 503.
  const closing$: ProvideServices<never> = () => Effect.fail(new ServiceUnavailable())

  // Requests in flight, so `dispose` can let them finish before it closes the storage, and the
  // request deadline can find those whose storage work ran past it.
  const inflight = new Set<InFlight>()
  let onDrained: (() => void) | undefined

  // The request deadline (`requestTimeout`): one coarse sweep timer per kit, running only while some
  // request is in its storage work, instead of a timer (or `Effect.timeout`'s two forked fibers) per
  // request. A request due at sweep `due` has been in storage for at least `requestTimeout` by then
  // (sweeps every quarter of it, due five sweeps later: at most 25% late). It is interrupted with
  // `DEADLINE` as interruptor, and `onExit` answers it as its endpoint's storage failure.
  // Measured (bench/inprocess.ts, memory storage, 4 s, ~100k requests): `Effect.timeoutFail` around
  // the storage step cost ~55% of the requests a second, a Node timer and a finalizer per request
  // ~7%, this sweep nothing measurable.
  const sweepMs = Math.max(1, Math.ceil(resolved.requestTimeoutMs / 4))
  let sweeps = 0
  let sweeper: ReturnType<typeof setInterval> | undefined
  const sweep = () => {
    sweeps++
    let waiting = false
    for (const entry of inflight) {
      if (entry.due < 0) continue
      if (sweeps >= entry.due) {
        entry.due = -1
        entry.cancel?.(DEADLINE)
      } else {
        waiting = true
      }
    }
    if (!waiting && sweeper !== undefined) {
      clearInterval(sweeper)
      sweeper = undefined
    }
  }
  // A class, not closures (a closure per request passed as `provide` cost ~15% of the requests a second).
  class InFlight implements StorageStart {
    cancel: ((fiberId?: FiberId.FiberId) => void) | undefined = undefined
    // The sweep this request's storage work is due by; -1: not in storage work.
    due = -1
    startStorage(): void {
      this.due = sweeps + 5
      if (sweeper === undefined) {
        sweeper = setInterval(sweep, sweepMs)
        // The requests' own sockets keep the process alive; the sweep alone must not.
        sweeper.unref()
      }
    }
  }

  const handle: IdentityKit["handle"] = (request, respond) => {
    // Made here, not in the program: the answers the kit gives itself (deadline, drain) carry it too.
    const requestId = newId("req", Date.now())
    let cancelled = false
    let answered = false
    const answer = (response: PlainResponse) => {
      if (answered) return
      answered = true
      try {
        respond(response)
      } catch (cause) {
        // A host's callback that throws must not become an uncaught exception in the kit.
        log(Effect.annotateLogs(
          Effect.logError("identity-kit: the response callback threw", Cause.die(cause)),
          requestAnnotations(requestId, request)
        ))
      }
    }
    // The caller's cancel (a client abort): no answer. `entry.cancel`, what `dispose` (past its
    // drain deadline) and the request deadline use, interrupts too but still answers.
    const interrupt = () => {
      cancelled = true
      cancel()
    }
    const entry = new InFlight()
    const onExit = (exit: Exit.Exit<PlainResponse>) => {
      inflight.delete(entry)
      if (inflight.size === 0) onDrained?.()
      if (Exit.isSuccess(exit)) return answer(exit.value)
      // Interrupted by the caller (a client abort): nobody to answer. By anything else (dispose
      // past its drain deadline, a storage layer that interrupts): still one answer.
      if (cancelled) return
      if (!disposed && interruptedByDeadline(exit.cause)) {
        // Its storage work ran past `requestTimeout`: that endpoint's storage failure, logged once.
        log(failureLog.error("identity-kit: request timed out", {
          ...requestAnnotations(requestId, request),
          timeoutMs: resolved.requestTimeoutMs
        }))
        if (request.path === resolved.healthPath) return answer(HEALTH_UNAVAILABLE)
        const error = deadlineError(resolved.requestTimeoutMs)
        return answer(errorResponse(error, requestId, resolved, request.headers, routeByPath.get(request.path)))
      }
      const error = disposed ? new ServiceUnavailable() : new InternalError({ cause: Cause.squash(exit.cause) })
      answer(errorResponse(error, requestId, resolved, request.headers))
    }
    const run = disposed ? undefined : runBuilt
    inflight.add(entry)
    // A body in hand (the Node adapters read it first): the deadline runs from now (routing and
    // validation take no wait). A body still to be read (`kit.fetch`): from the program's storage
    // step, so a slow upload is not cut off. Not a hook called on every request: one cost ~8% of
    // the requests a second on memory storage, this field write nothing measurable.
    const deadline = request.body instanceof Uint8Array ? (entry.startStorage(), undefined) : entry
    const cancel = run !== undefined
      ? run(program(request, inContext, deadline, requestId), { onExit })
      : runUnbuilt(program(request, disposed ? closing$ : building$, deadline, requestId), { onExit })
    entry.cancel = cancel
    return interrupt
  }

  const fetch: IdentityKit["fetch"] = (request, connection) =>
    new Promise<Response>((resolve) => {
      const signal = request.signal
      if (signal.aborted) return resolve(aborted())
      let cancel: (() => void) | undefined
      const onAbort = () => {
        cancel?.()
        resolve(aborted())
      }
      signal.addEventListener("abort", onAbort, { once: true })
      cancel = handle(fromWebRequest(request, connection), (response) => {
        signal.removeEventListener("abort", onAbort)
        resolve(new Response(response.body, { status: response.status, headers: response.headers }))
      })
    })

  // Rejects with the failure itself (`instanceof IdentityConflict`, `_tag`), not Effect's
  // `FiberFailure` wrapper: a Promise caller should not need Effect to read an error.
  const run = <A, E2>(effect: Effect.Effect<A, E2, IdentityKitServices>): Promise<A> =>
    getRuntime().then((rt) =>
      Runtime.runPromiseExit(rt, effect).then((exit) =>
        Exit.isSuccess(exit) ? exit.value : Promise.reject(Cause.squash(exit.cause))
      )
    )

  // The storage's answer to a cheap query, bounded by the request deadline.
  const probe = (): Promise<void> =>
    getRuntime().then((rt) =>
      Runtime.runPromise(
        rt,
        checkStorage.pipe(Effect.timeoutFail({
          duration: resolved.requestTimeoutMs,
          onTimeout: () => deadlineError(resolved.requestTimeoutMs)
        }))
      )
    )

  return {
    options: resolved,
    routes: paths,
    handles,
    handle,
    fetch,
    answerError: (error, headers) => errorResponse(error, newId("req"), resolved, headers),
    run,
    ready: () => probe().catch((cause: unknown) => Promise.reject(new Error(describeFailure(cause), { cause }))),
    health: () =>
      probe().then(
        (): HealthStatus => ({ status: "ok" }),
        (cause: unknown): HealthStatus => ({ status: "unavailable", reason: describeFailure(cause) })
      ),
    admin: {
      createWorkspace: (input) => run(Admin.createWorkspace(input)),
      updateWorkspace: (workspaceId, patch) => run(Admin.updateWorkspace(workspaceId, patch)),
      issueRootKey: (input) =>
        run(Admin.issueRootKey(plainKeyInput(input))).then(({ key, rootKey }) => ({ rootKey, key: Redacted.value(key) })),
      updateRootKey: (keyId, patch) => run(Admin.updateRootKey(keyId, patch)),
      revokeRootKey: (keyId) => run(Admin.revokeRootKey(keyId)),
      createIdentity: (input) => run(Admin.createIdentity(input)),
      getIdentity: (workspaceId, identity) => run(Admin.getIdentity(workspaceId, identity)),
      deleteIdentity: (workspaceId, identity) => run(Admin.deleteIdentity(workspaceId, identity)),
      listWorkspaces: (query) => run(Admin.listWorkspaces(query)),
      listRootKeys: (workspaceId, query) => run(Admin.listRootKeys(workspaceId, query)),
      listIdentities: (workspaceId, query) => run(Admin.listIdentities(workspaceId, query)),
      listAuditLog: (workspaceId, query) => run(Admin.listAuditLog(workspaceId, query))
    },
    dispose: async () => {
      if (disposed) return
      disposed = true
      runBuilt = undefined
      // Let the requests in flight finish (new ones get 503 from now on), then interrupt what is
      // left, so none of them finds its storage closed under it.
      if (inflight.size > 0) {
        await new Promise<void>((resolve) => {
          onDrained = resolve
          setTimeout(resolve, drainTimeoutMs).unref()
        })
        for (const entry of [...inflight]) entry.cancel?.()
      }
      if (sweeper !== undefined) clearInterval(sweeper)
      sweeper = undefined
      await runtime.dispose()
    }
  }
}
