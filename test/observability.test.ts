/**
 * Logs and traces reach the host (issue 9, item 5): the `logger` option (an Effect Logger or a plain
 * `(fields, message)` logger), `minimumLogLevel`, the `tracer` option with OpenTelemetry, the W3C
 * `traceparent` continued, the request id in a response header and the host's request id in the
 * log lines; storage failures logged once each, rate-limited, without a stack.
 */
import * as OtelTracer from "@effect/opentelemetry/Tracer"
import { InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import { NodeTracerProvider } from "@opentelemetry/sdk-trace-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger } from "effect"
import fastify5 from "fastify5"
import {
  IdentityStore,
  layerMemory,
  type LogSink,
  makeIdentityKit,
  makeMemory,
  REQUEST_ID_HEADER,
  ROUTE,
  StorageError
} from "identity-kit"
import { identityKit as fastifyKit } from "identity-kit/fastify"
import { vi } from "vitest"
import * as otelExample from "../examples/opentelemetry.js"
import { causeMessages, makeFailureLog, sinkLogger as sinkOf } from "../src/internal/log.js"
import { parseTraceparent } from "../src/internal/trace.js"

interface Line {
  readonly level: "error" | "warn" | "info" | "debug"
  readonly fields: Record<string, unknown>
  readonly message: string
}

/** A plain logger that keeps its lines. */
const recorder = () => {
  const lines: Array<Line> = []
  const at = (level: Line["level"]) => (fields: Record<string, unknown>, message: string) => {
    lines.push({ level, fields, message })
  }
  const sink: LogSink = { error: at("error"), warn: at("warn"), info: at("info"), debug: at("debug") }
  return { lines, sink }
}

/** Memory storage whose update fails with a driver-like error (its text must not reach the client). */
const failingUpdates = Layer.effect(
  IdentityStore,
  Effect.map(makeMemory, (memory) => ({
    ...memory,
    updateIdentity: () =>
      Effect.fail(
        new StorageError({ operation: "updateIdentity", cause: new Error("connect ECONNREFUSED 10.0.0.1:5432") })
      )
  }))
)

const update = (key: string, headers: Record<string, string> = {}) =>
  new Request(`http://localhost${ROUTE}`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json", ...headers },
    body: JSON.stringify({ identity: "user_123", meta: { plan: "pro" } })
  })

const seeded = async (kit: ReturnType<typeof makeIdentityKit>) => {
  const workspace = await kit.admin.createWorkspace({ name: "obs" })
  const { key } = await kit.admin.issueRootKey({ workspaceId: workspace.id })
  await kit.admin.createIdentity({ workspaceId: workspace.id, externalId: "user_123" })
  return key
}

describe("logger option", () => {
  it("a plain logger gets one line per storage failure: one message string, the ids, the cause's text, no stack", async () => {
    const { lines, sink } = recorder()
    const kit = makeIdentityKit({ storage: failingUpdates, logger: sink })
    const key = await seeded(kit)
    const response = await kit.fetch(update(key, { "x-request-id": "host-abc-123" }))
    assert.strictEqual(response.status, 500)
    const body = await response.json() as { meta: { requestId: string } }
    assert.strictEqual(response.headers.get(REQUEST_ID_HEADER), body.meta.requestId)
    assert.notInclude(JSON.stringify(body), "ECONNREFUSED")
    const failures = lines.filter((line) => line.message === "identity-kit: storage failure")
    assert.strictEqual(failures.length, 1)
    const [line] = failures
    assert.strictEqual(line?.level, "error")
    assert.strictEqual(line?.fields["requestId"], body.meta.requestId)
    assert.strictEqual(line?.fields["hostRequestId"], "host-abc-123")
    assert.strictEqual(line?.fields["operation"], "updateIdentity")
    assert.strictEqual(line?.fields["endpoint"], "updateIdentity")
    assert.match(String(line?.fields["error"]), /ECONNREFUSED/)
    // An expected failure: its messages, not a stack or an Error object.
    assert.isUndefined(line?.fields["err"])
    assert.notMatch(String(line?.fields["error"]), /\n\s+at /)
    await kit.dispose()
  })

  it("storage failures are rate-limited per kit: a burst of 30 logs at most 10 lines", async () => {
    const { lines, sink } = recorder()
    const kit = makeIdentityKit({ storage: failingUpdates, logger: sink })
    const key = await seeded(kit)
    const answers = await Promise.all(Array.from({ length: 30 }, () => kit.fetch(update(key))))
    assert.deepStrictEqual([...new Set(answers.map((r) => r.status))], [500])
    assert.strictEqual(lines.filter((line) => line.message === "identity-kit: storage failure").length, 10)
    await kit.dispose()
  })

  it("makeFailureLog: past the burst, lines are counted and the next window's first line says how many", async () => {
    let now = 1_000_000
    const clock = vi.spyOn(Date, "now").mockImplementation(() => now)
    try {
      const { lines, sink } = recorder()
      const log = makeFailureLog(2, 1_000)
      const run = (n: number) =>
        Effect.runPromise(Effect.provide(log.error("failed", { n }), Logger.replace(Logger.defaultLogger, sinkOf(sink))))
      for (let n = 0; n < 5; n++) await run(n)
      assert.deepStrictEqual(lines.map((line) => line.fields["n"]), [0, 1])
      now += 1_000
      await run(5)
      assert.deepStrictEqual(lines.at(-1)?.fields, { n: 5, suppressed: 3 })
    } finally {
      clock.mockRestore()
    }
  })

  it("makeFailureLog: a window that ends in silence says its count when it ends", async () => {
    vi.useFakeTimers()
    try {
      const { lines, sink } = recorder()
      const log = makeFailureLog(2, 1_000)
      const layer = Logger.replace(Logger.defaultLogger, sinkOf(sink))
      for (let n = 0; n < 5; n++) await Effect.runPromise(Effect.provide(log.error("failed", { n }), layer))
      assert.strictEqual(lines.length, 2)
      await vi.advanceTimersByTimeAsync(1_000)
      assert.deepStrictEqual(lines.at(-1), {
        level: "error",
        fields: { suppressed: 3 },
        message: "identity-kit: more failures were not logged"
      })
    } finally {
      vi.useRealTimers()
    }
  })

  it("causeMessages: credentials hidden up to the last @; a tagged error's field dump left out", () => {
    const cause = new Error("connect failed for postgres://alice:p@ss@w0rd@db.internal:5432/app")
    const wrapped = new StorageError({ operation: "connect", cause })
    const text = causeMessages(wrapped).join(": ")
    assert.notInclude(text, "ss@w0rd")
    assert.include(text, "postgres://alice:***@db.internal:5432/app")
    assert.notInclude(text, "\"operation\"")
  })

  it("a failed start-up: one line per attempt, not one per waiting request; kit.admin rejects with the cause itself", async () => {
    const { lines, sink } = recorder()
    const boom = new Error("database password authentication failed")
    const broken = Layer.fail(boom) as unknown as Layer.Layer<IdentityStore>
    const kit = makeIdentityKit({ storage: broken, logger: sink })
    const answers = await Promise.all(Array.from({ length: 8 }, () => kit.fetch(update("k"))))
    assert.deepStrictEqual([...new Set(answers.map((r) => r.status))], [500])
    assert.strictEqual(lines.filter((line) => line.fields["operation"] === "startup").length, 1)
    assert.strictEqual(await kit.admin.createWorkspace({ name: "x" }).catch((e: unknown) => e), boom)
    await kit.dispose()
  })

  it("an Effect Logger: Logger.json prints the message as one string, logfmt has one message=", async () => {
    const json: Array<string> = []
    const logfmt: Array<string> = []
    for (const [logger, out] of [[Logger.jsonLogger, json], [Logger.logfmtLogger, logfmt]] as const) {
      const kit = makeIdentityKit({ storage: failingUpdates, logger: Logger.map(logger, (line) => out.push(line)) })
      const key = await seeded(kit)
      assert.strictEqual((await kit.fetch(update(key))).status, 500)
      await kit.dispose()
    }
    const parsed = json.map((line) => JSON.parse(line) as { message: unknown; annotations: Record<string, unknown> })
    const failure = parsed.find((line) => line.message === "identity-kit: storage failure")
    assert.isDefined(failure)
    assert.strictEqual(failure?.annotations["operation"], "updateIdentity")
    const line = logfmt.find((l) => l.includes("storage failure")) ?? ""
    assert.strictEqual(line.match(/message=/g)?.length, 1)
  })

  it("start-up: the storage's own log lines and a failed start-up reach the host logger", async () => {
    const { lines, sink } = recorder()
    const noisy = Layer.effectDiscard(Effect.logWarning("storage says hello")).pipe(Layer.provideMerge(layerMemory))
    const kit = makeIdentityKit({ storage: noisy, logger: sink })
    await kit.ready()
    assert.isTrue(lines.some((line) => line.level === "warn" && line.message === "storage says hello"))
    await kit.dispose()

    const broken = Layer.fail(new Error("database password authentication failed")) as unknown as Layer.Layer<IdentityStore>
    const failing = makeIdentityKit({ storage: broken, logger: sink })
    const response = await failing.fetch(update("some-key"))
    assert.strictEqual(response.status, 500)
    const startup = lines.find((line) => line.fields["operation"] === "startup")
    assert.strictEqual(startup?.message, "identity-kit: storage failure")
    assert.match(String(startup?.fields["error"]), /password authentication failed/)
    await failing.dispose()
  })

  it("minimumLogLevel drops lower lines; bad options are TypeErrors at construction", async () => {
    const { lines, sink } = recorder()
    const noisy = Layer.effectDiscard(Effect.logWarning("a warning")).pipe(Layer.provideMerge(layerMemory))
    const kit = makeIdentityKit({ storage: noisy, logger: sink, minimumLogLevel: "error" })
    await kit.ready()
    assert.deepStrictEqual(lines, [])
    await kit.dispose()
    assert.throws(() => makeIdentityKit({ storage: layerMemory, minimumLogLevel: "loud" as "info" }), TypeError)
    assert.throws(() => makeIdentityKit({ storage: layerMemory, logger: { log: () => {} } as unknown as LogSink }), TypeError)
    assert.throws(
      () => makeIdentityKit({ storage: layerMemory, tracer: {} as never }),
      TypeError
    )
  })
})

/** The OpenTelemetry set-up of the example, exporting into memory. */
const otel = () => {
  const exporter = new InMemorySpanExporter()
  const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
  const tracer = Effect.runSync(Effect.provideService(OtelTracer.make, OtelTracer.OtelTracer, provider.getTracer("test")))
  return { exporter, provider, tracer }
}

const parentOf = (span: ReadableSpan): string | undefined => span.parentSpanContext?.spanId

/** Every span of `trace` has its parent among them, except the root, whose parent is `rootParent`. */
const assertConnected = (spans: ReadonlyArray<ReadableSpan>, rootParent: string | undefined) => {
  const ids = new Set(spans.map((span) => span.spanContext().spanId))
  const roots = spans.filter((span) => !ids.has(parentOf(span) ?? ""))
  assert.deepStrictEqual(roots.map((span) => span.name), ["identity-kit.request"])
  assert.strictEqual(parentOf(roots[0] as ReadableSpan), rootParent)
}

describe("tracer option (OpenTelemetry)", () => {
  const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
  const PARENT = "00f067aa0ba902b7"

  it("the first request (which builds the storage) and later ones: one connected trace each, continuing traceparent", async () => {
    const { exporter, provider, tracer } = otel()
    const kit = makeIdentityKit({ storage: layerMemory, tracer })
    for (let round = 0; round < 2; round++) {
      exporter.reset()
      const response = await kit.fetch(update("unknown-key", { traceparent: `00-${TRACE}-${PARENT}-01` }))
      assert.strictEqual(response.status, 401)
      await provider.forceFlush()
      const spans = exporter.getFinishedSpans().filter((span) => span.name !== "identity-kit.startup")
      assert.isAbove(spans.length, 1, spans.map((span) => span.name).join(", "))
      for (const span of spans) assert.strictEqual(span.spanContext().traceId, TRACE)
      assertConnected(spans, PARENT)
      const request = spans.find((span) => span.name === "identity-kit.request")
      assert.strictEqual(request?.attributes["http.response.status_code"], 401)
      assert.strictEqual(request?.attributes["identity_kit.request_id"], response.headers.get(REQUEST_ID_HEADER))
    }
    await kit.dispose()
    await provider.shutdown()
  })

  it("start-up is a span; continueTrace: false and a malformed traceparent start a new trace", async () => {
    const { exporter, provider, tracer } = otel()
    const kit = makeIdentityKit({ storage: layerMemory, tracer, continueTrace: false })
    await kit.ready()
    await provider.forceFlush()
    assert.isTrue(exporter.getFinishedSpans().some((span) => span.name === "identity-kit.startup"))
    exporter.reset()
    await kit.fetch(update("unknown-key", { traceparent: `00-${TRACE}-${PARENT}-01` }))
    await provider.forceFlush()
    const ignored = exporter.getFinishedSpans().find((span) => span.name === "identity-kit.request")
    assert.notStrictEqual(ignored?.spanContext().traceId, TRACE)
    await kit.dispose()

    const continuing = makeIdentityKit({ storage: layerMemory, tracer })
    exporter.reset()
    await continuing.fetch(update("unknown-key", { traceparent: `00-${"0".repeat(32)}-${PARENT}-01` }))
    await provider.forceFlush()
    const fresh = exporter.getFinishedSpans().find((span) => span.name === "identity-kit.request")
    assert.isDefined(fresh)
    assert.notStrictEqual(fresh?.spanContext().traceId, "0".repeat(32))
    assert.isUndefined(parentOf(fresh as ReadableSpan))
    await continuing.dispose()
    await provider.shutdown()
  })

  it("traceparent: W3C lower-case hex only; version ff, extra fields on 00 and zero ids are ignored", () => {
    const id = "4bf92f3577b34da6a3ce929d0e0e4736"
    const span = "00f067aa0ba902b7"
    assert.strictEqual(parseTraceparent(`00-${id}-${span}-01`)?.traceId, id)
    assert.strictEqual(parseTraceparent(`00-${id}-${span}-00`)?.sampled, false)
    assert.strictEqual(parseTraceparent(`01-${id}-${span}-01-future`)?.spanId, span)
    for (const bad of [`00-${id.toUpperCase()}-${span}-01`, `ff-${id}-${span}-01`, `00-${id}-${span}-01-x`, `00-${"0".repeat(32)}-${span}-01`, `00-${id}-${"0".repeat(16)}-01`, "junk"]) {
      assert.isUndefined(parseTraceparent(bad), bad)
    }
  })

  it("a tracer installed by the storage layer: the first request after ready() is traced, no orphan parents", async () => {
    const { exporter, provider, tracer } = otel()
    const kit = makeIdentityKit({ storage: Layer.merge(layerMemory, Layer.setTracer(tracer)) })
    await kit.ready()
    await provider.forceFlush()
    exporter.reset()
    await kit.fetch(update("unknown-key"))
    await provider.forceFlush()
    const spans = exporter.getFinishedSpans()
    assert.isTrue(spans.some((span) => span.name === "identity-kit.request"))
    assertConnected(spans, undefined)
    await kit.dispose()
    await provider.shutdown()
  })

  it("no tracer: no span is made (the tracer stays off)", async () => {
    const { exporter, provider, tracer } = otel()
    // A tracer that is present but unused by this kit must see nothing.
    void tracer
    const kit = makeIdentityKit({ storage: layerMemory })
    await kit.fetch(update("unknown-key"))
    await provider.forceFlush()
    assert.deepStrictEqual(exporter.getFinishedSpans(), [])
    await kit.dispose()
    await provider.shutdown()
  })
})

describe("request ids", () => {
  it("every answer carries X-Unkey-Request-Id equal to meta.requestId: success, 400, 404, 405", async () => {
    const kit = makeIdentityKit({ storage: layerMemory })
    const key = await seeded(kit)
    const answers = [
      await kit.fetch(update(key)),
      await kit.fetch(new Request(`http://localhost${ROUTE}`, { method: "POST" })),
      await kit.fetch(new Request("http://localhost/v2/nothing", { method: "POST" })),
      await kit.fetch(new Request(`http://localhost${ROUTE}`))
    ]
    assert.deepStrictEqual(answers.map((r) => r.status), [200, 400, 404, 405])
    for (const response of answers) {
      const body = await response.json() as { meta: { requestId: string } }
      assert.strictEqual(response.headers.get(REQUEST_ID_HEADER), body.meta.requestId)
    }
    await kit.dispose()
  })

  it("audit entries of an HTTP write record the answer's request id and the host's", async () => {
    const kit = makeIdentityKit({ storage: layerMemory })
    const workspace = await kit.admin.createWorkspace({ name: "audit" })
    const { key } = await kit.admin.issueRootKey({ workspaceId: workspace.id })
    await kit.admin.createIdentity({ workspaceId: workspace.id, externalId: "user_123" })
    const response = await kit.fetch(update(key, { "x-request-id": "edge-42" }))
    assert.strictEqual(response.status, 200)
    const { meta } = await response.json() as { meta: { requestId: string } }
    const { items } = await kit.admin.listAuditLog(workspace.id)
    const written = items.filter((entry) => entry.event === "identity.update")
    assert.strictEqual(written.length, 1)
    assert.strictEqual(written[0]?.requestId, meta.requestId)
    assert.strictEqual(written[0]?.hostRequestId, "edge-42")
    await kit.dispose()
  })

  it("Fastify: its request.id is the host request id in the log line; a bad X-Request-Id is ignored", async () => {
    const { lines, sink } = recorder()
    const kit = makeIdentityKit({ storage: failingUpdates, logger: sink })
    const key = await seeded(kit)
    const app = fastify5({ genReqId: () => "fastify-req-7" })
    await app.register(fastifyKit, { kit })
    const answer = await app.inject({
      method: "POST",
      url: ROUTE,
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      payload: JSON.stringify({ identity: "user_123" })
    })
    assert.strictEqual(answer.statusCode, 500)
    assert.strictEqual(lines.at(-1)?.fields["hostRequestId"], "fastify-req-7")
    await app.close()

    await kit.fetch(update(key, { "x-request-id": "has spaces and\ttabs" }))
    assert.isUndefined(lines.at(-1)?.fields["hostRequestId"])
    await kit.dispose()
  })
})

describe("examples/opentelemetry.ts", () => {
  it("serves the demo with spans exported and the SDK's traceparent continued", async () => {
    const exporter = new InMemorySpanExporter()
    const { sink } = recorder()
    const app = await otelExample.start({ port: 0, exporter, logger: sink })
    try {
      const response = await fetch(`${app.url}/v2/identities.getIdentity`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${app.demo.rootKey}`,
          "content-type": "application/json",
          traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        },
        body: JSON.stringify({ identity: "user_123" })
      })
      assert.strictEqual(response.status, 200)
      await app.flush()
      const spans = exporter.getFinishedSpans().filter((span) => span.spanContext().traceId === "0af7651916cd43dd8448eb211c80319c")
      assertConnected(spans, "b7ad6b7169203331")
    } finally {
      await app.close()
    }
  })
})
