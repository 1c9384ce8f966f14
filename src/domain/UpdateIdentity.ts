/**
 * The request body of `POST /v2/identities.updateIdentity` (spec §1) as an Effect Schema, and the
 * success body (spec §3). Messages follow JSON Schema's wording (`got X, want Y`) so they read the
 * same as Unkey's own validator.
 */
import { Schema } from "effect"
import { JsonString, Meta, MetaWire, RatelimitsRequest, RatelimitsWire, storableText, want } from "./Common.js"
import type { JsonObject } from "./Json.js"

export { jsonTypeOf, limits, RatelimitRequest } from "./Common.js"

const identity = JsonString.pipe(
  Schema.filter((s) => s.length >= 1 || "minLength: got 0, want 1"),
  Schema.filter(storableText)
)

const body = { message: want("object"), parseOptions: { onExcessProperty: "error" } } as const

/** The request body (spec §1). No unknown top-level keys. */
export const UpdateIdentityRequest = Schema.Struct({
  identity,
  meta: Schema.optionalWith(Meta, { exact: true }),
  ratelimits: Schema.optionalWith(RatelimitsRequest, { exact: true })
}).annotations(body)

/**
 * `UpdateIdentityRequest` as the endpoint decodes it: the same fields, checks and messages, with
 * `meta` and `ratelimits` also as the prescan of a large body hands them (`MetaText`, `ItemCount`).
 */
export const UpdateIdentityWire = Schema.Struct({
  identity,
  meta: Schema.optionalWith(MetaWire, { exact: true }),
  ratelimits: Schema.optionalWith(RatelimitsWire, { exact: true })
}).annotations(body)

/** A decoded, valid request body. */
export type UpdateIdentityRequest = typeof UpdateIdentityRequest.Type

/** A valid request body as the endpoint decodes it (`meta` parsed only after the key check). */
export type UpdateIdentityWire = typeof UpdateIdentityWire.Type

/** A ratelimit in a success body (spec §3). */
export interface RatelimitResponse {
  readonly id: string
  readonly name: string
  readonly limit: number
  readonly duration: number
  readonly autoApply: boolean
}

/** `data` of the success body: no `null` anywhere, `ratelimits` left out when empty. */
export interface UpdateIdentityResponseData {
  readonly id: string
  readonly externalId: string
  readonly meta: JsonObject
  readonly ratelimits?: ReadonlyArray<RatelimitResponse>
}

/** The success body (spec §3). */
export interface UpdateIdentityResponse {
  readonly meta: { readonly requestId: string }
  readonly data: UpdateIdentityResponseData
}
