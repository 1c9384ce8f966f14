/**
 * `identity-kit serve`: a standalone server, Node's `http` with the kit's Node handler, configured
 * by flags and env. It checks the storage (`kit.ready()`) before it listens, so a database that is
 * down or not migrated ends the start with the reason and exit 1 instead of failing every request.
 * SIGTERM or SIGINT: stop accepting, let the requests in flight finish (`kit.dispose()` drains),
 * close the storage, exit 0.
 */
import { createServer, type Server } from "node:http"
import { Command, Options } from "@effect/cli"
import { Config, ConfigError, Either, Effect, Option } from "effect"
import { createNodeHandler, type NodeHandler } from "../../adapters/node.js"
import { parseLogLevel } from "../internal/log.js"
import { DEMO_WORKSPACE, demoText, seedDemo } from "./demo.js"
import { describeStorageFailure, runtimeError, usageError } from "./failure.js"
import { json, printJson, printText, stderrLogger, storageFlags, storageLayer, targetOf } from "./shared.js"

const DEFAULT_PORT = 3000
const DEFAULT_HOST = "127.0.0.1"

/**
 * `PORT`: empty (`PORT=` in a templated env file) is the default, as an empty DATABASE_URL is none:
 * read as a number, "" would be port 0 (a random one). Else a whole number (the range is checked
 * with `--port`'s).
 */
export const envPort = Config.string("PORT").pipe(
  Config.mapOrFail((text) =>
    text.trim() === ""
      ? Either.right(DEFAULT_PORT)
      : /^\s*\d+\s*$/.test(text)
      ? Either.right(Number(text))
      : Either.left(ConfigError.InvalidData([], `PORT must be a port number from 0 to 65535, got ${JSON.stringify(text)}`))
  )
)
/** `HOST`: empty is the default (127.0.0.1); Node would bind host "" to every interface. */
export const envHost = Config.string("HOST").pipe(Config.map((text) => text.trim() === "" ? DEFAULT_HOST : text.trim()))

const flags = {
  port: Options.integer("port").pipe(
    Options.withDescription(`The port (env PORT); 0 picks a free one. Default ${DEFAULT_PORT}.`),
    Options.withFallbackConfig(envPort),
    Options.withDefault(DEFAULT_PORT)
  ),
  host: Options.text("host").pipe(
    Options.withDescription(`The address to listen on (env HOST); 0.0.0.0 for every interface. Default ${DEFAULT_HOST}.`),
    Options.withFallbackConfig(envHost),
    Options.withDefault(DEFAULT_HOST)
  ),
  ...storageFlags,
  logLevel: Options.text("log-level").pipe(
    Options.withDescription("Lines below it are dropped (env LOG_LEVEL): trace, debug, info, warn, error, fatal, none. Default info."),
    Options.withFallbackConfig(Config.string("LOG_LEVEL")),
    Options.withDefault("info")
  ),
  logFormat: Options.choice("log-format", ["logfmt", "json"]).pipe(
    Options.withDescription("Log lines on stderr as logfmt or JSON, one a line (env LOG_FORMAT). Default logfmt."),
    Options.withFallbackConfig(Config.literal("logfmt", "json")("LOG_FORMAT")),
    Options.withDefault("logfmt" as const)
  ),
  basePath: Options.text("base-path").pipe(
    Options.withDescription("Prefix of the API routes, e.g. /api → POST /api/v2/identities.updateIdentity. Default: none."),
    Options.optional
  ),
  healthPath: Options.text("health-path").pipe(
    Options.withDescription("The readiness route (GET, 200 or 503; not under --base-path); '' for none. Default /healthz."),
    Options.withDefault("/healthz")
  ),
  demo: Options.boolean("demo").pipe(
    Options.withDescription(
      "Seed the demo once (workspace ws_demo, a root key for all five endpoints printed once, identity user_123) and print " +
        "curls that use it. Env ROOT_KEY: use this plaintext as the demo key."
    )
  ),
  json
}

/** The URL to print for a listening server: the address a client on this machine uses. */
const urlOf = (server: Server, host: string, basePath: string): string => {
  const address = server.address()
  const port = typeof address === "object" && address !== null ? address.port : 0
  const shown = host === "0.0.0.0" ? "127.0.0.1" : host === "::" ? "::1" : host
  return `http://${shown.includes(":") ? `[${shown}]` : shown}:${port}${basePath.replace(/\/+$/, "")}`
}

/** Listens, or fails with why not (a port in use, an address not on this machine). */
const listen = (server: Server, port: number, host: string) =>
  Effect.async<void, ReturnType<typeof runtimeError>>((resume) => {
    const onError = (error: Error) =>
      resume(Effect.fail(runtimeError(`cannot listen on ${host}:${port}: ${error.message}`)))
    server.once("error", onError)
    server.listen(port, host, () => {
      server.off("error", onError)
      resume(Effect.void)
    })
  })

/** How long a shutdown waits for the requests in flight (the kit's own drain deadline). */
const DRAIN_MS = 10_000

/**
 * Stops the server, then the kit: no new connections, idle keep-alive ones closed, the requests in
 * flight answered — those still sending their body too: the server's `close` waits for them (up to
 * the drain deadline), as the kit answers 503 to any that then needs storage — then every
 * connection left closed.
 */
const shutdown = (server: Server, handler: NodeHandler) =>
  Effect.promise(async () => {
    const closed = new Promise<void>((resolve) => server.close(() => resolve()))
    server.closeIdleConnections()
    // A kept-alive connection becomes idle once its last request is answered: closed then.
    const idle = setInterval(() => server.closeIdleConnections(), 50)
    const disposed = handler.dispose()
    let timer: ReturnType<typeof setTimeout> | undefined
    await Promise.race([closed, new Promise<void>((resolve) => { timer = setTimeout(resolve, DRAIN_MS) })])
    clearTimeout(timer)
    clearInterval(idle)
    await disposed
    server.closeAllConnections()
  })

/** Resolves on the first SIGTERM or SIGINT; a second one then ends the process at once (Node's default). */
const stopSignal = Effect.async<NodeJS.Signals>((resume) => {
  const onSignal = (signal: NodeJS.Signals) => {
    process.off("SIGTERM", onSignal)
    process.off("SIGINT", onSignal)
    resume(Effect.succeed(signal))
  }
  process.on("SIGTERM", onSignal)
  process.on("SIGINT", onSignal)
  return Effect.sync(() => {
    process.off("SIGTERM", onSignal)
    process.off("SIGINT", onSignal)
  })
})

/** `identity-kit serve`. */
export const serve = Command.make("serve", flags, (options) =>
  Effect.gen(function*() {
    const target = yield* targetOf(options)
    const basePath = Option.getOrElse(options.basePath, () => "")
    if (basePath !== "" && !basePath.startsWith("/")) {
      return yield* usageError(`--base-path must start with /, e.g. /api; got ${JSON.stringify(basePath)}`)
    }
    const logLevel = yield* Effect.try({
      try: () => parseLogLevel(options.logLevel)._tag,
      catch: () =>
        usageError(`--log-level / LOG_LEVEL must be one of trace, debug, info, warn, error, fatal, none; got ${JSON.stringify(options.logLevel)}`)
    })
    // Checked before the storage opens: Node would throw a RangeError only at listen.
    if (!Number.isSafeInteger(options.port) || options.port < 0 || options.port > 65_535) {
      return yield* usageError(`--port / PORT must be a port number from 0 to 65535, got ${options.port}`)
    }
    // `--host ''` as an empty HOST: the default, never "every interface" by accident.
    const host = options.host.trim() === "" ? DEFAULT_HOST : options.host.trim()
    const storage = yield* storageLayer(target, { listen: true })
    const handler = yield* Effect.try({
      try: () =>
        createNodeHandler({
          storage,
          basePath,
          ...(options.healthPath === "" ? {} : { healthPath: options.healthPath }),
          logger: stderrLogger(options.logFormat),
          minimumLogLevel: logLevel
        }),
      // The kit's own sentence for an option it refuses (a health path without a leading slash, …).
      catch: (error) => usageError(describeStorageFailure(error))
    })
    const server = createServer(handler)

    // From here on the kit (and, once listening, the server) is released on every way out: a
    // failure, or the signal that interrupts the serving fiber.
    const run = Effect.gen(function*() {
      yield* Effect.tryPromise({
        try: () => handler.kit.ready(),
        // The kit's sentence: what is wrong (unreachable, not migrated, a locked directory) and what to do.
        catch: (error) => runtimeError(describeStorageFailure(error))
      })
      const seed = options.demo
        ? yield* seedDemo(handler.kit, process.env["ROOT_KEY"])
        : undefined
      yield* listen(server, options.port, host)
      const url = urlOf(server, host, basePath)
      const health = options.healthPath === "" ? undefined : `${urlOf(server, host, "")}${options.healthPath}`
      if (options.json) {
        yield* printJson({
          url,
          ...(health === undefined ? {} : { health }),
          storage: target.label,
          ...(seed === undefined ? {} : { workspaceId: DEMO_WORKSPACE, ...(seed.rootKey === undefined ? {} : { rootKey: seed.rootKey }) })
        })
      } else {
        yield* printText(
          `identity-kit${options.demo ? " demo" : ""} listening on ${url} (storage: ${target.label})` +
            (health === undefined ? "" : `\nhealth: ${health}`) +
            (seed === undefined ? "" : `\n${demoText(url, seed)}`)
        )
      }
      return yield* Effect.never
    })
    yield* Effect.raceFirst(run, stopSignal).pipe(Effect.ensuring(shutdown(server, handler)))
  })).pipe(Command.withDescription("Serve the five identities endpoints (Unkey's v2 API) on Node http."))
