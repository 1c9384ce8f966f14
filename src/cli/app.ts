/**
 * The `identity-kit` command line on `@effect/cli`: the commands, and `run`, which parses the
 * arguments, runs the command and answers the exit code (docs/cli.md). Everything it prints goes
 * through stdout (output) and stderr (one line per failure, and logs).
 */
import { readFileSync } from "node:fs"
import { Command } from "@effect/cli"
import { Effect, Exit, Logger, LogLevel } from "effect"
import { adminCommands } from "./admin.js"
import { type CliFailure, ExitCode, formatLine, outcomeOf, usageError } from "./failure.js"
import { migrate } from "./migrate.js"
import * as Platform from "./platform.js"
import { serve } from "./serve.js"
import { stderrLogger } from "./shared.js"

/** The package's version, from its package.json (two levels up in the sources, three in `dist`). */
const version = (): string => {
  for (const path of ["../../package.json", "../../../package.json"]) {
    try {
      const parsed: unknown = JSON.parse(readFileSync(new URL(path, import.meta.url), "utf8"))
      if (typeof parsed === "object" && parsed !== null && Reflect.get(parsed, "name") === "identity-kit") {
        return String(Reflect.get(parsed, "version"))
      }
    } catch {
      // Not there: the other layout.
    }
  }
  return "unknown"
}

const root = Command.make("identity-kit").pipe(
  Command.withDescription("Serve Unkey's identities API from your own server, and administer its data."),
  Command.withSubcommands([migrate, serve, ...adminCommands])
)

const cli = Command.run(root, { name: "identity-kit", version: version() })

// The repeatable flags (`root-key issue|update --permission`, `identity create --ratelimit`).
// `@effect/cli` drops an empty or missing value of a repeated option without a word
// (`--permission ''` would issue a key with the default permission instead of failing), and reads
// `--permission=…` as an unknown argument although it splits `--name=…`. Flags are matched without
// case, as `@effect/cli` matches them, wherever they stand: global options such as `--log-level`
// may come before the command.
const REPEATED_FLAGS: ReadonlySet<string> = new Set(["--permission", "--ratelimit"])

/**
 * `argv` with `--permission=…` split as `--permission …`; a usage failure for a repeated flag
 * given an empty value or none. With `--help`, or after `--`, everything is left to the parser.
 */
const repeatedFlags = (argv: ReadonlyArray<string>): Effect.Effect<ReadonlyArray<string>, CliFailure> => {
  const args = argv.slice(2)
  const end = args.indexOf("--") === -1 ? args.length : args.indexOf("--")
  if (args.slice(0, end).some((arg) => arg === "--help" || arg === "-h")) return Effect.succeed(argv)
  const out: Array<string> = argv.slice(0, 2)
  for (let i = 0; i < end; i++) {
    const arg = args[i] ?? ""
    const equals = arg.indexOf("=")
    const flag = (equals === -1 ? arg : arg.slice(0, equals)).toLowerCase()
    if (!REPEATED_FLAGS.has(flag)) {
      out.push(arg)
      continue
    }
    // The next argument, unless it is the next flag (no permission or ratelimit starts with `--`).
    const next = i + 1 < end ? args[i + 1] : undefined
    const value = equals !== -1 ? arg.slice(equals + 1) : next === undefined || next.startsWith("--") ? undefined : args[++i]
    if (value === undefined || value.trim() === "") {
      return Effect.fail(usageError(`${flag} needs a value${value === undefined ? "" : ", got an empty one"}`))
    }
    out.push(flag, value)
  }
  return Effect.succeed([...out, ...args.slice(end)])
}

/**
 * Runs the command line `argv` (as `process.argv`: runtime and script first) and answers the exit
 * code, having printed the failure, if any, as one line on stderr.
 */
export const run = (argv: ReadonlyArray<string>): Promise<number> =>
  Effect.flatMap(repeatedFlags(argv), cli).pipe(
    Platform.withCliConsole,
    Effect.provide(Platform.layer),
    // Lines the storage logs while it starts or migrates: on stderr, and only warnings and worse
    // (`serve` gives its kit the logger and level of its flags).
    Effect.provide(Logger.replace(Logger.defaultLogger, stderrLogger("logfmt"))),
    Logger.withMinimumLogLevel(LogLevel.Warning),
    Effect.runPromiseExit
  ).then((exit) => {
    if (Exit.isSuccess(exit)) return ExitCode.ok
    const outcome = outcomeOf(exit.cause)
    if (outcome.line !== null) process.stderr.write(formatLine(outcome.line))
    return outcome.exitCode
  })

/**
 * Runs `argv` and ends the process with its exit code: once stdout and stderr are flushed and
 * nothing is left to do, or a moment later if something (a socket of a driver) still holds on.
 */
export const runMain = (argv: ReadonlyArray<string>): void => {
  void run(argv).then((code) => {
    process.exitCode = code
    setTimeout(() => process.exit(code), 2000).unref()
  })
}
