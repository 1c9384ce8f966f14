/**
 * A Fastify app with identity-kit registered under the `/api` prefix, beside the host's own JSON
 * routes (which keep Fastify's JSON parser: the plugin's raw-body parser stays in its own scope).
 *
 *   npx tsx --conditions=@identity-kit/source examples/fastify-app.ts   # PORT=3000 by default
 *
 * Works the same with Fastify 4.26+ and 5.
 */
import { pathToFileURL } from "node:url"
import type { Layer } from "effect"
import Fastify from "fastify"
import { type IdentityStore, layerMemory, makeIdentityKit } from "identity-kit"
import { identityKit } from "identity-kit/fastify"
import { curlFor, portOf, seedDemo } from "./demo.js"
import type { StartedExample } from "./express-app.js"

/** Starts the app on `port` (0: any free port) with `storage` (default: in memory) and seeds the demo data. */
export const start = async (
  { port = 3000, storage = layerMemory }: { readonly port?: number; readonly storage?: Layer.Layer<IdentityStore, unknown> } = {}
): Promise<StartedExample> => {
  // The app builds the kit (to seed it through `kit.admin`) and hands it to the plugin; a plugin
  // given `{ storage }` instead builds its own and disposes it when the app closes.
  const kit = makeIdentityKit({ storage })
  const app = Fastify()
  app.addHook("onClose", async () => await kit.dispose())

  app.get("/health", async () => ({ ok: true }))
  await app.register(identityKit, { kit, prefix: "/api" })

  await app.listen({ port, host: "127.0.0.1" })
  return {
    url: `http://127.0.0.1:${portOf(app.server)}/api`,
    kit,
    demo: await seedDemo(kit),
    close: async () => await app.close()
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const example = await start({ port: Number(process.env["PORT"] ?? 3000) })
  console.log(`identity-kit (Fastify) listening on ${example.url}\n\n${curlFor(example.url, example.demo.rootKey)}\n`)
  const stop = () => void example.close().then(() => process.exit(0))
  process.once("SIGINT", stop)
  process.once("SIGTERM", stop)
}
