/**
 * The demo data of `identity-kit serve --demo` (`npm start`): workspace `ws_demo`, a root key for
 * all five endpoints and the identity `user_123`, seeded once, and the curls that use them.
 */
import { Data, Effect, Redacted } from "effect"
import * as Admin from "../Admin.js"
import { permissions } from "../domain/Permissions.js"
import type { IdentityKit, IdentityKitServices } from "../IdentityKit.js"
import { hashRootKey } from "../services/Authorization.js"
import { IdentityStore } from "../services/IdentityStore.js"

// Not `shared.ts`'s: the examples import this file, and need not load the command line for it.
const admin = <A, E>(kit: IdentityKit, effect: Effect.Effect<A, E, IdentityKitServices>): Effect.Effect<A, unknown> =>
  Effect.tryPromise({ try: () => kit.run(effect), catch: (error) => error })

/** The demo workspace. */
export const DEMO_WORKSPACE = "ws_demo"

/** Every permission of the identities API: the demo key may create, read, update and delete. */
export const demoPermissions: ReadonlyArray<string> = Object.values(permissions)

/**
 * `ROOT_KEY` names a key the demo cannot use as it says: another workspace's, revoked, disabled,
 * expired, or without every identities permission (exit 2 on the command line).
 */
export class InvalidDemoKey extends Data.TaggedError("InvalidDemoKey")<{ readonly reason: string }> {}

/** What `seedDemo` did. */
export interface DemoSeed {
  /** The plaintext root key to show: the one issued now, or the `ROOT_KEY` given; none on a restart without one. */
  readonly rootKey: string | undefined
  /** Whether `rootKey` was issued now (and so is printed as "shown once"). */
  readonly issued: boolean
}

/**
 * Seeds the demo once: the identity is the marker, so a restart finds it and seeds nothing. A
 * `givenKey` (the `ROOT_KEY` env) is stored as a demo key unless it already is, so scripts can use
 * a key they know.
 */
export const seedDemo = (kit: IdentityKit, givenKey: string | undefined): Effect.Effect<DemoSeed, unknown> =>
  Effect.gen(function*() {
    const firstStart = (yield* admin(kit, Admin.getIdentity(DEMO_WORKSPACE, "user_123"))) === null
    if (firstStart) {
      yield* admin(kit, Admin.createWorkspace({ id: DEMO_WORKSPACE, name: "demo" }))
      yield* admin(
        kit,
        Admin.createIdentity({
          workspaceId: DEMO_WORKSPACE,
          externalId: "user_123",
          meta: { plan: "free" },
          ratelimits: [{ name: "requests", limit: 100, duration: 60_000 }]
        })
      )
    }
    const issue = (key?: string) =>
      admin(
        kit,
        Admin.issueRootKey({
          workspaceId: DEMO_WORKSPACE,
          name: "demo key",
          permissions: demoPermissions,
          ...(key === undefined ? {} : { key: Redacted.make(key) })
        })
      )
    if (givenKey !== undefined && givenKey !== "") {
      const known = yield* admin(kit, Effect.flatMap(IdentityStore, (store) => store.findRootKey(hashRootKey(givenKey))))
      if (known === null) yield* issue(givenKey)
      else {
        const key = known.key
        const missing = demoPermissions.filter((permission) => !key.permissions.includes(permission))
        const problem = key.workspaceId !== DEMO_WORKSPACE
          ? `it is a root key of workspace ${key.workspaceId}, not ${DEMO_WORKSPACE}`
          : key.deletedAt !== null
          ? "it is revoked"
          : known.workspace?.enabled === false
          ? `workspace ${DEMO_WORKSPACE} is disabled`
          : !key.enabled
          ? "it is disabled"
          : key.expiresAt !== null && key.expiresAt <= Date.now()
          ? "it has expired"
          : missing.length > 0
          ? `it lacks ${missing.join(", ")}`
          : undefined
        if (problem !== undefined) {
          return yield* new InvalidDemoKey({
            reason: `ROOT_KEY names a stored key the demo cannot use (${problem}): unset ROOT_KEY for a new demo key, ` +
              "or give a plaintext that is not stored yet"
          })
        }
      }
      return { rootKey: givenKey, issued: false }
    }
    if (!firstStart) return { rootKey: undefined, issued: false }
    const { key } = yield* issue()
    return { rootKey: Redacted.isRedacted(key) ? String(Redacted.value(key)) : String(key), issued: true }
  })

/** A curl that lists the identities through the API at `url` (the mount point). */
export const listCurlFor = (url: string, rootKey: string): string =>
  [
    `curl -X POST '${url}/v2/identities.listIdentities'`,
    `  -H "Authorization: Bearer ${rootKey}"`,
    `  -H 'Content-Type: application/json'`,
    `  -d '{"limit":10}'`
  ].join(" \\\n")

/** A curl that updates `user_123` through the API at `url` (the mount point). */
export const curlFor = (url: string, rootKey: string): string =>
  [
    `curl -X POST '${url}/v2/identities.updateIdentity'`,
    `  -H "Authorization: Bearer ${rootKey}"`,
    `  -H 'Content-Type: application/json'`,
    `  -d '{"identity":"user_123","meta":{"plan":"premium"},"ratelimits":[{"name":"requests","limit":1000,"duration":3600000,"autoApply":true}]}'`
  ].join(" \\\n")

/** What `serve --demo` prints once it listens, as `examples/demo-server.ts` printed it. */
export const demoText = (url: string, seed: DemoSeed): string => {
  const key = seed.rootKey ?? "$ROOT_KEY"
  return [
    ...(seed.issued
      ? [`\nRoot key for workspace ${DEMO_WORKSPACE} (shown once; only its SHA-256 hash is stored):\n  ${key}`]
      : []),
    `\nTry it (the key may create, get, list, update and delete identities):\n${curlFor(url, key)}\n\n${listCurlFor(url, key)}\n`,
    ...(seed.rootKey === undefined
      ? ["(The root key was printed at the first start. Restart with ROOT_KEY=<key> to use a key of your choice.)"]
      : [])
  ].join("\n")
}
