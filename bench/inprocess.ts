/**
 * In-process throughput: identity-kit with memory storage, called directly (no HTTP, no sockets),
 * the spread mix, `BENCH_CONCURRENCY` requests in flight. Started by `run.ts` pinned to one core
 * (`taskset`), so the figure is what one core does, GC threads included. Prints one line
 * `result <json>` (`InProcessResult`).
 *
 * Env: `BENCH_ENTRY` `handle` (default: `kit.handle` with a plain request, the Node adapters' path)
 * or `fetch` (`kit.fetch` with a WHATWG `Request`, the fetch adapter's path); `BENCH_WARMUP` and
 * `BENCH_DURATION` in seconds; `BENCH_CONCURRENCY` (default 16, the HTTP runs' connections).
 */
import { layerMemory, makeIdentityKit } from "identity-kit"
import { allocationMeter, type ProbeWindow } from "./probe.js"
import { IDENTITIES, seed, UPDATE_ROUTE, updateBody } from "./workload.js"

/** What `run.ts` reads back. */
export interface InProcessResult extends ProbeWindow {
  readonly entry: "handle" | "fetch"
  readonly seconds: number
  readonly updates: number
  readonly non2xx: number
  readonly sample: string | undefined
}

const seconds = Number(process.env["BENCH_DURATION"] ?? 5)
const warmup = Number(process.env["BENCH_WARMUP"] ?? 3)
const concurrency = Number(process.env["BENCH_CONCURRENCY"] ?? 16)
const entry = process.env["BENCH_ENTRY"] === "fetch" ? "fetch" : "handle"

const kit = makeIdentityKit({ storage: layerMemory })
const { authorization } = await seed(kit, { concurrency: 1 })

// Bodies encoded once, before the clock runs: the load generator's work must not count as the kit's.
const encoder = new TextEncoder()
const bodies = Array.from({ length: IDENTITIES }, (_, i) => encoder.encode(updateBody(i + 1)))
const headers = { "content-type": "application/json", authorization, "user-agent": "identity-kit-bench" }
const body = () => bodies[Math.floor(Math.random() * bodies.length)]!

/** One update through the chosen entry: its status and body. */
const update: () => Promise<{ readonly status: number; readonly body: string }> = entry === "handle"
  ? () =>
    new Promise((resolve) => {
      kit.handle({ method: "POST", path: UPDATE_ROUTE, headers, body: body(), remoteAddress: "127.0.0.1" }, resolve)
    })
  : async () => {
    const response = await kit.fetch(
      new Request(`http://127.0.0.1${UPDATE_ROUTE}`, { method: "POST", headers, body: body() }),
      { remoteAddress: "127.0.0.1" }
    )
    return { status: response.status, body: await response.text() }
  }

/** Runs `concurrency` loops for `window` seconds; counts the answers. */
const run = async (window: number) => {
  const until = performance.now() + window * 1000
  let updates = 0
  let non2xx = 0
  let sample: string | undefined
  const loop = async () => {
    // `await` on every answer: a synchronous `respond` cannot recurse into the next request.
    while (performance.now() < until) {
      const answer = await update()
      updates++
      if (answer.status < 200 || answer.status > 299) {
        non2xx++
        sample ??= `${answer.status} ${answer.body.slice(0, 600)}`
      }
    }
  }
  const started = performance.now()
  await Promise.all(Array.from({ length: concurrency }, loop))
  return { updates, non2xx, sample, seconds: (performance.now() - started) / 1000 }
}

await run(warmup)
const stop = allocationMeter()
const measured = await run(seconds)
const result: InProcessResult = { entry, ...measured, ...stop() }
console.log(`result ${JSON.stringify(result)}`)
await kit.dispose()
process.exit(0)
