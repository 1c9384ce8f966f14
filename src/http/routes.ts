/**
 * The route table: every endpoint the package can serve, by name. A kit serves all of them unless
 * its `endpoints` option names fewer.
 */
import * as UpdateIdentity from "../handler/updateIdentity.js"
import type { Route } from "./endpoint.js"

/** Every endpoint, by operation name. */
export const endpoints = {
  updateIdentity: UpdateIdentity.endpoint
} as const satisfies Record<string, Route>

/** The name of an endpoint, e.g. `"updateIdentity"`. */
export type EndpointName = keyof typeof endpoints

/** Every endpoint name, in the table's order. */
export const endpointNames: ReadonlyArray<EndpointName> = Object.keys(endpoints).filter(
  (name): name is EndpointName => Object.hasOwn(endpoints, name)
)

/** The routes for a selection of endpoint names (default: all); unknown names throw a `TypeError`. */
export const selectRoutes = (names: ReadonlyArray<string> | undefined): ReadonlyArray<Route> => {
  if (names === undefined) return endpointNames.map((name) => endpoints[name])
  if (!Array.isArray(names) || names.length === 0) {
    throw new TypeError(`identity-kit: endpoints must be a non-empty array of ${endpointNames.join(", ")}`)
  }
  return [...new Set(names)].map((name) => {
    if (!Object.hasOwn(endpoints, name)) {
      throw new TypeError(`identity-kit: unknown endpoint '${name}'; known: ${endpointNames.join(", ")}`)
    }
    return endpoints[name as EndpointName]
  })
}
