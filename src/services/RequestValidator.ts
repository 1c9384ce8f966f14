/**
 * Request validation: the V-checks of spec §2 in their order — Authorization present, Content-Type
 * JSON, body not empty, JSON syntax (`parseRequest`, shared by every endpoint), then the endpoint's
 * body schema with every violation reported (`src/http/endpoint.ts`).
 */
import { Context, Effect, Either, Layer, Redacted } from "effect"
import { InvalidInput, ValidationIssue } from "../Errors.js"
import { UpdateIdentityRequest } from "../domain/UpdateIdentity.js"
import { makeBodyDecoder } from "../http/endpoint.js"

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

/** The validation service (of `updateIdentity`'s body). */
export interface RequestValidatorService {
  readonly validate: (request: RawRequest) => Effect.Effect<ValidatedRequest, InvalidInput>
}

/** The validation service tag. */
export class RequestValidator extends Context.Tag("identity-kit/RequestValidator")<
  RequestValidator,
  RequestValidatorService
>() {}

const invalid = (detail: string, errors: ReadonlyArray<ValidationIssue> = []) => new InvalidInput({ detail, errors })

/** `application/json`, any case, parameters allowed (spec §1). */
export const isJsonContentType = (contentType: string): boolean => {
  const semicolon = contentType.indexOf(";")
  return (semicolon === -1 ? contentType : contentType.slice(0, semicolon)).trim().toLowerCase() === "application/json"
}

const utf8 = new TextDecoder("utf-8", { fatal: true })

/** A request that passed V1–V4: the trimmed Authorization header and the parsed JSON body. */
export interface ParsedRequest {
  readonly authorization: Redacted.Redacted<string>
  readonly json: unknown
}

/** The schema failure detail of an endpoint (V4, V5). */
export const schemaDetail = (path: string): string => `POST request body for '${path}' failed to validate schema`

/** V1–V4 for the endpoint at `path` (its details name the path). */
export const parseRequest = (request: RawRequest, path: string): Either.Either<ParsedRequest, InvalidInput> => {
  const authorization = request.authorization?.trim() ?? ""
  if (authorization === "") {
    return Either.left(invalid("Authorization header for 'bearer' scheme", [
      new ValidationIssue({
        location: "security",
        message: "Authorization header was not found",
        fix: "Add an 'Authorization' header to this request"
      })
    ]))
  }
  const contentType = request.contentType ?? ""
  if (!isJsonContentType(contentType)) {
    return Either.left(invalid(`POST operation request content type '${contentType}' does not exist`, [
      new ValidationIssue({
        location: "header.Content-Type",
        message: `content type '${contentType}' is not supported`,
        fix: "Send the body as JSON with 'Content-Type: application/json'"
      })
    ]))
  }
  if (request.body.length === 0) {
    return Either.left(invalid(`POST request body is empty for '${path}'`, [
      new ValidationIssue({ location: "body", message: "request body is empty", fix: "Send a JSON object" })
    ]))
  }
  try {
    return Either.right({ authorization: Redacted.make(authorization), json: JSON.parse(utf8.decode(request.body)) })
  } catch (error) {
    const message = error instanceof SyntaxError ? error.message : "body is not valid UTF-8"
    return Either.left(invalid(schemaDetail(path), [new ValidationIssue({ location: "body", message })]))
  }
}

const PATH = "/v2/identities.updateIdentity"
const decodeBody = makeBodyDecoder(UpdateIdentityRequest, "reject")

const validate = (request: RawRequest): Effect.Effect<ValidatedRequest, InvalidInput> =>
  Effect.suspend(() => {
    const parsed = parseRequest(request, PATH)
    if (Either.isLeft(parsed)) return Effect.fail(parsed.left)
    const decoded = decodeBody(parsed.right.json)
    return Either.isLeft(decoded)
      ? Effect.fail(invalid(schemaDetail(PATH), decoded.left))
      : Effect.succeed({ authorization: parsed.right.authorization, body: decoded.right })
  })

/** The validation service (stateless). */
export const validator: RequestValidatorService = { validate }

/** The validation layer. */
export const layer: Layer.Layer<RequestValidator> = Layer.succeed(RequestValidator, validator)
