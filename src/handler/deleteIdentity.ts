/**
 * `deleteIdentity` (identities contract §4): validation → root key → permission (403 even for an
 * identity that does not exist) → one transaction: soft delete, ratelimit rows kept, audit entries
 * → `{}`. None live → 404.
 */
import { Clock, Effect } from "effect"
import { IdentityNotFound } from "../Errors.js"
import { storableText } from "../domain/Common.js"
import { DeleteIdentityRequest } from "../domain/Identities.js"
import { makeEndpoint } from "../http/endpoint.js"
import { Authorization } from "../services/Authorization.js"
import { IdentityStore } from "../services/IdentityStore.js"
import { permissions } from "../domain/Permissions.js"
import { auditContext } from "./common.js"

/** `POST /v2/identities.deleteIdentity` in the route table. */
export const endpoint = makeEndpoint({
  name: "deleteIdentity",
  path: "/v2/identities.deleteIdentity",
  body: DeleteIdentityRequest,
  unknownKeys: "reject",
  shapes: { identity: "scalar" },
  storageFailure: { detail: "Failed to delete Identity.", type: "unkey/application/service_unavailable" },
  handle: Effect.fnUntraced(function*(body, request) {
    const authorization = yield* Authorization
    const store = yield* IdentityStore
    const key = yield* authorization.authorize(request.authorization, permissions.deleteIdentity)
    // A value PostgreSQL text cannot hold names no identity: 404 without asking storage.
    if (storableText(body.identity) !== true) return yield* new IdentityNotFound()
    const deleted = yield* store.deleteIdentity(
      key.workspaceId,
      body.identity,
      yield* Clock.currentTimeMillis,
      auditContext(key, request)
    )
    if (!deleted) return yield* new IdentityNotFound()
    return {}
  })
})
