/**
 * What `@effect/cli` needs from the platform (`FileSystem | Path | Terminal`), made here from
 * `@effect/platform` and Node's own streams instead of `@effect/platform-node`: that package would
 * add `@effect/cluster`, `@effect/rpc` and their peers to every consumer's install for a command
 * line that reads no files and asks no questions.
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import * as Terminal from "@effect/platform/Terminal"
import { Effect, Layer } from "effect"
import { plain } from "./text.js"

/** Thrown (as a defect) when something asks the terminal for input: the commands have no prompts. */
export class PromptsUnsupported extends Error {
  constructor() {
    super("there are no interactive prompts (--wizard is not supported): pass every value as a flag")
  }
}

// Output only: `--help` and the parser's errors are printed through `Console`, and the prompts
// (`--wizard`) that would read keys are not offered.
const terminal: Terminal.Terminal = {
  columns: Effect.sync(() => process.stdout.columns ?? 80),
  rows: Effect.sync(() => process.stdout.rows ?? 24),
  isTTY: Effect.sync(() => process.stdout.isTTY === true),
  readInput: Effect.die(new PromptsUnsupported()),
  readLine: Effect.die(new PromptsUnsupported()),
  display: (text) =>
    Effect.sync(() => {
      process.stdout.write(text)
    })
}

/**
 * The CLI's environment. No option is a file or directory *checked by the parser* (`--data-dir` is
 * plain text: PGlite creates it), so every file-system call would be a bug: the no-op one fails it.
 */
export const layer: Layer.Layer<FileSystem.FileSystem | Path.Path | Terminal.Terminal> = Layer.mergeAll(
  FileSystem.layerNoop({}),
  Path.layer,
  Layer.succeed(Terminal.Terminal, terminal)
)

const ANSI = /\u001b\[[0-9;]*m/g

/** Text for a stream: `@effect/cli` colours its help and errors; a pipe or a file gets them without colour. */
export const forStream = (text: string, stream: NodeJS.WriteStream): string =>
  stream.isTTY === true ? text : text.replace(ANSI, "")

/**
 * Runs `effect` with a `Console` whose `log` and `error` are what `@effect/cli` prints with: `log`
 * for `--help` and `--version` (stdout), `error` for a command line it cannot parse, which becomes
 * one line on stderr, `identity-kit: …`, like every other failure of the CLI.
 */
export const withCliConsole = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.flatMap(Effect.console, (base) =>
    Effect.withConsole(effect, {
      ...base,
      log: (...args: ReadonlyArray<unknown>) =>
        Effect.sync(() => {
          // Its texts end with a line break of their own.
          process.stdout.write(`${forStream(args.map(String).join(" "), process.stdout).replace(/\n+$/, "")}\n`)
        }),
      error: (...args: ReadonlyArray<unknown>) =>
        Effect.sync(() => {
          // Without its colours, and with what the user typed (which it repeats) escaped.
          const text = plain(
            args.map(String).join(" ").replace(ANSI, "").split("\n").map((line) => line.trim()).filter((line) => line !== "").join(" ")
          )
          process.stderr.write(`identity-kit: ${text} (see --help)\n`)
        })
    }))
