/**
 * An identity-kit instance: one `ManagedRuntime` built from a storage layer, and the web-standard
 * handler every adapter uses. Build it once, mount it in one or several servers, dispose it when
 * the host closes.
 */
import { HttpApp } from "@effect/platform"
import { Context, Effect, Layer, ManagedRuntime } from "effect"
import * as Admin from "./Admin.js"
import { renderError, StorageError } from "./Errors.js"
import { newId } from "./domain/Ids.js"
import { type HttpOptions, isRoute, makeHttpApp, resolveHttpOptions } from "./http/app.js"
import * as Authorization from "./services/Authorization.js"
import type { IdentityStore } from "./services/IdentityStore.js"
import { ClientAddress } from "./services/RequestContext.js"
import * as RequestValidator from "./services/RequestValidator.js"

/** What every adapter takes: a storage layer and the HTTP options. */
export interface IdentityKitOptions<E = never> extends HttpOptions {
  /** Where data lives: `layerMemory`, `layerSql` with a `SqlClient`, `layerPglite(...)`, … */
  readonly storage: Layer.Layer<IdentityStore, E>
}

/** Connection facts a Node adapter knows and a `Request` does not carry. */
export interface ConnectionInfo {
  /** The peer address, recorded in the audit log when there is no `X-Forwarded-For`. */
  readonly remoteAddress?: string | undefined
}

/** The services the handler runs with. */
export type IdentityKitServices = IdentityStore | Authorization.Authorization | RequestValidator.RequestValidator

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
    readonly createIdentity: (...args: Parameters<typeof Admin.createIdentity>) => Promise<Effect.Effect.Success<ReturnType<typeof Admin.createIdentity>>>
    readonly getIdentity: (...args: Parameters<typeof Admin.getIdentity>) => Promise<Effect.Effect.Success<ReturnType<typeof Admin.getIdentity>>>
    readonly deleteIdentity: (...args: Parameters<typeof Admin.deleteIdentity>) => Promise<boolean>
    readonly listAuditLog: (...args: Parameters<typeof Admin.listAuditLog>) => Promise<Effect.Effect.Success<ReturnType<typeof Admin.listAuditLog>>>
  }
  /** Releases the runtime (closes pools, PGlite). Idempotent. */
  readonly dispose: () => Promise<void>
}

type WebHandler = (request: Request, context?: Context.Context<never>) => Promise<Response>

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
  const services = Layer.mergeAll(Authorization.layer, RequestValidator.layer).pipe(
    Layer.provideMerge(options.storage)
  )
  const app = makeHttpApp(resolved)
  let runtime = ManagedRuntime.make(services)
  let handler: Promise<WebHandler> | undefined
  let disposed = false

  // A layer that failed to build (say, the database was down at start) is built again on the next
  // request instead of failing forever.
  const getHandler = (): Promise<WebHandler> => {
    handler ??= runtime.runtime().then(
      (rt) => HttpApp.toWebHandlerRuntime(rt)(app),
      (cause) => {
        const failed = runtime
        handler = undefined
        runtime = ManagedRuntime.make(services)
        void failed.dispose().catch(() => {})
        throw cause
      }
    )
    return handler
  }

  // The services only fail to start on storage (connecting, migrating), so the answer is the
  // storage failure's 500; the cause is logged, never answered.
  const startupFailure = (cause: unknown): Response => {
    const { status, body } = renderError(new StorageError({ operation: "startup", cause }), newId("req"), resolved.errorTypeBaseUrl)
    console.error("identity-kit: could not start its services", cause)
    return Response.json(body, { status })
  }

  const run = <A, E2>(effect: Effect.Effect<A, E2, IdentityKitServices>) => runtime.runPromise(effect)

  return {
    options: resolved,
    handles: (pathname) => isRoute(pathname, resolved.basePath),
    fetch: async (request, connection) => {
      if (disposed) return startupFailure(new Error("identity-kit was disposed"))
      let handle: WebHandler
      try {
        handle = await getHandler()
      } catch (cause) {
        return startupFailure(cause)
      }
      const address = connection?.remoteAddress
      return handle(request, address === undefined ? undefined : Context.make(ClientAddress, address))
    },
    run,
    admin: {
      createWorkspace: (...args) => run(Admin.createWorkspace(...args)),
      issueRootKey: (...args) => run(Admin.issueRootKey(...args)),
      createIdentity: (...args) => run(Admin.createIdentity(...args)),
      getIdentity: (...args) => run(Admin.getIdentity(...args)),
      deleteIdentity: (...args) => run(Admin.deleteIdentity(...args)),
      listAuditLog: (...args) => run(Admin.listAuditLog(...args))
    },
    dispose: async () => {
      if (disposed) return
      disposed = true
      await runtime.dispose()
    }
  }
}

