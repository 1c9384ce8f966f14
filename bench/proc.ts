/**
 * What `/proc` says about the processes of a run (Linux): CPU time of a server, of PostgreSQL's
 * processes and of the whole machine, and a process's peak RSS, which `run.ts` resets at the start
 * of each window so the peak it reads belongs to that window's load.
 */
import { readdir, readFile, writeFile } from "node:fs/promises"
import { cpus } from "node:os"

const CLOCK_TICKS = 100 // sysconf(_SC_CLK_TCK) on Linux x86_64

/** utime and stime of a process in ms (all its threads), or undefined when it is gone. */
export const processCpuMs = async (pid: number): Promise<{ user: number; sys: number } | undefined> => {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8")
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    return { user: (Number(fields[11]) * 1000) / CLOCK_TICKS, sys: (Number(fields[12]) * 1000) / CLOCK_TICKS }
  } catch {
    return undefined
  }
}

/**
 * CPU ms of each `postgres` process, keyed by pid, and whether it serves `database` (its process
 * title, e.g. "postgres: 15/main: postgres identity_kit_bench 127.0.0.1(5123) idle").
 */
const postgresCpu = async (database: string): Promise<Map<number, { ms: number; bench: boolean }>> => {
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
  const line = (await readFile("/proc/stat", "utf8")).split("\n")[0] ?? ""
  const values = line.trim().split(/\s+/).slice(1).map(Number)
  const total = values.reduce((a, b) => a + b, 0)
  const idle = (values[3] ?? 0) + (values[4] ?? 0)
  return { busy: total - idle, total }
}

/** A field of /proc/<pid>/status in MiB (VmHWM: peak RSS, VmRSS: current). */
export const statusMiB = async (pid: number, field: "VmHWM" | "VmRSS"): Promise<number | undefined> => {
  try {
    const status = await readFile(`/proc/${pid}/status`, "utf8")
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)
    return match ? Number(match[1]) / 1024 : undefined
  } catch {
    return undefined
  }
}

/**
 * Resets a process's peak RSS (VmHWM) to its current RSS (Linux ≥ 4.0, our own children only).
 * Answers false when the kernel refused: the peak then covers the process's whole life.
 */
export const resetPeakRss = async (pid: number): Promise<boolean> => {
  try {
    await writeFile(`/proc/${pid}/clear_refs`, "5")
    return true
  } catch {
    return false
  }
}

/** CPU counters at one instant. */
export interface CpuSnapshot {
  readonly at: number
  readonly server: { user: number; sys: number } | undefined
  readonly postgres: Map<number, { ms: number; bench: boolean }>
  readonly runner: number
  readonly machine: { busy: number; total: number }
}

/** The counters now: the server (if any), PostgreSQL's processes, this process, the machine. */
export const cpuSnapshot = async (serverPid: number | undefined, database: string): Promise<CpuSnapshot> => {
  const usage = process.cpuUsage()
  return {
    at: performance.now(),
    server: serverPid === undefined ? undefined : await processCpuMs(serverPid),
    postgres: await postgresCpu(database),
    runner: (usage.user + usage.system) / 1000,
    machine: await machineCpu()
  }
}

/** CPU use between two snapshots: ms of server CPU, and shares in % of one core. */
export interface CpuShare {
  /** Server CPU (user + sys) in the window, ms. */
  readonly serverMs: number | undefined
  readonly server: number | undefined
  readonly serverSys: number | undefined
  readonly postgresBench: number
  readonly postgresOther: number
  readonly runner: number
  readonly machine: number
  readonly rest: number
}

/**
 * CPU use between two snapshots, in % of one core: the server, PostgreSQL's backends for the bench
 * database and its other processes (background workers, other databases' sessions), this process
 * (the load generator), and everything else on the machine (other people's work: noise).
 */
export const cpuShare = (a: CpuSnapshot, b: CpuSnapshot): CpuShare => {
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
  const serverMs = a.server === undefined || b.server === undefined
    ? undefined
    : b.server.user + b.server.sys - a.server.user - a.server.sys
  const serverSys = a.server === undefined || b.server === undefined ? undefined : b.server.sys - a.server.sys
  const runner = b.runner - a.runner
  const machine = (100 * cpus().length * (b.machine.busy - a.machine.busy)) / Math.max(1, b.machine.total - a.machine.total)
  return {
    serverMs,
    server: serverMs === undefined ? undefined : pct(serverMs),
    serverSys: serverSys === undefined ? undefined : pct(serverSys),
    postgresBench: pct(postgresBench),
    postgresOther: pct(postgresOther),
    runner: pct(runner),
    machine,
    rest: machine - pct((serverMs ?? 0) + postgresBench + postgresOther + runner)
  }
}
