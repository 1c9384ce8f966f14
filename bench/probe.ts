/**
 * Allocation and CPU counters of a measured window, the same for every server: `run.ts` preloads
 * the bundled copy of this file into each server it starts (`node --import .build/probe.mjs …`, the
 * naive peer included, whose own file stays untouched), and `inprocess.ts` uses
 * `allocationMeter` directly.
 *
 * Bytes allocated on the V8 heap in a window = (used heap at the end − used heap at the start)
 * + Σ over the collections in between of (used heap before − used heap after). Node 20 has no
 * running "total allocated" counter; `v8.GCProfiler` hands over the heap statistics V8 takes
 * before and after every collection, so nothing is sampled or guessed, no flag changes how the
 * process collects, and the cost is one statistics read per collection. On a synthetic loop it
 * agrees with the sampling heap profiler (`--profile`) within 1 %. Not counted: memory outside the
 * V8 heap (`Buffer` backing stores, sockets, `pg`'s native parts).
 *
 * Protocol (IPC, only when the process has a channel): `{ type: "probe-start" }` →
 * `{ type: "probe-start" }`; `{ type: "probe-stop" }` → `{ type: "probe-stop", ...ProbeWindow }`.
 * Other message types are left to the process's own listeners.
 */
import { GCProfiler, getHeapStatistics } from "node:v8"

/** What one window cost the process. */
export interface ProbeWindow {
  /** Bytes allocated on the V8 heap during the window (see the file comment). */
  readonly allocatedBytes: number
  /** Collections during the window, and their total pause (main thread) in ms. */
  readonly collections: number
  readonly gcPauseMs: number
  /** CPU of the whole process (all threads) during the window, in ms. */
  readonly userMs: number
  readonly systemMs: number
  /** Heap in use at the end of the window, in bytes. */
  readonly heapUsedBytes: number
}

/** Starts counting now; the returned function stops and answers the window's figures. */
export const allocationMeter = (): (() => ProbeWindow) => {
  const profiler = new GCProfiler()
  const cpu = process.cpuUsage()
  const usedBefore = getHeapStatistics().used_heap_size
  profiler.start()
  return () => {
    const report = profiler.stop()
    const usedAfter = getHeapStatistics().used_heap_size
    const spent = process.cpuUsage(cpu)
    let freed = 0
    let pause = 0
    for (const gc of report.statistics) {
      freed += gc.beforeGC.heapStatistics.usedHeapSize - gc.afterGC.heapStatistics.usedHeapSize
      pause += gc.cost
    }
    return {
      allocatedBytes: usedAfter - usedBefore + freed,
      collections: report.statistics.length,
      gcPauseMs: pause / 1000,
      userMs: spent.user / 1000,
      systemMs: spent.system / 1000,
      heapUsedBytes: usedAfter
    }
  }
}

const messageType = (message: unknown): unknown =>
  typeof message === "object" && message !== null ? Reflect.get(message, "type") : undefined

// Loaded with `--import` in a child that has an IPC channel: answer the runner's probe messages.
const send = process.send?.bind(process)
if (send !== undefined) {
  let stop: (() => ProbeWindow) | undefined
  process.on("message", (message: unknown) => {
    const type = messageType(message)
    if (type === "probe-start") {
      stop = allocationMeter()
      send({ type })
    } else if (type === "probe-stop") {
      const window = stop?.()
      stop = undefined
      send(window === undefined ? { type: "error", message: "probe-stop without probe-start" } : { type, ...window })
    }
  })
}
