/**
 * An identity-kit instance: one `ManagedRuntime` built from a storage layer, and the web-standard
 * handler every adapter uses. Build it once, mount it in one or several servers, dispose it when
 * the host closes.
 */
import { HttpApp } from "@effect/platform"
import { Context, Effect, Layer, ManagedRuntime, Runtime } from "effect"
import * as Admin from "./Admin.js"
import { StorageError } from "./Errors.js"
import { type HttpOptions, isRoute, makeHttpApp, resolveHttpOptions } from "./http/app.js"
import * as Authorization from "./services/Authorization.js"
import type { IdentityStore } from "./services/IdentityStore.js"
import { ClientAddress } from "./services/RequestContext.js"
import * as RequestValidator from "./services/RequestValidator.js"

/** What every adapter takes: a storage layer, the HTTP options and the authorization options. */
export interface IdentityKitOptions<E = never> extends HttpOptions, Authorization.AuthorizationOptions {
  /** Where data lives: `layerMemory`, `layerSql` with a `SqlClient`, `layerPglite(...)`, … */
  readonly storage: Layer.Layer<IdentityStore, E>
}

/** Connection facts a Node adapter knows and a `Request` does not carry. */
export interface ConnectionInfo {
  /** The peer address, recorded in the audit log when there is no `X-Forwarded-For`. */
  readonly remoteAddress?: string | undefined
}

/** The services `kit.run` provides: storage and authorization. */
export type IdentityKitServices = IdentityStore | Authorization.Authorization

/** A running identity-kit. */
export interface IdentityKit {
  /** Answers one request: the route, else 404/405 JSON. Never rejects. */
  readonly fetch: (request: Request, connection?: ConnectionInfo) => Promise<Response>
  /** Whether a pathname (below the adapter's mount point) is this package's route. */
  readonly handles: (pathname: string) => boolean
  /** The options in force (defaults filled in). */
  readonly options: ReturnType<typeof resolveHttpOptions>
  /** Runs an Effect with the kit's services, e.g. `kit.run(Admin.createWorkspace())`. */
  readonly run: <A, E>(effect: Effect.Effect<A, E, IdentityKitServices>) => Promise<A>
  /** Promise versions of the admin operations, on this kit's storage. */
  readonly admin: {
    readonly createWorkspace: (...args: Parameters<typeof Admin.createWorkspace>) => Promise<Effect.Effect.Success<ReturnType<typeof Admin.createWorkspace>>>
    readonly issueRootKey: (...args: Parameters<typeof Admin.issueRootKey>) => Promise<Effect.Effect.Success<ReturnType<typeof Admin.issueRootKey>>>
    readonly updateRootKey: (...args: Parameters<typeof Admin.updateRootKey>) => Promise<Effect.Effect.Success<ReturnType<typeof Admin.updateRootKey>>>
    readonly revokeRootKey: (...args: Parameters<typeof Admin.revokeRootKey>) => Promise<boolean>
    readonly createIdentity: (...args: Parameters<typeof Admin.createIdentity>) => Promise<Effect.Effect.Success<ReturnType<typeof Admin.createIdentity>>>
    readonly getIdentity: (...args: Parameters<typeof Admin.getIdentity>) => Promise<Effect.Effect.Success<ReturnType<typeof Admin.getIdentity>>>
    readonly deleteIdentity: (...args: Parameters<typeof Admin.deleteIdentity>) => Promise<boolean>
    readonly listAuditLog: (...args: Parameters<typeof Admin.listAuditLog>) => Promise<Effect.Effect.Success<ReturnType<typeof Admin.listAuditLog>>>
  }
  /** Releases the runtime (closes pools, PGlite). Idempotent. */
  readonly dispose: () => Promise<void>
}

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
  const resolved = resolveHttpOptions(options)
  const services = Authorization.layerWith({ rootKeyCache: options.rootKeyCache }).pipe(
    Layer.provideMerge(options.storage)
  )
  let runtime = ManagedRuntime.make(services)
  let building: Promise<Runtime.Runtime<IdentityKitServices>> | undefined
  let disposed = false

  // Built on first use. A layer that failed to build (say, the database was down at start) is
  // built again on the next use instead of failing forever.
  const getRuntime = (): Promise<Runtime.Runtime<IdentityKitServices>> => {
    if (disposed) return Promise.reject(new Error("identity-kit was disposed"))
    building ??= runtime.runtime().catch((cause: unknown) => {
      const failed = runtime
      building = undefined
      runtime = ManagedRuntime.make(services)
      void failed.dispose().catch(() => {})
      throw cause
    })
    return building
  }

  // Routing, the size limit and validation need no storage: they run on the default runtime, and
  // the storage-backed services join only when a request gets past validation (spec §2).
  let built: Runtime.Runtime<IdentityKitServices> | undefined
  const storageServices = Effect.suspend(() =>
    built !== undefined && !disposed
      ? Effect.succeed(built)
      : Effect.tryPromise({
        try: getRuntime,
        catch: (cause) => new StorageError({ operation: "startup", cause })
      }).pipe(Effect.tap((rt) => {
        // A dispose() that raced this build must not leave a runtime behind for later requests.
        if (!disposed) built = rt
      }))
  )
  const app = makeHttpApp(resolved, storageServices).pipe(
    Effect.provideService(RequestValidator.RequestValidator, RequestValidator.validator)
  )
  const handle = HttpApp.toWebHandlerRuntime(Runtime.defaultRuntime)(app)

  const run = <A, E2>(effect: Effect.Effect<A, E2, IdentityKitServices>): Promise<A> =>
    getRuntime().then((rt) => Runtime.runPromise(rt, effect))

  return {
    options: resolved,
    handles: (pathname) => isRoute(pathname, resolved.basePath),
    fetch: (request, connection) => {
      const address = connection?.remoteAddress
      return handle(request, address === undefined ? undefined : Context.make(ClientAddress, address))
    },
    run,
    admin: {
      createWorkspace: (...args) => run(Admin.createWorkspace(...args)),
      issueRootKey: (...args) => run(Admin.issueRootKey(...args)),
      updateRootKey: (...args) => run(Admin.updateRootKey(...args)),
      revokeRootKey: (...args) => run(Admin.revokeRootKey(...args)),
      createIdentity: (...args) => run(Admin.createIdentity(...args)),
      getIdentity: (...args) => run(Admin.getIdentity(...args)),
      deleteIdentity: (...args) => run(Admin.deleteIdentity(...args)),
      listAuditLog: (...args) => run(Admin.listAuditLog(...args))
    },
    dispose: async () => {
      if (disposed) return
      disposed = true
      built = undefined
      await runtime.dispose()
    }
  }
}
