/**
 * The route table: every endpoint the package can serve, by name. A kit serves all of them unless
 * its `endpoints` option names fewer.
 */
import * as CreateIdentity from "../handler/createIdentity.js"
import * as DeleteIdentity from "../handler/deleteIdentity.js"
import * as GetIdentity from "../handler/getIdentity.js"
import * as ListIdentities from "../handler/listIdentities.js"
import * as UpdateIdentity from "../handler/updateIdentity.js"
import type { Route } from "./endpoint.js"

/** Every endpoint, by operation name. */
export const endpoints = {
  createIdentity: CreateIdentity.endpoint,
  getIdentity: GetIdentity.endpoint,
  listIdentities: ListIdentities.endpoint,
  updateIdentity: UpdateIdentity.endpoint,
  deleteIdentity: DeleteIdentity.endpoint
} as const satisfies Record<string, Route>

/** The path of `updateIdentity` below the base path. */
export const ROUTE = endpoints.updateIdentity.path

/** The name of an endpoint, e.g. `"updateIdentity"`. */
export type EndpointName = keyof typeof endpoints

/** Whether a string names an endpoint. */
export const isEndpointName = (name: unknown): name is EndpointName =>
  typeof name === "string" && Object.hasOwn(endpoints, name)

/** Every endpoint name, in the table's order. */
export const endpointNames: ReadonlyArray<EndpointName> = Object.keys(endpoints).filter(isEndpointName)

/** The routes for a selection of endpoint names (default: all); unknown names throw a `TypeError`. */
export const selectRoutes = (names: ReadonlyArray<string> | undefined): ReadonlyArray<Route> => {
  if (names === undefined) return endpointNames.map((name) => endpoints[name])
  if (!Array.isArray(names) || names.length === 0) {
    throw new TypeError(`identity-kit: endpoints must be a non-empty array of ${endpointNames.join(", ")}`)
  }
  return [...new Set(names)].map((name) => {
    if (!isEndpointName(name)) {
      throw new TypeError(`identity-kit: unknown endpoint '${String(name)}'; known: ${endpointNames.join(", ")}`)
    }
    return endpoints[name]
  })
}
