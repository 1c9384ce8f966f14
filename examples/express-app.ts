/**
 * An Express app with identity-kit mounted under `/api`, beside the host's own routes.
 *
 *   npx tsx --conditions=@identity-kit/source examples/express-app.ts   # PORT=3000 by default
 *
 * (`--conditions` makes `identity-kit` resolve to the TypeScript sources; an installed package
 * needs no flag.) Works the same with Express 4 and 5.
 */
import type { Server } from "node:http"
import { pathToFileURL } from "node:url"
import type { Layer } from "effect"
import express from "express"
import { type IdentityKit, type IdentityStore, layerMemory } from "identity-kit"
import { identityKit } from "identity-kit/express"
import { curlFor, type Demo, portOf, seedDemo } from "./demo.js"

/** A running example. */
export interface StartedExample {
  /** Where the API lives (the SDK's `serverURL`). */
  readonly url: string
  readonly kit: IdentityKit
  readonly demo: Demo
  readonly close: () => Promise<void>
}

/** Starts the app on `port` (0: any free port) with `storage` (default: in memory) and seeds the demo data. */
export const start = async (
  { port = 3000, storage = layerMemory }: { readonly port?: number; readonly storage?: Layer.Layer<IdentityStore, unknown> } = {}
): Promise<StartedExample> => {
  const identities = identityKit({ storage })

  const app = express()
  // CORS (and anything else that decorates responses) goes first: its headers are kept.
  app.use((_req, res, next) => {
    res.setHeader("access-control-allow-origin", "*")
    next()
  })
  // The host's own JSON routes. identity-kit works before or after express.json().
  app.use(express.json())
  app.get("/health", (_req, res) => {
    res.json({ ok: true })
  })
  app.use("/api", identities)

  const server: Server = await new Promise((resolve) => {
    const listening = app.listen(port, "127.0.0.1", () => resolve(listening))
  })
  return {
    url: `http://127.0.0.1:${portOf(server)}/api`,
    kit: identities.kit,
    demo: await seedDemo(identities.kit),
    close: async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await identities.dispose()
    }
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const example = await start({ port: Number(process.env["PORT"] ?? 3000) })
  console.log(`identity-kit (Express) listening on ${example.url}\n\n${curlFor(example.url, example.demo.rootKey)}\n`)
  const stop = () => void example.close().then(() => process.exit(0))
  process.once("SIGINT", stop)
  process.once("SIGTERM", stop)
}
