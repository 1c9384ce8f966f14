/**
 * Bodies without a key (issue 9, item 2): what the worst-case shapes cost the kit in process, per
 * body, against `JSON.parse` of a flat JSON string of the same size (the floor any JSON body pays)
 * and against `JSON.parse` of the body itself. Not run by CI.
 *
 *   npx tsx --conditions=@identity-kit/source bench/dos.ts            # every shape, 1/5/10 MiB
 *   npx tsx --conditions=@identity-kit/source bench/dos.ts nested 10  # one shape, one size (MiB)
 *
 * Each (shape, size, auth) runs in a fresh child process so that its peak RSS (`maxRSS`) is its
 * own: the delta is taken from a baseline after the body is built and the kit warmed up. Auth:
 * `none` (no Authorization header: V1, answered before the body is parsed), `unknown` (a key no
 * workspace has: parsed and validated, then 401), `valid` (a real key: then B5 or the schema 400).
 */
import { fork } from "node:child_process"
import { fileURLToPath } from "node:url"
import { layerMemory, makeIdentityKit, ROUTE } from "identity-kit"

const MiB = 1024 * 1024

/** The worst-case bodies, each exactly `bytes` long (padded with spaces, which JSON ignores). */
const shapes: Record<string, (bytes: number) => string> = {
  // `{"identity":"x","meta":{"a":[[],[],…]}}`: 3 bytes per node.
  nested: (bytes) => pad(`{"identity":"x","meta":{"a":[${repeat("[],", bytes - 40)}[]]}}`, bytes),
  // Many small objects in meta: 8 bytes per object, two nodes each.
  objects: (bytes) => pad(`{"identity":"x","meta":{"a":[${repeat(`{"b":0},`, bytes - 40)}{}]}}`, bytes),
  // A huge `ratelimits`: 2 bytes per item (5M items at 10 MiB).
  ratelimits: (bytes) => pad(`{"identity":"x","ratelimits":[${repeat("0,", bytes - 40)}0]}`, bytes),
  // Arrays nested as deep as the size allows: `[[[[…]]]]`.
  deep: (bytes) => {
    const depth = Math.floor((bytes - 40) / 2)
    return pad(`{"identity":"x","meta":{"a":${"[".repeat(depth)}${"]".repeat(depth)}}}`, bytes)
  },
  // Many unknown top-level keys.
  keys: (bytes) => pad(`{"identity":"x"${keyList(bytes - 40)}}`, bytes),
  // Many keys in meta (past maxProperties).
  metakeys: (bytes) => pad(`{"identity":"x","meta":{"_":0${keyList(bytes - 40)}}}`, bytes),
  // Objects nested as deep as the size allows, then hidden by a repeated key: `meta` is then
  // `{"a":1}`, valid, but only reading every object as JSON.parse does (last key wins) tells.
  shadowed: (bytes) => {
    const depth = Math.floor((bytes - 48) / 6)
    return pad(`{"identity":"x","meta":{"a":${"{\"a\":".repeat(depth)}1${"}".repeat(depth)},"a":1}}`, bytes)
  },
  // One ratelimit whose name is a string of the whole size (its length is checked in code points).
  longname: (bytes) => pad(`{"identity":"x","ratelimits":[{"name":"${"n".repeat(bytes - 60)}"}]}`, bytes),
  // `nested` with one bad byte at the very end: a syntax error after 10 MiB of valid JSON.
  invalid: (bytes) => pad(`{"identity":"x","meta":{"a":[${repeat("[],", bytes - 40)}[]]}}`, bytes - 1) + "x"
}

/** `unit` repeated to at most `bytes` characters. */
const repeat = (unit: string, bytes: number) => unit.repeat(Math.max(0, Math.floor(bytes / unit.length)))
const pad = (json: string, bytes: number) => json + " ".repeat(Math.max(0, bytes - json.length))
const keyList = (bytes: number) => {
  const parts: Array<string> = []
  let length = 0
  for (let i = 0; length < bytes - 16; i++) {
    const part = `,"k${i.toString(36)}":0`
    parts.push(part)
    length += part.length
  }
  return parts.join("")
}

type Auth = "none" | "unknown" | "valid"

interface Result {
  readonly shape: string
  readonly mib: number
  readonly auth: Auth
  readonly status: number
  /** Median ms of one request (3 runs after the first). */
  readonly ms: number
  /** Median ms of `JSON.parse` of a flat string of the same size, and of the body itself. */
  readonly flatMs: number
  readonly parseMs: number
  /** Peak RSS and heap committed beyond the baseline, over the body size. */
  readonly rssPerByte: number
  readonly heapPerByte: number
}

const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN

const timed = (f: () => void, runs: number) => {
  const out: Array<number> = []
  for (let i = 0; i < runs; i++) {
    const started = performance.now()
    f()
    out.push(performance.now() - started)
  }
  return median(out)
}

/** One case, in this (child) process. */
const measure = async (shape: string, mib: number, auth: Auth): Promise<Result> => {
  const build = shapes[shape]
  if (build === undefined) throw new Error(`unknown shape ${shape}`)
  const bytes = Math.round(mib * MiB)
  const text = build(bytes)
  const body = new TextEncoder().encode(text)
  const flat = JSON.stringify("a".repeat(bytes - 2))
  const kit = makeIdentityKit({ storage: layerMemory })
  let authorization: string | undefined
  if (auth === "unknown") authorization = "Bearer unkey_nobody_has_this_key"
  if (auth === "valid") {
    const workspace = await kit.admin.createWorkspace({ id: "ws_dos" })
    const { key } = await kit.admin.issueRootKey({ workspaceId: workspace.id })
    authorization = `Bearer ${key}`
    await kit.admin.createIdentity({ workspaceId: workspace.id, externalId: "x" })
  }
  const headers: Record<string, string> = { "content-type": "application/json" }
  if (authorization !== undefined) headers["authorization"] = authorization
  const call = (payload: Uint8Array) =>
    new Promise<{ status: number; ms: number }>((resolve) => {
      const started = performance.now()
      kit.handle({ method: "POST", path: ROUTE, headers, body: payload, remoteAddress: "127.0.0.1" }, (response) =>
        resolve({ status: response.status, ms: performance.now() - started }))
    })
  // Warm up on smaller bodies of the same shape (as a server that has served some: its code
  // optimised; 64 KiB is past the size from which bodies are prescanned), then take the baseline.
  const warm = new TextEncoder().encode(build(64 * 1024))
  for (let i = 0; i < 20; i++) await call(warm)
  globalThis.gc?.()
  const rss0 = process.resourceUsage().maxRSS * 1024
  const heap0 = process.memoryUsage().heapTotal
  const first = await call(body)
  const rssPeak = process.resourceUsage().maxRSS * 1024 - rss0
  const heapPeak = process.memoryUsage().heapTotal - heap0
  const runs: Array<number> = []
  for (let i = 0; i < 3; i++) runs.push((await call(body)).ms)
  const flatMs = timed(() => JSON.parse(flat), 5)
  // A body with a syntax error throws where it stops: that is its cost.
  const parseMs = timed(() => {
    try {
      JSON.parse(text)
    } catch {
      // expected for `invalid`
    }
  }, 3)
  await kit.dispose()
  return {
    shape,
    mib,
    auth,
    status: first.status,
    ms: median(runs),
    flatMs,
    parseMs,
    rssPerByte: rssPeak / bytes,
    heapPerByte: heapPeak / bytes
  }
}

const child = process.env["DOS_CASE"]
if (child !== undefined) {
  const [shape = "", mib = "1", auth = "none"] = child.split(":")
  const result = await measure(shape, Number(mib), auth === "unknown" || auth === "valid" ? auth : "none")
  process.send?.(result)
  process.exit(0)
} else {
  const [onlyShape, onlyMib] = process.argv.slice(2)
  const auths: ReadonlyArray<Auth> = (process.env["DOS_AUTH"] ?? "none,unknown").split(",").filter(
    (a): a is Auth => a === "none" || a === "unknown" || a === "valid"
  )
  const sizes = onlyMib === undefined ? [1, 5, 10] : [Number(onlyMib)]
  const names = onlyShape === undefined ? Object.keys(shapes) : [onlyShape]
  const self = fileURLToPath(import.meta.url)
  console.log("| shape | MiB | auth | status | ms/body | × flat JSON.parse | × JSON.parse(body) | peak RSS Δ / body | heap Δ / body |")
  console.log("|---|---:|---|---:|---:|---:|---:|---:|---:|")
  for (const shape of names) {
    for (const mib of sizes) {
      for (const auth of auths) {
        const result = await new Promise<Result>((resolve, reject) => {
          const proc = fork(self, [], {
            env: { ...process.env, DOS_CASE: `${shape}:${mib}:${auth}` },
            execArgv: [...process.execArgv, "--expose-gc", "--stack-size=984"]
          })
          proc.once("message", (message) => resolve(message as Result))
          proc.once("exit", (code) => code === 0 ? undefined : reject(new Error(`${shape} ${mib} ${auth}: exit ${code}`)))
        })
        const r = result
        console.log(
          `| ${r.shape} | ${r.mib} | ${r.auth} | ${r.status} | ${r.ms.toFixed(1)} | ${(r.ms / r.flatMs).toFixed(1)} | ${
            (r.ms / r.parseMs).toFixed(2)
          } | ${r.rssPerByte.toFixed(1)} | ${r.heapPerByte.toFixed(1)} |`
        )
      }
    }
  }
}
