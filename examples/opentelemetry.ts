/**
 * Logs and traces into the host's own tools: spans through OpenTelemetry (`@effect/opentelemetry`
 * turns an OpenTelemetry tracer into the Effect tracer the kit takes), log lines through a plain
 * `(fields, message)` logger (pino's signature; `console` here). The kit's request span continues
 * the caller's W3C `traceparent`, and each answer carries its request id in `X-Unkey-Request-Id`.
 *
 *   npx tsx --conditions=@identity-kit/source examples/opentelemetry.ts   # PORT=3000 by default
 *
 * Spans are printed by OpenTelemetry's console exporter; in production, put an OTLP exporter
 * (`@opentelemetry/exporter-trace-otlp-http`) in its place. Packages this example needs besides
 * identity-kit: `@effect/opentelemetry` (0.64, the Effect 3 line), `@opentelemetry/api`,
 * `@opentelemetry/sdk-trace-base`, `@opentelemetry/sdk-trace-node`.
 */
import { createServer } from "node:http"
import { pathToFileURL } from "node:url"
import * as OtelTracer from "@effect/opentelemetry/Tracer"
import { BatchSpanProcessor, ConsoleSpanExporter, type SpanExporter } from "@opentelemetry/sdk-trace-base"
import { NodeTracerProvider } from "@opentelemetry/sdk-trace-node"
import { Effect } from "effect"
import { layerMemory, type LogSink } from "identity-kit"
import { createNodeHandler } from "identity-kit/node"
import { curlFor, portOf, seedDemo } from "./demo.js"
import type { StartedExample } from "./express-app.js"

/** Starts the server on `port` (0: any free port), exporting spans to `exporter` and logging to `logger`. */
export const start = async ({
  port = 3000,
  exporter = new ConsoleSpanExporter(),
  logger = console
}: { readonly port?: number; readonly exporter?: SpanExporter; readonly logger?: LogSink } = {}): Promise<
  StartedExample & { readonly flush: () => Promise<void> }
> => {
  // The host's OpenTelemetry set-up (often already there): a provider with an exporter.
  const provider = new NodeTracerProvider({ spanProcessors: [new BatchSpanProcessor(exporter)] })
  // The Effect tracer over one OpenTelemetry tracer of that provider.
  const tracer = Effect.runSync(
    Effect.provideService(OtelTracer.make, OtelTracer.OtelTracer, provider.getTracer("identity-kit"))
  )

  const handler = createNodeHandler({ storage: layerMemory, tracer, logger })
  const server = createServer(handler)
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", () => resolve()))
  return {
    url: `http://127.0.0.1:${portOf(server)}`,
    kit: handler.kit,
    demo: await seedDemo(handler.kit),
    flush: () => provider.forceFlush(),
    close: async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await handler.kit.dispose()
      // Exports the spans still buffered.
      await provider.shutdown()
    }
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const example = await start({ port: Number(process.env["PORT"] ?? 3000) })
  console.log(`identity-kit (OpenTelemetry) listening on ${example.url}\n\n${curlFor(example.url, example.demo.rootKey)}\n`)
  const stop = () => void example.close().then(() => process.exit(0))
  process.once("SIGINT", stop)
  process.once("SIGTERM", stop)
}
