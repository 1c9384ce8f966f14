/**
 * The fetch handler inside a Hono app on Node (`@hono/node-server`): Hono routes `/api/*` to the kit,
 * which answers its five routes (`/api/v2/identities.*`, `basePath: "/api"`) and 404 JSON for the
 * rest of `/api`; the app's own routes stay Hono's. The same `kit.fetch` mounts in any fetch-based
 * framework (Hono on Bun or Deno, itty-router, …).
 *
 *   npx tsx --conditions=@identity-kit/source examples/hono.ts   # PORT=3000 by default
 *
 * `getConnInfo` hands the kit the peer address for the audit log (behind a proxy, see `trustProxy`).
 */
import type { AddressInfo } from "node:net"
import { pathToFileURL } from "node:url"
import { serve } from "@hono/node-server"
import { getConnInfo } from "@hono/node-server/conninfo"
import type { Layer } from "effect"
import { Hono } from "hono"
import { type IdentityStore, layerMemory } from "identity-kit"
import { createFetchHandler } from "identity-kit/fetch"
import { curlFor, seedDemo } from "./demo.js"
import type { StartedExample } from "./express-app.js"

/** Starts the app on `port` (0: any free port) with `storage` (default: in memory) and seeds the demo data. */
export const start = async (
  { port = 3000, storage = layerMemory }: { readonly port?: number; readonly storage?: Layer.Layer<IdentityStore, unknown> } = {}
): Promise<StartedExample> => {
  const kit = createFetchHandler({ storage, basePath: "/api" })
  const app = new Hono()
  app.get("/", (c) => c.text("the host app's own route"))
  // The request as Hono received it (body unread), and the peer address for the audit log.
  app.all("/api/*", (c) => kit.fetch(c.req.raw, { remoteAddress: getConnInfo(c).remote.address }))

  const { server, address } = await new Promise<{ server: ReturnType<typeof serve>; address: AddressInfo }>(
    (resolve) => {
      const server = serve({ fetch: app.fetch, port, hostname: "127.0.0.1" }, (address) => resolve({ server, address }))
    }
  )
  return {
    url: `http://127.0.0.1:${address.port}/api`,
    kit,
    demo: await seedDemo(kit),
    close: async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await kit.dispose()
    }
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const example = await start({ port: Number(process.env["PORT"] ?? 3000) })
  console.log(`identity-kit (Hono) listening on ${example.url}\n\n${curlFor(example.url, example.demo.rootKey)}\n`)
  const stop = () => void example.close().then(() => process.exit(0))
  process.once("SIGINT", stop)
  process.once("SIGTERM", stop)
}
