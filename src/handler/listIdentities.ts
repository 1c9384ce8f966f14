/**
 * `listIdentities` (identities contract §3): validation → root key → P0 (some read permission, a
 * Decision) → one page by id (keyset, `limit + 1` rows) → read permission per identity, in page
 * order → `{ data, pagination }`, `cursor` only when there is a next page.
 */
import { Effect } from "effect"
import { identityLimits, ListIdentitiesRequest, type ListIdentitiesPagination } from "../domain/Identities.js"
import { makeEndpoint } from "../http/endpoint.js"
import { Authorization } from "../services/Authorization.js"
import { IdentityStore } from "../services/IdentityStore.js"
import { requireRead, requireSomeRead, toResponseData } from "./common.js"

/** `POST /v2/identities.listIdentities` in the route table. */
export const endpoint = makeEndpoint({
  name: "listIdentities",
  path: "/v2/identities.listIdentities",
  body: ListIdentitiesRequest,
  unknownKeys: "reject",
  shapes: { limit: "scalar", cursor: "scalar", search: "scalar" },
  storageFailure: { detail: "We're unable to list the identities." },
  handle: Effect.fnUntraced(function*(body, request) {
    const authorization = yield* Authorization
    const store = yield* IdentityStore
    const key = yield* authorization.authenticate(request.authorization)
    yield* requireSomeRead(key)
    const search = body.search?.trim() ?? ""
    const page = yield* store.listIdentities({
      workspaceId: key.workspaceId,
      limit: body.limit ?? identityLimits.defaultListLimit,
      cursor: body.cursor === undefined || body.cursor === "" ? undefined : body.cursor,
      search: search === "" ? undefined : search
    })
    for (const identity of page.identities) yield* requireRead(key, identity.id, "own-first")
    const pagination: ListIdentitiesPagination = page.cursor === undefined
      ? { hasMore: false }
      : { cursor: page.cursor, hasMore: true }
    return { data: page.identities.map((identity) => toResponseData(identity, undefined)), pagination }
  })
})
