/**
 * One endpoint of the API, as the request program sees it: its path, the Schema of its body and the
 * handler that answers a valid body. The route table (`./routes.ts`) is a list of these; the program
 * (`./program.ts`) does everything they share (routing, size limit, validation, errors, the envelope).
 */
import { Either, type Effect, ParseResult, type Redacted, Schema } from "effect"
import type { ApiError } from "../Errors.js"
import { ValidationIssue } from "../Errors.js"
import { jsonTypeOf } from "../domain/UpdateIdentity.js"
import type { Authorization } from "../services/Authorization.js"
import type { IdentityStore } from "../services/IdentityStore.js"
import { type FieldShape, MAX_UNKNOWN_LISTED, prescanBody } from "./jsonScan.js"

/** The services an endpoint's handler may use. */
export type EndpointServices = Authorization | IdentityStore

/** What the program hands a handler besides the body: who asks, and for the audit log, from where. */
export interface HandlerRequest {
  /** The Authorization header, trimmed; `Redacted` so it never reaches a log. */
  readonly authorization: Redacted.Redacted<string>
  /** The kit's `req_…` id of this request (the answer's `meta.requestId`). */
  readonly requestId: string
  /** The host's id for this request (Fastify's `request.id`, `X-Request-Id`), when it gave one. */
  readonly hostRequestId?: string | undefined
  /** The client's address as the host's proxy settings define it (`trustProxy`, `req.ip`), else `""`. */
  readonly remoteIp: string
  readonly userAgent: string
}

/** A handler's success, put after `meta` in the 200 body: `{ data }`, `{ data, pagination }` or `{}`. */
export interface SuccessBody {
  readonly data?: unknown
  readonly pagination?: unknown
}

/** The public face of an endpoint's storage failure (the cause is logged, never answered). */
export interface StorageFailureInfo {
  readonly detail: string
  /** Type path under the error base URL; default `unkey/application/unexpected_error`. */
  readonly type?: string
}

/** An endpoint with its body type erased, so endpoints of different bodies share one table. */
export interface Route {
  /** The operation name, e.g. `updateIdentity`. */
  readonly name: string
  /** The path below the base path, e.g. `/v2/identities.updateIdentity`. */
  readonly path: string
  readonly storageFailure: StorageFailureInfo
  /**
   * Reads the body text (spec §2 V4–V5). Valid: the handler, ready to run; invalid: every violation,
   * in the order found. `prescan`: checked without being built first (`./jsonScan.ts`), for large
   * bodies; the answer is the same either way.
   */
  readonly decode: (text: string, prescan: boolean) => Either.Either<Handler, ReadonlyArray<ValidationIssue>>
}

/** A valid body's handler, ready to run for one request. */
export type Handler = (request: HandlerRequest) => Effect.Effect<SuccessBody, ApiError, EndpointServices>

/** `body.ratelimits[2].limit` from a parse path. */
const location = (path: ReadonlyArray<PropertyKey>): string =>
  path.reduce<string>((out, key) => typeof key === "number" ? `${out}[${key}]` : `${out}.${String(key)}`, "body")

const unexpected = (key: string): ValidationIssue =>
  new ValidationIssue({
    location: location([key]),
    message: `additional properties '${key}' not allowed`,
    fix: `Remove the '${key}' property`
  })

const toIssue = (issue: ParseResult.ArrayFormatterIssue): ValidationIssue => {
  const last = issue.path.at(-1)
  switch (issue._tag) {
    case "Missing":
      return new ValidationIssue({
        location: location(issue.path),
        message: `missing property '${String(last)}'`,
        fix: `Add the '${String(last)}' property`
      })
    case "Unexpected":
      return unexpected(String(last))
    default:
      return new ValidationIssue({ location: location(issue.path), message: issue.message })
  }
}

const isObject = (value: unknown): value is Readonly<Record<string, unknown>> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

/** A body Schema: a Struct (its fields name the known top-level keys), needing no services. */
export type BodySchema<A, I> = Schema.Schema<A, I> & { readonly fields: Schema.Struct.Fields }

/** How to build an endpoint. */
export interface EndpointDefinition<A, I> {
  readonly name: string
  readonly path: string
  readonly body: BodySchema<A, I>
  /** Whether unknown top-level keys are a 400 (`additionalProperties: false`) or ignored. */
  readonly unknownKeys: "reject" | "ignore"
  /** How V5 reads each field of `body`, which the prescan of a large body must keep (`./jsonScan.ts`). */
  readonly shapes: Readonly<Record<string, FieldShape>>
  /** How this endpoint's storage failure (500) reads: its public sentence and, if not the default, its type path. */
  readonly storageFailure: StorageFailureInfo
  readonly handle: (body: A, request: HandlerRequest) => Effect.Effect<SuccessBody, ApiError, EndpointServices>
}

/** The V4 issue: JSON.parse's own message. */
const syntaxIssue = (message: string) => new ValidationIssue({ location: "body", message })

/**
 * The decoder of a body Schema, compiled once: the body text parsed (or prescanned), unknown
 * top-level keys checked first (when `reject`) and left out of the Schema decode, then every
 * violation of the fields reported. At most `MAX_UNKNOWN_LISTED` unknown keys are listed, the rest
 * counted: a million unknown keys must not cost a million errors (issue 9).
 */
export const makeBodyDecoder = <A, I>(
  body: BodySchema<A, I>,
  unknownKeys: "reject" | "ignore",
  shapes: Readonly<Record<string, FieldShape>>
): (text: string, prescan: boolean) => Either.Either<A, ReadonlyArray<ValidationIssue>> => {
  const schema = body.annotations({
    message: (issue) => `got ${jsonTypeOf(issue.actual)}, want object`,
    parseOptions: { onExcessProperty: "ignore" }
  })
  const decodeBody = Schema.decodeUnknownEither(schema, { errors: "all" })
  const known: ReadonlySet<string> = new Set(Object.keys(body.fields))
  const fields = [...known].map((name) => {
    const shape = shapes[name]
    if (shape === undefined) throw new Error(`identity-kit: no prescan shape for body field '${name}'`)
    return [name, shape] as const
  })
  const strict = unknownKeys === "reject"

  const finish = (input: unknown, unknown: ReadonlyArray<string>, unknownCount: number) => {
    const decoded = decodeBody(input)
    if (unknownCount === 0 && Either.isRight(decoded)) return Either.right(decoded.right)
    const issues = unknown.map(unexpected)
    if (unknownCount > MAX_UNKNOWN_LISTED) {
      issues.push(new ValidationIssue({
        location: "body",
        message: `additional properties: ${unknownCount - MAX_UNKNOWN_LISTED} more not listed`,
        fix: `Send only ${[...known].map((key) => `'${key}'`).join(", ")}`
      }))
    }
    if (Either.isLeft(decoded)) issues.push(...ParseResult.ArrayFormatter.formatErrorSync(decoded.left).map(toIssue))
    return Either.left(issues)
  }

  const fromJson = (json: unknown) => {
    const unknown: Array<string> = []
    let unknownCount = 0
    let input: unknown = json
    if (strict && isObject(json)) {
      for (const key in json) {
        if (!Object.hasOwn(json, key) || known.has(key)) continue
        if (unknownCount++ < MAX_UNKNOWN_LISTED) unknown.push(key)
      }
      if (unknownCount > 0) {
        // Only the known keys go to the Schema (own properties: `__proto__` is never special).
        const picked: Record<string, unknown> = {}
        for (const key of known) if (Object.hasOwn(json, key)) picked[key] = json[key]
        input = picked
      }
    }
    return finish(input, unknown, unknownCount)
  }

  return (text, prescan) => {
    if (!prescan) {
      let json: unknown
      try {
        json = JSON.parse(text)
      } catch (error) {
        return Either.left([syntaxIssue(error instanceof SyntaxError ? error.message : "body is not valid UTF-8")])
      }
      return fromJson(json)
    }
    // The same answers without building the body: its stand-in holds the known keys only.
    const scanned = prescanBody(text, fields, strict)
    if (scanned._tag === "SyntaxError") return Either.left([syntaxIssue(scanned.message)])
    return finish(scanned.body, scanned.unknown.listed, scanned.unknown.count)
  }
}

/** An endpoint from its definition (its body decoder compiled once, here). */
export const makeEndpoint = <A, I>(definition: EndpointDefinition<A, I>): Route => {
  const decodeBody = makeBodyDecoder(definition.body, definition.unknownKeys, definition.shapes)
  const handle = definition.handle
  return {
    name: definition.name,
    path: definition.path,
    storageFailure: definition.storageFailure,
    decode: (text, prescan) =>
      Either.map(decodeBody(text, prescan), (body) => (request: HandlerRequest) => handle(body, request))
  }
}
