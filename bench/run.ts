/**
 * The side-by-side benchmark of bench/peers/README.md (the peers, copied unchanged) and of the hot-path targets:
 * identity-kit's `POST /v2/identities.updateIdentity` against the database ceiling (pgbench: the
 * shared script and our own function), a hand-written Fastify + pg server, and itself in process,
 * in the same run, on the same PostgreSQL, with the same request mix; plus listIdentities pages
 * when the kit serves them. See bench/README.md for the method.
 *
 *   npx tsx --conditions=@identity-kit/source bench/run.ts [--quick] [--duration 10] [--connections 16]
 *       [--warmup 2] [--prime 15] [--fastify] [--pgbench-hot] [--profile] [--memory]
 *       [--no-root-key-cache] [--in-process-fetch] [--tsx]
 *
 * Env (same meaning as the flags): BENCH_DURATION, BENCH_CONNECTIONS, BENCH_WARMUP, BENCH_PRIME;
 * where: BENCH_ADMIN_URL (default postgres://postgres@127.0.0.1:5432/postgres, used to create the
 * bench database), BENCH_DATABASE (default identity_kit_bench; dropped and created again on every
 * run), BENCH_PEERS_DIR (default bench/peers: an unchanged copy of the shared peers).
 *
 * Exits non-zero when a server does not start or dies, or when ours answered anything but 2xx
 * or nothing at all in a window.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { once } from "node:events"
import { copyFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises"
import { createRequire } from "node:module"
import { cpus, loadavg, tmpdir } from "node:os"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import { parseArgs } from "node:util"
import autocannon from "autocannon"
import { hashRootKey, makeIdentityKit } from "identity-kit"
import { layerPostgres } from "identity-kit/postgres"
import type { InProcessResult } from "./inprocess.js"
import type { ProbeWindow } from "./probe.js"
import { cpuShare, type CpuShare, type CpuSnapshot, cpuSnapshot, processCpuMs, resetPeakRss, statusMiB } from "./proc.js"
import { summarizeHeapProfile, summarizeProfile } from "./profile.js"
import { IDENTITIES, LIST_ROUTE, type Mix, nextN, seed, UPDATE_ROUTE, updateBody } from "./workload.js"

// --- Options ------------------------------------------------------------------------------------

const { values: flags } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    duration: { type: "string" },
    connections: { type: "string" },
    warmup: { type: "string" },
    prime: { type: "string" },
    fastify: { type: "boolean", default: false },
    "pgbench-hot": { type: "boolean", default: false },
    profile: { type: "boolean", default: false },
    tsx: { type: "boolean", default: false },
    memory: { type: "boolean", default: false },
    "no-root-key-cache": { type: "boolean", default: false },
    "in-process-fetch": { type: "boolean", default: false },
    help: { type: "boolean", default: false }
  }
})
if (flags.help) {
  console.log(
    "usage: tsx --conditions=@identity-kit/source bench/run.ts [--quick] [--duration S] [--connections N] [--warmup S] [--prime S]" +
      " [--fastify] [--pgbench-hot] [--profile] [--memory] [--no-root-key-cache] [--in-process-fetch] [--tsx]"
  )
  process.exit(0)
}
const count = (name: string, value: string | undefined, fallback: number, min: number): number => {
  if (value === undefined || value === "") return fallback
  const n = Number(value)
  if (!Number.isInteger(n) || n < min) {
    console.error(`bench: ${name} must be an integer ≥ ${min}, got ${value}`)
    process.exit(2)
  }
  return n
}
const duration = count("duration", flags.duration ?? process.env["BENCH_DURATION"], flags.quick ? 3 : 10, 1)
const connections = count("connections", flags.connections ?? process.env["BENCH_CONNECTIONS"], 16, 1)
const warmup = count("warmup", flags.warmup ?? process.env["BENCH_WARMUP"], flags.quick ? 1 : 2, 0)
// Once per server, right after it starts: long enough for JIT and heap sizing to settle (README,
// "Warm-up"); the run reports how long each server actually took.
const prime = count("prime", flags.prime ?? process.env["BENCH_PRIME"], flags.quick ? 3 : 15, 0)
// The list windows and the in-process run are shorter than the update windows: they are not
// compared with a peer, and the whole default run stays near 3 minutes.
const listSeconds = Math.max(2, Math.ceil(duration / 2))
const inProcessSeconds = Math.max(2, Math.ceil(duration / 2))
const inProcessWarmup = flags.quick ? 1 : 3
const adminUrl = process.env["BENCH_ADMIN_URL"] ?? "postgres://postgres@127.0.0.1:5432/postgres"
const database = process.env["BENCH_DATABASE"] ?? "identity_kit_bench"
// The peers: an unchanged copy in bench/peers (test/bench-peers.test.ts keeps it identical to the originals).
const peersDir = process.env["BENCH_PEERS_DIR"] ?? fileURLToPath(new URL("./peers", import.meta.url))
if (!/^[a-z_][a-z0-9_]*$/.test(database) || !database.includes("bench")) {
  // This database is dropped on every run: never let it be a real one (`test`, `postgres`, …).
  console.error(`bench: BENCH_DATABASE must be a plain name containing "bench", got ${database}`)
  process.exit(2)
}
const databaseUrl = (() => {
  const u = new URL(adminUrl)
  u.pathname = `/${database}`
  return u.toString()
})()

const benchDir = dirname(fileURLToPath(import.meta.url))
const projectDir = resolve(benchDir, "..")
const buildDir = join(benchDir, ".build")

// --- Children and cleanup ---------------------------------------------------------------------

const children = new Set<ChildProcess>()
const temporary: Array<string> = []

const stopChild = async (child: ChildProcess): Promise<void> => {
  if (child.exitCode !== null || child.signalCode !== null) {
    children.delete(child)
    return
  }
  const exited = once(child, "exit")
  child.kill("SIGTERM")
  const timer = setTimeout(() => child.kill("SIGKILL"), 4000)
  await exited
  clearTimeout(timer)
  children.delete(child)
}

const cleanup = async (): Promise<void> => {
  await Promise.all([...children].map(stopChild))
  await Promise.all(temporary.map((dir) => rm(dir, { recursive: true, force: true })))
}

let exiting = false
const fail = async (message: string, code = 1): Promise<never> => {
  console.error(`\nbench: ${message}`)
  if (!exiting) {
    exiting = true
    await cleanup()
  }
  process.exit(code)
}
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.once(signal, () => void fail(`interrupted by ${signal}`, 130))
}
// Last resort (a synchronous exit path): no child outlives the runner.
process.on("exit", () => {
  for (const child of children) if (child.exitCode === null) child.kill("SIGKILL")
})

/** Runs a command to completion; its stdout, or a failure with its stderr. */
const command = (
  file: string,
  args: ReadonlyArray<string>,
  options: { readonly cwd?: string; readonly env?: Record<string, string> } = {}
): Promise<string> =>
  new Promise((resolvePromise, reject) => {
    const child = spawn(file, args, {
      cwd: options.cwd ?? projectDir,
      env: { ...process.env, ...options.env },
      stdio: ["ignore", "pipe", "pipe"]
    })
    children.add(child)
    let out = ""
    let err = ""
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (err += chunk.toString()))
    child.on("error", reject)
    child.on("exit", (code) => {
      children.delete(child)
      if (code === 0) resolvePromise(out)
      else reject(new Error(`${file} ${args.join(" ")} exited ${code}\n${err}${out}`))
    })
  })

const hasCommand = (name: string): Promise<boolean> =>
  command("sh", ["-c", `command -v ${name}`]).then(() => true, () => false)

// --- Database -----------------------------------------------------------------------------------

interface PgClientLike {
  connect(): Promise<void>
  query(text: string, values?: ReadonlyArray<unknown>): Promise<{ rows: Array<Record<string, unknown>> }>
  end(): Promise<void>
}
const pg = createRequire(import.meta.url)("pg") as { Client: new(config: { connectionString: string }) => PgClientLike }

const withClient = async <A>(url: string, f: (client: PgClientLike) => Promise<A>): Promise<A> => {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return await f(client)
  } finally {
    await client.end()
  }
}

const recreateDatabase = () =>
  withClient(adminUrl, async (client) => {
    await client.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`)
    await client.query(`CREATE DATABASE ${database}`)
    const [row] = (await client.query("SELECT version() AS v")).rows
    return String(row?.["v"] ?? "").split(" on ")[0] ?? ""
  })

/** Other sessions doing work on the server while we measure: noise worth reporting. */
const otherActivity = () =>
  withClient(adminUrl, async (client) =>
    (await client.query(
      `SELECT datname, count(*)::int AS n FROM pg_stat_activity
       WHERE pid <> pg_backend_pid() AND backend_type = 'client backend' AND datname IS DISTINCT FROM $1
       GROUP BY datname`,
      [database]
    )).rows.map((row) => `${String(row["datname"])}: ${String(row["n"])}`))

/** Our tables (migrations) and the bench volume through the admin API, as a host would load them. */
const seedOurs = async () => {
  const started = performance.now()
  const kit = makeIdentityKit({ storage: layerPostgres({ url: databaseUrl, maxConnections: 8 }) })
  try {
    const seeded = await seed(kit, { concurrency: 8 })
    return { ...seeded, seconds: (performance.now() - started) / 1000 }
  } finally {
    await kit.dispose()
  }
}

// --- pgbench ------------------------------------------------------------------------------------

const V4_SIGNATURE =
  "identity_kit_update_identity_v4(text,text,json,text[],bigint[],bigint[],boolean[],text[],text[],text,text,text,text,text,text,bigint)"
const V3_SIGNATURE =
  "identity_kit_update_identity_v3(text,text,json,text[],bigint[],bigint[],boolean[],text[],text[],text,text,text,text,bigint)"
const V2_SIGNATURE = "identity_kit_update_identity_v2(text,text,json,json,text[],text[],text,text,text,text,bigint)"
const V1_SIGNATURE = "identity_kit_update_identity(text,text,json,json,text,text,text,text,bigint)"

/**
 * Which of our functions the own-ceiling script calls: the one the kit calls (v4, migration 0008)
 * when the bench database has it with the expected signature, else v3 (0006), v2 (0003), 0002's,
 * each said in the label; else none.
 */
const ownFunction = () =>
  withClient(databaseUrl, async (client) => {
    const [row] = (await client.query(
      `SELECT to_regprocedure($1) IS NOT NULL AS v4, to_regprocedure($2) IS NOT NULL AS v3,
              to_regprocedure($3) IS NOT NULL AS v2, to_regprocedure($4) IS NOT NULL AS v1,
              (SELECT string_agg(oid::regprocedure::text, ', ') FROM pg_proc WHERE proname = 'identity_kit_update_identity_v4') AS other`,
      [V4_SIGNATURE, V3_SIGNATURE, V2_SIGNATURE, V1_SIGNATURE]
    )).rows
    if (row?.["v4"] === true) return { script: join(benchDir, "pgbench-ours.sql"), label: "v4 function", note: undefined }
    const other = row?.["other"]
    const missing = typeof other === "string"
      ? `identity_kit_update_identity_v4 exists as ${other}, not ${V4_SIGNATURE}`
      : "identity_kit_update_identity_v4 is not in the database"
    if (row?.["v3"] === true) {
      return {
        script: join(benchDir, "pgbench-ours-v3.sql"),
        label: "v3 function",
        note: `${missing}: own ceiling measured on the v3 function`
      }
    }
    if (row?.["v2"] === true) {
      return {
        script: join(benchDir, "pgbench-ours-v2.sql"),
        label: "v2 function",
        note: `${missing}: own ceiling measured on the v2 function`
      }
    }
    if (row?.["v1"] === true) {
      return {
        script: join(benchDir, "pgbench-ours-0002.sql"),
        label: "0002 function",
        note: `${missing}: own ceiling measured on the 0002 function`
      }
    }
    return { script: undefined, label: "none", note: "no update function is in the database: no own ceiling" }
  })

interface PgbenchFigure {
  readonly name: "shared" | "own" | "own + key lookup"
  readonly label: string
  readonly mix: Mix
  readonly tps: number
  readonly latencyMs: number | undefined
}

/**
 * pgbench on the given scripts run one after the other as one transaction (16 clients, 2 threads,
 * prepared, as the shared README says), for `mix` (hot: every `\set n` pinned to n = 77).
 */
const pgbench = async (
  name: PgbenchFigure["name"],
  label: string,
  scripts: ReadonlyArray<string>,
  mix: Mix,
  defines: Record<string, string>
): Promise<PgbenchFigure> => {
  const dir = await mkdtemp(join(tmpdir(), "identity-kit-bench-"))
  temporary.push(dir)
  const script = join(dir, "script.sql")
  const text = (await Promise.all(scripts.map((file) => readFile(file, "utf8")))).join("\n")
  await writeFile(script, mix === "hot" ? text.replace(/^\\set n .*$/gm, `\\set n ${nextN("hot")}`) : text)
  const args = ["-n", "-M", "prepared", "-c", String(connections), "-j", "2", "-T", String(duration)]
  for (const [key, value] of Object.entries(defines)) args.push("-D", `${key}=${value}`)
  const out = await command("pgbench", [...args, "-f", script, databaseUrl])
  const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(out)
  const latency = /latency average = ([\d.]+) ms/.exec(out)
  if (!tps) throw new Error(`pgbench: no tps in its output\n${out}`)
  const figure = { name, label, mix, tps: Number(tps[1]), latencyMs: latency ? Number(latency[1]) : undefined }
  console.log(`  ${`pgbench ${label}`.padEnd(44)} ${mix.padEnd(6)} ${figure.tps.toFixed(0)} tps, latency avg ${figure.latencyMs ?? "?"} ms`)
  return figure
}

// --- Build --------------------------------------------------------------------------------------

/**
 * `server.ts`, `inprocess.ts` and `probe.ts` with the package sources compiled into ES modules
 * (dependencies stay external), as a host would run compiled JS: no tsx loader in the measured
 * processes (it adds about 95 MiB of RSS), and readable line numbers in CPU profiles.
 */
const bundle = async (): Promise<{ server: string; inProcess: string; probe: string }> => {
  const esbuild = await import("esbuild")
  await esbuild.build({
    entryPoints: ["server.ts", "inprocess.ts", "probe.ts"].map((file) => join(benchDir, file)),
    outdir: buildDir,
    outExtension: { ".js": ".mjs" },
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    conditions: ["@identity-kit/source"],
    external: ["effect", "@effect/*", "pg", "pg-*", "fastify", "@electric-sql/*"],
    sourcemap: true,
    logLevel: "error"
  })
  return {
    server: join(buildDir, "server.mjs"),
    inProcess: join(buildDir, "inprocess.mjs"),
    probe: join(buildDir, "probe.mjs")
  }
}

// --- In process ---------------------------------------------------------------------------------

const numberIn = (record: Record<string, unknown> | undefined, key: string): number | undefined => {
  const value = record?.[key]
  return typeof value === "number" ? value : undefined
}

/** A probe window from a child's message (probe.ts `ProbeWindow`). */
const probeWindowOf = (record: Record<string, unknown>): ProbeWindow => ({
  allocatedBytes: numberIn(record, "allocatedBytes") ?? 0,
  collections: numberIn(record, "collections") ?? 0,
  gcPauseMs: numberIn(record, "gcPauseMs") ?? 0,
  userMs: numberIn(record, "userMs") ?? 0,
  systemMs: numberIn(record, "systemMs") ?? 0,
  heapUsedBytes: numberIn(record, "heapUsedBytes") ?? 0
})

/** The in-process run in its own process, pinned to the last core when `taskset` is there. */
const inProcess = async (file: string, entry: "handle" | "fetch", pin: boolean): Promise<InProcessResult> => {
  const core = String(cpus().length - 1)
  const node = [process.execPath, file]
  const [program, ...args] = pin ? ["taskset", "-c", core, ...node] : node
  process.stdout.write(`  ${`in process, kit.${entry}, memory storage${pin ? `, core ${core}` : ""}`.padEnd(44)} seeding, ${inProcessWarmup}s warm-up, ${inProcessSeconds}s… `)
  const out = await command(program!, args, {
    env: {
      BENCH_ENTRY: entry,
      BENCH_WARMUP: String(inProcessWarmup),
      BENCH_DURATION: String(inProcessSeconds),
      BENCH_CONCURRENCY: String(connections)
    }
  })
  const line = out.split("\n").find((l) => l.startsWith("result "))
  if (line === undefined) throw new Error(`inprocess.ts printed no result\n${out}`)
  const parsed: unknown = JSON.parse(line.slice("result ".length))
  const record = typeof parsed === "object" && parsed !== null ? Object.fromEntries(Object.entries(parsed)) : {}
  const sample = record["sample"]
  const result: InProcessResult = {
    entry,
    seconds: numberIn(record, "seconds") ?? 0,
    updates: numberIn(record, "updates") ?? 0,
    non2xx: numberIn(record, "non2xx") ?? 0,
    sample: typeof sample === "string" ? sample : undefined,
    ...probeWindowOf(record)
  }
  console.log(`${(result.updates / result.seconds).toFixed(0)} updates/s, ${((1000 * (result.userMs + result.systemMs)) / Math.max(1, result.updates)).toFixed(0)} µs CPU and ${(result.allocatedBytes / 1024 / Math.max(1, result.updates)).toFixed(1)} KiB per update`)
  return result
}

// --- Servers ------------------------------------------------------------------------------------

/** A port free right now (the peer prints the PORT it was given, so it cannot be 0). */
const freePort = async (): Promise<number> => {
  const { createServer } = await import("node:net")
  const probe = createServer()
  await new Promise<void>((resolvePromise) => probe.listen(0, "127.0.0.1", () => resolvePromise()))
  const address = probe.address()
  await new Promise<void>((resolvePromise) => probe.close(() => resolvePromise()))
  if (address === null || typeof address === "string") throw new Error("no free port")
  return address.port
}

interface Server {
  readonly name: string
  /** identity-kit (answers `stats` and `profile-*`), as opposed to the peer. */
  readonly ours: boolean
  readonly child: ChildProcess
  readonly port: number
  /** What it printed after "listening" (its logs during the run), last 20,000 characters. */
  readonly output: () => string
  /** Sends a message over IPC and waits for the answer of the same type. */
  readonly ask: (message: Record<string, unknown>) => Promise<Record<string, unknown>>
}

const startServer = async (
  name: string,
  args: ReadonlyArray<string>,
  options: { readonly ours: boolean; readonly cwd: string; readonly env: Record<string, string> }
): Promise<Server> => {
  const child = spawn(process.execPath, args, {
    cwd: options.cwd,
    env: { ...process.env, ...options.env },
    stdio: ["ignore", "pipe", "pipe", "ipc"]
  })
  children.add(child)
  let log = ""
  const port = await new Promise<number>((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not print "listening <port>" within 60 s\n${log}`)), 60_000)
    const onData = (chunk: Buffer) => {
      log += chunk.toString()
      const match = /listening (\d+)/.exec(log)
      if (match) {
        clearTimeout(timer)
        resolvePromise(Number(match[1]))
      }
    }
    child.stdout!.on("data", onData)
    child.stderr!.on("data", (chunk: Buffer) => (log += chunk.toString()))
    child.once("exit", (code, signal) => {
      clearTimeout(timer)
      reject(new Error(`${name} exited (${code ?? signal}) before listening\n${log}`))
    })
    child.once("error", reject)
  }).catch((error: unknown) => fail(`${name} failed to start: ${error instanceof Error ? error.message : String(error)}`))
  // Keep draining its output; report it if the server dies during the run.
  let after = ""
  const keep = (chunk: Buffer) => {
    after = (after + chunk.toString()).slice(-20_000)
  }
  child.stdout!.on("data", keep)
  child.stderr!.on("data", keep)
  child.once("exit", (code, signal) => {
    if (!exiting) void fail(`${name} exited during the run (${code ?? signal})\n${log}${after}`)
  })
  const ask = (message: Record<string, unknown>) =>
    new Promise<Record<string, unknown>>((resolvePromise, reject) => {
      const timer = setTimeout(() => {
        child.off("message", onMessage)
        reject(new Error(`${name} did not answer ${String(message["type"])} within 30 s`))
      }, 30_000)
      const onMessage = (reply: unknown) => {
        if (typeof reply !== "object" || reply === null) return
        const type = Reflect.get(reply, "type")
        if (type !== message["type"] && type !== "error") return
        clearTimeout(timer)
        child.off("message", onMessage)
        if (type === "error") reject(new Error(String(Reflect.get(reply, "message"))))
        else resolvePromise(Object.fromEntries(Object.entries(reply)))
      }
      child.on("message", onMessage)
      child.send(message)
    })
  return { name, ours: options.ours, child, port, output: () => after, ask }
}

// --- Load -------------------------------------------------------------------------------------

/** What the load generator sends to one route: a body per request, and what to do with answers. */
interface Workload {
  readonly name: string
  readonly path: string
  readonly body: () => string
  /** Sees every answer (e.g. to follow a cursor). */
  readonly onAnswer?: (status: number, body: string) => void
}

const updates = (mix: Mix): Workload => ({ name: `update ${mix}`, path: UPDATE_ROUTE, body: () => updateBody(nextN(mix)) })

/** `pagination.cursor` of a list answer, if any. */
const cursorOf = (body: string): string | undefined => {
  try {
    const parsed: unknown = JSON.parse(body)
    const pagination: unknown = typeof parsed === "object" && parsed !== null ? Reflect.get(parsed, "pagination") : undefined
    const cursor: unknown = typeof pagination === "object" && pagination !== null ? Reflect.get(pagination, "cursor") : undefined
    return typeof cursor === "string" && cursor !== "" ? cursor : undefined
  } catch {
    return undefined
  }
}

/**
 * Pages of 100 through all 10,000 identities, as the SDK's iterator walks them: every answer's
 * cursor is the next request of some connection; a walk that reached the last page starts again.
 * (autocannon's per-connection context is reset between requests, so cursors go through a pool.)
 */
const listWalk = (): Workload => {
  const cursors: Array<string> = []
  return {
    name: "list walk",
    path: LIST_ROUTE,
    body: () => {
      const cursor = cursors.pop()
      return JSON.stringify(cursor === undefined ? { limit: 100 } : { limit: 100, cursor })
    },
    onAnswer: (status, body) => {
      const cursor = status === 200 ? cursorOf(body) : undefined
      if (cursor !== undefined) cursors.push(cursor)
    }
  }
}

/** First pages of a search matching 111 identities (`user_<k>`, k in 10..99): always a full page. */
const listSearch = (): Workload => ({
  name: "list search",
  path: LIST_ROUTE,
  body: () => JSON.stringify({ limit: 100, search: `user_${10 + Math.floor(Math.random() * 90)}` })
})

interface LoadResult {
  readonly reqPerSec: number
  readonly total: number
  readonly ok: number
  readonly non2xx: number
  readonly errors: number
  readonly timeouts: number
  readonly p50: number
  readonly p99: number
  readonly statusCodes: Record<string, number>
  readonly sample: string | undefined
}

/** A measured window inside one load run: it starts `from` s in and lasts `seconds`. */
interface WindowSpec {
  readonly from: number
  readonly seconds: number
  /** Called at the start; the window's answers are counted once it resolved. */
  readonly begin: () => Promise<void>
  /** Called when the window's answers stopped being counted; the run goes on meanwhile. */
  readonly end: () => Promise<void>
}

// A measured window ends this long before its load does: the load generator closes its connections
// (with requests in flight) only after the window's end counters were read.
const TAIL_SECONDS = 1

const percentile = (sorted: ReadonlyArray<number>, p: number): number =>
  sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!

/**
 * `connections` connections on `workload` for `seconds`, open-loop at `rate` req/s overall when
 * given (autocannon corrects latencies for coordinated omission then). `everySecond` is called
 * once a second with the answers of that second. With `window`, the run lasts `window.from +
 * window.seconds + TAIL_SECONDS` and the figures are those of the window alone (answers and
 * latencies counted as they arrive), so warm-up and measurement share connections: no client
 * aborts between them.
 */
const load = (
  port: number,
  workload: Workload,
  seconds: number,
  authorization: string,
  options: {
    readonly rate?: number | undefined
    readonly everySecond?: (answers: number) => void
    readonly window?: WindowSpec | undefined
  } = {}
): Promise<LoadResult> =>
  new Promise((resolvePromise, reject) => {
    let sample: string | undefined
    let answers = 0
    const { everySecond, rate, window } = options
    const ticker = everySecond === undefined ? undefined : setInterval(() => {
      everySecond(answers)
      answers = 0
    }, 1000)
    // The window's own counters.
    let counting = false
    let countedFrom = 0
    let countedUntil = 0
    const latencies: Array<number> = []
    const codes: Record<string, number> = {}
    let windowDone: Promise<void> = Promise.resolve()
    const instance = autocannon({
      url: `http://127.0.0.1:${port}`,
      connections,
      pipelining: 1,
      duration: window === undefined ? seconds : window.from + window.seconds + TAIL_SECONDS,
      timeout: 10,
      ...(rate === undefined ? {} : { overallRate: rate }),
      headers: { "content-type": "application/json", authorization },
      requests: [{
        method: "POST",
        path: workload.path,
        setupRequest: (request) => ({ ...request, body: workload.body() }),
        onResponse: (status, body) => {
          answers++
          // Keep the first answer that is not 2xx, to say why.
          if ((status < 200 || status > 299) && sample === undefined) sample = `${status} ${String(body).slice(0, 600)}`
          workload.onAnswer?.(status, body)
        }
      }]
    }, (error: unknown, result) => {
      if (ticker !== undefined) clearInterval(ticker)
      if (error !== null && error !== undefined) return reject(error)
      windowDone.then(() => {
        if (window === undefined) {
          const statusCodes: Record<string, number> = {}
          for (const [code, { count: n }] of Object.entries(result.statusCodeStats ?? {})) statusCodes[code] = n ?? 0
          return resolvePromise({
            reqPerSec: result.requests.average,
            total: result.requests.total,
            ok: result["2xx"],
            non2xx: result.non2xx,
            errors: result.errors,
            timeouts: result.timeouts,
            p50: result.latency.p50,
            p99: result.latency.p99,
            statusCodes,
            sample
          })
        }
        latencies.sort((a, b) => a - b)
        const ok = Object.entries(codes).reduce((n, [code, k]) => (code.startsWith("2") ? n + k : n), 0)
        resolvePromise({
          reqPerSec: latencies.length / Math.max(0.001, (countedUntil - countedFrom) / 1000),
          total: latencies.length,
          ok,
          non2xx: latencies.length - ok,
          errors: result.errors,
          timeouts: result.timeouts,
          p50: percentile(latencies, 50),
          p99: percentile(latencies, 99),
          statusCodes: codes,
          sample
        })
      }, reject)
    })
    if (window === undefined) return
    instance.on("response", (_client, status, _bytes, latency) => {
      if (!counting) return
      latencies.push(latency)
      codes[String(status)] = (codes[String(status)] ?? 0) + 1
    })
    const sleep = (s: number) => new Promise((r) => setTimeout(r, s * 1000))
    windowDone = (async () => {
      await sleep(window.from)
      await window.begin()
      countedFrom = performance.now()
      counting = true
      await sleep(window.seconds)
      counting = false
      countedUntil = performance.now()
      await window.end()
    })()
  })

const RECOVERY_LIMIT_MS = 30_000
const SLOW_RECOVERY_MS = 1_000

/**
 * How long one update takes right after a window, when the load generator has just closed its
 * connections with requests in flight (client aborts): a server that handles aborts badly stalls
 * here, and the next window would measure the stall instead of the server.
 */
const answerAfterLoad = async (server: Server, authorization: string): Promise<{ ms: number; status: number | "no answer" }> => {
  const started = performance.now()
  try {
    const response = await fetch(`http://127.0.0.1:${server.port}${UPDATE_ROUTE}`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization },
      body: updateBody(nextN("spread")),
      signal: AbortSignal.timeout(RECOVERY_LIMIT_MS)
    })
    await response.text()
    return { ms: performance.now() - started, status: response.status }
  } catch {
    return { ms: performance.now() - started, status: "no answer" }
  }
}
/** One request, to see that a server answers a route as expected before loading it. */
const preflight = async (server: Server, workload: Workload, authorization: string): Promise<{ status: number; body: string }> => {
  const response = await fetch(`http://127.0.0.1:${server.port}${workload.path}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization },
    body: workload.body()
  })
  return { status: response.status, body: (await response.text()).slice(0, 600) }
}

// --- Measurement --------------------------------------------------------------------------------

/** One measured window of one server on one workload, and what it cost the server. */
interface Window extends LoadResult {
  readonly server: string
  readonly workload: string
  /** The overall rate asked for (half-peak windows), req/s. */
  readonly rate: number | undefined
  readonly seconds: number
  readonly cpu: CpuShare
  /** Server CPU (user + sys, all threads) / answered requests. */
  readonly cpuMsPerRequest: number | undefined
  /** V8 heap bytes allocated / answered requests (probe.ts), KiB. */
  readonly allocKiBPerRequest: number | undefined
  readonly probe: ProbeWindow | undefined
  /** SQL round trips (pg `Client#query` calls) / answered requests; ours only. */
  readonly queriesPerRequest: number | undefined
  /** Peak RSS during the warm-up and the window (VmHWM reset at its start), MiB. */
  readonly peakRssMiB: number | undefined
  readonly peakRssScope: "window" | "process lifetime"
  readonly profile: string | undefined
  /** One update sent right after the window (its connections just closed): how long it took. */
  readonly answerAfter: { readonly ms: number; readonly status: number | "no answer" }
}

/**
 * The one measurement: peak RSS reset; closed loop: `warm` s of load then `seconds` measured in the
 * same run; open loop (`rate`): `seconds` at that rate, no warm-up (it follows the same server's
 * closed-loop window). Around the measured part: the server's CPU (/proc), V8 allocation (probe),
 * SQL round trips (ours) and, when asked, a profile of just that window.
 */
const measure = async (
  server: Server,
  workload: Workload,
  authorization: string,
  options: { readonly warm: number; readonly seconds: number; readonly rate?: number; readonly profile?: string | undefined }
): Promise<Window> => {
  const pid = server.child.pid!
  const label = options.rate === undefined ? workload.name : `${workload.name} @ ${options.rate.toFixed(0)}/s`
  process.stdout.write(`  ${server.name.padEnd(24)} ${label.padEnd(24)} `)
  const scope = (await resetPeakRss(pid)) ? "window" : "process lifetime"
  let before: Record<string, unknown> | undefined
  let after: Record<string, unknown> | undefined
  let probeReply: Record<string, unknown> | undefined
  let cpuBefore: CpuSnapshot | undefined
  let cpuAfter: CpuSnapshot | undefined
  const begin = async () => {
    before = server.ours ? await server.ask({ type: "stats" }) : undefined
    if (options.profile !== undefined) await server.ask({ type: "profile-start" })
    await server.ask({ type: "probe-start" })
    cpuBefore = await cpuSnapshot(pid, database)
  }
  const end = async () => {
    cpuAfter = await cpuSnapshot(pid, database)
    probeReply = await server.ask({ type: "probe-stop" })
    if (options.profile !== undefined) await server.ask({ type: "profile-stop", file: options.profile })
    after = server.ours ? await server.ask({ type: "stats" }) : undefined
  }
  let result: LoadResult
  if (options.rate === undefined) {
    // Closed loop: warm-up and window in one run on the same connections.
    process.stdout.write(`${options.warm}s warm-up + ${options.seconds}s… `)
    result = await load(server.port, workload, 0, authorization, {
      window: { from: options.warm, seconds: options.seconds, begin, end }
    })
  } else {
    // Open loop: the whole run is the window, so autocannon's latencies (corrected for coordinated
    // omission) are the window's.
    process.stdout.write(`${options.seconds}s… `)
    await begin()
    result = await load(server.port, workload, options.seconds, authorization, { rate: options.rate })
    await end()
  }
  if (cpuBefore === undefined || cpuAfter === undefined) throw new Error(`${server.name}: the window's counters were not read`)
  const peakRssMiB = await statusMiB(pid, "VmHWM")
  // Before the next window starts: a stall after client aborts is reported here, not measured there.
  const answerAfter = await answerAfterLoad(server, authorization)
  const probe = probeReply === undefined || numberIn(probeReply, "allocatedBytes") === undefined ? undefined : probeWindowOf(probeReply)
  const queriesBefore = numberIn(before, "queries")
  const queriesAfter = numberIn(after, "queries")
  const cpu = cpuShare(cpuBefore, cpuAfter)
  const perRequest = (x: number | undefined) => (x === undefined || result.total === 0 ? undefined : x / result.total)
  const window: Window = {
    ...result,
    server: server.name,
    workload: workload.name,
    rate: options.rate,
    seconds: options.seconds,
    cpu,
    cpuMsPerRequest: perRequest(cpu.serverMs),
    allocKiBPerRequest: perRequest(probe === undefined ? undefined : probe.allocatedBytes / 1024),
    probe,
    queriesPerRequest: queriesBefore === undefined || queriesAfter === undefined ? undefined : perRequest(queriesAfter - queriesBefore),
    peakRssMiB,
    peakRssScope: scope,
    profile: options.profile,
    answerAfter
  }
  console.log(
    `${result.reqPerSec.toFixed(0)} req/s, p50 ${fmt(result.p50, 1)} ms, p99 ${fmt(result.p99, 1)} ms, non-2xx ${result.non2xx}` +
      `, ${fmt(window.cpuMsPerRequest, 2)} ms CPU, ${fmt(window.allocKiBPerRequest, 0)} KiB/req` +
      (result.errors > 0 ? `, errors ${result.errors}` : "") +
      (answerAfter.ms > SLOW_RECOVERY_MS ? `; !!! the next request took ${fmt(answerAfter.ms)} ms (${answerAfter.status})` : "")
  )
  return window
}

/** How a server's CPU per request fell during its priming, second by second. */
interface Settle {
  readonly server: string
  readonly seconds: number
  readonly reqPerSec: number
  /** Server CPU ms per answered request, for each second of the priming. */
  readonly cpuMsPerRequest: ReadonlyArray<number | undefined>
  /** The settled level: the median of the last quarter (≥ 3 s) of the curve. */
  readonly level: number | undefined
  /** Seconds of load until every later 3-second mean stayed within 20 % of the level. */
  readonly settledAfter: number | undefined
  readonly verdict: string
  /** One update sent right after the priming: how long it took (see `answerAfterLoad`). */
  readonly answerAfter: { readonly ms: number; readonly status: number | "no answer" }
}

// Per-second CPU figures move by ±10 % from noise alone (10 ms jiffies, other processes): a slow
// drift within that band is not "still warming up".
const SETTLED_WITHIN = 1.2

const settleOf = (curve: ReadonlyArray<number | undefined>): Pick<Settle, "level" | "settledAfter" | "verdict"> => {
  if (curve.length < 8) return { level: undefined, settledAfter: undefined, verdict: "priming too short to tell" }
  const tail = curve.slice(-Math.max(3, Math.floor(curve.length / 4))).filter((x): x is number => x !== undefined)
  const level = [...tail].sort((a, b) => a - b)[Math.floor(tail.length / 2)]
  if (level === undefined) return { level, settledAfter: undefined, verdict: "no answers at the end of the priming" }
  let settledAfter: number | undefined
  for (let i = curve.length - 3; i >= 0; i--) {
    const [a, b, c] = [curve[i], curve[i + 1], curve[i + 2]]
    if (a === undefined || b === undefined || c === undefined || (a + b + c) / 3 > level * SETTLED_WITHIN) break
    settledAfter = i
  }
  // Flat only over the last few seconds says nothing: the curve may still be falling.
  return settledAfter === undefined || settledAfter > curve.length - 6
    ? { level, settledAfter: undefined, verdict: "NOT settled within the priming" }
    : { level, settledAfter, verdict: `settled after ${settledAfter} s` }
}

/** Unmeasured spread load right after a server starts, with its CPU per request sampled each second. */
const primeServer = async (server: Server, seconds: number, authorization: string): Promise<Settle> => {
  process.stdout.write(`  ${server.name.padEnd(24)} ${"priming (spread)".padEnd(24)} ${seconds}s… `)
  const pid = server.child.pid!
  const curve: Array<number | undefined> = []
  let last = await processCpuMs(pid)
  const result = await load(server.port, updates("spread"), seconds, authorization, {
    everySecond: (answers) => {
      void processCpuMs(pid).then((now) => {
        const spent = now === undefined || last === undefined ? undefined : now.user + now.sys - last.user - last.sys
        last = now
        curve.push(spent === undefined || answers === 0 ? undefined : spent / answers)
      })
    }
  })
  const settle = settleOf(curve)
  const after = await answerAfterLoad(server, authorization)
  console.log(
    `${result.reqPerSec.toFixed(0)} req/s${result.non2xx > 0 ? ` (${result.non2xx} non-2xx)` : ""}; CPU/request ${fmt(curve[0], 2)} ms in the first second, ${fmt(settle.level, 2)} ms at the end (${settle.verdict})` +
      (after.ms > SLOW_RECOVERY_MS ? `; !!! the next request took ${fmt(after.ms)} ms (${after.status})` : "")
  )
  return { server: server.name, seconds, reqPerSec: result.reqPerSec, cpuMsPerRequest: curve, ...settle, answerAfter: after }
}

// --- Report -------------------------------------------------------------------------------------

const fmt = (x: number | undefined, digits = 0): string => (x === undefined || Number.isNaN(x) ? "–" : x.toFixed(digits))
const ratioOf = (a: number | undefined, b: number | undefined): number | undefined =>
  a === undefined || b === undefined || b === 0 ? undefined : a / b
const times = (x: number | undefined): string => (x === undefined ? "–" : `${x.toFixed(2)}×`)

const printTable = (rows: ReadonlyArray<ReadonlyArray<string>>): void => {
  const widths = (rows[0] ?? []).map((_, i) => Math.max(...rows.map((row) => (row[i] ?? "").length)))
  for (const row of rows) console.log(row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join("  ").trimEnd())
}

interface Target {
  readonly target: string
  readonly measured: string
  readonly met: boolean | undefined
}

// --- Main -----------------------------------------------------------------------------------------

const main = async () => {
  const startedAt = new Date()
  const wallStart = performance.now()
  console.log(`identity-kit bench — ${startedAt.toISOString()}`)
  console.log(`node ${process.version}, ${cpus().length} cores (load generator, servers and PostgreSQL share them), loadavg ${loadavg().map((x) => x.toFixed(2)).join(" ")}`)
  console.log(`${connections} connections; per server ${prime}s priming, then per window ${warmup}s warm-up and ${duration}s measured; database ${database}`)

  // 1. A fresh database: peer tables, then ours (migrations) with the same volume.
  const pgVersion = await recreateDatabase()
  console.log(`${pgVersion}; database ${database} created afresh`)
  await command("psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", databaseUrl, "-f", join(peersDir, "setup.sql")])
  const { authorization, keyId, seconds: seedSeconds } = await seedOurs()
  console.log(`seeded: peer tables (setup.sql) and ours (${IDENTITIES} identities × 2 ratelimits via the admin API in ${seedSeconds.toFixed(1)} s)`)
  const vacuum = () => withClient(databaseUrl, (client) => client.query("VACUUM ANALYZE"))
  await withClient(databaseUrl, async (client) => {
    const counts = (await client.query(
      `SELECT (SELECT count(*) FROM identity_kit_identities)::int AS ours_i, (SELECT count(*) FROM identity_kit_ratelimits)::int AS ours_r,
              (SELECT count(*) FROM peer_identities)::int AS peer_i, (SELECT count(*) FROM peer_ratelimits)::int AS peer_r`
    )).rows[0]
    if (counts?.["ours_i"] !== IDENTITIES || counts["ours_r"] !== 2 * IDENTITIES || counts["peer_i"] !== IDENTITIES || counts["peer_r"] !== 2 * IDENTITIES) {
      throw new Error(`unexpected seed volume: ${JSON.stringify(counts)}`)
    }
  })
  await vacuum()
  const others = await otherActivity()
  if (others.length > 0) console.log(`note: other client sessions on this PostgreSQL server (noise): ${others.join(", ")}`)
  const notes: Array<string> = []

  // 2. The database ceilings: the shared script, our own function, and our function after the
  // root-key lookup (one request without the key cache).
  const own = await ownFunction()
  if (own.note !== undefined) {
    notes.push(own.note)
    console.log(`note: ${own.note}`)
  }
  const defines = { key_id: keyId, now: String(Date.now()), hash: hashRootKey(authorization.slice("Bearer ".length)) }
  const pgbenchFigures: Array<PgbenchFigure> = []
  for (const mix of flags["pgbench-hot"] ? (["spread", "hot"] as const) : (["spread"] as const)) {
    pgbenchFigures.push(await pgbench("shared", "shared (peer script)", [join(peersDir, "pgbench-update.sql")], mix, defines))
    if (own.script !== undefined) {
      pgbenchFigures.push(await pgbench("own", `own (${own.label})`, [own.script], mix, defines))
      pgbenchFigures.push(await pgbench("own + key lookup", `own + root-key lookup (${own.label})`, [join(benchDir, "pgbench-root-key.sql"), own.script], mix, defines))
    }
  }
  // pgbench left dead rows and a longer audit log: the servers start from clean statistics.
  await vacuum()
  const pgbenchOf = (name: PgbenchFigure["name"], mix: Mix) => pgbenchFigures.find((f) => f.name === name && f.mix === mix)

  // 3. Bundles, then ours in process (nothing else running).
  const built = await bundle()
  const pin = await hasCommand("taskset")
  if (!pin) notes.push("taskset not found: the in-process run was not pinned to one core")
  const inProcessResults: Array<InProcessResult> = [await inProcess(built.inProcess, "handle", pin)]
  if (flags["in-process-fetch"]) inProcessResults.push(await inProcess(built.inProcess, "fetch", pin))

  // 4. The servers, each with the probe preloaded. The peer imports fastify and pg: run a copy next
  // to our node_modules.
  const peerDir = await mkdtemp(join(tmpdir(), "identity-kit-bench-peer-"))
  temporary.push(peerDir)
  await copyFile(join(peersDir, "naive-server.mjs"), join(peerDir, "naive-server.mjs"))
  await symlink(join(projectDir, "node_modules"), join(peerDir, "node_modules"), "dir")
  const withProbe = ["--import", pathToFileURL(built.probe).href]
  const oursArgs = flags.tsx
    ? [...withProbe, "--import", "tsx", "--conditions=@identity-kit/source", join(benchDir, "server.ts")]
    : [...withProbe, built.server]
  const oursServer = async (name: string, env: Record<string, string>) =>
    startServer(name, oursArgs, {
      ours: true,
      cwd: projectDir,
      env: { PORT: String(await freePort()), DATABASE_URL: databaseUrl, BENCH_POOL: "8", ...env }
    })
  const servers: Array<Server> = [
    await startServer("naive (Fastify+pg)", [...withProbe, "naive-server.mjs"], {
      ours: false,
      cwd: peerDir,
      env: { PORT: String(await freePort()), DATABASE_URL: databaseUrl }
    }),
    await oursServer("ours (node http)", { BENCH_HOST: "node" })
  ]
  if (flags.fastify) servers.push(await oursServer("ours (Fastify plugin)", { BENCH_HOST: "fastify" }))
  if (flags["no-root-key-cache"]) servers.push(await oursServer("ours (no key cache)", { BENCH_HOST: "node", BENCH_ROOT_KEY_CACHE: "off" }))
  if (flags.memory) {
    // Diagnostic, not a peer: our HTTP and Effect layers with in-memory storage (no database).
    servers.push(await oursServer("ours (memory storage)", {
      BENCH_HOST: "node",
      BENCH_STORAGE: "memory",
      BENCH_ROOT_KEY: authorization.slice("Bearer ".length)
    }))
  }
  const naive = servers[0]!
  const ours = servers.filter((server) => server.ours)
  const primary = ours[0]!

  for (const server of servers) {
    const { status, body } = await preflight(server, updates("spread"), authorization)
    if (status < 200 || status > 299) console.log(`\n!!! ${server.name}: preflight update answered ${status}: ${body}\n`)
  }
  // listIdentities is issue 8's: measured only where the route answers.
  const listing = new Set<Server>()
  for (const server of ours) {
    const { status, body } = await preflight(server, listWalk(), authorization)
    if (status >= 200 && status <= 299) listing.add(server)
    else {
      const note = `${server.name}: listIdentities answered ${status}${status === 404 ? " (not served yet)" : `: ${body}`}; list windows skipped`
      notes.push(note)
      console.log(`note: ${note}`)
    }
  }

  // 5. Priming, once per server: JIT and heap sizing settle before anything is measured.
  const settles: Array<Settle> = []
  if (prime > 0) for (const server of servers) settles.push(await primeServer(server, prime, authorization))

  // 6. Update windows: for each mix, every server back to back (drift hits all alike); after each
  // server's spread peak, the same mix at half that peak.
  let profileFile: string | undefined
  if (flags.profile) {
    await mkdir(join(benchDir, ".profiles"), { recursive: true })
    profileFile = join(benchDir, ".profiles", `ours-node-spread-${startedAt.toISOString().replace(/[:.]/g, "-")}.cpuprofile`)
  }
  const windows: Array<Window> = []
  for (const mix of ["spread", "hot"] as const) {
    for (const server of servers) {
      const peak = await measure(server, updates(mix), authorization, {
        warm: warmup,
        seconds: duration,
        profile: mix === "spread" && server === primary ? profileFile : undefined
      })
      windows.push(peak)
      if (mix === "spread" && peak.reqPerSec > 0) {
        windows.push(await measure(server, updates(mix), authorization, { warm: 0, seconds: duration, rate: Math.max(1, Math.round(peak.reqPerSec / 2)) }))
      }
    }
  }
  // 7. listIdentities pages.
  for (const server of listing) {
    windows.push(await measure(server, listWalk(), authorization, { warm: warmup, seconds: listSeconds }))
    windows.push(await measure(server, listSearch(), authorization, { warm: warmup, seconds: listSeconds }))
  }
  const lifetimePeak = await Promise.all(servers.map(async (server) => ({
    server: server.name,
    peakRssMiB: await statusMiB(server.child.pid!, "VmHWM"),
    rssMiB: await statusMiB(server.child.pid!, "VmRSS")
  })))
  exiting = true
  await cleanup()

  // 8. Report.
  const win = (server: Server, workload: string, halfRate = false) =>
    windows.find((w) => w.server === server.name && w.workload === workload && (w.rate !== undefined) === halfRate)
  // Under the update load only by default: the peer serves nothing else, so that is the comparison.
  const peakRss = (server: Server, which: "update" | "all" = "update"): number | undefined => {
    const peaks = windows
      .filter((w) => w.server === server.name && (which === "all" || w.workload.startsWith("update")))
      .flatMap((w) => (w.peakRssMiB === undefined ? [] : [w.peakRssMiB]))
    return peaks.length > 0 ? Math.max(...peaks) : lifetimePeak.find((m) => m.server === server.name)?.peakRssMiB
  }
  const rss = (x: number | undefined) => (x === undefined ? "–" : `${x.toFixed(0)} MiB`)

  console.log("\nupdateIdentity: peak throughput (closed loop), and what each request cost the server")
  const updateRows: Array<Array<string>> = [[
    "",
    "spread req/s", "p50", "p99", "non-2xx", "CPU ms/req", "KiB/req", "SQL/req",
    "hot req/s", "p50", "p99", "non-2xx", "CPU ms/req",
    "peak RSS (update windows)"
  ]]
  for (const name of ["shared", "own", "own + key lookup"] as const) {
    const spread = pgbenchOf(name, "spread")
    if (spread === undefined) continue
    updateRows.push([`pgbench ${spread.label} (tps)`, fmt(spread.tps), "", "", "", "", "", "", fmt(pgbenchOf(name, "hot")?.tps), "", "", "", "", ""])
  }
  for (const server of servers) {
    const s = win(server, "update spread")
    const h = win(server, "update hot")
    updateRows.push([
      server.name + (s?.profile !== undefined ? " *" : ""),
      fmt(s?.reqPerSec), fmt(s?.p50), fmt(s?.p99), fmt(s?.non2xx), fmt(s?.cpuMsPerRequest, 2), fmt(s?.allocKiBPerRequest), fmt(s?.queriesPerRequest, 2),
      fmt(h?.reqPerSec), fmt(h?.p50), fmt(h?.p99), fmt(h?.non2xx), fmt(h?.cpuMsPerRequest, 2),
      rss(peakRss(server))
    ])
  }
  printTable(updateRows)

  interface Ratios {
    readonly server: string
    readonly spread: Record<string, number | undefined>
    readonly hot: Record<string, number | undefined>
  }
  const naiveSpread = win(naive, "update spread")
  const naiveHot = win(naive, "update hot")
  const hotCeiling = (name: PgbenchFigure["name"]) => pgbenchOf(name, "hot")?.tps
  const ratios: Array<Ratios> = ours.map((server) => {
    const s = win(server, "update spread")
    const h = win(server, "update hot")
    return {
      server: server.name,
      spread: {
        "req/s vs naive": ratioOf(s?.reqPerSec, naiveSpread?.reqPerSec),
        "req/s vs pgbench(own)": ratioOf(s?.reqPerSec, pgbenchOf("own", "spread")?.tps),
        "req/s vs pgbench(own + key lookup)": ratioOf(s?.reqPerSec, pgbenchOf("own + key lookup", "spread")?.tps),
        "req/s vs pgbench(shared)": ratioOf(s?.reqPerSec, pgbenchOf("shared", "spread")?.tps),
        "CPU/request vs naive": ratioOf(s?.cpuMsPerRequest, naiveSpread?.cpuMsPerRequest),
        "allocation/request vs naive": ratioOf(s?.allocKiBPerRequest, naiveSpread?.allocKiBPerRequest),
        "peak RSS vs naive": ratioOf(peakRss(server), peakRss(naive))
      },
      hot: {
        "req/s vs naive": ratioOf(h?.reqPerSec, naiveHot?.reqPerSec),
        "req/s vs pgbench(own)": ratioOf(h?.reqPerSec, hotCeiling("own")),
        "req/s vs pgbench(own + key lookup)": ratioOf(h?.reqPerSec, hotCeiling("own + key lookup")),
        "req/s vs pgbench(shared)": ratioOf(h?.reqPerSec, hotCeiling("shared")),
        "CPU/request vs naive": ratioOf(h?.cpuMsPerRequest, naiveHot?.cpuMsPerRequest),
        "allocation/request vs naive": ratioOf(h?.allocKiBPerRequest, naiveHot?.allocKiBPerRequest)
      }
    }
  })
  const naiveRatios = {
    spread: ratioOf(naiveSpread?.reqPerSec, pgbenchOf("shared", "spread")?.tps),
    hot: ratioOf(naiveHot?.reqPerSec, hotCeiling("shared"))
  }
  console.log("\nratios (ours / peer; pgbench(own) = our own function, same mix" + (own.script === undefined ? "" : `: ${own.label}`) + ")")
  const ratioRows: Array<Array<string>> = [["", "spread", "hot"]]
  for (const r of ratios) {
    for (const key of Object.keys(r.spread)) ratioRows.push([`${r.server}: ${key}`, times(r.spread[key]), times(r.hot[key])])
  }
  ratioRows.push(["naive: req/s vs pgbench(shared)", times(naiveRatios.spread), times(naiveRatios.hot)])
  printTable(ratioRows)

  console.log("\nupdateIdentity (spread) at half of each server's own peak, open loop (latency corrected for coordinated omission)")
  const halfRows: Array<Array<string>> = [["", "asked req/s", "got req/s", "p50 ms", "p99 ms", "non-2xx", "CPU ms/req"]]
  for (const server of servers) {
    const w = win(server, "update spread", true)
    halfRows.push([server.name, fmt(w?.rate), fmt(w?.reqPerSec), fmt(w?.p50), fmt(w?.p99), fmt(w?.non2xx), fmt(w?.cpuMsPerRequest, 2)])
  }
  printTable(halfRows)

  console.log(`\nin process (memory storage, no HTTP, ${connections} in flight${pin ? ", pinned to one core" : ""})`)
  const inRows: Array<Array<string>> = [["entry", "updates/s", "CPU µs/update", "KiB/update", "GC pause ms/s", "non-2xx"]]
  for (const r of inProcessResults) {
    inRows.push([
      `kit.${r.entry}`,
      fmt(r.updates / r.seconds),
      fmt((1000 * (r.userMs + r.systemMs)) / Math.max(1, r.updates)),
      fmt(r.allocatedBytes / 1024 / Math.max(1, r.updates), 1),
      fmt(r.gcPauseMs / r.seconds, 1),
      fmt(r.non2xx)
    ])
  }
  printTable(inRows)

  if (listing.size > 0) {
    console.log("\nlistIdentities pages (limit 100), beside the update spread window of the same server")
    const listRows: Array<Array<string>> = [["", "req/s", "p50 ms", "p99 ms", "non-2xx", "CPU ms/req", "KiB/req", "SQL/req", "peak RSS"]]
    for (const server of listing) {
      for (const workload of ["list walk", "list search", "update spread"]) {
        const w = win(server, workload)
        listRows.push([
          `${server.name} ${workload}`,
          fmt(w?.reqPerSec), fmt(w?.p50), fmt(w?.p99), fmt(w?.non2xx), fmt(w?.cpuMsPerRequest, 2), fmt(w?.allocKiBPerRequest), fmt(w?.queriesPerRequest, 2),
          rss(w?.peakRssMiB)
        ])
      }
    }
    printTable(listRows)
  }

  if (settles.length > 0) {
    console.log(`\nsettling: server CPU ms per request in each second of the ${prime}s priming (spread)`)
    for (const s of settles) {
      console.log(
        `  ${s.server.padEnd(24)} ${s.verdict} at ${fmt(s.level, 2)} ms: ` +
          s.cpuMsPerRequest.map((x) => fmt(x, 2)).join(" ")
      )
    }
  }

  console.log(`\nCPU during each measured window, in % of one core (the machine has ${cpus().length * 100}%):`)
  for (const w of windows) {
    console.log(
      `  ${w.server.padEnd(24)} ${(w.rate === undefined ? w.workload : `${w.workload} @${fmt(w.rate)}`).padEnd(22)} server ${fmt(w.cpu.server)}% (sys ${fmt(w.cpu.serverSys)}%)` +
        `  pg backends ${fmt(w.cpu.postgresBench)}%  pg other ${fmt(w.cpu.postgresOther)}%  load generator ${fmt(w.cpu.runner)}%` +
        `  everything else ${fmt(w.cpu.rest)}%  machine ${fmt(w.cpu.machine)}%` +
        (w.probe === undefined ? "" : `  GC ${w.probe.collections}× ${fmt(w.probe.gcPauseMs)} ms`)
    )
  }
  if (profileFile !== undefined) console.log("  * profiled window (inspector sampling on): its figures are not comparable")
  if (windows.some((w) => w.peakRssScope !== "window")) console.log("  note: peak RSS could not be reset per window: it covers each process's whole life")

  // Issue 7's targets, for the primary server (node http, the kit's defaults).
  const s = win(primary, "update spread")
  const h = win(primary, "update hot")
  const half = win(primary, "update spread", true)
  const primaryRatios = ratios[0]
  const best = inProcessResults.reduce<number | undefined>((m, r) => Math.max(m ?? 0, r.updates / r.seconds), undefined)
  const oursWindows = windows.filter((w) => ours.some((o) => o.name === w.server))
  // A window with no answer at all counts as failed: a stall must not read as "0 non-2xx".
  const oursNon2xx = oursWindows.some((w) => w.total === 0) ? undefined : oursWindows.reduce((n, w) => n + w.non2xx, 0)
  const check = (target: string, value: number | undefined, shown: string, ok: (x: number) => boolean): Target => ({
    target,
    measured: shown,
    met: value === undefined ? undefined : ok(value)
  })
  const targets: Array<Target> = [
    check("spread ≥ 2.0× naive", primaryRatios?.spread["req/s vs naive"], times(primaryRatios?.spread["req/s vs naive"]), (x) => x >= 2),
    check("spread ≥ 0.8× pgbench(own)", primaryRatios?.spread["req/s vs pgbench(own)"], times(primaryRatios?.spread["req/s vs pgbench(own)"]) + (own.label === "v4 function" ? "" : ` (${own.label})`), (x) => x >= 0.8),
    check("hot ≥ 2.5× naive", primaryRatios?.hot["req/s vs naive"], times(primaryRatios?.hot["req/s vs naive"]), (x) => x >= 2.5),
    {
      target: "0 non-2xx (ours, every window)",
      measured: oursNon2xx === undefined ? "a window had no answer" : String(oursNon2xx),
      met: oursNon2xx === 0
    },
    check("CPU ≤ 0.4 ms/request (spread)", s?.cpuMsPerRequest, `${fmt(s?.cpuMsPerRequest, 2)} ms (hot ${fmt(h?.cpuMsPerRequest, 2)})`, (x) => x <= 0.4),
    check("in process ≥ 20,000 updates/s, one core", best, `${fmt(best)}/s`, (x) => x >= 20_000),
    check("allocation ≤ 100 KiB/request (spread)", s?.allocKiBPerRequest, `${fmt(s?.allocKiBPerRequest)} KiB`, (x) => x <= 100),
    check("peak RSS ≤ 1.5× naive (update windows)", primaryRatios?.spread["peak RSS vs naive"], `${times(primaryRatios?.spread["peak RSS vs naive"])} (${rss(peakRss(primary))} / ${rss(peakRss(naive))})`, (x) => x <= 1.5),
    check("p99 ≤ 10 ms at half of peak", half?.p99, `${fmt(half?.p99)} ms at ${fmt(half?.rate)} req/s`, (x) => x <= 10)
  ]
  console.log(`\nissue 7 targets, ${primary.name}:`)
  printTable([["target", "measured", ""], ...targets.map((t) => [t.target, t.measured, t.met === undefined ? "–" : t.met ? "met" : "MISSED"])])

  for (const note of notes) console.log(`note: ${note}`)
  for (const server of servers) {
    const said = server.output().trim()
    if (said !== "") console.log(`\n${server.name} printed during the run (last lines):\n${said.split("\n").slice(-20).join("\n")}`)
  }

  let invalid = false
  for (const w of windows) {
    if (w.errors > 0 || w.timeouts > 0) console.log(`\n!!! ${w.server} ${w.workload}: ${w.errors} socket errors, ${w.timeouts} timeouts`)
    if (w.answerAfter.ms > SLOW_RECOVERY_MS) {
      console.log(
        `\n!!! ${w.server} ${w.workload}: right after the window (the load generator closed ${connections} connections, ` +
          `requests in flight), one update took ${fmt(w.answerAfter.ms)} ms (${w.answerAfter.status})`
      )
    }
    if (w.total === 0) {
      // No answer at all in a window is a stall, not a figure (requests still open at its end are not counted as timeouts).
      if (ours.some((server) => server.name === w.server)) invalid = true
      console.log(`\n!!! ${w.server} ${w.workload}: no answer in the whole ${w.seconds} s window`)
    }
    if (w.non2xx > 0) {
      const loud = ours.some((server) => server.name === w.server)
      if (loud) invalid = true
      console.log(
        `\n${loud ? "!!! INVALID FIGURE: " : "note: "}${w.server} ${w.workload} answered ${w.non2xx} non-2xx of ${w.total} ` +
          `(status codes ${JSON.stringify(w.statusCodes)}); first: ${w.sample ?? "(no sample)"}`
      )
    }
  }
  for (const r of inProcessResults) {
    if (r.non2xx > 0) {
      invalid = true
      console.log(`\n!!! INVALID FIGURE: in process kit.${r.entry} answered ${r.non2xx} non-2xx of ${r.updates}; first: ${r.sample ?? "(no sample)"}`)
    }
  }

  if (profileFile !== undefined) {
    console.log("")
    console.log(await summarizeProfile(profileFile, 25))
    const profiled = windows.find((w) => w.profile !== undefined)
    console.log("")
    console.log(await summarizeHeapProfile(profileFile.replace(/\.cpuprofile$/, ".heapprofile"), 15, profiled?.total))
  }

  const results = {
    date: startedAt.toISOString(),
    node: process.version,
    cores: cpus().length,
    cpuModel: cpus()[0]?.model,
    postgres: pgVersion,
    connections,
    primeSeconds: prime,
    warmupSeconds: warmup,
    durationSeconds: duration,
    listSeconds,
    seedSeconds,
    pgbench: { ownFunction: own.label, figures: pgbenchFigures },
    inProcess: inProcessResults,
    settle: settles,
    windows,
    peakRssMiB: Object.fromEntries(servers.map((server) => [server.name, { updateWindows: peakRss(server), allWindows: peakRss(server, "all") }])),
    lifetimeMemory: lifetimePeak,
    ratios: { ours: ratios, naive: naiveRatios },
    targets,
    notes
  }
  await mkdir(join(benchDir, ".results"), { recursive: true })
  await writeFile(join(benchDir, ".results", "latest.json"), JSON.stringify(results, null, 2))
  console.log(`\nresults: bench/.results/latest.json; total ${((performance.now() - wallStart) / 1000).toFixed(0)} s`)
  if (invalid) {
    console.error("bench: identity-kit answered non-2xx or stalled: its figures are invalid")
    process.exit(1)
  }
}

main().then(() => process.exit(0), (error: unknown) => fail(error instanceof Error ? error.stack ?? error.message : String(error)))
