/**
 * `createIdentity` (identities contract §1): validation → root key → permission → duplicate
 * ratelimit names → meta size → one transaction (identity, ratelimits, audit) → `{ identityId }`.
 * A live identity with the same externalId → 409.
 */
import { Clock, Effect } from "effect"
import { metaObject } from "../domain/Common.js"
import { CreateIdentityWire } from "../domain/Identities.js"
import { makeEndpoint } from "../http/endpoint.js"
import { Authorization } from "../services/Authorization.js"
import { IdentityStore } from "../services/IdentityStore.js"
import { permissions } from "../domain/Permissions.js"
import { auditContext, checkMetaSize, checkUniqueNames, toRatelimitInputs } from "./common.js"

/** `POST /v2/identities.createIdentity` in the route table. */
export const endpoint = makeEndpoint({
  name: "createIdentity",
  path: "/v2/identities.createIdentity",
  body: CreateIdentityWire,
  unknownKeys: "ignore",
  shapes: { externalId: "scalar", meta: "meta", ratelimits: "ratelimits" },
  storageFailure: { detail: "We're unable to create the identity and its ratelimits." },
  handle: Effect.fnUntraced(function*(body, request) {
    const authorization = yield* Authorization
    const store = yield* IdentityStore
    const key = yield* authorization.authorize(request.authorization, permissions.createIdentity)
    const ratelimits = toRatelimitInputs(body.ratelimits)
    // Decision (contract §1): duplicate names are refused, as updateIdentity refuses them.
    yield* checkUniqueNames(ratelimits)
    // Parsed only now, after the key check: a large meta costs nothing to a caller without a key.
    const meta = body.meta === undefined ? undefined : metaObject(body.meta)
    yield* checkMetaSize(meta === undefined ? undefined : JSON.stringify(meta))
    const identity = yield* store.createIdentity({
      workspaceId: key.workspaceId,
      externalId: body.externalId,
      meta,
      ratelimits,
      now: yield* Clock.currentTimeMillis,
      audit: auditContext(key, request)
    })
    return { data: { identityId: identity.id } }
  })
})
