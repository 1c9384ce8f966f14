/**
 * Change notifications for root keys and workspaces, so the root-key cache (see `Authorization`)
 * can be on by default without delaying a revocation. A storage layer that can tell when a key or
 * a workspace changes — in process (memory), or through `LISTEN/NOTIFY` fed by a trigger
 * (PostgreSQL, PGlite) — provides this service beside `IdentityStore`. Without it, the cache stays
 * opt-in with a TTL.
 *
 * The source also reports whether it can be trusted right now: until `Connected`, and from every
 * `Disconnected` until the next `Connected`, a change may go unreported, so the cache must be
 * flushed and bypassed.
 */
import { Context, Effect, type Scope } from "effect"

/** What a subscriber hears. */
export type RootKeyEvent =
  /** The root key with this hash changed (or was inserted or deleted). */
  | { readonly _tag: "Invalidate"; readonly hash: string }
  /** The workspace with this id changed: every key of it may answer differently. */
  | { readonly _tag: "InvalidateWorkspace"; readonly workspaceId: string }
  /** Anything may have changed (a truncate, or a notification this version cannot read). */
  | { readonly _tag: "InvalidateAll" }
  /** From now on every change is reported (until `Disconnected`). */
  | { readonly _tag: "Connected" }
  /** Changes may go unreported until the next `Connected`. */
  | { readonly _tag: "Disconnected" }

/** The events service. */
export interface RootKeyEventsService {
  /**
   * Calls `onEvent` for every event until the scope closes. Starts with `Connected`, delivered
   * during the call, when the source is connected at that moment; a subscriber assumes
   * "disconnected" until it hears `Connected`. `onEvent` runs synchronously on the notifying
   * path: it must be cheap and must not throw (a throw is caught and dropped).
   */
  readonly subscribe: (onEvent: (event: RootKeyEvent) => void) => Effect.Effect<void, never, Scope.Scope>
}

/** The events service tag; optional in the `Authorization` layer. */
export class RootKeyEvents extends Context.Tag("identity-kit/RootKeyEvents")<RootKeyEvents, RootKeyEventsService>() {}

/** A source's side of the service: publish events, and the service to provide. */
export interface RootKeyEventHub {
  /** Delivers `event` to every subscriber; `Connected`/`Disconnected` also set the state new subscribers get. */
  readonly publish: (event: RootKeyEvent) => void
  /** Whether the source is connected (the last state published). */
  readonly isConnected: () => boolean
  readonly service: RootKeyEventsService
}

const CONNECTED: RootKeyEvent = { _tag: "Connected" }

/** A hub for a storage layer: plain callbacks, no queue, so publishing costs a loop over subscribers. */
export const makeRootKeyEventHub = (options: { readonly connected?: boolean } = {}): RootKeyEventHub => {
  const subscribers = new Set<(event: RootKeyEvent) => void>()
  let connected = options.connected ?? false
  const deliver = (subscriber: (event: RootKeyEvent) => void, event: RootKeyEvent) => {
    try {
      subscriber(event)
    } catch {
      // A subscriber's bug must not stop the others from hearing an invalidation.
    }
  }
  const publish = (event: RootKeyEvent) => {
    if (event._tag === "Connected") {
      // Repeated states carry no news; dropping them keeps subscribers' caches warm.
      if (connected) return
      connected = true
    } else if (event._tag === "Disconnected") {
      if (!connected) return
      connected = false
    }
    for (const subscriber of subscribers) deliver(subscriber, event)
  }
  const service: RootKeyEventsService = {
    subscribe: (onEvent) =>
      Effect.acquireRelease(
        Effect.sync(() => {
          subscribers.add(onEvent)
          if (connected) deliver(onEvent, CONNECTED)
        }),
        () => Effect.sync(() => subscribers.delete(onEvent))
      )
  }
  return { publish, isConnected: () => connected, service }
}
