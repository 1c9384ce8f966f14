/**
 * The side-by-side benchmark of /work/shared/bench/README.md: identity-kit's
 * `POST /v2/identities.updateIdentity` against the database ceiling (pgbench, the whole update as
 * one prepared statement) and a hand-written Fastify + pg server, in the same run, on the same
 * PostgreSQL, with the same request mix.
 *
 *   npx tsx --conditions=@identity-kit/source bench/run.ts [--quick] [--duration 10] [--connections 16]
 *       [--warmup 2] [--prime 0] [--fastify] [--pgbench-hot] [--profile] [--memory] [--tsx]
 *
 * Env (same meaning as the flags): BENCH_DURATION, BENCH_CONNECTIONS, BENCH_WARMUP; where:
 * BENCH_ADMIN_URL (default postgres://postgres@127.0.0.1:5432/postgres, used to create the bench
 * database), BENCH_DATABASE (default identity_kit_bench; dropped and created again on every run),
 * BENCH_PEERS_DIR (default ../shared/bench beside the repository).
 *
 * Steps: fresh database → peer tables (setup.sql) → our tables (migrations) seeded through the admin
 * API with the same volume → VACUUM ANALYZE both → pgbench ceiling → both servers started as child
 * processes → for each mix (spread, hot): naive, then ours, each 16 connections, warm-up then the
 * measured window → table of figures and ratios. Exits non-zero when a server does not start or
 * when ours answered anything but 2xx.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { once } from "node:events"
import { copyFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises"
import { cpus, loadavg, tmpdir } from "node:os"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { parseArgs } from "node:util"
import { createRequire } from "node:module"
import autocannon from "autocannon"
import { Redacted } from "effect"
import { makeIdentityKit } from "identity-kit"
import { layerPostgres } from "identity-kit/postgres"
import { summarizeHeapProfile, summarizeProfile } from "./profile.js"

// --- Options ------------------------------------------------------------------------------------

const { values: flags } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    duration: { type: "string" },
    connections: { type: "string" },
    warmup: { type: "string" },
    fastify: { type: "boolean", default: false },
    "pgbench-hot": { type: "boolean", default: false },
    profile: { type: "boolean", default: false },
    tsx: { type: "boolean", default: false },
    memory: { type: "boolean", default: false },
    "root-key-cache": { type: "boolean", default: false },
    prime: { type: "string" },
    help: { type: "boolean", default: false }
  }
})
if (flags.help) {
  console.log(
    "usage: tsx --conditions=@identity-kit/source bench/run.ts [--quick] [--duration S] [--connections N] [--warmup S] [--fastify] [--pgbench-hot] [--profile] [--tsx] [--memory] [--root-key-cache] [--prime S]"
  )
  process.exit(0)
}
const positive = (name: string, value: string | undefined, fallback: number): number => {
  if (value === undefined || value === "") return fallback
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1) {
    console.error(`bench: ${name} must be a positive integer, got ${value}`)
    process.exit(2)
  }
  return n
}
const duration = positive("duration", flags.duration ?? process.env["BENCH_DURATION"], flags.quick ? 3 : 10)
const connections = positive("connections", flags.connections ?? process.env["BENCH_CONNECTIONS"], 16)
const warmup = positive("warmup", flags.warmup ?? process.env["BENCH_WARMUP"], flags.quick ? 1 : 2)
// Not in the shared method (default 0): seconds of unmeasured spread load given to every server once,
// right after it starts, so JIT and heap sizing are settled before the first warm-up.
const primeValue = flags.prime ?? process.env["BENCH_PRIME"]
const prime = primeValue === undefined || primeValue === "0" ? 0 : positive("prime", primeValue, 0)
const adminUrl = process.env["BENCH_ADMIN_URL"] ?? "postgres://postgres@127.0.0.1:5432/postgres"
const database = process.env["BENCH_DATABASE"] ?? "identity_kit_bench"
// The peers live in ../shared/bench beside the repository (as on every developer's and CI's machine).
const peersDir = process.env["BENCH_PEERS_DIR"] ?? fileURLToPath(new URL("../../shared/bench", import.meta.url))
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
const IDENTITIES = 10_000
const ROUTE = "/v2/identities.updateIdentity"
const HOT_N = 77
const WORKSPACE_ID = "ws_bench"

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
const command = (file: string, args: ReadonlyArray<string>, options: { readonly cwd?: string } = {}): Promise<string> =>
  new Promise((resolvePromise, reject) => {
    const child = spawn(file, args, { cwd: options.cwd ?? projectDir, stdio: ["ignore", "pipe", "pipe"] })
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

// --- /proc sampling (Linux) ---------------------------------------------------------------------

const CLOCK_TICKS = 100 // sysconf(_SC_CLK_TCK) on Linux x86_64

/** utime and stime of a process in ms, or undefined when it is gone. */
const processCpuMs = async (pid: number): Promise<{ user: number; sys: number } | undefined> => {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8")
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    return { user: (Number(fields[11]) * 1000) / CLOCK_TICKS, sys: (Number(fields[12]) * 1000) / CLOCK_TICKS }
  } catch {
    return undefined
  }
}

/**
 * CPU ms of each `postgres` process, keyed by pid, and whether it serves the bench database (its
 * process title, e.g. "postgres: 15/main: postgres identity_kit_bench 127.0.0.1(5123) idle").
 */
const postgresCpu = async (): Promise<Map<number, { ms: number; bench: boolean }>> => {
  const { readdir } = await import("node:fs/promises")
  const out = new Map<number, { ms: number; bench: boolean }>()
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = await readFile(`/proc/${entry}/stat`, "utf8")
      const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"))
      if (name !== "postgres") continue
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
      const title = (await readFile(`/proc/${entry}/cmdline`, "utf8")).replace(/\0/g, " ")
      out.set(Number(entry), {
        ms: ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS,
        bench: title.includes(` ${database} `)
      })
    } catch {
      // exited meanwhile
    }
  }
  return out
}

/** Busy and total jiffies of the whole machine (/proc/stat). */
const machineCpu = async (): Promise<{ busy: number; total: number }> => {
  const line = (await readFile("/proc/stat", "utf8")).split("\n")[0]!
  const values = line.trim().split(/\s+/).slice(1).map(Number)
  const total = values.reduce((a, b) => a + b, 0)
  const idle = (values[3] ?? 0) + (values[4] ?? 0)
  return { busy: total - idle, total }
}

/** A field of /proc/<pid>/status in MiB (VmHWM: peak RSS, VmRSS: current). */
const statusMiB = async (pid: number, field: "VmHWM" | "VmRSS"): Promise<number | undefined> => {
  try {
    const status = await readFile(`/proc/${pid}/status`, "utf8")
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)
    return match ? Number(match[1]) / 1024 : undefined
  } catch {
    return undefined
  }
}

interface CpuSnapshot {
  readonly at: number
  readonly server: { user: number; sys: number } | undefined
  readonly postgres: Map<number, { ms: number; bench: boolean }>
  readonly runner: number
  readonly machine: { busy: number; total: number }
}
const cpuSnapshot = async (serverPid: number | undefined): Promise<CpuSnapshot> => {
  const usage = process.cpuUsage()
  return {
    at: performance.now(),
    server: serverPid === undefined ? undefined : await processCpuMs(serverPid),
    postgres: await postgresCpu(),
    runner: (usage.user + usage.system) / 1000,
    machine: await machineCpu()
  }
}
/**
 * CPU use between two snapshots, in % of one core: the server, PostgreSQL's backends for the bench
 * database and its other processes (background workers, other databases' sessions), this process
 * (the load generator), and everything else on the machine (other people's work: noise).
 */
const cpuShare = (a: CpuSnapshot, b: CpuSnapshot) => {
  const wall = b.at - a.at
  const pct = (ms: number) => (100 * ms) / wall
  let postgresBench = 0
  let postgresOther = 0
  // Processes that exited during the window are lost; new ones count in full.
  for (const [pid, { ms, bench }] of b.postgres) {
    const delta = ms - (a.postgres.get(pid)?.ms ?? 0)
    if (bench) postgresBench += delta
    else postgresOther += delta
  }
  const server = a.server === undefined || b.server === undefined
    ? undefined
    : b.server.user + b.server.sys - a.server.user - a.server.sys
  const serverSys = a.server === undefined || b.server === undefined ? undefined : b.server.sys - a.server.sys
  const runner = b.runner - a.runner
  const cores = cpus().length
  const machine = (100 * cores * (b.machine.busy - a.machine.busy)) / Math.max(1, b.machine.total - a.machine.total)
  return {
    server: server === undefined ? undefined : pct(server),
    serverSys: serverSys === undefined ? undefined : pct(serverSys),
    postgresBench: pct(postgresBench),
    postgresOther: pct(postgresOther),
    runner: pct(runner),
    machine,
    rest: machine - pct((server ?? 0) + postgresBench + postgresOther + runner)
  }
}

// --- Servers ------------------------------------------------------------------------------------

/**
 * `bench/server.ts` and the package sources compiled into one ES module (dependencies stay
 * external), as a host would run compiled JS: no tsx loader in the measured process (it adds about
 * 95 MiB of RSS), and readable line numbers in CPU profiles (tsx minifies whitespace).
 */
const bundleServer = async (): Promise<string> => {
  const esbuild = await import("esbuild")
  const outfile = join(benchDir, ".build", "server.mjs")
  await esbuild.build({
    entryPoints: [join(benchDir, "server.ts")],
    outfile,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    conditions: ["@identity-kit/source"],
    external: ["effect", "@effect/*", "pg", "pg-*", "fastify", "@electric-sql/*"],
    sourcemap: true,
    logLevel: "error"
  })
  return outfile
}

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
  readonly child: ChildProcess
  readonly port: number
  /** What it printed after "listening" (its logs during the run), last 20,000 characters. */
  readonly output: () => string
  /** Sends a message over IPC and waits for the answer of the same type (ours only). */
  readonly ask?: (message: Record<string, unknown>) => Promise<Record<string, unknown>>
}

const startServer = async (
  name: string,
  file: string,
  args: ReadonlyArray<string>,
  options: { readonly cwd: string; readonly env: Record<string, string>; readonly ipc: boolean }
): Promise<Server> => {
  const child = spawn(file, args, {
    cwd: options.cwd,
    env: { ...process.env, ...options.env },
    stdio: options.ipc ? ["ignore", "pipe", "pipe", "ipc"] : ["ignore", "pipe", "pipe"]
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
  const output = () => after
  if (!options.ipc) return { name, child, port, output }
  const ask = (message: Record<string, unknown>) =>
    new Promise<Record<string, unknown>>((resolvePromise, reject) => {
      const onMessage = (reply: unknown) => {
        if (typeof reply !== "object" || reply === null) return
        const type = Reflect.get(reply, "type")
        if (type !== message["type"] && type !== "error") return
        child.off("message", onMessage)
        if (type === "error") reject(new Error(String(Reflect.get(reply, "message"))))
        else resolvePromise(reply as Record<string, unknown>)
      }
      child.on("message", onMessage)
      child.send(message)
    })
  return { name, child, port, output, ask }
}

// --- Load -------------------------------------------------------------------------------------

const bodyFor = (n: number): string =>
  JSON.stringify({
    identity: `user_${n}`,
    meta: { plan: "premium", n },
    ratelimits: [
      { name: "rl1", limit: 1000, duration: 3600000, autoApply: true },
      { name: "rl2", limit: 50, duration: 60000, autoApply: false }
    ]
  })

type Mix = "spread" | "hot"
const nextN = (mix: Mix): number => (mix === "hot" ? HOT_N : 1 + Math.floor(Math.random() * IDENTITIES))

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

const load = async (port: number, mix: Mix, seconds: number, authorization: string): Promise<LoadResult> => {
  let sample: string | undefined
  const result = await autocannon({
    url: `http://127.0.0.1:${port}`,
    connections,
    pipelining: 1,
    duration: seconds,
    timeout: 10,
    headers: { "content-type": "application/json", authorization },
    requests: [{
      method: "POST",
      path: ROUTE,
      setupRequest: (request) => ({ ...request, body: bodyFor(nextN(mix)) }),
      // Keep the first answer that is not 2xx, to say why.
      onResponse: (status, body) => {
        if ((status < 200 || status > 299) && sample === undefined) sample = `${status} ${String(body).slice(0, 600)}`
      }
    }]
  })
  const statusCodes: Record<string, number> = {}
  for (const [code, { count }] of Object.entries(result.statusCodeStats ?? {})) statusCodes[code] = count ?? 0
  return {
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
  }
}

/** One request, to see that a server answers as expected before loading it. */
const preflight = async (server: Server, authorization: string): Promise<{ status: number; body: string }> => {
  const response = await fetch(`http://127.0.0.1:${server.port}${ROUTE}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization },
    body: bodyFor(1)
  })
  return { status: response.status, body: (await response.text()).slice(0, 600) }
}

interface Measured extends LoadResult {
  readonly server: string
  readonly mix: Mix
  readonly cpu: ReturnType<typeof cpuShare>
  readonly queriesPerRequest: number | undefined
  readonly profile: string | undefined
}

const measure = async (server: Server, mix: Mix, authorization: string, profileFile?: string): Promise<Measured> => {
  process.stdout.write(`  ${server.name.padEnd(22)} ${mix.padEnd(6)} warm-up ${warmup}s… `)
  await load(server.port, mix, warmup, authorization)
  const before = server.ask ? await server.ask({ type: "stats" }) : undefined
  if (profileFile !== undefined) await server.ask?.({ type: "profile-start" })
  const cpuBefore = await cpuSnapshot(server.child.pid)
  process.stdout.write(`measuring ${duration}s… `)
  const result = await load(server.port, mix, duration, authorization)
  const cpuAfter = await cpuSnapshot(server.child.pid)
  if (profileFile !== undefined) await server.ask?.({ type: "profile-stop", file: profileFile })
  const after = server.ask ? await server.ask({ type: "stats" }) : undefined
  const queriesPerRequest = before && after && result.total > 0
    ? (Number(after["queries"]) - Number(before["queries"])) / result.total
    : undefined
  const cpu = cpuShare(cpuBefore, cpuAfter)
  console.log(
    `${result.reqPerSec.toFixed(0)} req/s, p50 ${result.p50} ms, p99 ${result.p99} ms, non-2xx ${result.non2xx}` +
      (result.errors > 0 ? `, errors ${result.errors}` : "")
  )
  return { ...result, server: server.name, mix, cpu, queriesPerRequest, profile: profileFile }
}

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
    return String(row?.["v"] ?? "").split(" on ")[0]!
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

const seedOurs = async (): Promise<{ authorization: string; seconds: number }> => {
  const started = performance.now()
  const kit = makeIdentityKit({ storage: layerPostgres({ url: databaseUrl, maxConnections: 8 }) })
  try {
    await kit.admin.createWorkspace({ id: WORKSPACE_ID, name: "bench" })
    const { key } = await kit.admin.issueRootKey({ workspaceId: WORKSPACE_ID, name: "bench" })
    let next = 1
    const worker = async () => {
      while (next <= IDENTITIES) {
        const n = next++
        await kit.admin.createIdentity({
          workspaceId: WORKSPACE_ID,
          externalId: `user_${n}`,
          meta: { plan: "free" },
          ratelimits: [
            { name: "rl1", limit: 100, duration: 60000, autoApply: false },
            { name: "rl2", limit: 100, duration: 60000, autoApply: false }
          ]
        })
      }
    }
    await Promise.all(Array.from({ length: 8 }, worker))
    return { authorization: `Bearer ${Redacted.value(key)}`, seconds: (performance.now() - started) / 1000 }
  } finally {
    await kit.dispose()
  }
}

const pgbench = async (script: string): Promise<{ tps: number; latencyMs: number | undefined }> => {
  const out = await command("pgbench", ["-n", "-M", "prepared", "-c", String(connections), "-j", "2", "-T", String(duration), "-f", script, databaseUrl])
  const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(out)
  const latency = /latency average = ([\d.]+) ms/.exec(out)
  if (!tps) throw new Error(`pgbench: no tps in its output\n${out}`)
  return { tps: Number(tps[1]), latencyMs: latency ? Number(latency[1]) : undefined }
}

// --- Main -----------------------------------------------------------------------------------------

const main = async () => {
  const startedAt = new Date()
  const wallStart = performance.now()
  console.log(`identity-kit bench — ${startedAt.toISOString()}`)
  console.log(`node ${process.version}, ${cpus().length} cores (load generator, servers and PostgreSQL share them), loadavg ${loadavg().map((x) => x.toFixed(2)).join(" ")}`)
  console.log(`${connections} connections, ${warmup}s warm-up, ${duration}s measured${prime > 0 ? `, ${prime}s priming per server` : ""}; database ${database}`)

  // 1. A fresh database: peer tables, then ours (migrations) with the same volume.
  const pgVersion = await recreateDatabase()
  console.log(`${pgVersion}; database ${database} created afresh`)
  await command("psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", databaseUrl, "-f", join(peersDir, "setup.sql")])
  const { authorization, seconds: seedSeconds } = await seedOurs()
  console.log(`seeded: peer tables (setup.sql) and ours (${IDENTITIES} identities × 2 ratelimits via the admin API in ${seedSeconds.toFixed(1)} s)`)
  if (seedSeconds > 30) console.log("  note: seeding through the admin API took more than 30 s")
  await withClient(databaseUrl, async (client) => {
    const counts = (await client.query(
      `SELECT (SELECT count(*) FROM identity_kit_identities)::int AS ours_i, (SELECT count(*) FROM identity_kit_ratelimits)::int AS ours_r,
              (SELECT count(*) FROM peer_identities)::int AS peer_i, (SELECT count(*) FROM peer_ratelimits)::int AS peer_r`
    )).rows[0]!
    if (counts["ours_i"] !== IDENTITIES || counts["ours_r"] !== 2 * IDENTITIES || counts["peer_i"] !== IDENTITIES || counts["peer_r"] !== 2 * IDENTITIES) {
      throw new Error(`unexpected seed volume: ${JSON.stringify(counts)}`)
    }
    await client.query("VACUUM ANALYZE")
  })
  const others = await otherActivity()
  if (others.length > 0) console.log(`note: other client sessions on this PostgreSQL server (noise): ${others.join(", ")}`)

  // 2. The database ceiling.
  const pgbenchSpread = await pgbench(join(peersDir, "pgbench-update.sql"))
  console.log(`  ${"pgbench (ceiling)".padEnd(22)} spread ${pgbenchSpread.tps.toFixed(0)} tps, latency avg ${pgbenchSpread.latencyMs ?? "?"} ms`)
  let pgbenchHot: { tps: number; latencyMs: number | undefined } | undefined
  if (flags["pgbench-hot"]) {
    const dir = await mkdtemp(join(tmpdir(), "identity-kit-bench-"))
    temporary.push(dir)
    const script = join(dir, "pgbench-update-hot.sql")
    const text = await readFile(join(peersDir, "pgbench-update.sql"), "utf8")
    await writeFile(script, text.replace(/^\\set n .*$/m, `\\set n ${HOT_N}`))
    pgbenchHot = await pgbench(script)
    console.log(`  ${"pgbench (ceiling)".padEnd(22)} hot    ${pgbenchHot.tps.toFixed(0)} tps, latency avg ${pgbenchHot.latencyMs ?? "?"} ms`)
  }

  // 3. The servers. The peer imports fastify and pg: run a copy next to our node_modules.
  const peerDir = await mkdtemp(join(tmpdir(), "identity-kit-bench-peer-"))
  temporary.push(peerDir)
  await copyFile(join(peersDir, "naive-server.mjs"), join(peerDir, "naive-server.mjs"))
  await symlink(join(projectDir, "node_modules"), join(peerDir, "node_modules"), "dir")
  const underTsx = ["--import", "tsx", "--conditions=@identity-kit/source", join(benchDir, "server.ts")]
  // esbuild comes with tsx (not a direct dependency): without it, run ours under tsx instead.
  const oursArgs = flags.tsx ? underTsx : await bundleServer().then(
    (file) => [file],
    (error: unknown) => {
      console.log(`note: could not bundle bench/server.ts (${String(error).split("\n")[0]}); running it under tsx (+~95 MiB RSS)`)
      return underTsx
    }
  )
  const servers: Array<Server> = [
    await startServer("naive (Fastify+pg)", process.execPath, ["naive-server.mjs"], {
      cwd: peerDir,
      env: { PORT: String(await freePort()), DATABASE_URL: databaseUrl },
      ipc: false
    }),
    await startServer("ours (node http)", process.execPath, oursArgs, {
      cwd: projectDir,
      env: { PORT: String(await freePort()), DATABASE_URL: databaseUrl, BENCH_HOST: "node", BENCH_POOL: "8" },
      ipc: true
    })
  ]
  if (flags.fastify) {
    servers.push(
      await startServer("ours (Fastify plugin)", process.execPath, oursArgs, {
        cwd: projectDir,
        env: { PORT: String(await freePort()), DATABASE_URL: databaseUrl, BENCH_HOST: "fastify", BENCH_POOL: "8" },
        ipc: true
      })
    )
  }
  if (flags["root-key-cache"]) {
    // The opt-in root-key cache (10 s): one database round trip per request instead of two.
    servers.push(
      await startServer("ours (node, key cache)", process.execPath, oursArgs, {
        cwd: projectDir,
        env: { PORT: String(await freePort()), DATABASE_URL: databaseUrl, BENCH_HOST: "node", BENCH_POOL: "8", BENCH_ROOT_KEY_CACHE: "10" },
        ipc: true
      })
    )
  }
  if (flags.memory) {
    // Diagnostic, not a peer: our HTTP and Effect layers with in-memory storage (no database).
    servers.push(
      await startServer("ours (memory storage)", process.execPath, oursArgs, {
        cwd: projectDir,
        env: {
          PORT: String(await freePort()),
          DATABASE_URL: databaseUrl,
          BENCH_HOST: "node",
          BENCH_STORAGE: "memory",
          BENCH_ROOT_KEY: authorization.slice("Bearer ".length)
        },
        ipc: true
      })
    )
  }
  const ours = servers.filter((server) => server.ask !== undefined)

  for (const server of servers) {
    const { status, body } = await preflight(server, authorization)
    if (status < 200 || status > 299) {
      console.log(`\n!!! ${server.name}: preflight POST answered ${status}: ${body}\n`)
    }
  }

  if (prime > 0) {
    for (const server of servers) {
      process.stdout.write(`  ${server.name.padEnd(22)} priming ${prime}s (not measured)… `)
      const primed = await load(server.port, "spread", prime, authorization)
      console.log(`${primed.reqPerSec.toFixed(0)} req/s`)
    }
  }

  // 4. Load: for each mix, the peer then ours, back to back (drift hits both alike).
  let profileFile: string | undefined
  if (flags.profile) {
    await mkdir(join(benchDir, ".profiles"), { recursive: true })
    profileFile = join(benchDir, ".profiles", `ours-node-spread-${startedAt.toISOString().replace(/[:.]/g, "-")}.cpuprofile`)
  }
  const measured: Array<Measured> = []
  for (const mix of ["spread", "hot"] as const) {
    for (const server of servers) {
      const profile = mix === "spread" && server === ours[0] ? profileFile : undefined
      measured.push(await measure(server, mix, authorization, profile))
    }
  }
  const memory = await Promise.all(servers.map(async (server) => ({
    server: server.name,
    peakRssMiB: await statusMiB(server.child.pid!, "VmHWM"),
    rssMiB: await statusMiB(server.child.pid!, "VmRSS")
  })))
  exiting = true
  await cleanup()

  // 5. Report.
  const find = (server: string, mix: Mix) => measured.find((m) => m.server === server && m.mix === mix)
  const naive = servers[0]!.name
  const fmt = (x: number | undefined, digits = 0) => (x === undefined || Number.isNaN(x) ? "–" : x.toFixed(digits))
  const ratio = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined || b === 0 ? "–" : `${(a / b).toFixed(2)}×`)
  const rows: Array<Array<string>> = [["", "spread req/s", "p50 ms", "p99 ms", "non-2xx", "hot req/s", "p50 ms", "p99 ms", "non-2xx", "peak RSS"]]
  rows.push(["pgbench ceiling (tps)", fmt(pgbenchSpread.tps), "–", "–", "–", fmt(pgbenchHot?.tps), "–", "–", "–", "–"])
  for (const server of servers) {
    const s = find(server.name, "spread")
    const h = find(server.name, "hot")
    const mem = memory.find((m) => m.server === server.name)
    rows.push([
      server.name + (s?.profile ? " *" : ""),
      fmt(s?.reqPerSec), fmt(s?.p50), fmt(s?.p99), fmt(s?.non2xx),
      fmt(h?.reqPerSec), fmt(h?.p50), fmt(h?.p99), fmt(h?.non2xx),
      mem?.peakRssMiB === undefined ? "–" : `${mem.peakRssMiB.toFixed(0)} MiB`
    ])
  }
  for (const server of ours) {
    const s = find(server.name, "spread")
    const h = find(server.name, "hot")
    rows.push([`${server.name} / naive`, ratio(s?.reqPerSec, find(naive, "spread")?.reqPerSec), "", "", "", ratio(h?.reqPerSec, find(naive, "hot")?.reqPerSec), "", "", "", ""])
    rows.push([
      `${server.name} / pgbench`,
      ratio(s?.reqPerSec, pgbenchSpread.tps), "", "", "",
      pgbenchHot ? ratio(h?.reqPerSec, pgbenchHot.tps) : `${ratio(h?.reqPerSec, pgbenchSpread.tps)} (vs spread)`, "", "", "", ""
    ])
  }
  rows.push([`naive / pgbench`, ratio(find(naive, "spread")?.reqPerSec, pgbenchSpread.tps), "", "", "", pgbenchHot ? ratio(find(naive, "hot")?.reqPerSec, pgbenchHot.tps) : `${ratio(find(naive, "hot")?.reqPerSec, pgbenchSpread.tps)} (vs spread)`, "", "", "", ""])
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => (row[i] ?? "").length)))
  console.log("")
  for (const row of rows) console.log(row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join("  "))
  console.log("")
  console.log(`CPU during each measured window, in % of one core (the machine has ${cpus().length * 100}%):`)
  for (const m of measured) {
    const perRequest = m.cpu.server === undefined || m.reqPerSec === 0 ? undefined : (10 * m.cpu.server) / m.reqPerSec
    console.log(
      `  ${m.server.padEnd(22)} ${m.mix.padEnd(6)} server ${fmt(m.cpu.server)}% (sys ${fmt(m.cpu.serverSys)}%; ${fmt(perRequest, 2)} ms/req)  pg backends ${fmt(m.cpu.postgresBench)}%  ` +
        `pg other ${fmt(m.cpu.postgresOther)}%  load generator ${fmt(m.cpu.runner)}%  everything else ${fmt(m.cpu.rest)}%  machine ${fmt(m.cpu.machine)}%` +
        (m.queriesPerRequest === undefined ? "" : `  SQL round trips/request ${m.queriesPerRequest.toFixed(2)}`)
    )
  }
  if (profileFile !== undefined) console.log("  * profiled window (inspector sampling on): its figures are not comparable")

  for (const server of servers) {
    const said = server.output().trim()
    if (said !== "") console.log(`\n${server.name} printed during the run (last lines):\n${said.split("\n").slice(-20).join("\n")}`)
  }

  let invalid = false
  for (const m of measured) {
    if (m.errors > 0 || m.timeouts > 0) console.log(`\n!!! ${m.server} ${m.mix}: ${m.errors} socket errors, ${m.timeouts} timeouts`)
    if (m.non2xx > 0) {
      const loud = ours.some((server) => server.name === m.server)
      if (loud) invalid = true
      console.log(
        `\n${loud ? "!!! INVALID FIGURE: " : "note: "}${m.server} ${m.mix} answered ${m.non2xx} non-2xx of ${m.total} ` +
          `(status codes ${JSON.stringify(m.statusCodes)}); first: ${m.sample ?? "(no sample)"}`
      )
    }
  }

  if (profileFile !== undefined) {
    console.log("")
    console.log(await summarizeProfile(profileFile, 25))
    const profiled = measured.find((m) => m.profile !== undefined)
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
    warmupSeconds: warmup,
    durationSeconds: duration,
    primeSeconds: prime,
    seedSeconds,
    pgbench: { spread: pgbenchSpread, hot: pgbenchHot },
    measured,
    memory
  }
  await mkdir(join(benchDir, ".results"), { recursive: true })
  await writeFile(join(benchDir, ".results", "latest.json"), JSON.stringify(results, null, 2))
  console.log(`\nresults: bench/.results/latest.json; total ${((performance.now() - wallStart) / 1000).toFixed(0)} s`)
  if (invalid) {
    console.error("bench: identity-kit answered non-2xx: its figures are invalid")
    process.exit(1)
  }
}

main().then(() => process.exit(0), (error: unknown) => fail(error instanceof Error ? error.stack ?? error.message : String(error)))
