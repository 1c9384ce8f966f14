/**
 * Root key authorization (spec §2 H1, H3): `Bearer` parsing, lookup by SHA-256 hash, workspace and
 * key state, and an exact permission string. The token is `Redacted` throughout and only its hash
 * leaves this file.
 */
import { createHash } from "node:crypto"
import { Clock, Context, Duration, Effect, Layer, Option, Redacted } from "effect"
import {
  type AuthorizationError,
  InsufficientPermissions,
  KeyDisabled,
  KeyExpired,
  KeyNotFound,
  MalformedAuthorization,
  type StorageError,
  WorkspaceDisabled,
  WorkspaceNotFound
} from "../Errors.js"
import type { RootKeyLookup } from "../domain/Model.js"
import { permissions } from "../domain/Permissions.js"
import { annotate, withSpan } from "../internal/trace.js"
import { IdentityStore, type IdentityStoreService } from "./IdentityStore.js"
import { type RootKeyEvent, RootKeyEvents } from "./RootKeyEvents.js"

/** The permission `updateIdentity` requires, matched exactly (no wildcards). */
export const UPDATE_IDENTITY_PERMISSION = permissions.updateIdentity

/** A root key that passed every check. */
export interface AuthorizedKey {
  readonly keyId: string
  readonly keyName: string
  readonly workspaceId: string
  readonly permissions: ReadonlyArray<string>
}

/** The authorization service. */
export interface AuthorizationService {
  /** Checks an Authorization header value (already trimmed) for a permission. */
  readonly authorize: (
    authorization: Redacted.Redacted<string>,
    permission: string
  ) => Effect.Effect<AuthorizedKey, AuthorizationError | StorageError>
  /**
   * Every check of `authorize` except the permission: for endpoints whose permission depends on
   * what the request resolves to. The caller checks `permissions` itself.
   */
  readonly authenticate: (
    authorization: Redacted.Redacted<string>
  ) => Effect.Effect<AuthorizedKey, AuthorizationError | StorageError>
}

/** The authorization service tag. */
export class Authorization extends Context.Tag("identity-kit/Authorization")<Authorization, AuthorizationService>() {}

/** base64(sha256(token)), standard alphabet, padded: how root keys are stored (spec §2 H1). */
export const hashRootKey = (token: string): string => createHash("sha256").update(token, "utf8").digest("base64")

const BEARER = "Bearer "

/** Options of the authorization layer. */
export interface AuthorizationOptions {
  /**
   * The cache of root-key lookups (by hash): it saves one database round trip per request.
   *
   * - Storage that reports changes (`RootKeyEvents`: `layerMemory`, PGlite and PostgreSQL with the
   *   notify trigger): on by default. An entry is dropped as soon as its key or workspace changes,
   *   by this process or any other; while the notification source is down, the cache is emptied
   *   and every request reads storage. `ttl` (default 5 minutes) is then only a safety net.
   * - Other storage: off unless `{ ttl }` is given; a key disabled, deleted or changed in storage is
   *   then still honoured for up to `ttl`.
   * - `false`: off.
   *
   * Unknown, deleted and workspace-less keys are never cached, nor are failures; expiry
   * (`expiresAt`) is always checked against the current time.
   */
  readonly rootKeyCache?: false | {
    readonly ttl: Duration.DurationInput
    /** Most keys kept. Default 10,000. */
    readonly capacity?: number | undefined
  } | undefined
}

/** How long a cached lookup lives when invalidation is reported (a safety net, not the mechanism). */
export const DEFAULT_NOTIFIED_TTL: Duration.Duration = Duration.minutes(5)

const DEFAULT_CAPACITY = 10_000

interface Entry {
  readonly found: RootKeyLookup
  readonly until: number
}

/**
 * A plain `Map` rather than `Effect.Cache`: a hit is one `get` and a time comparison, no fiber, no
 * `Deferred`. Every event bumps `generation`; a lookup stores its answer only if no event arrived
 * while it ran, so an answer read before an invalidation can never be cached after it.
 */
const makeRootKeyCache = (
  findRootKey: IdentityStoreService["findRootKey"],
  ttl: number,
  capacity: number,
  live: boolean
) => {
  const entries = new Map<string, Entry>()
  let generation = 0
  let trusted = live

  const onEvent = (event: RootKeyEvent): void => {
    generation++
    switch (event._tag) {
      case "Invalidate":
        entries.delete(event.hash)
        return
      case "InvalidateWorkspace":
        // Deleting the current entry while iterating a Map is well defined.
        for (const [hash, entry] of entries) if (entry.found.key.workspaceId === event.workspaceId) entries.delete(hash)
        return
      case "InvalidateAll":
        entries.clear()
        return
      case "Connected":
        entries.clear()
        trusted = true
        return
      case "Disconnected":
        entries.clear()
        trusted = false
        return
    }
  }

  const get = (hash: string, now: number): RootKeyLookup | undefined => {
    const entry = entries.get(hash)
    if (entry === undefined) return undefined
    if (entry.until > now) return entry.found
    entries.delete(hash)
    return undefined
  }

  const lookup = (hash: string, clock: Clock.Clock): Effect.Effect<RootKeyLookup | null, StorageError> => {
    if (!trusted) return findRootKey(hash)
    const started = generation
    return Effect.map(findRootKey(hash), (found) => {
      if (
        found !== null && found.key.deletedAt === null && found.workspace !== null &&
        trusted && generation === started
      ) {
        // Oldest first out: Map keeps insertion order, so the first key is the oldest entry.
        if (entries.size >= capacity && !entries.has(hash)) {
          const oldest = entries.keys().next()
          if (oldest.done !== true) entries.delete(oldest.value)
        }
        entries.set(hash, { found, until: clock.unsafeCurrentTimeMillis() + ttl })
      }
      return found
    })
  }

  return { get, lookup, onEvent }
}

const authorizeSpan = withSpan("Authorization.authorize")
const authenticateSpan = withSpan("Authorization.authenticate")

/** Authorization against the root keys in `IdentityStore`, with options; uses `RootKeyEvents` when present. */
export const layerWith = (options: AuthorizationOptions = {}): Layer.Layer<Authorization, never, IdentityStore> =>
  Layer.scoped(
    Authorization,
    Effect.gen(function*() {
      const store = yield* IdentityStore
      const events = yield* Effect.serviceOption(RootKeyEvents)
      const cacheOptions = options.rootKeyCache
      const notified = Option.isSome(events)
      const enabled = cacheOptions === false ? false : cacheOptions !== undefined || notified
      const cache = !enabled ? undefined : makeRootKeyCache(
        store.findRootKey,
        Duration.toMillis(cacheOptions === false || cacheOptions === undefined ? DEFAULT_NOTIFIED_TTL : cacheOptions.ttl),
        cacheOptions === false || cacheOptions === undefined ? DEFAULT_CAPACITY : cacheOptions.capacity ?? DEFAULT_CAPACITY,
        // With events, nothing is cached until the source says it is connected.
        !notified
      )
      if (cache !== undefined && Option.isSome(events)) yield* events.value.subscribe(cache.onEvent)

      const decide = (
        found: RootKeyLookup | null,
        permission: string | undefined,
        now: number
      ): Effect.Effect<AuthorizedKey, AuthorizationError> => {
        if (found === null || found.key.deletedAt !== null) return Effect.fail(new KeyNotFound())
        const { key, workspace } = found
        const result: Effect.Effect<AuthorizedKey, AuthorizationError> = workspace === null
          ? Effect.fail(new WorkspaceNotFound())
          : !workspace.enabled
          ? Effect.fail(new WorkspaceDisabled())
          : !key.enabled
          ? Effect.fail(new KeyDisabled())
          : key.expiresAt !== null && key.expiresAt <= now
          ? Effect.fail(new KeyExpired({ expiredAt: key.expiresAt }))
          : permission !== undefined && !key.permissions.includes(permission)
          ? Effect.fail(new InsufficientPermissions({ required: [permission], have: key.permissions }))
          : Effect.succeed<AuthorizedKey>({
            keyId: key.id,
            keyName: key.name,
            workspaceId: key.workspaceId,
            permissions: key.permissions
          })
        return Effect.zipRight(annotate({ "rootKey.id": key.id, "workspace.id": key.workspaceId }), result)
      }

      const check = (
        authorization: Redacted.Redacted<string>,
        permission: string | undefined
      ): Effect.Effect<AuthorizedKey, AuthorizationError | StorageError> =>
        Effect.suspend(() => {
          const header = Redacted.value(authorization).trim()
          if (!header.startsWith(BEARER)) return Effect.fail(new MalformedAuthorization())
          const token = header.slice(BEARER.length).trim()
          if (token === "") return Effect.fail(new MalformedAuthorization())
          const hash = hashRootKey(token)
          return Clock.clockWith((clock) => {
            if (cache === undefined) {
              return Effect.flatMap(store.findRootKey(hash), (found) => decide(found, permission, clock.unsafeCurrentTimeMillis()))
            }
            const now = clock.unsafeCurrentTimeMillis()
            const hit = cache.get(hash, now)
            if (hit !== undefined) return decide(hit, permission, now)
            return Effect.flatMap(cache.lookup(hash, clock), (found) => decide(found, permission, clock.unsafeCurrentTimeMillis()))
          })
        })

      const authorize = (authorization: Redacted.Redacted<string>, permission: string) =>
        authorizeSpan(check(authorization, permission))
      const authenticate = (authorization: Redacted.Redacted<string>) =>
        authenticateSpan(check(authorization, undefined))
      return { authorize, authenticate }
    })
  )

/** Authorization against the root keys in `IdentityStore`, default options (see `AuthorizationOptions`). */
export const layer: Layer.Layer<Authorization, never, IdentityStore> = layerWith()
