/**
 * The fetch handler, served by Node's own `http` server — no framework. The handler owns the whole
 * server: the routes are `/api/v2/identities.{create,get,list,update,delete}Identity`
 * (`basePath: "/api"`), anything else is a 404 JSON.
 *
 *   npx tsx --conditions=@identity-kit/source examples/node-http.ts   # PORT=3000 by default
 *
 * The same `kit.fetch` runs on any runtime with WHATWG Request/Response:
 *
 *   // Bun
 *   Bun.serve({ fetch: (request, server) => kit.fetch(request, { remoteAddress: server.requestIP(request)?.address }) })
 *   // or simply Bun.serve({ fetch: kit.fetch }) — the audit log then has no peer address
 *   // Deno
 *   Deno.serve((request, info) => kit.fetch(request, { remoteAddress: info.remoteAddr.hostname }))
 *   // or simply Deno.serve(kit.fetch)
 *
 * The audit log records the peer address; behind a proxy, `trustProxy` lets `X-Forwarded-For` name
 * the client instead.
 */
import { createServer } from "node:http"
import { pathToFileURL } from "node:url"
import type { Layer } from "effect"
import { type IdentityStore, layerMemory } from "identity-kit"
import { createFetchHandler } from "identity-kit/fetch"
import { createNodeHandler } from "identity-kit/node"
import { curlFor, portOf, seedDemo } from "./demo.js"
import type { StartedExample } from "./express-app.js"

/** Starts the server on `port` (0: any free port) with `storage` (default: in memory) and seeds the demo data. */
export const start = async (
  { port = 3000, storage = layerMemory }: { readonly port?: number; readonly storage?: Layer.Layer<IdentityStore, unknown> } = {}
): Promise<StartedExample> => {
  const kit = createFetchHandler({ storage, basePath: "/api" })
  // Bridges Node's IncomingMessage/ServerResponse to kit.fetch: streaming body with the size limit,
  // peer address for the audit log, client abort → the request's work interrupted.
  const server = createServer(createNodeHandler({ kit }))

  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", () => resolve()))
  return {
    url: `http://127.0.0.1:${portOf(server)}/api`,
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
  console.log(`identity-kit (Node http) listening on ${example.url}\n\n${curlFor(example.url, example.demo.rootKey)}\n`)
  const stop = () => void example.close().then(() => process.exit(0))
  process.once("SIGINT", stop)
  process.once("SIGTERM", stop)
}
