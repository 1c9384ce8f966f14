/**
 * Summarises a V8 `.cpuprofile`: self time by function and by package (identity-kit's own files,
 * each npm package, Node core, GC). Used by `run.ts --profile`; also runs on its own:
 *
 *   npx tsx bench/profile.ts bench/.profiles/<file>.cpuprofile [top]
 *   npx tsx bench/profile.ts bench/.profiles/<file>.heapprofile [top]
 */
import { readFile } from "node:fs/promises"
import { fileURLToPath, pathToFileURL } from "node:url"

interface CallFrame {
  readonly functionName: string
  readonly url: string
  readonly lineNumber: number
  readonly columnNumber: number
}
interface ProfileNode {
  readonly id: number
  readonly callFrame: CallFrame
  readonly children?: ReadonlyArray<number>
}
interface CpuProfile {
  readonly nodes: ReadonlyArray<ProfileNode>
  readonly startTime: number
  readonly endTime: number
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

/**
 * The source file of each line of an esbuild bundle (run.ts profiles `bench/.build/server.mjs`):
 * esbuild starts every module with a `// path/to/file.ts` comment.
 */
const bundleSources = new Map<string, ReadonlyArray<string>>()
const loadBundle = async (url: string): Promise<void> => {
  if (!url.endsWith(".mjs") || !url.includes("/.build/") || bundleSources.has(url)) return
  const lines = (await readFile(fileURLToPath(url), "utf8")).split("\n")
  let current = "bundle"
  bundleSources.set(url, lines.map((line) => {
    const marker = /^\/\/ ((?:src|adapters|bench)\/[\w./-]+\.ts)$/.exec(line)
    if (marker) current = marker[1]!
    return current
  }))
}
/** A bundle frame's original file, else the frame's own url. */
const sourceOf = (frame: CallFrame): string => bundleSources.get(frame.url)?.[frame.lineNumber] ?? frame.url

/** Where a frame's code lives: `identity-kit`, an npm package, `node`, or a VM pseudo-frame. */
export const categoryOf = (frame: CallFrame): string => {
  const { functionName } = frame
  const url = sourceOf(frame)
  if (url === "") {
    if (functionName === "(garbage collector)") return "(gc)"
    if (functionName === "(idle)") return "(idle)"
    if (functionName === "(program)") return "(program: native/VM)"
    if (functionName === "(root)") return "(root)"
    return "(native builtins)"
  }
  if (url.startsWith("node:")) return "node core"
  const at = url.lastIndexOf("/node_modules/")
  if (at !== -1) {
    const parts = url.slice(at + "/node_modules/".length).split("/")
    return parts[0]?.startsWith("@") ? `${parts[0]}/${parts[1] ?? ""}` : parts[0] ?? url
  }
  if (/(^|\/)(src|adapters)\//.test(url)) return "identity-kit"
  if (/(^|\/)bench\//.test(url)) return "bench harness"
  return "other"
}

// The repository root as a file URL prefix, so frames print as repo-relative paths.
const repoRoot = new URL("../", import.meta.url).href

const shortUrl = (frame: CallFrame): string => {
  const url = frame.url
  const source = sourceOf(frame)
  if (source !== url) return `${source} (${url.slice(url.lastIndexOf("/.build/") + 1)}`
  const at = url.lastIndexOf("/node_modules/")
  if (at !== -1) return url.slice(at + "/node_modules/".length)
  return url.startsWith(repoRoot) ? url.slice(repoRoot.length) : url
}

const frameKey = (frame: CallFrame): string => {
  const name = frame.functionName || "(anonymous)"
  if (frame.url === "") return name
  const where = `${shortUrl(frame)}:${frame.lineNumber + 1}`
  return `${name}  ${where}${sourceOf(frame) !== frame.url ? ")" : ""}`
}

/** A readable summary of `file`: totals, self time by package, top `top` functions by self time. */
export const summarizeProfile = async (file: string, top = 25): Promise<string> => {
  const profile = JSON.parse(await readFile(file, "utf8")) as CpuProfile
  const byId = new Map(profile.nodes.map((node) => [node.id, node]))
  for (const url of new Set(profile.nodes.map((node) => node.callFrame.url))) await loadBundle(url)
  const parent = new Map<number, number>()
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id)
  // Samples of the inspector itself (stopping the profiler, serialising the profile) are not the
  // server's work. (The query counter in bench/server.ts wraps every pg query: that one stays.)
  const harness = (id: number | undefined): boolean => {
    for (; id !== undefined; id = parent.get(id)) {
      if (byId.get(id)?.callFrame.url === "node:inspector") return true
    }
    return false
  }
  const selfByNode = new Map<number, number>()
  const kept: Array<boolean> = []
  let excluded = 0
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!
    kept[i] = !harness(id)
    if (!kept[i]) {
      excluded += profile.timeDeltas[i] ?? 0
      continue
    }
    selfByNode.set(id, (selfByNode.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0))
  }
  const byFunction = new Map<string, { self: number; category: string }>()
  const byCategory = new Map<string, number>()
  let total = 0
  let idle = 0
  for (const [id, micros] of selfByNode) {
    const frame = byId.get(id)?.callFrame
    if (frame === undefined) continue
    const category = categoryOf(frame)
    total += micros
    if (category === "(idle)") {
      idle += micros
      continue
    }
    byCategory.set(category, (byCategory.get(category) ?? 0) + micros)
    const key = frameKey(frame)
    const entry = byFunction.get(key) ?? { self: 0, category }
    entry.self += micros
    byFunction.set(key, entry)
  }
  const busy = total - idle

  // Inclusive time: each sample counts once for every distinct function on its stack.
  const inclusive = new Map<string, number>()
  for (let i = 0; i < profile.samples.length; i++) {
    if (!kept[i]) continue
    const micros = profile.timeDeltas[i] ?? 0
    const seen = new Set<string>()
    for (let id: number | undefined = profile.samples[i]; id !== undefined; id = parent.get(id)) {
      const frame = byId.get(id)?.callFrame
      if (frame === undefined || categoryOf(frame) !== "identity-kit") continue
      const key = frameKey(frame)
      if (seen.has(key)) continue
      seen.add(key)
      inclusive.set(key, (inclusive.get(key) ?? 0) + micros)
    }
  }
  const pct = (micros: number) => `${((100 * micros) / Math.max(busy, 1)).toFixed(1).padStart(5)}%`
  const ms = (micros: number) => `${(micros / 1000).toFixed(0).padStart(7)} ms`
  const lines: Array<string> = []
  lines.push(`profile: ${file}`)
  lines.push(
    `window ${ms(total)}, busy (not idle) ${ms(busy)} = ${((100 * busy) / Math.max(total, 1)).toFixed(0)}% of the main thread` +
      ` (wall-clock samples: time the thread was runnable but preempted counts too)` +
      (excluded > 0 ? `; ${ms(excluded)} of profiler/IPC work left out` : "")
  )
  lines.push("")
  lines.push("self time by package (share of busy time):")
  for (const [category, micros] of [...byCategory].sort((a, b) => b[1] - a[1])) {
    lines.push(`  ${pct(micros)} ${ms(micros)}  ${category}`)
  }
  lines.push("")
  lines.push(`top ${top} functions by self time:`)
  for (const [key, { self, category }] of [...byFunction].sort((a, b) => b[1].self - a[1].self).slice(0, top)) {
    lines.push(`  ${pct(self)} ${ms(self)}  [${category}] ${key}`)
  }
  lines.push("")
  lines.push(`identity-kit functions by inclusive time (self + callees, top ${top}):`)
  for (const [key, micros] of [...inclusive].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    lines.push(`  ${pct(micros)} ${ms(micros)}  ${key}`)
  }
  return lines.join("\n")
}

interface HeapNode {
  readonly callFrame: CallFrame
  readonly selfSize: number
  readonly id: number
  readonly children: ReadonlyArray<HeapNode>
}
interface HeapProfile {
  readonly head: HeapNode
  readonly samples?: ReadonlyArray<{ readonly size: number; readonly nodeId: number }>
}

/**
 * A readable summary of an allocation sampling profile (`.heapprofile`): bytes allocated in the
 * window by package and by function (where the allocation happened), and per request when
 * `requests` is given.
 */
export const summarizeHeapProfile = async (file: string, top = 15, requests?: number): Promise<string> => {
  const profile = JSON.parse(await readFile(file, "utf8")) as HeapProfile
  const nodes: Array<HeapNode> = []
  const walk = (node: HeapNode) => {
    nodes.push(node)
    node.children.forEach(walk)
  }
  walk(profile.head)
  for (const url of new Set(nodes.map((node) => node.callFrame.url))) await loadBundle(url)
  const byFunction = new Map<string, { bytes: number; category: string }>()
  const byCategory = new Map<string, number>()
  let total = 0
  for (const node of nodes) {
    if (node.selfSize === 0) continue
    const category = categoryOf(node.callFrame)
    total += node.selfSize
    byCategory.set(category, (byCategory.get(category) ?? 0) + node.selfSize)
    const key = frameKey(node.callFrame)
    const entry = byFunction.get(key) ?? { bytes: 0, category }
    entry.bytes += node.selfSize
    byFunction.set(key, entry)
  }
  const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1).padStart(7)} MiB`
  const pct = (bytes: number) => `${((100 * bytes) / Math.max(total, 1)).toFixed(1).padStart(5)}%`
  const lines: Array<string> = []
  lines.push(`allocation profile: ${file}`)
  lines.push(
    `sampled allocations ${mib(total)}` +
      (requests !== undefined && requests > 0 ? ` ≈ ${(total / requests / 1024).toFixed(1)} KiB per request (${requests} requests)` : "")
  )
  lines.push("allocated by package:")
  for (const [category, bytes] of [...byCategory].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    lines.push(`  ${pct(bytes)} ${mib(bytes)}  ${category}`)
  }
  lines.push(`top ${top} allocating functions:`)
  for (const [key, { bytes, category }] of [...byFunction].sort((a, b) => b[1].bytes - a[1].bytes).slice(0, top)) {
    lines.push(`  ${pct(bytes)} ${mib(bytes)}  [${category}] ${key}`)
  }
  return lines.join("\n")
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const file = process.argv[2]
  if (file === undefined) {
    console.error("usage: tsx bench/profile.ts <file.cpuprofile> [top]")
    process.exit(2)
  }
  console.log(
    file.endsWith(".heapprofile")
      ? await summarizeHeapProfile(file, Number(process.argv[3] ?? 15))
      : await summarizeProfile(file, Number(process.argv[3] ?? 25))
  )
}
