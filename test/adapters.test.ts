/**
 * One table of HTTP scenarios, run through every host: the fetch handler, Node http, Express 4 and 5
 * (mount points, nested routers, body parsers before and after) and Fastify 4 and 5 (with and
 * without prefix) — all but the fetch handler over a real socket. Then, per host: the official SDK,
 * the audit log's IP and user agent, and a client abort interrupting the write.
 */
import { type IncomingHttpHeaders, request } from "node:http"
import { HTTPClient, Unkey } from "@unkey/api"
import {
  BadRequestErrorResponse,
  ForbiddenErrorResponse,
  ConflictErrorResponse,
  NotFoundErrorResponse,
  UnauthorizedErrorResponse
} from "@unkey/api/models/errors"
import { type Layer, Schema } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { fastifyKitV4, type Host, type HostConfig, HOST_ORIGIN, hostConfigs, hostKinds } from "./support/hosts.js"
import { layerHanging, layerObserved, type Seeded, seed } from "./support/seed.js"
import { type IdentityKit, type IdentityStore, layerMemory, makeIdentityKit } from "identity-kit"
import { identityKit as expressKit } from "identity-kit/express"
import { identityKit as fastifyKit } from "identity-kit/fastify"
import { createNodeHandler } from "identity-kit/node"
import express4 from "express4"
import express5 from "express5"
import fastify4 from "fastify4"
import fastify5 from "fastify5"
import { auditLogOf } from "./support/audit.js"
import { layerMemoryWithGoneWorkspace } from "./support/gone-workspace.js"

const ROUTE = "/v2/identities.updateIdentity"
const LIMIT = 2048
const TYPE = "https://unkey.com/docs/errors/"
const SCHEMA_DETAIL = `POST request body for '${ROUTE}' failed to validate schema`

// The documented shapes, decoded strictly: an extra or missing key fails the test.
const strict = { onExcessProperty: "error" } as const
const Issue = Schema.Struct({ location: Schema.String, message: Schema.String, fix: Schema.optional(Schema.String) })
const ErrorBody = Schema.Struct({
  meta: Schema.Struct({ requestId: Schema.String }),
  error: Schema.Struct({
    title: Schema.String,
    detail: Schema.String,
    status: Schema.Number,
    type: Schema.String,
    errors: Schema.optional(Schema.Array(Issue))
  })
})
const Ratelimit = Schema.Struct({
  id: Schema.String,
  name: Schema.String,
  limit: Schema.Number,
  duration: Schema.Number,
  autoApply: Schema.Boolean
})
const SuccessBody = Schema.Struct({
  meta: Schema.Struct({ requestId: Schema.String }),
  data: Schema.Struct({
    id: Schema.String,
    externalId: Schema.String,
    meta: Schema.Record({ key: Schema.String, value: Schema.Unknown }),
    ratelimits: Schema.optional(Schema.Array(Ratelimit))
  })
})
const HostBody = Schema.Struct({ host: Schema.Literal("not-found", "error") })
const decodeError = Schema.decodeUnknownSync(ErrorBody, strict)
const decodeSuccess = Schema.decodeUnknownSync(SuccessBody, strict)
const decodeHost = Schema.decodeUnknownSync(HostBody, strict)

interface Ctx {
  readonly host: Host
  readonly seed: Seeded
}

interface PostOptions {
  readonly body?: string | Uint8Array<ArrayBuffer> | ReadableStream<Uint8Array>
  /** `null` sends no Authorization header; default the seeded root key. */
  readonly authorization?: string | null
  /** `null` sends no Content-Type; default `application/json`. */
  readonly contentType?: string | null
  readonly headers?: Record<string, string>
  readonly path?: string
  readonly method?: string
  readonly fromOrigin?: boolean
}

const send = (ctx: Ctx, options: PostOptions = {}) => {
  // As Unkey's SDKs send it (a bare fetch would send `*/*`: see the negotiation scenario).
  const headers = new Headers({ accept: "application/json", ...options.headers })
  const authorization = options.authorization === undefined ? `Bearer ${ctx.seed.rootKey}` : options.authorization
  if (authorization !== null) headers.set("authorization", authorization)
  const contentType = options.contentType === undefined ? "application/json" : options.contentType
  if (contentType !== null) headers.set("content-type", contentType)
  const init: RequestInit & { duplex?: "half"; fromOrigin?: boolean } = {
    method: options.method ?? "POST",
    headers,
    fromOrigin: options.fromOrigin ?? false
  }
  if (options.body !== undefined) init.body = options.body
  if (options.body instanceof ReadableStream) init.duplex = "half"
  return ctx.host.send(options.path ?? ROUTE, init)
}

const json = (value: unknown) => JSON.stringify(value)

/** Checks an API error answer (spec §4): status, JSON, request id, type, detail, `errors` iff 400/413. */
const expectApiError = async (
  response: Response,
  expected: { readonly status: number; readonly type: string; readonly detail?: string | RegExp }
) => {
  expect(response.status).toBe(expected.status)
  expect(response.headers.get("content-type")).toMatch(/^application\/json/)
  const body = decodeError(await response.json())
  expect(body.meta.requestId).toMatch(/^req_/)
  expect(body.error.status).toBe(expected.status)
  expect(body.error.type).toBe(TYPE + expected.type)
  if (typeof expected.detail === "string") expect(body.error.detail).toBe(expected.detail)
  if (expected.detail instanceof RegExp) expect(body.error.detail).toMatch(expected.detail)
  expect(body.error.errors !== undefined).toBe(expected.status === 400 || expected.status === 413)
  return body
}

/** Unknown paths: the host's own 404 for Express and Fastify (next() / not-found), the API's for the others. */
const expectHostNotFound = async (ctx: Ctx, response: Response) => {
  expect(response.status).toBe(404)
  if (ctx.host.kind === "express" || ctx.host.kind === "fastify") {
    expect(decodeHost(await response.json())).toEqual({ host: "not-found" })
  } else {
    await expectApiError(response, { status: 404, type: "unkey/application/route_not_found" })
  }
}

/** A JSON body of more than `LIMIT` bytes, valid JSON so a host's JSON parser takes it too. */
const oversized = json({ identity: "user_123", meta: { pad: "x".repeat(LIMIT) } })

/** The same body as a stream of three chunks: chunked transfer encoding, no Content-Length. */
const oversizedStream = () => {
  const bytes = new TextEncoder().encode(oversized)
  const third = Math.ceil(bytes.length / 3)
  return new ReadableStream<Uint8Array>({
    start(controller) {
      for (let i = 0; i < bytes.length; i += third) controller.enqueue(bytes.slice(i, i + third))
      controller.close()
    }
  })
}

/** A request fetch cannot make (TRACE is a forbidden method for it), over node:http. */
const rawRequest = (url: string, method: string) =>
  new Promise<{ status: number; headers: IncomingHttpHeaders; body: string }>((resolve, reject) => {
    const req = request(url, { method }, (res) => {
      let body = ""
      res.setEncoding("utf8")
      res.on("data", (chunk: string) => (body += chunk))
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
    })
    req.on("error", reject)
    req.end()
  })

interface Scenario {
  readonly name: string
  readonly applies?: (host: HostConfig) => boolean
  readonly run: (ctx: Ctx) => Promise<void>
}

const scenarios: ReadonlyArray<Scenario> = [
  {
    name: "200: the exact success body, ratelimits in request order, existing ratelimit id kept",
    run: async (ctx) => {
      const response = await send(ctx, {
        body: json({
          identity: "user_123",
          meta: { plan: "premium" },
          ratelimits: [
            { name: "tokens", limit: 5, duration: 1000 },
            { name: "requests", limit: 1000, duration: 3_600_000, autoApply: true }
          ]
        })
      })
      expect(response.status).toBe(200)
      expect(response.headers.get("content-type")).toMatch(/^application\/json/)
      expect(decodeSuccess(await response.json())).toStrictEqual({
        meta: { requestId: expect.stringMatching(/^req_/) },
        data: {
          id: ctx.seed.identityId,
          externalId: "user_123",
          meta: { plan: "premium" },
          ratelimits: [
            { id: expect.stringMatching(/^rl_/), name: "tokens", limit: 5, duration: 1000, autoApply: false },
            { id: ctx.seed.requestsRatelimitId, name: "requests", limit: 1000, duration: 3_600_000, autoApply: true }
          ]
        }
      })
    }
  },
  {
    name: "200: by id, charset parameter, query string; no ratelimits → field left out",
    run: async (ctx) => {
      const response = await send(ctx, {
        path: `${ROUTE}?source=test`,
        contentType: "application/json; charset=utf-8",
        body: json({ identity: ctx.seed.plainIdentityId, meta: { tier: 2 } })
      })
      expect(response.status).toBe(200)
      expect(decodeSuccess(await response.json())).toStrictEqual({
        meta: { requestId: expect.stringMatching(/^req_/) },
        data: { id: ctx.seed.plainIdentityId, externalId: "user_plain", meta: { tier: 2 } }
      })
    }
  },
  {
    name: "400 V1: no Authorization header",
    run: async (ctx) => {
      const body = await expectApiError(await send(ctx, { authorization: null, body: json({ identity: "user_123" }) }), {
        status: 400,
        type: "unkey/application/invalid_input",
        detail: "Authorization header for 'bearer' scheme"
      })
      expect(body.error.errors).toEqual([{
        location: "security",
        message: "Authorization header was not found",
        fix: "Add an 'Authorization' header to this request"
      }])
    }
  },
  {
    name: "400 V2: Content-Type not JSON",
    run: async (ctx) => {
      await expectApiError(await send(ctx, { contentType: "text/plain", body: json({ identity: "user_123" }) }), {
        status: 400,
        type: "unkey/application/invalid_input",
        detail: "POST operation request content type 'text/plain' does not exist"
      })
    }
  },
  {
    name: "400 V2: no Content-Type at all",
    run: async (ctx) => {
      // Bytes, not a string: fetch would add `text/plain;charset=UTF-8` to a string body.
      const body = new TextEncoder().encode(json({ identity: "user_123" }))
      await expectApiError(await send(ctx, { contentType: null, body }), {
        status: 400,
        type: "unkey/application/invalid_input",
        detail: "POST operation request content type '' does not exist"
      })
    }
  },
  {
    // With express.json() in front this is body-parser's "no body" case (trpc/trpc#7446): Express 4
    // leaves `req.body = {}`, which must not be taken for a parsed `{}`.
    name: "400 V3: empty body",
    run: async (ctx) => {
      await expectApiError(await send(ctx, { body: "" }), {
        status: 400,
        type: "unkey/application/invalid_input",
        detail: `POST request body is empty for '${ROUTE}'`
      })
    }
  },
  {
    name: "400 V4: invalid JSON",
    run: async (ctx) => {
      const response = await send(ctx, { body: "{\"identity\": " })
      if (ctx.host.parserErrorsToHost) {
        // express.json() in front rejects it first and `identities.errors` is not mounted: the
        // host's error handler answers, as documented.
        expect(response.status).toBe(400)
        expect(decodeHost(await response.json())).toEqual({ host: "error" })
        return
      }
      const body = await expectApiError(response, { status: 400, type: "unkey/application/invalid_input", detail: SCHEMA_DETAIL })
      expect(body.error.errors).toHaveLength(1)
    }
  },
  {
    name: "400 V5: every schema violation reported",
    run: async (ctx) => {
      const body = await expectApiError(
        await send(ctx, { body: json({ foo: 1, ratelimits: [{ name: "requests", limit: 0, duration: 1000 }] }) }),
        { status: 400, type: "unkey/application/invalid_input", detail: SCHEMA_DETAIL }
      )
      const messages = (body.error.errors ?? []).map((issue) => issue.message)
      expect(messages).toEqual(expect.arrayContaining([
        "missing property 'identity'",
        "additional properties 'foo' not allowed",
        "minimum: got 0, want 1"
      ]))
    }
  },
  {
    name: "400 A1: no 'Bearer ' prefix",
    run: async (ctx) => {
      await expectApiError(await send(ctx, { authorization: `Basic ${ctx.seed.rootKey}`, body: json({ identity: "user_123" }) }), {
        status: 400,
        type: "unkey/authentication/malformed",
        detail: /missing the 'Bearer ' prefix/
      })
    }
  },
  {
    name: "401: unknown root key",
    run: async (ctx) => {
      await expectApiError(await send(ctx, { authorization: "Bearer unkey_nope", body: json({ identity: "user_123" }) }), {
        status: 401,
        type: "unkey/authentication/key_not_found",
        detail: "The provided root key is invalid. We could not find the requested key."
      })
    }
  },
  {
    name: "403: disabled key",
    run: async (ctx) => {
      await expectApiError(await send(ctx, { authorization: `Bearer ${ctx.seed.disabledKey}`, body: json({ identity: "user_123" }) }), {
        status: 403,
        type: "unkey/authorization/key_disabled",
        detail: "The provided root key is invalid. The key is disabled."
      })
    }
  },
  {
    name: "403: expired key",
    run: async (ctx) => {
      await expectApiError(await send(ctx, { authorization: `Bearer ${ctx.seed.expiredKey}`, body: json({ identity: "user_123" }) }), {
        status: 403,
        type: "unkey/authorization/forbidden",
        detail: "The provided root key is invalid. the key has expired on 2024-01-02T03:04:05Z"
      })
    }
  },
  {
    name: "403: disabled workspace",
    run: async (ctx) => {
      await expectApiError(
        await send(ctx, { authorization: `Bearer ${ctx.seed.disabledWorkspaceKey}`, body: json({ identity: "user_123" }) }),
        {
          status: 403,
          type: "unkey/authorization/workspace_disabled",
          detail: "The provided root key is invalid. The workspace is disabled."
        }
      )
    }
  },
  {
    name: "403: missing permission",
    run: async (ctx) => {
      await expectApiError(await send(ctx, { authorization: `Bearer ${ctx.seed.unprivilegedKey}`, body: json({ identity: "user_123" }) }), {
        status: 403,
        type: "unkey/authorization/insufficient_permissions",
        detail: "Missing one of these permissions: ['identity.*.update_identity'], have: ['a', 'b']"
      })
    }
  },
  {
    name: "404: the key's workspace does not exist",
    run: async (ctx) => {
      await expectApiError(
        await send(ctx, { authorization: `Bearer ${ctx.seed.missingWorkspaceKey}`, body: json({ identity: "user_123" }) }),
        { status: 404, type: "unkey/data/workspace_not_found" }
      )
    }
  },
  {
    name: "404: identity not found",
    run: async (ctx) => {
      await expectApiError(await send(ctx, { body: json({ identity: "user_nobody" }) }), {
        status: 404,
        type: "unkey/data/identity_not_found",
        detail: "This identity does not exist."
      })
    }
  },
  {
    name: "413: body over the limit, declared by Content-Length",
    run: async (ctx) => {
      const body = await expectApiError(await send(ctx, { body: oversized }), {
        status: 413,
        type: "user/bad_request/request_body_too_large",
        detail: `The request body exceeds the maximum allowed size of ${LIMIT} bytes.`
      })
      expect(body.error.errors).toEqual([])
    }
  },
  {
    name: "413: body over the limit, chunked without Content-Length",
    run: async (ctx) => {
      const body = await expectApiError(await send(ctx, { body: oversizedStream() }), {
        status: 413,
        type: "user/bad_request/request_body_too_large",
        detail: `The request body exceeds the maximum allowed size of ${LIMIT} bytes.`
      })
      expect(body.error.errors).toEqual([])
    }
  },
  {
    name: "the connection is usable after a 413 (keep-alive or a clean close)",
    run: async (ctx) => {
      await send(ctx, { body: oversized }).then((response) => response.arrayBuffer())
      const response = await send(ctx, { body: json({ identity: "user_nobody" }) })
      expect(response.status).toBe(404)
    }
  },
  {
    name: "unknown path → the host's 404 (Express next(), Fastify not-found)",
    run: async (ctx) => {
      await expectHostNotFound(ctx, await send(ctx, { path: `${ROUTE}X`, body: json({ identity: "user_123" }) }))
      await expectHostNotFound(ctx, await send(ctx, { path: "/v2/keys.verifyKey", method: "GET" }))
    }
  },
  {
    name: "the route outside the mount point is not ours",
    applies: (host) => host.mounted,
    run: async (ctx) => {
      await expectHostNotFound(ctx, await send(ctx, { fromOrigin: true, body: json({ identity: "user_123" }) }))
    }
  },
  {
    name: "405: other methods on the route",
    run: async (ctx) => {
      for (const method of ["GET", "PUT", "DELETE"]) {
        const response = await send(ctx, { method, ...(method === "GET" ? {} : { body: json({ identity: "user_123" }) }) })
        expect(response.headers.get("allow")).toBe("POST")
        await expectApiError(response, { status: 405, type: "unkey/application/method_not_allowed" })
      }
    }
  },
  {
    name: "405: HEAD, and TRACE (which a WHATWG Request cannot carry) — never a 500",
    applies: (host) => host.kind !== "fetch",
    run: async (ctx) => {
      const head = await rawRequest(`${ctx.host.baseUrl}${ROUTE}`, "HEAD")
      expect(head).toMatchObject({ status: 405, body: "", headers: { allow: "POST" } })
      const trace = await rawRequest(`${ctx.host.baseUrl}${ROUTE}`, "TRACE")
      expect(trace).toMatchObject({ status: 405, headers: { allow: "POST", "content-type": "application/json" } })
      expect(decodeError(JSON.parse(trace.body)).error).toMatchObject({
        status: 405,
        type: `${TYPE}unkey/application/method_not_allowed`,
        detail: "Method 'TRACE' is not allowed on this route; use POST."
      })
    }
  },
  {
    name: "error Content-Type is negotiated from Accept; a success is always application/json",
    run: async (ctx) => {
      const typeFor = async (accept: string | undefined, authorization?: string) => {
        const response = await send(ctx, {
          body: json({ identity: "user_123" }),
          headers: accept === undefined ? {} : { accept },
          ...(authorization === undefined ? {} : { authorization })
        })
        await response.arrayBuffer()
        return [response.status, response.headers.get("content-type")]
      }
      expect(await typeFor("*/*", "Bearer unknown")).toEqual([401, "application/problem+json"])
      expect(await typeFor("application/*", "Bearer unknown")).toEqual([401, "application/problem+json"])
      expect(await typeFor("text/html, application/problem+json;q=0.9", "Bearer unknown")).toEqual([
        401,
        "application/problem+json"
      ])
      expect(await typeFor("text/html", "Bearer unknown")).toEqual([401, "application/json"])
      expect(await typeFor("application/json", "Bearer unknown")).toEqual([401, "application/json"])
      expect(await typeFor("*/*")).toEqual([200, "application/json"])
    }
  },
  {
    name: "a header the host set before us (CORS) survives, on success and on error",
    applies: (host) => host.kind !== "fetch",
    run: async (ctx) => {
      const ok = await send(ctx, { body: json({ identity: "user_plain" }) })
      expect(ok.status).toBe(200)
      expect(ok.headers.get("access-control-allow-origin")).toBe(HOST_ORIGIN)
      expect(ok.headers.get("content-type")).toMatch(/^application\/json/)
      const failed = await send(ctx, { body: oversized })
      expect(failed.status).toBe(413)
      expect(failed.headers.get("access-control-allow-origin")).toBe(HOST_ORIGIN)
    }
  }
]

/** Starts the host before the block's tests and closes it after; the getter fails loudly if unstarted. */
const useHost = (config: HostConfig): (() => Ctx) => {
  let ctx: Ctx | undefined
  beforeAll(async () => {
    // The memory store in which the seed's `missingWorkspaceKey` is found without its workspace (A9).
    const host = await config.start({ storage: layerMemoryWithGoneWorkspace, maxBodyBytes: LIMIT })
    ctx = { host, seed: await seed(host.kit) }
  })
  afterAll(async () => {
    await ctx?.host.close()
  })
  return () => {
    if (ctx === undefined) throw new Error(`${config.name} did not start`)
    return ctx
  }
}

for (const config of hostConfigs) {
  describe(config.name, () => {
    const current = useHost(config)
    // Scenarios that do not apply to a host (no socket, no mount path) are not registered for it.
    for (const scenario of scenarios.filter((s) => s.applies?.(config) ?? true)) {
      it(scenario.name, async () => {
        await scenario.run(current())
      })
    }
  })
}

const withTimeout = <A>(promise: Promise<A>, ms: number, what: string): Promise<A> =>
  Promise.race([
    promise,
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms).unref())
  ])

for (const config of hostKinds) {
  describe(`${config.name}: clients and connections`, () => {
    const current = useHost(config)

    // Through the host's own fetch: a real socket for all but the fetch handler. No retries.
    const sdk = (rootKey: string) => {
      const { host } = current()
      return new Unkey({
        rootKey,
        serverURL: host.baseUrl,
        retryConfig: { strategy: "none" },
        httpClient: new HTTPClient({ fetcher: (input, init) => host.fetch(new Request(input, init)) })
      })
    }

    it("the official SDK parses a 200", async () => {
      const ctx = current()
      const result = await sdk(ctx.seed.rootKey).identities.updateIdentity({
        identity: "user_123",
        meta: { plan: "sdk" },
        ratelimits: [{ name: "requests", limit: 50, duration: 60_000, autoApply: true }]
      })
      expect(result.meta.requestId).toMatch(/^req_/)
      expect(result.data).toEqual({
        id: ctx.seed.identityId,
        externalId: "user_123",
        meta: { plan: "sdk" },
        ratelimits: [{ id: ctx.seed.requestsRatelimitId, name: "requests", limit: 50, duration: 60_000, autoApply: true }]
      })
    })

    it("the official SDK throws its typed errors", async () => {
      const ctx = current()
      await expect(sdk(ctx.seed.rootKey).identities.updateIdentity({ identity: "user_nobody" })).rejects.toBeInstanceOf(
        NotFoundErrorResponse
      )
      await expect(sdk("unkey_nope").identities.updateIdentity({ identity: "user_123" })).rejects.toBeInstanceOf(
        UnauthorizedErrorResponse
      )
      await expect(sdk(ctx.seed.unprivilegedKey).identities.updateIdentity({ identity: "user_123" })).rejects
        .toBeInstanceOf(ForbiddenErrorResponse)
      const duplicate = { name: "requests", limit: 1, duration: 1000 }
      const error: unknown = await sdk(ctx.seed.rootKey).identities.updateIdentity({
        identity: "user_123",
        ratelimits: [duplicate, duplicate]
      }).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(BadRequestErrorResponse)
      if (error instanceof BadRequestErrorResponse) {
        expect(error.data$.error.detail).toBe("Ratelimit with name 'requests' is already defined in the request")
      }
    })

    it("the official SDK manages an identity end to end: create, get, list, update, delete", async () => {
      const ctx = current()
      const issued = await ctx.host.kit.admin.issueRootKey({
        workspaceId: ctx.seed.workspaceId,
        permissions: [
          "identity.*.create_identity",
          "identity.*.read_identity",
          "identity.*.update_identity",
          "identity.*.delete_identity"
        ]
      })
      const unkey = sdk(issued.key)
      const externalId = `sdk_${config.name.replace(/[^a-zA-Z0-9]/g, "_")}`
      const created = await unkey.identities.createIdentity({
        externalId,
        meta: { plan: "pro" },
        ratelimits: [{ name: "requests", limit: 10, duration: 60_000 }]
      })
      const { identityId } = created.data
      const byExternalId = await unkey.identities.getIdentity({ identity: externalId })
      expect(byExternalId.data).toEqual({
        id: identityId,
        externalId,
        meta: { plan: "pro" },
        ratelimits: [{ id: expect.stringMatching(/^rl_/), name: "requests", limit: 10, duration: 60_000, autoApply: false }]
      })
      const listed = await unkey.identities.listIdentities({ search: externalId })
      expect(listed.result.data.map((identity) => identity.id)).toEqual([identityId])
      expect(listed.result.pagination).toEqual({ hasMore: false })
      await unkey.identities.updateIdentity({ identity: identityId, meta: { plan: "enterprise" } })
      expect((await unkey.identities.getIdentity({ identity: identityId })).data.meta).toEqual({ plan: "enterprise" })
      await expect(unkey.identities.createIdentity({ externalId })).rejects.toBeInstanceOf(ConflictErrorResponse)
      const deleted = await unkey.identities.deleteIdentity({ identity: externalId })
      expect(deleted.meta.requestId).toMatch(/^req_/)
      await expect(unkey.identities.getIdentity({ identity: identityId })).rejects.toBeInstanceOf(NotFoundErrorResponse)
      const again = await unkey.identities.createIdentity({ externalId })
      expect(again.data.identityId).not.toBe(identityId)
    })

    it("a forged X-Forwarded-For is not trusted by default: the peer address and the user agent end up in the audit log", async () => {
      const ctx = current()
      const response = await send(ctx, {
        headers: { "x-forwarded-for": "203.0.113.7, 10.0.0.1", "user-agent": "adapter-test/1.0" },
        body: json({ identity: "user_plain", meta: { audited: true } })
      })
      expect(response.status).toBe(200)
      const log = await auditLogOf(ctx.host.kit, ctx.seed.workspaceId)
      expect(log.at(-1)).toMatchObject({ event: "identity.update", remoteIp: ctx.host.peerAddress, userAgent: "adapter-test/1.0" })
    })

    it("behind trusted proxies (the host's own setting), X-Forwarded-For names the client", async () => {
      // `true`: every proxy trusted, the first value; only the nearest: the value it appended.
      for (const [trustProxy, expected] of [[true, "203.0.113.7"], ["nearest", "10.0.0.1"]] as const) {
        const host = await config.start({ storage: layerMemory, maxBodyBytes: LIMIT }, { trustProxy })
        try {
          const ctx = { host, seed: await seed(host.kit) }
          const response = await send(ctx, {
            headers: { "x-forwarded-for": "203.0.113.7, 10.0.0.1" },
            body: json({ identity: "user_plain", meta: { trusted: String(trustProxy) } })
          })
          expect(response.status).toBe(200)
          const log = await auditLogOf(host.kit, ctx.seed.workspaceId)
          expect([trustProxy, log.at(-1)?.remoteIp]).toEqual([trustProxy, expected])
        } finally {
          await host.close()
        }
      }
    })

    it("without X-Forwarded-For, the peer address is recorded", async () => {
      const ctx = current()
      const response = await send(ctx, {
        headers: { "user-agent": "adapter-test/2.0" },
        body: json({ identity: "user_plain", meta: { audited: "peer" } })
      })
      expect(response.status).toBe(200)
      const log = await auditLogOf(ctx.host.kit, ctx.seed.workspaceId)
      expect(log.at(-1)).toMatchObject({ remoteIp: ctx.host.peerAddress, userAgent: "adapter-test/2.0" })
    })

    it("a client abort mid-request interrupts the write", async () => {
      const { layer, probe } = layerHanging()
      const host = await config.start({ storage: layer, maxBodyBytes: LIMIT })
      try {
        const seeded = await seed(host.kit)
        const controller = new AbortController()
        const pending = host.send(ROUTE, {
          method: "POST",
          headers: { authorization: `Bearer ${seeded.rootKey}`, "content-type": "application/json" },
          body: json({ identity: "user_123", meta: { plan: "never" } }),
          signal: controller.signal
        }).then(() => "answered", () => "aborted")
        await withTimeout(probe.entered, 5000, "the write to start")
        controller.abort()
        await withTimeout(probe.interrupted, 5000, "the write to be interrupted")
        // The fetch handler answers the aborted request (499); socket clients see their abort.
        expect(await pending).toBe(host.kind === "fetch" ? "answered" : "aborted")
      } finally {
        await host.close()
      }
    })

    if (config.kind === "fastify") {
      it("the plugin's raw-body parser does not leak: a host JSON route still gets parsed JSON", async () => {
      const ctx = current()
        const response = await fetch(`${ctx.host.origin}/host/json`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: json({ hello: "world" })
        })
        expect(response.status).toBe(200)
        expect(await response.json()).toEqual({ received: { hello: "world" } })
      })

      it("a plugin that builds its own kit serves its own storage", async () => {
      const ctx = current()
        const response = await fetch(`${ctx.host.baseUrl}/owned${ROUTE}`, {
          method: "POST",
          headers: { authorization: `Bearer ${ctx.seed.rootKey}`, "content-type": "application/json", accept: "application/json" },
          body: json({ identity: "user_123" })
        })
        // Its memory storage is empty: the shared kit's key is unknown there.
        await expectApiError(response, { status: 401, type: "unkey/authentication/key_not_found" })
      })
    }
  })
}

describe("who disposes the kit", () => {
  // A valid-shaped request with an unknown key: it gets past validation, so storage is built (401).
  const headers = { authorization: "Bearer unknown", "content-type": "application/json" }
  const payload = JSON.stringify({ identity: "user_123" })
  const ping = (kit: IdentityKit) =>
    kit.fetch(new Request(`http://localhost${ROUTE}`, { method: "POST", headers, body: payload }))
  const ownedCases: ReadonlyArray<readonly [string, (storage: Layer.Layer<IdentityStore>) => Promise<void>]> = [
    ["createNodeHandler: dispose()", async (storage) => {
      const handler = createNodeHandler({ storage })
      await ping(handler.kit)
      await handler.dispose()
    }],
    ["express: dispose()", async (storage) => {
      const middleware = expressKit({ storage })
      await ping(middleware.kit)
      await middleware.dispose()
    }],
    ["fastify 4: app.close()", async (storage) => {
      const app = fastify4()
      await app.register(fastifyKitV4, { storage })
      await app.inject({ method: "POST", url: ROUTE, headers, payload })
      await app.close()
    }],
    ["fastify 5: app.close()", async (storage) => {
      const app = fastify5()
      await app.register(fastifyKit, { storage })
      await app.inject({ method: "POST", url: ROUTE, headers, payload })
      await app.close()
    }]
  ]
  for (const [name, run] of ownedCases) {
    it(`an adapter that built its kit releases its storage — ${name}`, async () => {
      const { layer, released } = layerObserved()
      await run(layer)
      expect(released()).toBe(true)
    })
  }

  it("an adapter given { kit } leaves that kit to its owner", async () => {
    const { layer, released } = layerObserved()
    const kit = makeIdentityKit({ storage: layer })
    await ping(kit)
    await createNodeHandler({ kit }).dispose()
    await expressKit({ kit }).dispose()
    const app = fastify5()
    await app.register(fastifyKit, { kit })
    await app.close()
    expect(released()).toBe(false)
    expect((await ping(kit)).status).toBe(401)
    await kit.dispose()
    expect(released()).toBe(true)
  })
})

describe("paths as sent, shared kits, host errors", () => {
  /** POSTs to a raw request target (the path goes out as written, no URL normalisation). */
  const postRaw = (port: number, path: string) =>
    new Promise<number>((resolve, reject) => {
      const headers = { "content-type": "application/json" }
      const req = request({ host: "127.0.0.1", port, path, method: "POST", headers }, (res) => {
        res.resume()
        res.on("end", () => resolve(res.statusCode ?? 0))
      })
      req.on("error", reject)
      req.end("{}")
    })
  const listen = (server: import("node:http").Server) =>
    new Promise<number>((resolve) =>
      server.listen(0, "127.0.0.1", () => {
        const address = server.address()
        resolve(typeof address === "object" && address !== null ? address.port : 0)
      })
    )

  it("dot segments are not resolved into the route (Node http and Express 4/5)", async () => {
    const { createServer } = await import("node:http")
    const express4 = (await import("express4")).default
    const express5 = (await import("express5")).default
    const node = createNodeHandler({ storage: layerMemory })
    const servers = [createServer(node)]
    for (const express of [express4, express5]) {
      const app = express()
      app.use("/api", expressKit({ kit: node.kit }))
      app.use((_req, res) => {
        res.status(404).send("host 404")
      })
      servers.push(createServer(app))
    }
    try {
      const [nodePort, e4, e5] = await Promise.all(servers.map(listen))
      expect(await postRaw(nodePort!, `/x/..${ROUTE}`)).toBe(404)
      expect(await postRaw(nodePort!, ROUTE)).toBe(400)
      for (const port of [e4!, e5!]) {
        expect(await postRaw(port, `/api/x/..${ROUTE}`)).toBe(404)
        expect(await postRaw(port, `/api${ROUTE}`)).toBe(400)
      }
    } finally {
      for (const server of servers) server.close()
      await node.dispose()
    }
  })

  it("the kit's trustProxy: hop counts from the server, blanks skipped, bad values refused at construction", async () => {
    const recorded = async (trustProxy: boolean | number, forwardedFor: string | undefined) => {
      const kit = makeIdentityKit({ storage: layerMemory, trustProxy })
      try {
        const seeded = await seed(kit)
        const response = await kit.fetch(new Request(`http://localhost${ROUTE}`, {
          method: "POST",
          headers: {
            authorization: `Bearer ${seeded.rootKey}`,
            "content-type": "application/json",
            ...(forwardedFor === undefined ? {} : { "x-forwarded-for": forwardedFor })
          },
          body: json({ identity: "user_plain" })
        }), { remoteAddress: "192.0.2.10" })
        expect(response.status).toBe(200)
        return (await auditLogOf(kit, seeded.workspaceId)).at(-1)?.remoteIp
      } finally {
        await kit.dispose()
      }
    }
    const chain = "198.51.100.1, , 203.0.113.7, 10.0.0.1"
    expect(await recorded(false, chain)).toBe("192.0.2.10")
    expect(await recorded(0, chain)).toBe("192.0.2.10")
    expect(await recorded(1, chain)).toBe("10.0.0.1")
    expect(await recorded(2, chain)).toBe("203.0.113.7")
    expect(await recorded(9, chain)).toBe("198.51.100.1")
    expect(await recorded(true, chain)).toBe("198.51.100.1")
    expect(await recorded(true, undefined)).toBe("192.0.2.10")
    expect(await recorded(true, " , ")).toBe("192.0.2.10")
    for (const bad of [-1, 1.5, Number.NaN]) {
      expect(() => makeIdentityKit({ storage: layerMemory, trustProxy: bad })).toThrow(TypeError)
    }
  })

  it("a fetch handler given { kit } leaves that kit to its owner", async () => {
    const { createFetchHandler } = await import("identity-kit/fetch")
    const { layer, released } = layerObserved()
    const kit = makeIdentityKit({ storage: layer })
    await kit.admin.listAuditLog("ws")
    await createFetchHandler({ kit }).dispose()
    expect(released()).toBe(false)
    await kit.dispose()
    expect(released()).toBe(true)
  })

  it("Fastify: a Content-Type it cannot parse still gets the spec's V1/V2 answers in order", async () => {
    type Inject = (options: {
      readonly method: "POST"
      readonly url: string
      readonly payload: string
      readonly headers: Record<string, string>
    }) => Promise<{ readonly statusCode: number; readonly json: () => { readonly error: { readonly detail: string } } }>
    const check = async (inject: Inject) => {
      const noAuth = await inject({ method: "POST", url: ROUTE, payload: "{}", headers: { "content-type": "text" } })
      expect([noAuth.statusCode, noAuth.json().error.detail]).toEqual([400, "Authorization header for 'bearer' scheme"])
      const withAuth = await inject({ method: "POST", url: ROUTE, payload: "{}", headers: { "content-type": "text", authorization: "Bearer x" } })
      expect([withAuth.statusCode, withAuth.json().error.detail]).toEqual([400, "POST operation request content type 'text' does not exist"])
    }
    const app5 = fastify5()
    await app5.register(fastifyKit, { storage: layerMemory })
    await check((options) => app5.inject(options))
    await app5.close()
    const app4 = fastify4()
    await app4.register(fastifyKitV4, { storage: layerMemory })
    await check((options) => app4.inject(options))
    await app4.close()
  })

  it("Fastify: errors of the host's own hooks reach the host's error handler unchanged", async () => {
    const rateLimited = async () => {
      throw Object.assign(new Error("Rate limit exceeded"), { statusCode: 429 })
    }
    const inject = { method: "POST", url: ROUTE, payload: "{}", headers: { "content-type": "application/json" } } as const

    const app5 = fastify5()
    app5.addHook("onRequest", rateLimited)
    app5.setErrorHandler(async (error: { statusCode?: number }, _request, reply) => reply.status(error.statusCode ?? 500).send({ host: true }))
    await app5.register(fastifyKit, { storage: layerMemory })
    const answer5 = await app5.inject(inject)
    expect([answer5.statusCode, answer5.json()]).toEqual([429, { host: true }])
    await app5.close()

    const app4 = fastify4()
    app4.addHook("onRequest", rateLimited)
    app4.setErrorHandler(async (error: Error & { statusCode?: number }, _request, reply) => reply.status(error.statusCode ?? 500).send({ host: true }))
    await app4.register(fastifyKitV4, { storage: layerMemory })
    const answer4 = await app4.inject(inject)
    expect([answer4.statusCode, answer4.json()]).toEqual([429, { host: true }])
    await app4.close()
  })
})

// The most common Express setup: `app.use(express.json())` for the whole app, then identity-kit.
// A body the parser rejects never reaches a middleware; `identities.errors` answers it as the API.
for (const [name, express] of [["express4", express4], ["express5", express5]] as const) {
  describe(`${name} behind a global express.json(), with identities.errors`, () => {
    let origin = ""
    let close: () => Promise<void> = () => Promise.resolve()
    let middleware: ReturnType<typeof expressKit> | undefined
    let seeded: Seeded | undefined
    beforeAll(async () => {
      const { createServer } = await import("node:http")
      // The kit's own limit stays at its default (10 MiB): only the parser's 100 kB applies.
      const identities = expressKit({ storage: layerMemory })
      const app = express()
      app.use(express.json())
      app.post("/host/json", (req, res) => {
        res.json({ received: req.body })
      })
      // A host middleware on the kit's path that fails on demand: its error is not ours.
      app.use("/api", (req, _res, next) => {
        next(req.headers["x-host-fails"] === undefined ? undefined : Object.assign(new Error("host failure"), { status: 418 }))
      })
      app.use("/api", identities, identities.errors)
      app.use((error: unknown, _req: import("express").Request, res: import("express").Response, _next: import("express").NextFunction) => {
        const status: unknown = typeof error === "object" && error !== null ? Reflect.get(error, "status") : undefined
        res.status(typeof status === "number" ? status : 500).json({ host: "error" })
      })
      const server = createServer(app)
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()))
      const address = server.address()
      origin = `http://127.0.0.1:${typeof address === "object" && address !== null ? address.port : 0}`
      close = async () => {
        server.closeAllConnections()
        await new Promise<void>((resolve) => server.close(() => resolve()))
        await identities.dispose()
      }
      middleware = identities
      seeded = await seed(identities.kit)
    })
    afterAll(async () => {
      await close()
    })

    const post = (body: string | ReadableStream<Uint8Array>, headers: Record<string, string>, path = `/api${ROUTE}`) =>
      fetch(origin + path, {
        method: "POST",
        headers: { accept: "application/json", "content-type": "application/json", ...headers },
        body,
        ...(body instanceof ReadableStream ? { duplex: "half" } : {})
      })
    const auth = () => ({ authorization: `Bearer ${seeded?.rootKey ?? "unseeded"}` })
    const big = json({ identity: "user_123", meta: { pad: "x".repeat(150 * 1024) } })
    const parserLimit = "The request body exceeds the maximum allowed size of 102400 bytes."

    it("a 150 kB body (over the parser's limit) gets the API's 413 JSON with the parser's limit", async () => {
      const declared = await expectApiError(await post(big, auth()), {
        status: 413,
        type: "user/bad_request/request_body_too_large",
        detail: parserLimit
      })
      expect(declared.error.errors).toEqual([])
      // Chunked, without Content-Length: the parser counts and gives up; same answer.
      const chunks = new TextEncoder().encode(big)
      const stream = new ReadableStream<Uint8Array>({
        start(controller) {
          for (let i = 0; i < chunks.length; i += 16_384) controller.enqueue(chunks.slice(i, i + 16_384))
          controller.close()
        }
      })
      await expectApiError(await post(stream, auth()), {
        status: 413,
        type: "user/bad_request/request_body_too_large",
        detail: parserLimit
      })
      // The error Content-Type is negotiated as on every other answer.
      const problem = await post(big, { ...auth(), accept: "application/problem+json" })
      expect([problem.status, problem.headers.get("content-type")]).toEqual([413, "application/problem+json"])
      expect(decodeError(await problem.json()).meta.requestId).toMatch(/^req_/)
    })

    it("invalid JSON gets the API's 400 V4, the same answer as without the parser", async () => {
      const body = await expectApiError(await post("{\"identity\": ", auth()), {
        status: 400,
        type: "unkey/application/invalid_input",
        detail: SCHEMA_DETAIL
      })
      const kit = middleware?.kit
      if (kit === undefined) throw new Error("not started")
      const direct = await kit.fetch(new Request(`http://localhost${ROUTE}`, {
        method: "POST",
        headers: { "content-type": "application/json", ...auth() },
        body: "{\"identity\": "
      }))
      expect(body.error.errors).toEqual(decodeError(await direct.json()).error.errors)
      expect(body.error.errors).toEqual([{ location: "body", message: expect.any(String) }])
    })

    it("no Authorization and invalid JSON: V1 comes first", async () => {
      await expectApiError(await post("{not json", {}), {
        status: 400,
        type: "unkey/application/invalid_input",
        detail: "Authorization header for 'bearer' scheme"
      })
    })

    it("a charset the parser refuses before reading: the body is read as if no parser were there", async () => {
      const response = await post(json({ identity: "user_plain", meta: { charset: "latin1" } }), {
        ...auth(),
        "content-type": "application/json; charset=latin1"
      })
      expect(response.status).toBe(200)
      expect(decodeSuccess(await response.json()).data.meta).toEqual({ charset: "latin1" })
    })

    it("a gzip body that does not inflate gets the API's 400, not the parser's error page", async () => {
      const response = await post("notgzip", { ...auth(), "content-encoding": "gzip" })
      await expectApiError(response, { status: 400, type: "unkey/application/invalid_input" })
    })

    it("a host route's invalid JSON, and a host error on the kit's path, still reach the host's error handler", async () => {
      const hostRoute = await post("{not json", {}, "/host/json")
      expect([hostRoute.status, decodeHost(await hostRoute.json())]).toEqual([400, { host: "error" }])
      const hostFailure = await post(json({ identity: "user_123" }), { ...auth(), "x-host-fails": "1" })
      expect([hostFailure.status, decodeHost(await hostFailure.json())]).toEqual([418, { host: "error" }])
      // A valid request still goes through the parser and the kit.
      const ok = await post(json({ identity: "user_plain" }), auth())
      expect(ok.status).toBe(200)
    })
  })
}
