/**
 * Helpers for the tests of the five identities endpoints: one kit per storage (memory, PGlite,
 * PostgreSQL when `DATABASE_URL` is set) shared by a describe, a fresh workspace per test (so
 * tests on one kit never see each other's data), a `call` per endpoint, and typed views of answers.
 */
import { randomBytes } from "node:crypto"
import { SqlClient } from "@effect/sql"
import { afterAll, assert, beforeAll } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { type IdentityKit, IdentityStore, type JsonObject, layerMemory, makeIdentityKit } from "identity-kit"
import { layerPgliteClient } from "identity-kit/pglite"
import { layerPostgresClient } from "identity-kit/postgres"
import { layerMigrations, layerSql } from "identity-kit/sql"
import { freshSchema, withSearchPath } from "./postgres.js"

/** Every endpoint's path below the mount point, by operation name. */
export const PATHS = {
  createIdentity: "/v2/identities.createIdentity",
  getIdentity: "/v2/identities.getIdentity",
  listIdentities: "/v2/identities.listIdentities",
  updateIdentity: "/v2/identities.updateIdentity",
  deleteIdentity: "/v2/identities.deleteIdentity"
} as const

/** An endpoint's operation name. */
export type Endpoint = keyof typeof PATHS

/** The five endpoints, in the table's order. */
export const ENDPOINTS: ReadonlyArray<Endpoint> = [
  "createIdentity",
  "getIdentity",
  "listIdentities",
  "updateIdentity",
  "deleteIdentity"
]

/** The permission each endpoint checks (read: the wildcard form). */
export const PERMISSION = {
  create: "identity.*.create_identity",
  read: "identity.*.read_identity",
  update: "identity.*.update_identity",
  delete: "identity.*.delete_identity"
} as const

/** All four identity permissions: what the workspace's default key holds. */
export const ALL_PERMISSIONS: ReadonlyArray<string> = Object.values(PERMISSION)

/** Base URL of every error `type`. */
export const ERROR_BASE = "https://unkey.com/docs/errors/"

/** `^<prefix>_<base58>$`. */
export const ID = (prefix: string) => new RegExp(`^${prefix}_[1-9A-HJ-NP-Za-km-z]+$`)

// --- storages ---------------------------------------------------------------------------------

/** A storage to run a suite on: a fresh layer per kit, and its `SqlClient` once built (SQL ones). */
export interface StorageCase {
  readonly name: string
  readonly make: () => {
    readonly layer: Layer.Layer<IdentityStore, unknown>
    readonly sql: () => SqlClient.SqlClient | undefined
  }
}

// The SqlClient of a SQL storage, captured when the kit builds the layer: tests read rows the API
// cannot show (a soft-deleted identity, its ratelimits) straight from the tables.
const capturing = <E>(layer: Layer.Layer<IdentityStore | SqlClient.SqlClient, E>) => {
  let client: SqlClient.SqlClient | undefined
  return {
    layer: Layer.tap(layer, (context) =>
      Effect.sync(() => {
        client = Context.get(context, SqlClient.SqlClient)
      })),
    sql: () => client
  }
}

const DATABASE_URL = process.env["DATABASE_URL"]

/** Memory and PGlite always; PostgreSQL too when `DATABASE_URL` is set (a schema of its own per kit). */
export const storages: ReadonlyArray<StorageCase> = [
  { name: "memory", make: () => ({ layer: layerMemory, sql: () => undefined }) },
  {
    name: "pglite",
    make: () => capturing(layerSql.pipe(Layer.provide(layerMigrations), Layer.provideMerge(layerPgliteClient())))
  },
  ...(DATABASE_URL === undefined ? [] : [{
    name: "postgres",
    make: () => {
      const schema = `identity_kit_ids_${randomBytes(6).toString("hex")}`
      return capturing(layerSql.pipe(
        Layer.provide(layerMigrations),
        Layer.provideMerge(layerPostgresClient({ url: withSearchPath(DATABASE_URL, schema), maxConnections: 10 })),
        Layer.provide(freshSchema(DATABASE_URL, schema))
      ))
    }
  }])
]

/** A built kit on one storage. */
export interface Env {
  readonly storage: string
  readonly kit: IdentityKit
  /** The storage's SqlClient; `undefined` on memory. */
  readonly sql: SqlClient.SqlClient | undefined
}

/**
 * One kit for the enclosing describe: built in `beforeAll` (PGlite boots and migrations run once),
 * disposed in `afterAll`. Returns its getter.
 */
export const useKit = (storage: StorageCase): () => Env => {
  let env: Env | undefined
  beforeAll(async () => {
    const { layer, sql } = storage.make()
    // The tests send X-Forwarded-For as the audit IP: trusted here, as behind a proxy.
    const kit = makeIdentityKit({ storage: layer, trustProxy: true })
    await kit.run(Effect.void)
    env = { storage: storage.name, kit, sql: sql() }
  })
  afterAll(async () => {
    await env?.kit.dispose()
  })
  return () => {
    if (env === undefined) throw new Error(`the ${storage.name} kit is not built`)
    return env
  }
}

// --- workspaces and calls ---------------------------------------------------------------------

/** A fresh workspace on a kit, with a root key holding `ALL_PERMISSIONS` (and update). */
export interface Ws {
  readonly env: Env
  readonly kit: IdentityKit
  readonly workspaceId: string
  readonly rootKey: string
  readonly keyId: string
}

/** Creates a workspace and its default key. */
export const workspace = (env: Env): Effect.Effect<Ws> =>
  Effect.promise(async () => {
    const created = await env.kit.admin.createWorkspace({ name: "identities-tests" })
    const { key, rootKey } = await env.kit.admin.issueRootKey({ workspaceId: created.id, permissions: ALL_PERMISSIONS })
    return { env, kit: env.kit, workspaceId: created.id, rootKey: key, keyId: rootKey.id }
  })

/** A key of the workspace holding exactly `permissions`, as an Authorization header value. */
export const bearer = (ws: Ws, permissions: ReadonlyArray<string>): Effect.Effect<string> =>
  Effect.promise(() => ws.kit.admin.issueRootKey({ workspaceId: ws.workspaceId, permissions })).pipe(
    Effect.map(({ key }) => `Bearer ${key}`)
  )

/** Creates an identity through the admin API (no HTTP rules apply: any externalId, any environment). */
export const seedIdentity = (
  ws: Ws,
  externalId: string,
  extra: Omit<Parameters<IdentityKit["admin"]["createIdentity"]>[0], "workspaceId" | "externalId"> = {}
) => Effect.promise(() => ws.kit.admin.createIdentity({ workspaceId: ws.workspaceId, externalId, ...extra }))

/**
 * An identity whose externalId neither the API nor the admin API accepts (`%`, `\`, non-ASCII),
 * written through the store as earlier versions' admin API or imported data may have: what
 * `listIdentities`' search must still match literally.
 */
export const seedLegacyIdentity = (
  ws: Ws,
  externalId: string,
  extra: { readonly meta?: JsonObject } = {}
) =>
  Effect.promise(() =>
    ws.kit.run(Effect.flatMap(IdentityStore, (store) =>
      store.createIdentity({ workspaceId: ws.workspaceId, externalId, ...extra, now: Date.now() })))
  )

/** The error object of every error body. */
export interface ErrorBody {
  readonly title: string
  readonly detail: string
  readonly status: number
  readonly type: string
  readonly errors?: ReadonlyArray<{ readonly location: string; readonly message: string; readonly fix?: string }>
}

/** An answer: status, Content-Type, raw text and parsed body. */
export interface Answer {
  readonly status: number
  readonly contentType: string | null
  readonly text: string
  readonly body: {
    readonly meta: { readonly requestId: string }
    readonly data?: unknown
    readonly pagination?: { readonly cursor?: string; readonly hasMore: boolean }
    readonly error?: ErrorBody
  }
}

/**
 * POSTs `body` (object → JSON, string as is) to an endpoint, with the workspace's key and a JSON
 * Content-Type unless `headers` say otherwise (`undefined` drops a header).
 */
export const call = (
  target: { readonly kit: IdentityKit; readonly rootKey: string },
  endpoint: Endpoint,
  body: unknown,
  headers: Record<string, string | undefined> = {},
  init: { readonly method?: string } = {}
): Effect.Effect<Answer> =>
  Effect.promise(async () => {
    const all: Record<string, string> = {}
    const merged = { authorization: `Bearer ${target.rootKey}`, "content-type": "application/json", ...headers }
    for (const [name, value] of Object.entries(merged)) if (value !== undefined) all[name] = value
    const method = init.method ?? "POST"
    const payload = body === undefined || method === "GET" ? null : typeof body === "string" ? body : JSON.stringify(body)
    const response = await target.kit.fetch(
      new Request(`http://localhost${PATHS[endpoint]}`, { method, headers: all, body: payload })
    )
    const text = await response.text()
    return { status: response.status, contentType: response.headers.get("content-type"), text, body: JSON.parse(text) }
  })

// --- typed views of answers -------------------------------------------------------------------

/** A ratelimit in an answer. */
export interface RatelimitBody {
  readonly id: string
  readonly name: string
  readonly limit: number
  readonly duration: number
  readonly autoApply: boolean
}

/** An identity in an answer (contract §0.4). */
export interface IdentityBody {
  readonly id: string
  readonly externalId: string
  readonly meta: Readonly<Record<string, unknown>>
  readonly ratelimits?: ReadonlyArray<RatelimitBody>
}

const isRecord = (value: unknown): value is Readonly<Record<string, unknown>> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

const isRatelimitBody = (value: unknown): value is RatelimitBody =>
  isRecord(value) && typeof value["id"] === "string" && typeof value["name"] === "string" &&
  typeof value["limit"] === "number" && typeof value["duration"] === "number" && typeof value["autoApply"] === "boolean"

const isIdentityBody = (value: unknown): value is IdentityBody =>
  isRecord(value) && typeof value["id"] === "string" && typeof value["externalId"] === "string" &&
  isRecord(value["meta"]) &&
  (value["ratelimits"] === undefined || (Array.isArray(value["ratelimits"]) && value["ratelimits"].every(isRatelimitBody)))

/** Asserts a 200 (JSON, request id, no `error`). */
export const expectOk = (answer: Answer): void => {
  assert.strictEqual(answer.status, 200, answer.text)
  assert.strictEqual(answer.contentType, "application/json")
  assert.match(answer.body.meta.requestId, ID("req"))
  assert.isUndefined(answer.body.error)
}

/** Asserts the shape of one identity of an answer: §0.4 keys only, ratelimits never empty, 5 keys each. */
export const expectIdentityShape = (value: unknown): IdentityBody => {
  if (!isIdentityBody(value)) return assert.fail(`not an identity: ${JSON.stringify(value)}`)
  for (const key of Object.keys(value)) assert.include(["id", "externalId", "meta", "ratelimits"], key)
  assert.match(value.id, ID("id"))
  if (value.ratelimits !== undefined) {
    assert.isAbove(value.ratelimits.length, 0, "ratelimits is left out when empty")
    for (const rl of value.ratelimits) {
      assert.deepStrictEqual(Object.keys(rl).sort(), ["autoApply", "duration", "id", "limit", "name"])
      assert.match(rl.id, ID("rl"))
    }
  }
  return value
}

/** The identity of a getIdentity 200: body `{ meta, data }`. */
export const identityOf = (answer: Answer): IdentityBody => {
  expectOk(answer)
  assert.deepStrictEqual(Object.keys(answer.body).sort(), ["data", "meta"])
  return expectIdentityShape(answer.body.data)
}

/** The new id of a createIdentity 200: body `{ meta, data: { identityId } }`. */
export const createdId = (answer: Answer): string => {
  expectOk(answer)
  assert.deepStrictEqual(Object.keys(answer.body).sort(), ["data", "meta"])
  const data = answer.body.data
  if (!isRecord(data) || typeof data["identityId"] !== "string") return assert.fail(answer.text)
  assert.deepStrictEqual(Object.keys(data), ["identityId"])
  assert.match(data["identityId"], ID("id"))
  return data["identityId"]
}

/** A listIdentities page: `data` always an array, `cursor` present exactly when `hasMore`. */
export interface Page {
  readonly data: ReadonlyArray<IdentityBody>
  readonly cursor: string | undefined
  readonly hasMore: boolean
}

/** The page of a listIdentities 200: body `{ meta, data, pagination }`. */
export const pageOf = (answer: Answer): Page => {
  expectOk(answer)
  assert.deepStrictEqual(Object.keys(answer.body).sort(), ["data", "meta", "pagination"])
  const data = answer.body.data
  if (!Array.isArray(data)) return assert.fail(`data is not an array: ${answer.text}`)
  const pagination = answer.body.pagination
  if (!isRecord(pagination) || typeof pagination.hasMore !== "boolean") return assert.fail(answer.text)
  if (pagination.hasMore) {
    assert.deepStrictEqual(Object.keys(pagination).sort(), ["cursor", "hasMore"])
    assert.isString(pagination.cursor)
    assert.isNotEmpty(pagination.cursor)
  } else {
    assert.deepStrictEqual(Object.keys(pagination), ["hasMore"], "no cursor on the last page")
  }
  return { data: data.map(expectIdentityShape), cursor: pagination.cursor, hasMore: pagination.hasMore }
}

/** Asserts an error answer (update-identity §4) and returns its `error`. */
export const expectError = (
  answer: Answer,
  status: number,
  type: string,
  options: { readonly title?: string; readonly contentType?: string } = {}
): ErrorBody => {
  assert.strictEqual(answer.status, status, answer.text)
  assert.strictEqual(answer.contentType, options.contentType ?? "application/json")
  assert.match(answer.body.meta.requestId, ID("req"))
  assert.deepStrictEqual(Object.keys(answer.body).sort(), ["error", "meta"])
  const error = answer.body.error
  if (error === undefined) return assert.fail(answer.text)
  assert.strictEqual(error.status, status)
  assert.strictEqual(error.type, ERROR_BASE + type)
  if (options.title !== undefined) assert.strictEqual(error.title, options.title)
  // `errors` exactly on 400 and 413; `fix` never null.
  if (status === 400 || status === 413) assert.isArray(error.errors)
  else assert.isFalse("errors" in error, answer.text)
  for (const issue of error.errors ?? []) assert.notStrictEqual(issue.fix, null)
  return error
}

/** `Missing one of these permissions: […], have: […]` as the contract prints it (§0.2). */
export const missing = (required: ReadonlyArray<string>, have: ReadonlyArray<string>): string =>
  `Missing one of these permissions: [${required.map((p) => `'${p}'`).join(", ")}], have: [${
    have.map((p) => `'${p}'`).join(", ")
  }]`

/** The [R] regex for a 403 detail. */
export const MISSING_PATTERN = /^Missing one of these permissions: \[.*\], have: \[.*\]$/

/** `POST request body for '<path>' failed to validate schema`. */
export const schemaDetail = (endpoint: Endpoint) => `POST request body for '${PATHS[endpoint]}' failed to validate schema`

/** Code-unit order, as the list's keyset pagination orders ids. */
export const codeUnitSort = (items: ReadonlyArray<string>): Array<string> => [...items].sort()

/** What the tables hold for an identity, deleted or not; `undefined` on memory (no tables to read). */
export const storedRows = (
  env: Env,
  identityId: string
): Effect.Effect<{ readonly deleted: boolean | undefined; readonly ratelimits: number } | undefined> => {
  const sql = env.sql
  if (sql === undefined) return Effect.succeed(undefined)
  return Effect.gen(function*() {
    const rows = yield* sql<{ readonly deleted: boolean }>`SELECT deleted FROM identity_kit_identities WHERE id = ${identityId}`
    const counted = yield* sql<{ readonly n: number }>`
      SELECT count(*)::int AS n FROM identity_kit_ratelimits WHERE identity_id = ${identityId}`
    return { deleted: rows[0]?.deleted, ratelimits: counted[0]?.n ?? 0 }
  }).pipe(Effect.orDie)
}
