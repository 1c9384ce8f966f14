/**
 * The server under test: identity-kit on Node's own `http` (`createNodeHandler`) or on Fastify 5
 * (the `identityKit` plugin), with `layerPostgres` against the bench database. Started by
 * `bench/run.ts` as a child process (with `--import .build/probe.mjs`, see `probe.ts`); can also be
 * run by hand:
 *
 *   DATABASE_URL=postgres://postgres@127.0.0.1:5432/identity_kit_bench PORT=4001 \
 *     npx tsx --conditions=@identity-kit/source bench/server.ts
 *
 * Env:
 * - `DATABASE_URL` (required), `PORT` (default 0: any free port),
 * - `BENCH_HOST` `node` (default) or `fastify`,
 * - `BENCH_POOL` pool size (default 8, as the naive peer's `pg.Pool({ max: 8 })`),
 * - `BENCH_ROOT_KEY_CACHE=off`: `rootKeyCache: false` (default: the kit's default),
 * - `BENCH_STORAGE` `postgres` (default) or `memory` (diagnostic: the HTTP and Effect layers with no
 *   database; the server then seeds itself with the bench volume and the root key `BENCH_ROOT_KEY`).
 *
 * Prints `listening <port>` once the pool is up and migrations are applied (so the first request
 * does not pay for them). With an IPC channel (as `run.ts` starts it), it answers
 * `{ type: "stats" }` with its SQL round-trip count, and `{ type: "profile-start" }` /
 * `{ type: "profile-stop", file }` with a V8 CPU and allocation profile of just that window.
 * `probe-*` messages are the probe's.
 */
import { writeFile } from "node:fs/promises"
import { createServer } from "node:http"
import { Session } from "node:inspector/promises"
import type { AddressInfo } from "node:net"
import { createRequire } from "node:module"
import { Effect } from "effect"
import { layerMemory, makeIdentityKit } from "identity-kit"
import { createNodeHandler } from "identity-kit/node"
import { layerPostgres } from "identity-kit/postgres"
import { seed } from "./workload.js"

const url = process.env["DATABASE_URL"]
if (url === undefined || url === "") {
  console.error("bench/server.ts: DATABASE_URL is required")
  process.exit(2)
}
const port = Number(process.env["PORT"] ?? 0)
const host = process.env["BENCH_HOST"] ?? "node"
const poolSize = Number(process.env["BENCH_POOL"] ?? 8)

// Count the statements the package sends (each `Client#query` call is one round trip to the
// server). `pg` is the copy @effect/sql-pg loads (hoisted); the wrapper costs one counter increment.
interface PgModule {
  readonly Client: { readonly prototype: { query: (...args: Array<unknown>) => unknown } }
}
const pg = createRequire(import.meta.url)("pg") as PgModule
let queries = 0
const originalQuery = pg.Client.prototype.query
pg.Client.prototype.query = function(this: unknown, ...args: Array<unknown>) {
  queries++
  return originalQuery.apply(this, args)
}

const storage = process.env["BENCH_STORAGE"] ?? "postgres"
// `--no-root-key-cache` in run.ts: every request reads its key from storage (two round trips).
const cacheOff = process.env["BENCH_ROOT_KEY_CACHE"] === "off"
const kit = makeIdentityKit({
  storage: storage === "memory"
    ? layerMemory
    : layerPostgres({ url, maxConnections: poolSize, applicationName: "identity-kit-bench" }),
  rootKeyCache: cacheOff ? false : undefined
})

// Build the runtime now: pool tested, migrations applied, or a non-zero exit.
try {
  await kit.run(Effect.void)
  if (storage === "memory") {
    const rootKey = process.env["BENCH_ROOT_KEY"]
    if (rootKey === undefined) throw new Error("BENCH_STORAGE=memory needs BENCH_ROOT_KEY")
    await seed(kit, { key: rootKey, concurrency: 1 })
  }
} catch (cause) {
  console.error("bench/server.ts: could not start identity-kit", cause)
  process.exit(1)
}

let close: () => Promise<void>
let actualPort: number
if (host === "fastify") {
  const { default: Fastify } = await import("fastify")
  const { identityKit } = await import("identity-kit/fastify")
  const app = Fastify({ logger: false })
  await app.register(identityKit, { kit })
  await app.listen({ port, host: "127.0.0.1" })
  actualPort = (app.server.address() as AddressInfo).port
  close = () => app.close()
} else if (host === "node") {
  const server = createServer(createNodeHandler({ kit }))
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", () => resolve()))
  actualPort = (server.address() as AddressInfo).port
  close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections()
      server.close(() => resolve())
    })
} else {
  console.error(`bench/server.ts: BENCH_HOST must be node or fastify, got ${host}`)
  process.exit(2)
}

// CPU profile of a chosen window only (not startup, not idle), through the inspector.
let session: Session | undefined
const onMessage = async (message: unknown): Promise<unknown> => {
  const type = typeof message === "object" && message !== null ? Reflect.get(message, "type") : undefined
  if (type === "stats") return { type, queries }
  if (type === "profile-start") {
    session = new Session()
    session.connect()
    await session.post("Profiler.enable")
    await session.post("Profiler.setSamplingInterval", { interval: 500 })
    await session.post("Profiler.start")
    // Allocation sampling too, counting objects the GC already collected (the churn, not just
    // what is still alive at the end).
    await session.post("HeapProfiler.enable")
    await session.post("HeapProfiler.startSampling", {
      samplingInterval: 16384,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true
    } as never)
    return { type }
  }
  if (type === "profile-stop" && session !== undefined) {
    const { profile } = await session.post("Profiler.stop")
    const { profile: heap } = await session.post("HeapProfiler.stopSampling")
    const file = String(Reflect.get(message as object, "file"))
    await writeFile(file, JSON.stringify(profile))
    await writeFile(file.replace(/\.cpuprofile$/, ".heapprofile"), JSON.stringify(heap))
    session.disconnect()
    session = undefined
    return { type, file }
  }
  return { type: "error", message: `unknown message ${String(type)}` }
}
process.on("message", (message) => {
  const type = typeof message === "object" && message !== null ? Reflect.get(message, "type") : undefined
  if (typeof type === "string" && type.startsWith("probe-")) return
  onMessage(message).then(
    (reply) => process.send?.(reply),
    (error: unknown) => process.send?.({ type: "error", message: String(error) })
  )
})

let stopping = false
const stop = () => {
  if (stopping) return
  stopping = true
  const timer = setTimeout(() => process.exit(0), 3000)
  timer.unref()
  void close()
    .then(() => kit.dispose())
    .catch(() => {})
    .finally(() => process.exit(0))
}
process.once("SIGTERM", stop)
process.once("SIGINT", stop)
process.once("disconnect", stop)

console.log(`listening ${actualPort}`)
