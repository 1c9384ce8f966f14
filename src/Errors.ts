/**
 * Every error the API can answer with, and the one table (`errorTable`) that maps each to its HTTP
 * status, title, type and detail (spec §4). The table is a `Record` over the error tags, so adding an
 * error without an entry does not compile.
 */
import { Schema } from "effect"

/** One item of `error.errors[]`: where the problem is and how to fix it. */
export class ValidationIssue extends Schema.Class<ValidationIssue>("ValidationIssue")({
  location: Schema.String,
  message: Schema.String,
  fix: Schema.optional(Schema.String)
}) {}

/**
 * 400 invalid_input: request shape (V1–V5), duplicate ratelimit names (B4), meta too large (B5).
 * Also the admin API's failure for invalid input, its `errors` located under the parameter's name.
 */
export class InvalidInput extends Schema.TaggedError<InvalidInput>()("InvalidInput", {
  detail: Schema.String,
  errors: Schema.Array(ValidationIssue)
}) {
  // What a Promise caller of `kit.admin` sees first: the detail, not the fields as JSON.
  override get message(): string {
    return this.detail
  }
}

/** 413: the body is larger than the configured limit (T1). */
export class PayloadTooLarge extends Schema.TaggedError<PayloadTooLarge>()("PayloadTooLarge", {
  limit: Schema.Number
}) {}

/** 400: the Authorization header is not `Bearer <token>` (A1). */
export class MalformedAuthorization extends Schema.TaggedError<MalformedAuthorization>()(
  "MalformedAuthorization",
  {}
) {}

/** 401: no live root key has this hash (A4). */
export class KeyNotFound extends Schema.TaggedError<KeyNotFound>()("KeyNotFound", {}) {}

/** 403: the root key is disabled (A6). */
export class KeyDisabled extends Schema.TaggedError<KeyDisabled>()("KeyDisabled", {}) {}

/** 403: the root key expired at `expiredAt` (epoch ms) (A7). */
export class KeyExpired extends Schema.TaggedError<KeyExpired>()("KeyExpired", {
  expiredAt: Schema.Number
}) {}

/** 403: the key's workspace is disabled (A8). */
export class WorkspaceDisabled extends Schema.TaggedError<WorkspaceDisabled>()("WorkspaceDisabled", {}) {}

/**
 * 404: the key's workspace does not exist (A9). Also the admin API's failure when a root key or an
 * identity is made for a workspace that does not exist; `workspaceId` then names it (the HTTP answer
 * never shows it).
 */
export class WorkspaceNotFound extends Schema.TaggedError<WorkspaceNotFound>()("WorkspaceNotFound", {
  workspaceId: Schema.optional(Schema.String)
}) {
  override get message(): string {
    return this.workspaceId === undefined ? "The workspace does not exist." : `Workspace '${this.workspaceId}' does not exist.`
  }
}

/** 403: the key lacks the exact permission (A10). */
export class InsufficientPermissions extends Schema.TaggedError<InsufficientPermissions>()(
  "InsufficientPermissions",
  { required: Schema.Array(Schema.String), have: Schema.Array(Schema.String) }
) {}

/** 404: no live identity with this id or externalId in the key's workspace (N1). */
export class IdentityNotFound extends Schema.TaggedError<IdentityNotFound>()("IdentityNotFound", {}) {}

/** 404: the path is no served route (fetch and Node handlers; Express and Fastify hand it to the host). */
export class RouteNotFound extends Schema.TaggedError<RouteNotFound>()("RouteNotFound", {
  path: Schema.String
}) {}

/** 405: the route exists, the method does not. */
export class MethodNotAllowed extends Schema.TaggedError<MethodNotAllowed>()("MethodNotAllowed", {
  method: Schema.String
}) {}

/** 500: the storage failed; nothing was changed. `cause` is logged, never answered. */
export class StorageError extends Schema.TaggedError<StorageError>()("StorageError", {
  operation: Schema.String,
  cause: Schema.Defect
}) {}

/** 409: a live identity with this externalId already exists in the workspace (createIdentity). */
export class IdentityConflict extends Schema.TaggedError<IdentityConflict>()("IdentityConflict", {
  workspaceId: Schema.String,
  externalId: Schema.String
}) {}

/**
 * The admin API only: a root key with this plaintext exists already (`issueRootKey` with a `key` of
 * your own; its hash is unique). Names neither key.
 */
export class RootKeyConflict extends Schema.TaggedError<RootKeyConflict>()("RootKeyConflict", {}) {
  override get message(): string {
    return "a root key with this plaintext exists already: choose another"
  }
}

/** 503: the kit is shutting down (`dispose()` was called); the request changed nothing. */
export class ServiceUnavailable extends Schema.TaggedError<ServiceUnavailable>()("ServiceUnavailable", {}) {}

/** 500: a defect (a bug). Logged, never answered in detail. */
export class InternalError extends Schema.TaggedError<InternalError>()("InternalError", {
  cause: Schema.Defect
}) {}

/** Errors of the authorization step (spec §2 H1, H3). */
export type AuthorizationError =
  | MalformedAuthorization
  | KeyNotFound
  | KeyDisabled
  | KeyExpired
  | WorkspaceDisabled
  | WorkspaceNotFound
  | InsufficientPermissions

/** Every error that becomes an HTTP answer. */
export type ApiError =
  | InvalidInput
  | PayloadTooLarge
  | AuthorizationError
  | IdentityNotFound
  | IdentityConflict
  | RouteNotFound
  | MethodNotAllowed
  | StorageError
  | ServiceUnavailable
  | InternalError

/** How one error tag is answered. */
export interface ErrorInfo<E> {
  readonly status: number
  readonly title: string
  /** Path under the error type base URL, e.g. `unkey/application/invalid_input`. */
  readonly type: string
  readonly detail: (error: E) => string
  /** `errors[]` for the body; only 400 and 413 carry one (spec §4). */
  readonly errors?: (error: E) => ReadonlyArray<ValidationIssue>
}

const INVALID_KEY = "The provided root key is invalid."

const quoteList = (items: ReadonlyArray<string>): string => `[${items.map((item) => `'${item}'`).join(", ")}]`

/** The one table: error tag → status, title, type, detail (spec §4). */
export const errorTable: { readonly [T in ApiError["_tag"]]: ErrorInfo<Extract<ApiError, { _tag: T }>> } = {
  InvalidInput: {
    status: 400,
    title: "Bad Request",
    type: "unkey/application/invalid_input",
    detail: (e) => e.detail,
    errors: (e) => e.errors
  },
  PayloadTooLarge: {
    status: 413,
    title: "Request Entity Too Large",
    type: "user/bad_request/request_body_too_large",
    detail: (e) => `The request body exceeds the maximum allowed size of ${e.limit} bytes.`,
    errors: () => []
  },
  MalformedAuthorization: {
    status: 400,
    title: "Bad Request",
    type: "unkey/authentication/malformed",
    detail: () =>
      "You must provide a valid root key in the Authorization header in the format 'Bearer ROOT_KEY'. Your authorization header is missing the 'Bearer ' prefix.",
    errors: () => []
  },
  KeyNotFound: {
    status: 401,
    title: "Unauthorized",
    type: "unkey/authentication/key_not_found",
    detail: () => `${INVALID_KEY} We could not find the requested key.`
  },
  KeyDisabled: {
    status: 403,
    title: "Key is disabled",
    type: "unkey/authorization/key_disabled",
    detail: () => `${INVALID_KEY} The key is disabled.`
  },
  KeyExpired: {
    status: 403,
    title: "Forbidden",
    type: "unkey/authorization/forbidden",
    detail: (e) =>
      `${INVALID_KEY} the key has expired on ${new Date(e.expiredAt).toISOString().replace(/\.\d{3}Z$/, "Z")}`
  },
  WorkspaceDisabled: {
    status: 403,
    title: "Workspace is disabled",
    type: "unkey/authorization/workspace_disabled",
    detail: () => `${INVALID_KEY} The workspace is disabled.`
  },
  WorkspaceNotFound: {
    status: 404,
    title: "Not Found",
    type: "unkey/data/workspace_not_found",
    detail: () => `${INVALID_KEY} The requested workspace does not exist.`
  },
  InsufficientPermissions: {
    status: 403,
    title: "Insufficient Permissions",
    type: "unkey/authorization/insufficient_permissions",
    detail: (e) => `Missing one of these permissions: ${quoteList(e.required)}, have: ${quoteList(e.have)}`
  },
  IdentityNotFound: {
    status: 404,
    title: "Not Found",
    type: "unkey/data/identity_not_found",
    detail: () => "This identity does not exist."
  },
  IdentityConflict: {
    status: 409,
    title: "Conflicting Resource",
    type: "unkey/data/identity_already_exists",
    detail: (e) => `Identity with externalId '${e.externalId}' already exists in this workspace.`
  },
  RouteNotFound: {
    status: 404,
    title: "Not Found",
    type: "unkey/application/route_not_found",
    detail: (e) => `No route for '${e.path}'.`
  },
  MethodNotAllowed: {
    status: 405,
    title: "Method Not Allowed",
    type: "unkey/application/method_not_allowed",
    detail: (e) => `Method '${e.method}' is not allowed on this route; use POST.`
  },
  StorageError: {
    status: 500,
    title: "Internal Server Error",
    type: "unkey/application/unexpected_error",
    detail: () => "We're unable to update the identity."
  },
  ServiceUnavailable: {
    status: 503,
    title: "Service Unavailable",
    type: "unkey/application/service_unavailable",
    detail: () => "The service is shutting down. Please try again."
  },
  InternalError: {
    status: 500,
    title: "Internal Server Error",
    type: "unkey/application/unexpected_error",
    detail: () => "Something unexpected happened. Please try again."
  }
}

/** The JSON body of an error answer (spec §4). */
export interface ErrorBody {
  readonly meta: { readonly requestId: string }
  readonly error: {
    readonly title: string
    readonly detail: string
    readonly status: number
    readonly type: string
    readonly errors?: ReadonlyArray<{ readonly location: string; readonly message: string; readonly fix?: string }>
  }
}

/** Status and body for an error, with `type` under `typeBaseUrl`. */
export const renderError = <E extends ApiError>(
  error: E,
  requestId: string,
  typeBaseUrl: string
): { readonly status: number; readonly body: ErrorBody } => {
  const info = errorTable[error._tag] as ErrorInfo<E>
  const errors = info.errors?.(error).map((issue) =>
    issue.fix === undefined
      ? { location: issue.location, message: issue.message }
      : { location: issue.location, message: issue.message, fix: issue.fix }
  )
  return {
    status: info.status,
    body: {
      meta: { requestId },
      error: {
        title: info.title,
        detail: info.detail(error),
        status: info.status,
        type: typeBaseUrl + info.type,
        ...(errors === undefined ? {} : { errors })
      }
    }
  }
}
