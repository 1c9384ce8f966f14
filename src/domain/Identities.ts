/**
 * The request bodies of `createIdentity`, `getIdentity`, `listIdentities` and `deleteIdentity`
 * (identities contract §1–§4) as Effect Schemas, and their success bodies.
 */
import { Schema } from "effect"
import { codePoints, JsonNumber, JsonString, Meta, MetaWire, RatelimitsRequest, RatelimitsWire, want } from "./Common.js"
import type { UpdateIdentityResponseData } from "./UpdateIdentity.js"

/** Limits of the identities contract. */
export const identityLimits = {
  maxExternalIdLength: 255,
  maxListLimit: 100,
  defaultListLimit: 100,
  maxSearchLength: 256
} as const

const EXTERNAL_ID = /^[a-zA-Z0-9_.-]+$/

const externalId = JsonString.pipe(
  Schema.filter((s) => s.length >= 1 || "minLength: got 0, want 1"),
  Schema.filter((s) => {
    const n = codePoints(s)
    return n <= identityLimits.maxExternalIdLength || `maxLength: got ${n}, want ${identityLimits.maxExternalIdLength}`
  }),
  Schema.filter((s) => EXTERNAL_ID.test(s) || `pattern: want ${EXTERNAL_ID.source}`)
)

/** `createIdentity` (§1). Unknown top-level keys are accepted and ignored (the reference's schema). */
export const CreateIdentityRequest = Schema.Struct({
  externalId,
  meta: Schema.optionalWith(Meta, { exact: true }),
  ratelimits: Schema.optionalWith(RatelimitsRequest, { exact: true })
}).annotations({ message: want("object") })

/**
 * `CreateIdentityRequest` as the endpoint decodes it: the same fields, checks and messages, with
 * `meta` and `ratelimits` also as the prescan of a large body hands them (`MetaText`, `ItemCount`).
 */
export const CreateIdentityWire = Schema.Struct({
  externalId,
  meta: Schema.optionalWith(MetaWire, { exact: true }),
  ratelimits: Schema.optionalWith(RatelimitsWire, { exact: true })
}).annotations({ message: want("object") })

/** A decoded `createIdentity` body. */
export type CreateIdentityRequest = typeof CreateIdentityRequest.Type

/** A valid `createIdentity` body as the endpoint decodes it (`meta` parsed only after the key check). */
export type CreateIdentityWire = typeof CreateIdentityWire.Type

/**
 * An identity id or externalId (§0.3): a string of length ≥ 1, nothing more. A value that could
 * never be stored (`\u0000`) is simply not found (404), as the reference answers it.
 */
const IdentityParameter = JsonString.pipe(Schema.filter((s) => s.length >= 1 || "minLength: got 0, want 1"))

/** `getIdentity` (§2). No unknown top-level keys. */
export const GetIdentityRequest = Schema.Struct({ identity: IdentityParameter }).annotations({ message: want("object") })

/** A decoded `getIdentity` body. */
export type GetIdentityRequest = typeof GetIdentityRequest.Type

/** `deleteIdentity` (§4). No unknown top-level keys. */
export const DeleteIdentityRequest = Schema.Struct({ identity: IdentityParameter }).annotations({
  message: want("object")
})

/** A decoded `deleteIdentity` body. */
export type DeleteIdentityRequest = typeof DeleteIdentityRequest.Type

/** `listIdentities` (§3). No unknown top-level keys. */
export const ListIdentitiesRequest = Schema.Struct({
  limit: Schema.optionalWith(
    JsonNumber.pipe(
      Schema.filter((n) => Number.isInteger(n) || "got number, want integer"),
      Schema.filter((n) => n >= 1 || `minimum: got ${n}, want 1`),
      Schema.filter((n) => n <= identityLimits.maxListLimit || `maximum: got ${n}, want ${identityLimits.maxListLimit}`)
    ),
    { exact: true }
  ),
  cursor: Schema.optionalWith(JsonString, { exact: true }),
  search: Schema.optionalWith(
    JsonString.pipe(Schema.filter((s) => {
      const n = codePoints(s)
      return n <= identityLimits.maxSearchLength || `maxLength: got ${n}, want ${identityLimits.maxSearchLength}`
    })),
    { exact: true }
  )
}).annotations({ message: want("object") })

/** A decoded `listIdentities` body. */
export type ListIdentitiesRequest = typeof ListIdentitiesRequest.Type

/** An identity in a `getIdentity` or `listIdentities` answer (§0.4): the same shape as update's `data`. */
export type IdentityResponse = UpdateIdentityResponseData

/** `data` of a `createIdentity` answer. */
export interface CreateIdentityResponseData {
  readonly identityId: string
}

/** `pagination` of a `listIdentities` answer: `cursor` only when there is a next page. */
export interface ListIdentitiesPagination {
  readonly cursor?: string
  readonly hasMore: boolean
}
