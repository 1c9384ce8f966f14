/**
 * Root key authorization (spec §2 H1, H3): `Bearer` parsing, lookup by SHA-256 hash, workspace and
 * key state, and an exact permission string. The token is `Redacted` throughout and only its hash
 * leaves this file.
 */
import { createHash } from "node:crypto"
import { Cache, Clock, Context, Duration, Effect, Exit, Layer, Redacted } from "effect"
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
import { IdentityStore } from "./IdentityStore.js"

/** The permission `updateIdentity` requires, matched exactly (no wildcards). */
export const UPDATE_IDENTITY_PERMISSION = "identity.*.update_identity"

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
}

/** The authorization service tag. */
export class Authorization extends Context.Tag("identity-kit/Authorization")<Authorization, AuthorizationService>() {}

/** base64(sha256(token)), standard alphabet, padded: how root keys are stored (spec §2 H1). */
export const hashRootKey = (token: string): string => createHash("sha256").update(token, "utf8").digest("base64")

const BEARER = "Bearer "

/** Options of the authorization layer. */
export interface AuthorizationOptions {
  /**
   * Opt-in cache of root-key lookups (by hash), saving one database round trip per request. Only
   * keys that exist are cached; a key disabled, deleted or changed in storage is still honoured
   * for up to `ttl`. Expiry (`expiresAt`) is always checked against the current time. Default: off.
   */
  readonly rootKeyCache?: {
    readonly ttl: Duration.DurationInput
    /** Most keys kept. Default 10,000. */
    readonly capacity?: number | undefined
  } | undefined
}

/** Authorization against the root keys in `IdentityStore`, with options. */
export const layerWith = (options: AuthorizationOptions = {}): Layer.Layer<Authorization, never, IdentityStore> =>
  Layer.effect(
    Authorization,
    Effect.gen(function*() {
      const store = yield* IdentityStore
      const cacheOptions = options.rootKeyCache
      const findRootKey = cacheOptions === undefined ? store.findRootKey : yield* Effect.map(
        Cache.makeWith({
          capacity: cacheOptions.capacity ?? 10_000,
          lookup: store.findRootKey,
          // Unknown keys are not remembered: a key issued a moment ago must work at once.
          timeToLive: (exit) => Exit.isSuccess(exit) && exit.value !== null ? cacheOptions.ttl : Duration.zero
        }),
        // Also dropped right away: with a zero TTL, lookups within the same millisecond would share.
        (cache) => (hash: string) =>
          cache.get(hash).pipe(
            Effect.tap((found) => found === null ? cache.invalidate(hash) : Effect.void),
            Effect.tapError(() => cache.invalidate(hash))
          )
      )
      const authorize = Effect.fn("Authorization.authorize")(function*(
        authorization: Redacted.Redacted<string>,
        permission: string
      ) {
        const header = Redacted.value(authorization).trim()
        if (!header.startsWith(BEARER)) return yield* new MalformedAuthorization()
        const token = header.slice(BEARER.length).trim()
        if (token === "") return yield* new MalformedAuthorization()

        const found = yield* findRootKey(hashRootKey(token))
        if (found === null || found.key.deletedAt !== null) return yield* new KeyNotFound()
        const { key, workspace } = found
        yield* Effect.annotateCurrentSpan({ "rootKey.id": key.id, "workspace.id": key.workspaceId })
        if (workspace === null) return yield* new WorkspaceNotFound()
        if (!workspace.enabled) return yield* new WorkspaceDisabled()
        if (!key.enabled) return yield* new KeyDisabled()
        const now = yield* Clock.currentTimeMillis
        if (key.expiresAt !== null && key.expiresAt <= now) return yield* new KeyExpired({ expiredAt: key.expiresAt })
        if (!key.permissions.includes(permission)) {
          return yield* new InsufficientPermissions({ required: [permission], have: key.permissions })
        }
        return { keyId: key.id, keyName: key.name, workspaceId: key.workspaceId, permissions: key.permissions }
      })
      return { authorize }
    })
  )

/** Authorization against the root keys in `IdentityStore` (no cache). */
export const layer: Layer.Layer<Authorization, never, IdentityStore> = layerWith()
