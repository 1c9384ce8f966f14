/**
 * The request body of `POST /v2/identities.updateIdentity` (spec §1) as an Effect Schema, and the
 * success body (spec §3). Messages follow JSON Schema's wording (`got X, want Y`) so they read the
 * same as Unkey's own validator.
 */
import { Schema } from "effect"
import { JsonString, Meta, RatelimitsRequest, storableText, want } from "./Common.js"
import type { JsonObject } from "./Json.js"

export { jsonTypeOf, limits, RatelimitRequest } from "./Common.js"

/** The request body (spec §1). No unknown top-level keys. */
export const UpdateIdentityRequest = Schema.Struct({
  identity: JsonString.pipe(
    Schema.filter((s) => s.length >= 1 || "minLength: got 0, want 1"),
    Schema.filter(storableText)
  ),
  meta: Schema.optionalWith(Meta, { exact: true }),
  ratelimits: Schema.optionalWith(RatelimitsRequest, { exact: true })
}).annotations({
  message: want("object"),
  parseOptions: { onExcessProperty: "error" }
})

/** A decoded, valid request body. */
export type UpdateIdentityRequest = typeof UpdateIdentityRequest.Type

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
