/**
 * Request validation: the V-checks of spec §2 in their order — Authorization present, Content-Type
 * JSON, body not empty, JSON syntax, schema (every violation reported).
 */
import { Context, Effect, Either, Layer, ParseResult, Redacted, Schema } from "effect"
import { InvalidInput, ValidationIssue } from "../Errors.js"
import { isJsonObject, type JsonObject } from "../domain/Json.js"
import { UpdateIdentityRequest } from "../domain/UpdateIdentity.js"

/** What the HTTP edge hands to validation: headers that matter and the raw body bytes. */
export interface RawRequest {
  readonly authorization: string | undefined
  readonly contentType: string | undefined
  readonly body: Uint8Array
}

/** A request that passed V1–V5. */
export interface ValidatedRequest {
  /** The Authorization header, trimmed; `Redacted` so it never reaches a log. */
  readonly authorization: Redacted.Redacted<string>
  readonly body: UpdateIdentityRequest
}

/** The validation service. */
export interface RequestValidatorService {
  readonly validate: (request: RawRequest) => Effect.Effect<ValidatedRequest, InvalidInput>
}

/** The validation service tag. */
export class RequestValidator extends Context.Tag("identity-kit/RequestValidator")<
  RequestValidator,
  RequestValidatorService
>() {}

const ROUTE = "/v2/identities.updateIdentity"
const SCHEMA_DETAIL = `POST request body for '${ROUTE}' failed to validate schema`

const invalid = (detail: string, errors: ReadonlyArray<ValidationIssue> = []) => new InvalidInput({ detail, errors })

/** `application/json`, any case, parameters allowed (spec §1). */
export const isJsonContentType = (contentType: string): boolean =>
  contentType.split(";")[0]!.trim().toLowerCase() === "application/json"

/** `body.ratelimits[2].limit` from a parse path. */
const location = (path: ReadonlyArray<PropertyKey>): string =>
  path.reduce<string>((out, key) => typeof key === "number" ? `${out}[${key}]` : `${out}.${String(key)}`, "body")

const toIssue = (issue: ParseResult.ArrayFormatterIssue): ValidationIssue => {
  const loc = location(issue.path)
  const last = issue.path.at(-1)
  switch (issue._tag) {
    case "Missing":
      return new ValidationIssue({
        location: loc,
        message: `missing property '${String(last)}'`,
        fix: `Add the '${String(last)}' property`
      })
    case "Unexpected":
      return new ValidationIssue({
        location: loc,
        message: `additional properties '${String(last)}' not allowed`,
        fix: `Remove the '${String(last)}' property`
      })
    default:
      return new ValidationIssue({ location: loc, message: issue.message })
  }
}

const decodeBody = Schema.decodeUnknownEither(UpdateIdentityRequest, { errors: "all" })
const KNOWN_KEYS: ReadonlySet<string> = new Set(Object.keys(UpdateIdentityRequest.fields))
const MAX_UNKNOWN_LISTED = 20

/** The body's known top-level keys only (own properties, `__proto__` never special). */
const pickKnown = (body: JsonObject): Record<string, unknown> => {
  const out: Record<string, unknown> = {}
  for (const key of KNOWN_KEYS) {
    if (Object.hasOwn(body, key)) out[key] = body[key]
  }
  return out
}
const utf8 = new TextDecoder("utf-8", { fatal: true })

const validate = (request: RawRequest): Effect.Effect<ValidatedRequest, InvalidInput> =>
  Effect.suspend(() => {
    const authorization = request.authorization?.trim() ?? ""
    if (authorization === "") {
      return Effect.fail(invalid("Authorization header for 'bearer' scheme", [
        new ValidationIssue({
          location: "security",
          message: "Authorization header was not found",
          fix: "Add an 'Authorization' header to this request"
        })
      ]))
    }
    const contentType = request.contentType ?? ""
    if (!isJsonContentType(contentType)) {
      return Effect.fail(invalid(`POST operation request content type '${contentType}' does not exist`, [
        new ValidationIssue({
          location: "header.Content-Type",
          message: `content type '${contentType}' is not supported`,
          fix: "Send the body as JSON with 'Content-Type: application/json'"
        })
      ]))
    }
    if (request.body.length === 0) {
      return Effect.fail(invalid(`POST request body is empty for '${ROUTE}'`, [
        new ValidationIssue({ location: "body", message: "request body is empty", fix: "Send a JSON object" })
      ]))
    }
    let json: unknown
    try {
      json = JSON.parse(utf8.decode(request.body))
    } catch (error) {
      const message = error instanceof SyntaxError ? error.message : "body is not valid UTF-8"
      return Effect.fail(invalid(SCHEMA_DETAIL, [new ValidationIssue({ location: "body", message })]))
    }
    // Unknown top-level keys are listed here, at most MAX_UNKNOWN_LISTED of them, and left out of
    // the schema decode: a body of a million unknown keys must not cost a million error objects.
    const unknownKeys = isJsonObject(json) ? Object.keys(json).filter((key) => !KNOWN_KEYS.has(key)) : []
    const decoded = decodeBody(unknownKeys.length === 0 || !isJsonObject(json) ? json : pickKnown(json))
    if (unknownKeys.length > 0 || Either.isLeft(decoded)) {
      const issues = [
        ...unknownKeys.slice(0, MAX_UNKNOWN_LISTED).map((key) => toIssue({ _tag: "Unexpected", path: [key], message: "" })),
        ...(unknownKeys.length > MAX_UNKNOWN_LISTED
          ? [new ValidationIssue({
            location: "body",
            message: `additional properties: ${unknownKeys.length - MAX_UNKNOWN_LISTED} more not listed`,
            fix: "Send only 'identity', 'meta' and 'ratelimits'"
          })]
          : []),
        ...(Either.isLeft(decoded) ? ParseResult.ArrayFormatter.formatErrorSync(decoded.left).map(toIssue) : [])
      ]
      return Effect.fail(invalid(SCHEMA_DETAIL, issues))
    }
    return Effect.succeed({ authorization: Redacted.make(authorization), body: decoded.right })
  })

/** The validation service (stateless). */
export const validator: RequestValidatorService = { validate }

/** The validation layer. */
export const layer: Layer.Layer<RequestValidator> = Layer.succeed(RequestValidator, validator)
