/**
 * `getIdentity` (identities contract §2): validation → root key → P0 (some read permission, a
 * Decision) → lookup (404) → read permission on the resolved id → the identity.
 */
import { Effect } from "effect"
import { IdentityNotFound } from "../Errors.js"
import { storableText } from "../domain/Common.js"
import { GetIdentityRequest } from "../domain/Identities.js"
import { makeEndpoint } from "../http/endpoint.js"
import { Authorization } from "../services/Authorization.js"
import { IdentityStore } from "../services/IdentityStore.js"
import { requireRead, requireSomeRead, toResponseData } from "./common.js"

/** `POST /v2/identities.getIdentity` in the route table. */
export const endpoint = makeEndpoint({
  name: "getIdentity",
  path: "/v2/identities.getIdentity",
  body: GetIdentityRequest,
  unknownKeys: "reject",
  shapes: { identity: "scalar" },
  storageFailure: { detail: "We're unable to retrieve the identity." },
  handle: Effect.fnUntraced(function*(body, request) {
    const authorization = yield* Authorization
    const store = yield* IdentityStore
    const key = yield* authorization.authenticate(request.authorization)
    yield* requireSomeRead(key)
    const identity = storableText(body.identity) === true ? yield* store.getIdentity(key.workspaceId, body.identity) : null
    if (identity === null) return yield* new IdentityNotFound()
    yield* requireRead(key, identity.id, "wildcard-first")
    return { data: toResponseData(identity, undefined) }
  })
})
