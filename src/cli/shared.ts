/**
 * What every command shares: `--json`, the storage flags and the kit built on them, and printing.
 * Everything a command prints for a person or a script goes to stdout; failures and logs go to
 * stderr, so `--json` output is exactly one JSON document.
 */
import { Options } from "@effect/cli"
import { Config, Effect, Layer, Logger, Option, Redacted } from "effect"
import { type IdentityKit, type IdentityKitServices, makeIdentityKit } from "../IdentityKit.js"
import type { PageQuery } from "../domain/Model.js"
import { causeMessages } from "../internal/log.js"
import type { IdentityStore } from "../services/IdentityStore.js"
import type { StorageError } from "../Errors.js"
import { layerPostgres } from "../storage/postgres.js"
import { type CliFailure, describeStorageFailure, runtimeError, usageError } from "./failure.js"
import { plain } from "./text.js"

export { plain } from "./text.js"

/** `--json`: one JSON document on stdout instead of text for a person. */
export const json = Options.boolean("json").pipe(
  Options.withDescription("Print one JSON document on stdout (for scripts) instead of text.")
)

/** `--database-url` and `--data-dir`, on every command that touches storage. */
export const storageFlags = {
  databaseUrl: Options.text("database-url").pipe(
    Options.withDescription(
      "PostgreSQL to use, postgres://user:password@host:5432/db (env DATABASE_URL). Without it: PGlite in --data-dir."
    ),
    Options.withFallbackConfig(Config.string("DATABASE_URL")),
    Options.optional
  ),
  dataDir: Options.text("data-dir").pipe(
    Options.withDescription("The PGlite directory when there is no database URL (env PGLITE_DATA_DIR). Default ./.data."),
    Options.withFallbackConfig(Config.string("PGLITE_DATA_DIR")),
    Options.withDefault("./.data")
  )
}

/** What the storage flags resolve to. */
export interface StorageFlags {
  readonly databaseUrl: Option.Option<string>
  readonly dataDir: string
}

/** The storage the flags name: PostgreSQL when a URL is given (an empty one is none), else PGlite. */
export type StorageTarget =
  | { readonly kind: "postgres"; readonly url: string; readonly label: string }
  | { readonly kind: "pglite"; readonly dataDir: string; readonly label: string }

/** The target of the storage flags; a URL that does not parse is a usage error (never echoed: it may hold a password). */
export const targetOf = (flags: StorageFlags): Effect.Effect<StorageTarget, CliFailure> =>
  Effect.suspend((): Effect.Effect<StorageTarget, CliFailure> => {
    const url = Option.getOrElse(flags.databaseUrl, () => "")
    if (url === "") {
      const dataDir = flags.dataDir === "" ? "./.data" : flags.dataDir
      return Effect.succeed({ kind: "pglite", dataDir, label: `PGlite in ${dataDir}` })
    }
    let parsed: URL
    try {
      parsed = new URL(url)
    } catch {
      return Effect.fail(usageError("--database-url / DATABASE_URL is not a URL; expected postgres://user:password@host:5432/db"))
    }
    if (parsed.protocol !== "postgres:" && parsed.protocol !== "postgresql:") {
      return Effect.fail(usageError(`--database-url / DATABASE_URL must start with postgres:// or postgresql://, got ${parsed.protocol}//…`))
    }
    // Named without credentials.
    const label = `PostgreSQL at ${parsed.hostname}:${parsed.port || "5432"}${parsed.pathname}`
    return Effect.succeed({ kind: "postgres", url, label })
  })

/**
 * `identity-kit/pglite`, loaded only when a command uses PGlite: a consumer on PostgreSQL needs no
 * PGlite installed for the command line to start.
 */
export const loadPglite = Effect.tryPromise({
  try: () => import("../storage/pglite.js"),
  catch: (cause) =>
    runtimeError(
      `PGlite could not be loaded (${causeMessages(cause).join(": ")}). Install @electric-sql/pglite, or pass --database-url / DATABASE_URL.`
    )
})

/**
 * The storage layer of a target. The layers migrate when built, so a command on a fresh directory
 * or database works without a `migrate` first. `listen`: whether to hold a connection listening
 * for root-key changes (a server's cache needs it; a one-off command does not).
 */
export const storageLayer = (
  target: StorageTarget,
  options: { readonly listen: boolean }
): Effect.Effect<Layer.Layer<IdentityStore, StorageError>, CliFailure> =>
  target.kind === "postgres"
    ? Effect.succeed(layerPostgres({ url: Redacted.make(target.url), listen: options.listen }))
    : Effect.map(loadPglite, ({ layerPglite }) => layerPglite({ dataDir: target.dataDir }))

/** Log lines as logfmt or JSON, one a line, to stderr (stdout is the commands' output). */
export const stderrLogger = (format: "logfmt" | "json"): Logger.Logger<unknown, void> =>
  (format === "json" ? Logger.jsonLogger : Logger.logfmtLogger).pipe(
    Logger.map((line) => {
      process.stderr.write(`${line}\n`)
    })
  )

/**
 * Runs `use` with a kit on the storage flags, ready (built, migrated, answering) first, disposed
 * after. A storage that is not ready fails with the kit's own sentence (what is wrong, what to do).
 */
export const withKit = <A, E, R>(
  flags: StorageFlags,
  use: (kit: IdentityKit) => Effect.Effect<A, E, R>
) =>
  Effect.acquireUseRelease(
    targetOf(flags).pipe(
      Effect.flatMap((target) => storageLayer(target, { listen: false })),
      Effect.flatMap((storage) =>
        Effect.try({
          try: () =>
            makeIdentityKit({
              storage,
              // A one-off command: its output is on stdout, only warnings and worse on stderr.
              logger: stderrLogger("logfmt"),
              minimumLogLevel: "warn"
            }),
          catch: (error) => usageError(describeStorageFailure(error))
        })
      )
    ),
    (kit) =>
      Effect.tryPromise({ try: () => kit.ready(), catch: (error) => runtimeError(describeStorageFailure(error)) }).pipe(
        Effect.zipRight(use(kit))
      ),
    (kit) => Effect.promise(() => kit.dispose())
  )

/**
 * An admin Effect on the kit. Its failure is passed on as the kit rejects with it (a tagged error, or
 * a `FiberFailure` around one): `outcomeOf` reads both.
 */
export const admin = <A, E>(kit: IdentityKit, effect: Effect.Effect<A, E, IdentityKitServices>): Effect.Effect<A, unknown> =>
  Effect.tryPromise({ try: () => kit.run(effect), catch: (error) => error })

// --- Printing ---------------------------------------------------------------------------------

/** Writes `text` and a line break to stdout. */
export const printText = (text: string): Effect.Effect<void> =>
  Effect.sync(() => {
    process.stdout.write(`${text}\n`)
  })

/** Writes `value` as one JSON document (one line) to stdout. */
export const printJson = (value: unknown): Effect.Effect<void> => printText(JSON.stringify(value))

/** `value` as JSON with `--json`, else the text `human` makes of it. */
export const print = <A>(asJson: boolean, value: A, human: (value: A) => string): Effect.Effect<void> =>
  asJson ? printJson(value) : printText(human(value))

/** An epoch-ms time as ISO 8601 (UTC), `-` when there is none. */
export const time = (ms: number | null | undefined): string => {
  if (ms === null || ms === undefined) return "-"
  const date = new Date(ms)
  // A time beyond a Date's range (stored before the admin API refused one): the number itself.
  return Number.isNaN(date.getTime()) ? `${ms} ms` : date.toISOString()
}

/** Rows as left-aligned columns under a header; `(none)` when there are no rows. Cells are `plain`. */
export const table = (header: ReadonlyArray<string>, input: ReadonlyArray<ReadonlyArray<string>>): string => {
  if (input.length === 0) return "(none)"
  const rows = input.map((row) => row.map(plain))
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => (row[column] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) =>
    cells.map((cell, column) => column === cells.length - 1 ? cell : cell.padEnd(widths[column] ?? 0)).join("  ").trimEnd()
  return [line(header), ...rows.map(line)].join("\n")
}

/** The line under a page that has a next one. */
export const nextPage = (cursor: string | undefined): string => cursor === undefined ? "" : `\nNext page: --cursor ${cursor}`

/** `--limit` and `--cursor` of a list command. */
export const pageFlags = {
  limit: Options.integer("limit").pipe(Options.withDescription("Most items on the page."), Options.optional),
  cursor: Options.text("cursor").pipe(
    Options.withDescription("Where the page starts: the cursor the previous page printed."),
    Options.optional
  )
}

/** The page query of `--limit` and `--cursor`: only what was given. */
export const pageQuery = (flags: {
  readonly limit: Option.Option<number>
  readonly cursor: Option.Option<string>
}): PageQuery => ({
  ...(Option.isSome(flags.limit) ? { limit: flags.limit.value } : {}),
  ...(Option.isSome(flags.cursor) ? { cursor: flags.cursor.value } : {})
})
