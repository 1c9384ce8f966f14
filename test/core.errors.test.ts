/**
 * Every row of spec §4 through the fetch handler on memory storage, and the check order of §2.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import {
  errorTable,
  hashRootKey,
  IdentityStore,
  layerMemory,
  makeIdentityKit,
  makeMemory,
  ROUTE,
  StorageError
} from "identity-kit"
import { type Answer, call, seed } from "./support/core.js"
import { goneWorkspaceKey, layerMemoryWithGoneWorkspace } from "./support/gone-workspace.js"

const base = "https://unkey.com/docs/errors/"
const SCHEMA_DETAIL = "POST request body for '/v2/identities.updateIdentity' failed to validate schema"

/** Asserts the error body shape of spec §4 and returns the error. */
const expectError = (answer: Answer, status: number, type: string, title?: string) => {
  assert.strictEqual(answer.status, status)
  assert.strictEqual(answer.contentType, "application/json")
  assert.match(answer.body.meta.requestId, /^req_[1-9A-HJ-NP-Za-km-z]+$/)
  const error = answer.body.error
  assert.isDefined(error)
  if (error === undefined) throw new Error("unreachable")
  assert.strictEqual(error.status, status)
  assert.strictEqual(error.type, base + type)
  if (title !== undefined) assert.strictEqual(error.title, title)
  assert.deepStrictEqual(Object.keys(answer.body).sort(), ["error", "meta"])
  // `errors` exactly on 400 and 413; `fix` never null.
  if (status === 400 || status === 413) assert.isArray(error.errors)
  else assert.isUndefined(error.errors)
  for (const issue of error.errors ?? []) assert.notStrictEqual(issue.fix, null)
  return error
}

const ok = { identity: "user_123", meta: { plan: "pro" } }

describe("V – request shape (400 invalid_input)", () => {
  it.effect("V1: missing or blank Authorization", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      for (const authorization of [undefined, "", "   "]) {
        const error = expectError(yield* call(s, ok, { authorization }), 400, "unkey/application/invalid_input", "Bad Request")
        assert.strictEqual(error.detail, "Authorization header for 'bearer' scheme")
        assert.deepStrictEqual(error.errors, [{
          location: "security",
          message: "Authorization header was not found",
          fix: "Add an 'Authorization' header to this request"
        }])
      }
    }))

  it.effect("V2: Content-Type must be application/json (parameters allowed)", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      const error = expectError(yield* call(s, ok, { "content-type": "text/plain" }), 400, "unkey/application/invalid_input")
      assert.strictEqual(error.detail, "POST operation request content type 'text/plain' does not exist")
      const missing = expectError(yield* call(s, ok, { "content-type": undefined }), 400, "unkey/application/invalid_input")
      assert.match(missing.detail, /^POST operation request content type '.*' does not exist$/)
      for (const ct of ["application/json; charset=utf-8", "Application/JSON"]) {
        assert.strictEqual((yield* call(s, ok, { "content-type": ct })).status, 200)
      }
    }))

  it.effect("V3: empty body", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      const error = expectError(yield* call(s, ""), 400, "unkey/application/invalid_input")
      assert.strictEqual(error.detail, "POST request body is empty for '/v2/identities.updateIdentity'")
    }))

  it.effect("V4: invalid JSON, with the parser's message", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      for (const body of ["{", "{\"identity\": }", "nul", new Uint8Array([0x7b, 0xff, 0x7d])]) {
        const error = expectError(yield* call(s, body), 400, "unkey/application/invalid_input")
        assert.strictEqual(error.detail, SCHEMA_DETAIL)
        assert.strictEqual(error.errors?.length, 1)
        assert.strictEqual(error.errors?.[0]?.location, "body")
      }
    }))

  it.effect("V5: every schema violation is reported", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      const error = expectError(
        yield* call(s, {
          identity: "",
          foo: 1,
          meta: null,
          ratelimits: [
            { name: "ab", limit: 0, duration: 999, autoApply: "yes" },
            { name: "x".repeat(129), limit: 1.5, duration: 2 ** 53 },
            7
          ]
        }),
        400,
        "unkey/application/invalid_input"
      )
      assert.strictEqual(error.detail, SCHEMA_DETAIL)
      const got = (error.errors ?? []).map((e) => `${e.location}: ${e.message}`).sort()
      assert.deepStrictEqual(got, [
        "body.foo: additional properties 'foo' not allowed",
        "body.identity: minLength: got 0, want 1",
        "body.meta: got null, want object",
        "body.ratelimits[0].autoApply: got string, want boolean",
        "body.ratelimits[0].duration: minimum: got 999, want 1000",
        "body.ratelimits[0].limit: minimum: got 0, want 1",
        "body.ratelimits[0].name: minLength: got 2, want 3",
        "body.ratelimits[1].duration: maximum: got 9007199254740992, want 9007199254740991",
        "body.ratelimits[1].limit: got number, want integer",
        "body.ratelimits[1].name: maxLength: got 129, want 128",
        "body.ratelimits[2]: got integer, want object"
      ])
    }))

  it.effect("V5: body types, missing identity, null fields, array bounds", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      const messages = (answer: Answer) =>
        (expectError(answer, 400, "unkey/application/invalid_input").errors ?? []).map((e) => `${e.location}: ${e.message}`)
      assert.deepStrictEqual(messages(yield* call(s, "[]")), ["body: got array, want object"])
      assert.deepStrictEqual(messages(yield* call(s, "null")), ["body: got null, want object"])
      assert.deepStrictEqual(messages(yield* call(s, {})), ["body.identity: missing property 'identity'"])
      assert.deepStrictEqual(messages(yield* call(s, { identity: 5 })), ["body.identity: got integer, want string"])
      assert.deepStrictEqual(messages(yield* call(s, { identity: "user_123", ratelimits: null })), [
        "body.ratelimits: got null, want array"
      ])
      assert.deepStrictEqual(messages(yield* call(s, { identity: "user_123", meta: [1] })), ["body.meta: got array, want object"])
      const rl = (i: number) => ({ name: `rl_${i}`, limit: 1, duration: 1000 })
      assert.deepStrictEqual(
        messages(yield* call(s, { identity: "user_123", ratelimits: Array.from({ length: 51 }, (_, i) => rl(i)) })),
        ["body.ratelimits: maxItems: got 51, want at most 50"]
      )
      assert.strictEqual(
        (yield* call(s, { identity: "user_123", ratelimits: Array.from({ length: 50 }, (_, i) => rl(i)) })).status,
        200
      )
      const keys = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, i]))
      assert.deepStrictEqual(messages(yield* call(s, { identity: "user_123", meta: keys(101) })), [
        "body.meta: maxProperties: got 101, want at most 100"
      ])
      assert.strictEqual((yield* call(s, { identity: "user_123", meta: keys(100) })).status, 200)
      assert.deepStrictEqual(messages(yield* call(s, { identity: "a\u0000b" })), [
        "body.identity: must not contain the NUL character (\\u0000)"
      ])
      assert.deepStrictEqual(
        messages(yield* call(s, `{"identity":"x\\ud800","ratelimits":[{"name":"ab\\udc00c","limit":1,"duration":1000}]}`)),
        [
          "body.identity: must be valid Unicode (no unpaired surrogate)",
          "body.ratelimits[0].name: must be valid Unicode (no unpaired surrogate)"
        ]
      )
    }))

  it.effect("V5: a number beyond double range in meta (1e400) is a 400, never stored as null", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      for (const number of ["1e400", "-1e400", "[1, 2e999]"]) {
        const answer = yield* call(s, `{"identity":"user_123","meta":{"plan":"pro","big":${number}}}`)
        const error = expectError(answer, 400, "unkey/application/invalid_input")
        assert.deepStrictEqual(error.errors?.map((e) => e.location), ["body.meta"])
        assert.match(error.errors?.[0]?.message ?? "", /^a number is out of range/)
      }
      // Nothing was changed: the stored meta is the seeded one.
      const stored = yield* Effect.promise(() => s.kit.admin.getIdentity(s.workspaceId, "user_123"))
      assert.deepStrictEqual(stored?.meta, { plan: "free" })
      // Large but finite numbers are fine.
      const ok = yield* call(s, `{"identity":"user_123","meta":{"big":1.7e308,"small":-5e-324}}`)
      assert.strictEqual(ok.status, 200)
    }))

  it.effect("V5: huge arrays and many unknown keys cost one bounded list of errors", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      const items = "[" + Array.from({ length: 200_000 }, () => "{}").join(",") + "]"
      const many = expectError(yield* call(s, `{"identity":"x","ratelimits":${items}}`), 400, "unkey/application/invalid_input")
      assert.deepStrictEqual(many.errors?.map((e) => e.message), ["maxItems: got 200000, want at most 50"])
      const keys = Object.fromEntries(Array.from({ length: 100_000 }, (_, i) => [`k${i}`, 0]))
      const unknown = expectError(yield* call(s, { identity: 7, ...keys }), 400, "unkey/application/invalid_input")
      assert.strictEqual(unknown.errors?.length, 22)
      assert.strictEqual(unknown.errors?.[0]?.message, "additional properties 'k0' not allowed")
      assert.strictEqual(unknown.errors?.[20]?.message, "additional properties: 99980 more not listed")
      assert.strictEqual(unknown.errors?.[21]?.message, "got integer, want string")
    }))

  it.effect("V5: name length counts characters; limits accept the safe-integer edge", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      const answer = yield* call(s, {
        identity: "user_123",
        ratelimits: [
          { name: "abc", limit: Number.MAX_SAFE_INTEGER, duration: 1000 },
          { name: "🙂".repeat(128), limit: 1, duration: Number.MAX_SAFE_INTEGER, autoApply: true, extra: "ignored" }
        ]
      })
      assert.strictEqual(answer.status, 200)
      assert.strictEqual(answer.body.data?.ratelimits?.[0]?.limit, Number.MAX_SAFE_INTEGER)
      assert.strictEqual(answer.body.data?.ratelimits?.[0]?.autoApply, false)
      assert.isUndefined(answer.body.data?.ratelimits?.[1]?.["extra"])
    }))
})

describe("H1 – root key", () => {
  it.effect("A1: malformed Authorization (400 malformed)", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      for (const authorization of ["Basic abc", "bearer " + s.rootKey, "Bearer", "Bearer    ", s.rootKey]) {
        const error = expectError(yield* call(s, ok, { authorization }), 400, "unkey/authentication/malformed", "Bad Request")
        assert.strictEqual(
          error.detail,
          "You must provide a valid root key in the Authorization header in the format 'Bearer ROOT_KEY'. Your authorization header is missing the 'Bearer ' prefix."
        )
        assert.deepStrictEqual(error.errors, [])
      }
      // Surrounding whitespace is trimmed.
      assert.strictEqual((yield* call(s, ok, { authorization: `  Bearer ${s.rootKey}  ` })).status, 200)
    }))

  it.effect("A4: unknown and deleted keys (401)", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      const error = expectError(yield* call(s, ok, { authorization: "Bearer unkey_nope" }), 401, "unkey/authentication/key_not_found", "Unauthorized")
      assert.strictEqual(error.detail, "The provided root key is invalid. We could not find the requested key.")
      // A key with a deletion time is as good as unknown.
      yield* Effect.promise(() =>
        s.kit.run(Effect.flatMap(IdentityStore, (store) =>
          store.putRootKey({
            id: "key_gone",
            workspaceId: s.workspaceId,
            hash: hashRootKey("unkey_deleted"),
            name: "root key",
            permissions: ["identity.*.update_identity"],
            enabled: true,
            expiresAt: null,
            deletedAt: 1,
            createdAt: 0
          })))
      )
      expectError(yield* call(s, ok, { authorization: "Bearer unkey_deleted" }), 401, "unkey/authentication/key_not_found")
    }))

  it.effect("admin: a key disabled later gets 403, a revoked key 401, re-enabled works again", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      assert.strictEqual((yield* call(s, ok)).status, 200)
      yield* Effect.promise(() => s.kit.admin.updateRootKey(s.keyId, { enabled: false }))
      expectError(yield* call(s, ok), 403, "unkey/authorization/key_disabled")
      yield* Effect.promise(() => s.kit.admin.updateRootKey(s.keyId, { enabled: true }))
      assert.strictEqual((yield* call(s, ok)).status, 200)
      assert.isTrue(yield* Effect.promise(() => s.kit.admin.revokeRootKey(s.keyId)))
      expectError(yield* call(s, ok), 401, "unkey/authentication/key_not_found")
      assert.isFalse(yield* Effect.promise(() => s.kit.admin.revokeRootKey("key_missing")))
    }))

  it.effect("A6–A9: disabled key, expired key, disabled and missing workspace", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed({ storage: layerMemoryWithGoneWorkspace }))
      const issue = (input: Parameters<typeof s.kit.admin.issueRootKey>[0]) =>
        Effect.promise(() => s.kit.admin.issueRootKey(input)).pipe(Effect.map(({ key }) => `Bearer ${key}`))

      const disabled = yield* issue({ workspaceId: s.workspaceId, enabled: false })
      const a6 = expectError(yield* call(s, ok, { authorization: disabled }), 403, "unkey/authorization/key_disabled", "Key is disabled")
      assert.strictEqual(a6.detail, "The provided root key is invalid. The key is disabled.")

      const expired = yield* issue({ workspaceId: s.workspaceId, expiresAt: Date.UTC(2024, 0, 2, 3, 4, 5, 678) })
      const a7 = expectError(yield* call(s, ok, { authorization: expired }), 403, "unkey/authorization/forbidden", "Forbidden")
      assert.strictEqual(a7.detail, "The provided root key is invalid. the key has expired on 2024-01-02T03:04:05Z")
      const future = yield* issue({ workspaceId: s.workspaceId, expiresAt: Date.now() + 3_600_000 })
      assert.strictEqual((yield* call(s, ok, { authorization: future })).status, 200)

      yield* Effect.promise(() => s.kit.admin.createWorkspace({ id: "ws_off", enabled: false }))
      const offKey = yield* issue({ workspaceId: "ws_off", enabled: false })
      const a8 = expectError(yield* call(s, ok, { authorization: offKey }), 403, "unkey/authorization/workspace_disabled", "Workspace is disabled")
      assert.strictEqual(a8.detail, "The provided root key is invalid. The workspace is disabled.")

      const orphan = `Bearer ${yield* Effect.promise(() => goneWorkspaceKey(s.kit))}`
      const a9 = expectError(yield* call(s, ok, { authorization: orphan }), 404, "unkey/data/workspace_not_found", "Not Found")
      assert.strictEqual(a9.detail, "The provided root key is invalid. The requested workspace does not exist.")
    }))
})

describe("H3 – exact permission", () => {
  it.effect("A10: no wildcard matching; `have` lists the key's permissions", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      const cases: Array<[ReadonlyArray<string>, string]> = [
        [[], "[]"],
        [["*"], "['*']"],
        [["identity.id_1.update_identity", "api.*.read"], "['identity.id_1.update_identity', 'api.*.read']"],
        [["identity.*.*"], "['identity.*.*']"]
      ]
      for (const [permissions, have] of cases) {
        const { key } = yield* Effect.promise(() => s.kit.admin.issueRootKey({ workspaceId: s.workspaceId, permissions }))
        const error = expectError(
          yield* call(s, ok, { authorization: `Bearer ${key}` }),
          403,
          "unkey/authorization/insufficient_permissions",
          "Insufficient Permissions"
        )
        assert.strictEqual(error.detail, `Missing one of these permissions: ['identity.*.update_identity'], have: ${have}`)
      }
    }))
})

describe("H4–H6 – request-level checks and lookup", () => {
  it.effect("B4: first duplicate ratelimit name in array order", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      const rl = (name: string) => ({ name, limit: 1, duration: 1000 })
      const error = expectError(
        yield* call(s, { identity: "user_123", ratelimits: [rl("bbb"), rl("aaa"), rl("aaa"), rl("bbb")] }),
        400,
        "unkey/application/invalid_input"
      )
      assert.strictEqual(error.detail, "Ratelimit with name 'aaa' is already defined in the request")
      assert.deepStrictEqual(error.errors, [])
      // Exact, case-sensitive names: these are distinct.
      assert.strictEqual((yield* call(s, { identity: "user_123", ratelimits: [rl("abc"), rl("ABC")] })).status, 200)
    }))

  it.effect("B5: meta larger than 1 MiB; exactly 1 MiB is accepted", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      // {"k":"…"} is 8 bytes of framing around the string.
      const exact = { k: "x".repeat(1_048_576 - 8) }
      assert.strictEqual(Buffer.byteLength(JSON.stringify(exact)), 1_048_576)
      assert.strictEqual((yield* call(s, { identity: "user_123", meta: exact })).status, 200)
      const over = { k: "x".repeat(1_048_576 - 7) }
      const error = expectError(yield* call(s, { identity: "user_123", meta: over }), 400, "unkey/application/invalid_input")
      assert.strictEqual(error.detail, "Metadata is too large, it must be less than 1MB, got: 1.00")
      const big = { k: "é".repeat(540_000) } // 2 bytes each in UTF-8
      const error2 = expectError(yield* call(s, { identity: "user_123", meta: big }), 400, "unkey/application/invalid_input")
      assert.strictEqual(error2.detail, "Metadata is too large, it must be less than 1MB, got: 1.03")
      assert.deepStrictEqual(error2.errors, [])
    }))

  it.effect("N1: unknown, deleted and other-workspace identities are all 404", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      const n1 = expectError(yield* call(s, { identity: "nobody" }), 404, "unkey/data/identity_not_found", "Not Found")
      assert.strictEqual(n1.detail, "This identity does not exist.")

      yield* Effect.promise(() => s.kit.admin.createIdentity({ workspaceId: s.workspaceId, externalId: "gone" }))
      assert.isTrue(yield* Effect.promise(() => s.kit.admin.deleteIdentity(s.workspaceId, "gone")))
      expectError(yield* call(s, { identity: "gone" }), 404, "unkey/data/identity_not_found")

      yield* Effect.promise(() => s.kit.admin.createWorkspace({ id: "ws_other" }))
      const foreign = yield* Effect.promise(() => s.kit.admin.createIdentity({ workspaceId: "ws_other", externalId: "theirs" }))
      expectError(yield* call(s, { identity: "theirs" }), 404, "unkey/data/identity_not_found")
      expectError(yield* call(s, { identity: foreign.id }), 404, "unkey/data/identity_not_found")
      // Nothing of theirs changed.
      const after = yield* Effect.promise(() => s.kit.admin.getIdentity("ws_other", "theirs"))
      assert.deepStrictEqual(after, foreign)
    }))
})

describe("T1, S, routing", () => {
  it.effect("T1: body over the limit is 413, by declared length and by bytes read", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed({ maxBodyBytes: 64 }))
      const body = JSON.stringify({ identity: "user_123", meta: { pad: "x".repeat(100) } })
      const error = expectError(yield* call(s, body), 413, "user/bad_request/request_body_too_large", "Request Entity Too Large")
      assert.strictEqual(error.detail, "The request body exceeds the maximum allowed size of 64 bytes.")
      assert.deepStrictEqual(error.errors, [])
      // A stream without Content-Length is counted as it is read.
      const stream = new ReadableStream<Uint8Array>({
        start(controller) {
          for (let i = 0; i < 10; i++) controller.enqueue(new TextEncoder().encode("          "))
          controller.close()
        }
      })
      const response = yield* Effect.promise(() =>
        s.kit.fetch(new Request(`http://localhost${ROUTE}`, {
          method: "POST",
          headers: { authorization: `Bearer ${s.rootKey}`, "content-type": "application/json" },
          body: stream,
          duplex: "half"
        } as RequestInit))
      )
      assert.strictEqual(response.status, 413)
      // The default limit is 10 MiB.
      const d = yield* Effect.promise(() => seed())
      assert.strictEqual(d.kit.options.maxBodyBytes, 10_485_760)
      // 64 bytes exactly passes the size check.
      const exact = JSON.stringify({ identity: "user_123", meta: { p: "x".repeat(25) } })
      assert.strictEqual(Buffer.byteLength(exact), 64)
      assert.strictEqual((yield* call(s, exact)).status, 200)
    }))

  it.effect("S: a storage failure is 500 with a fixed sentence and leaks nothing", () =>
    Effect.gen(function*() {
      const failing = Layer.effect(
        IdentityStore,
        Effect.map(makeMemory, (memory) => ({
          ...memory,
          updateIdentity: () =>
            Effect.fail(new StorageError({ operation: "updateIdentity", cause: new Error("SELECT secret FROM pg_shadow") }))
        }))
      )
      const kit = makeIdentityKit({ storage: failing })
      yield* Effect.promise(() => kit.admin.createWorkspace({ id: "ws_f" }))
      const { key } = yield* Effect.promise(() => kit.admin.issueRootKey({ workspaceId: "ws_f" }))
      const response = yield* Effect.promise(() =>
        kit.fetch(new Request(`http://localhost${ROUTE}`, {
          method: "POST",
          headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
          body: JSON.stringify(ok)
        }))
      )
      const text = yield* Effect.promise(() => response.text())
      assert.strictEqual(response.status, 500)
      assert.notInclude(text, "pg_shadow")
      assert.notInclude(text, key)
      const body = JSON.parse(text)
      assert.deepStrictEqual(body.error, {
        title: "Internal Server Error",
        detail: "We're unable to update the identity.",
        status: 500,
        type: base + "unkey/application/unexpected_error"
      })
      yield* Effect.promise(() => kit.dispose())
    }))

  it.effect("storage that cannot start: client mistakes still get their 4xx; the rest 500 until it recovers", () =>
    Effect.gen(function*() {
      let builds = 0
      const flaky = Layer.effect(
        IdentityStore,
        Effect.suspend(() => ++builds === 1 ? Effect.fail(new Error("connect ECONNREFUSED")) : makeMemory)
      )
      const kit = makeIdentityKit({ storage: flaky })
      const s = { kit, workspaceId: "", rootKey: "unkey_unknown", keyId: "" }
      expectError(yield* call(s, ok, { authorization: undefined }), 400, "unkey/application/invalid_input")
      expectError(yield* call(s, "{"), 400, "unkey/application/invalid_input")
      expectError(yield* call(s, ok, {}, { method: "GET" }), 405, "unkey/application/method_not_allowed")
      expectError(yield* call(s, ok, {}, { path: "/elsewhere" }), 404, "unkey/application/route_not_found")
      assert.strictEqual(builds, 0)
      const down = expectError(yield* call(s, ok), 500, "unkey/application/unexpected_error")
      assert.strictEqual(down.detail, "We're unable to update the identity.")
      assert.notInclude(JSON.stringify(down), "ECONNREFUSED")
      // Built again on the next request: the storage is up now.
      expectError(yield* call(s, ok), 401, "unkey/authentication/key_not_found")
      assert.strictEqual(builds, 2)
      yield* Effect.promise(() => kit.dispose())
    }))

  it.effect("405 for other methods on the route, 404 for other paths, basePath", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      for (const method of ["GET", "PUT", "DELETE", "PATCH"]) {
        const answer = yield* call(s, method === "GET" ? undefined : ok, {}, { method })
        expectError(answer, 405, "unkey/application/method_not_allowed", "Method Not Allowed")
      }
      expectError(yield* call(s, ok, {}, { path: "/v2/identities.renameIdentity" }), 404, "unkey/application/route_not_found")
      const kit = makeIdentityKit({ storage: layerMemory, basePath: "/api/" })
      assert.isTrue(kit.handles("/api/v2/identities.updateIdentity"))
      assert.isFalse(kit.handles("/v2/identities.updateIdentity"))
    }))
})

describe("§2 order of checks", () => {
  it.effect("bad body and bad key → the body's 400; V1 before V2", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      const a = yield* call(s, { identity: "" }, { authorization: "Bearer wrong" })
      assert.strictEqual(a.body.error?.type, base + "unkey/application/invalid_input")
      const b = yield* call(s, "{", { authorization: "Basic x" })
      assert.strictEqual(b.body.error?.detail, SCHEMA_DETAIL)
      const c = yield* call(s, "", { authorization: undefined, "content-type": "text/plain" })
      assert.strictEqual(c.body.error?.detail, "Authorization header for 'bearer' scheme")
      const d = yield* call(s, "", { "content-type": "text/plain" })
      assert.match(d.body.error?.detail ?? "", /content type 'text\/plain'/)
    }))

  it.effect("missing permission → 403 even for an identity that does not exist; before duplicates and meta size", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      const { key } = yield* Effect.promise(() => s.kit.admin.issueRootKey({ workspaceId: s.workspaceId, permissions: ["x"] }))
      const authorization = `Bearer ${key}`
      const rl = { name: "dup", limit: 1, duration: 1000 }
      for (const body of [
        { identity: "nobody" },
        { identity: "user_123", ratelimits: [rl, rl] },
        { identity: "user_123", meta: { k: "x".repeat(1_100_000) } }
      ]) {
        assert.strictEqual((yield* call(s, body, { authorization })).status, 403)
      }
    }))

  it.effect("duplicates before meta size before lookup", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => seed())
      const rl = { name: "dup", limit: 1, duration: 1000 }
      const big = { k: "x".repeat(1_100_000) }
      const a = yield* call(s, { identity: "nobody", meta: big, ratelimits: [rl, rl] })
      assert.match(a.body.error?.detail ?? "", /^Ratelimit with name 'dup'/)
      const b = yield* call(s, { identity: "nobody", meta: big })
      assert.match(b.body.error?.detail ?? "", /^Metadata is too large/)
    }))
})

it("every error in the table has a status, title and a type path", () => {
  for (const [tag, info] of Object.entries(errorTable)) {
    assert.isAtLeast(info.status, 400, tag)
    assert.isNotEmpty(info.title, tag)
    assert.match(info.type, /^[a-z_]+\/[a-z_]+\/[a-z_]+$/, tag)
  }
})
