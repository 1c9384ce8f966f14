/**
 * A kit in a process of its own, for the cross-process invalidation tests: PostgreSQL storage with
 * the root-key listener, driven over IPC by the test (`process.send`). It counts root-key lookups,
 * records the change notifications it hears, polls a key until it is refused, and can run load.
 *
 * Env: KIT_DATABASE_URL (the pool), KIT_LISTEN_URL (the listener; default the same), KIT_NAME
 * (application_name; the listener's is `<KIT_NAME>:listen`).
 *
 * Run: node --import tsx --conditions=@identity-kit/source test/support/kit-process.ts
 */
import { Effect, Layer, Schema } from "effect"
import { hashRootKey, IdentityStore, makeIdentityKit, ROUTE } from "identity-kit"
import { layerPostgresClient } from "identity-kit/postgres"
import { layerSql } from "identity-kit/sql"
import { type RootKeyEvent, RootKeyEvents } from "../../src/services/RootKeyEvents.js"
import { layerRootKeyEventsPostgres } from "../../src/storage/notify.js"

/** What the test asks. */
export const Command = Schema.Union(
  Schema.Struct({ op: Schema.Literal("fetch"), key: Schema.String }),
  Schema.Struct({ op: Schema.Literal("stats") }),
  /** Watch for the first notification about this key (by hash) or its workspace. */
  Schema.Struct({ op: Schema.Literal("arm"), key: Schema.String, workspaceId: Schema.String }),
  /** Requests `key` until it is refused or `deadlineMs` passed. */
  Schema.Struct({ op: Schema.Literal("poll"), key: Schema.String, deadlineMs: Schema.Number }),
  Schema.Struct({ op: Schema.Literal("startLoad"), keys: Schema.Array(Schema.String), concurrency: Schema.Number }),
  Schema.Struct({ op: Schema.Literal("stopLoad") })
)
export type Command = typeof Command.Type

/** Statistics of this process. */
export interface Stats {
  /** Requests answered by `kit.fetch`. */
  readonly requests: number
  readonly lookups: number
  readonly connected: boolean
  readonly connects: number
  readonly disconnects: number
}

/** What `poll` answers. */
export interface PollResult {
  /** The last status: not 200 when the key was refused within the deadline. */
  readonly status: number
  readonly attempts: number
  /** From the start of the poll to the refusal (or the deadline). */
  readonly elapsedMs: number
  /** Epoch ms (fractional) when the armed notification arrived, if it did. */
  readonly notifiedAt: number | undefined
  /** Requests that started after the armed notification arrived and were still accepted. */
  readonly acceptedAfterNotify: number
}

/** What `stopLoad` answers. */
export interface LoadResult {
  readonly requests: number
  readonly statuses: Record<string, number>
  /** Requests for the armed key that started after its notification arrived and were accepted. */
  readonly acceptedAfterNotify: number
}

/** The answer to a command, with its sequence number. */
export interface Reply {
  readonly seq: number
  readonly result?: unknown
  readonly error?: string
}

const env = process.env
const url = env["KIT_DATABASE_URL"] ?? ""
const name = env["KIT_NAME"] ?? "identity-kit-test"

const epochNow = () => performance.timeOrigin + performance.now()

const stats = { requests: 0, lookups: 0, connected: false, connects: 0, disconnects: 0 }
let armed: { readonly hash: string; readonly workspaceId: string; notifiedAt: number | undefined } | undefined

const record = (event: RootKeyEvent) => {
  switch (event._tag) {
    case "Connected":
      stats.connected = true
      stats.connects++
      return
    case "Disconnected":
      stats.connected = false
      stats.disconnects++
      return
    default:
      if (armed === undefined || armed.notifiedAt !== undefined) return
      if (
        event._tag === "InvalidateAll" ||
        (event._tag === "Invalidate" && event.hash === armed.hash) ||
        (event._tag === "InvalidateWorkspace" && event.workspaceId === armed.workspaceId)
      ) armed.notifiedAt = epochNow()
  }
}

const counting = Layer.effect(
  IdentityStore,
  Effect.map(IdentityStore, (store) => ({
    ...store,
    findRootKey: (hash: string) => {
      stats.lookups++
      return store.findRootKey(hash)
    }
  }))
)

// Subscribed before the kit's Authorization layer, so it hears each event first, in the same tick.
const observer = Layer.scopedDiscard(Effect.flatMap(RootKeyEvents, (events) => events.subscribe(record)))

const storage = observer.pipe(
  Layer.provideMerge(layerRootKeyEventsPostgres({
    url: env["KIT_LISTEN_URL"] ?? url,
    applicationName: `${name}:listen`,
    connectTimeout: "2 seconds",
    heartbeat: "1 second",
    maxReconnectDelay: "500 millis"
  })),
  Layer.provide(counting),
  Layer.provide(layerSql),
  Layer.provide(layerPostgresClient({ url, applicationName: name, maxConnections: 10 }))
)

const kit = makeIdentityKit({ storage })

const status = (key: string) =>
  kit.fetch(new Request(`http://localhost${ROUTE}`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify({ identity: "user_1" })
  })).then(async (response) => {
    await response.arrayBuffer()
    stats.requests++
    return response.status
  })

// Requests arrive as I/O in a real server; yielding to the event loop between them lets the
// listener's socket be read, as it would be.
const nextTick = () => new Promise<void>((resolve) => setImmediate(resolve))

/** Whether a request for `key` that starts now comes after the armed notification. */
const afterNotify = (key: string) => armed !== undefined && armed.notifiedAt !== undefined && armed.hash === hashRootKey(key)

const poll = async (key: string, deadlineMs: number): Promise<PollResult> => {
  const started = performance.now()
  let attempts = 0
  let acceptedAfterNotify = 0
  for (;;) {
    const late = afterNotify(key)
    const answer = await status(key)
    attempts++
    const elapsedMs = performance.now() - started
    if (answer !== 200 || elapsedMs > deadlineMs) {
      return { status: answer, attempts, elapsedMs, notifiedAt: armed?.notifiedAt, acceptedAfterNotify }
    }
    if (late) acceptedAfterNotify++
    await nextTick()
  }
}

let load: { running: boolean; done: Promise<unknown>; result: { requests: number; statuses: Record<string, number>; acceptedAfterNotify: number } } | undefined

const startLoad = (keys: ReadonlyArray<string>, concurrency: number) => {
  const statuses: Record<string, number> = {}
  const result = { requests: 0, statuses, acceptedAfterNotify: 0 }
  const state = { running: true, done: Promise.resolve<unknown>(undefined), result }
  const worker = async (index: number) => {
    const key = keys[index % keys.length] ?? ""
    while (state.running) {
      const late = afterNotify(key)
      const answer = await status(key)
      result.requests++
      result.statuses[answer] = (result.statuses[answer] ?? 0) + 1
      if (late && answer === 200) result.acceptedAfterNotify++
      await nextTick()
    }
  }
  state.done = Promise.all(Array.from({ length: concurrency }, (_, index) => worker(index)))
  load = state
}

const run = async (command: Command): Promise<unknown> => {
  switch (command.op) {
    case "fetch":
      return status(command.key)
    case "stats":
      return { ...stats } satisfies Stats
    case "arm":
      armed = { hash: hashRootKey(command.key), workspaceId: command.workspaceId, notifiedAt: undefined }
      return null
    case "poll":
      return poll(command.key, command.deadlineMs)
    case "startLoad":
      startLoad(command.keys, command.concurrency)
      return null
    case "stopLoad": {
      const current = load
      if (current === undefined) return null
      current.running = false
      await current.done
      load = undefined
      return current.result satisfies LoadResult
    }
  }
}

const decode = Schema.decodeUnknownSync(Schema.Struct({ seq: Schema.Number, command: Command }))

process.on("message", (message: unknown) => {
  let seq = -1
  void (async () => {
    const { command, seq: received } = decode(message)
    seq = received
    const result = await run(command)
    process.send?.({ seq, result } satisfies Reply)
  })().catch((error: unknown) => {
    process.send?.({ seq, error: String(error) } satisfies Reply)
  })
})

process.on("disconnect", () => {
  void kit.dispose().finally(() => process.exit(0))
})

// Build the runtime now (connect the pool, start the listener), then say so.
await kit.run(Effect.void)
process.send?.({ seq: 0, result: "ready" } satisfies Reply)
