/**
 * `updateIdentity`: validation → authorization → request-level checks → the write, in the order of
 * spec §2, answering the body of spec §3.
 */
import { Clock, Effect } from "effect"
import { permissions } from "../domain/Permissions.js"
import { metaObject } from "../domain/Common.js"
import { UpdateIdentityWire } from "../domain/UpdateIdentity.js"
import { type HandlerRequest, makeEndpoint } from "../http/endpoint.js"
import { annotate } from "../internal/trace.js"
import { Authorization } from "../services/Authorization.js"
import { IdentityStore } from "../services/IdentityStore.js"
import { auditContext, checkMetaSize, checkUniqueNames, toRatelimitInputs, toResponseData } from "./common.js"

/**
 * Handles a valid body: authorization (H1, H3), duplicate names (H4), meta size (H5), then the write
 * (H6, H7). Answers the success `data` or a typed error.
 */
export const handle = Effect.fnUntraced(function*(body: UpdateIdentityWire, request: HandlerRequest) {
  const authorization = yield* Authorization
  const store = yield* IdentityStore

  const key = yield* authorization.authorize(request.authorization, permissions.updateIdentity)
  yield* annotate({ "workspace.id": key.workspaceId })

  const ratelimits = toRatelimitInputs(body.ratelimits)
  yield* checkUniqueNames(ratelimits)
  // Parsed only now, after the key check: a large meta costs nothing to a caller without a key.
  const sentMeta = body.meta === undefined ? undefined : metaObject(body.meta)
  const meta = sentMeta === undefined ? undefined : JSON.stringify(sentMeta)
  yield* checkMetaSize(meta)

  const identity = yield* store.updateIdentity({
    workspaceId: key.workspaceId,
    identity: body.identity,
    meta,
    ratelimits,
    audit: auditContext(key, request),
    now: yield* Clock.currentTimeMillis
  })
  return toResponseData(identity, ratelimits, sentMeta)
})

/** `POST /v2/identities.updateIdentity` in the route table. */
export const endpoint = makeEndpoint({
  name: "updateIdentity",
  path: "/v2/identities.updateIdentity",
  body: UpdateIdentityWire,
  unknownKeys: "reject",
  shapes: { identity: "scalar", meta: "meta", ratelimits: "ratelimits" },
  storageFailure: { detail: "We're unable to update the identity." },
  handle: (body, request) => Effect.map(handle(body, request), (data) => ({ data }))
})
