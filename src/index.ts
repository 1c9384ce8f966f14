/**
 * identity-kit: Unkey's identities API (create, get, list, update, delete) served from your own
 * Node.js server.
 *
 * @example
 * ```ts
 * import { makeIdentityKit, layerMemory } from "identity-kit"
 * const kit = makeIdentityKit({ storage: layerMemory })
 * ```
 */
export { makeIdentityKit } from "./IdentityKit.js"
export type { ConnectionInfo, HealthStatus, IdentityKit, IdentityKitOptions, IdentityKitServices } from "./IdentityKit.js"
export * as Admin from "./Admin.js"
export * from "./Errors.js"
export { IdentityStore } from "./services/IdentityStore.js"
export type { IdentityListQuery, IdentityPage, IdentityStoreService, NewIdentity, RootKeyPatch, WorkspacePatch } from "./services/IdentityStore.js"
export { layerMemory, makeMemory, makeMemoryWithEvents } from "./storage/memory.js"
export { makeRootKeyEventHub, RootKeyEvents } from "./services/RootKeyEvents.js"
export type { RootKeyEvent, RootKeyEventHub, RootKeyEventsService } from "./services/RootKeyEvents.js"
export {
  Authorization,
  hashRootKey,
  layer as layerAuthorization,
  layerWith as layerAuthorizationWith,
  UPDATE_IDENTITY_PERMISSION
} from "./services/Authorization.js"
export type { AuthorizationOptions, AuthorizationService, AuthorizedKey } from "./services/Authorization.js"
export type { HttpOptions } from "./http/program.js"
export { REQUEST_ID_HEADER } from "./http/program.js"
export type { LogLevelName, LogSink, TelemetryOptions } from "./internal/log.js"
export type { ResolvedHttpOptions } from "./http/program.js"
export type { BodyReader, PlainBody, PlainRequest, PlainResponse } from "./http/plain.js"
export { hostRequestIdOf } from "./http/plain.js"
export { endpointNames, ROUTE } from "./http/routes.js"
export type { EndpointName } from "./http/routes.js"
export * from "./domain/Model.js"
export type { JsonObject, JsonValue } from "./domain/Json.js"
export { newId } from "./domain/Ids.js"
export { limits, UpdateIdentityRequest } from "./domain/UpdateIdentity.js"
export {
  CreateIdentityRequest,
  DeleteIdentityRequest,
  GetIdentityRequest,
  identityLimits,
  ListIdentitiesRequest
} from "./domain/Identities.js"
export type { CreateIdentityResponseData, IdentityResponse, ListIdentitiesPagination } from "./domain/Identities.js"
export { permissions } from "./domain/Permissions.js"
export type { RatelimitResponse, UpdateIdentityResponse, UpdateIdentityResponseData } from "./domain/UpdateIdentity.js"
