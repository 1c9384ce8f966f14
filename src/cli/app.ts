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

// The repeatable flags, by the commands that take them. `@effect/cli` drops an empty or missing
// value of a repeated option without a word (`--permission ''` would issue a key with the default
// permission instead of failing), and reads `--permission=…` as an unknown argument although it
// splits `--name=…`. Flags are matched without case, as `@effect/cli` matches them.
const REPEATED_FLAGS: Readonly<Record<string, ReadonlyArray<string>>> = {
  "root-key issue": ["--permission"],
  "root-key update": ["--permission"],
  "identity create": ["--ratelimit"]
}

// The flags that take no value (the commands' booleans and the parser's own): every other flag
// takes the next argument as its value, whatever it looks like, as the parser reads it.
const VALUELESS_FLAGS: ReadonlySet<string> = new Set([
  "--json",
  "--enable",
  "--disable",
  "--disabled",
  "--demo",
  "--wizard",
  "--version",
  "--help",
  "-h"
])

/**
 * `argv` with `--permission=…` split as `--permission …`; a usage failure for a repeated flag of
 * the command given an empty value or none. The command is the first two arguments that are not
 * flags or their values (a global `--log-level info` may come first); an argument that is another
 * flag's value is never taken for a flag. With `--help`, or after `--`, everything is left to the
 * parser.
 */
const repeatedFlags = (argv: ReadonlyArray<string>): Effect.Effect<ReadonlyArray<string>, CliFailure> => {
  const args = argv.slice(2)
  const end = args.indexOf("--") === -1 ? args.length : args.indexOf("--")
  const out: Array<string> = argv.slice(0, 2)
  const words: Array<string> = []
  for (let i = 0; i < end; i++) {
    const arg = args[i] ?? ""
    if (!arg.startsWith("-")) {
      if (words.length < 2) words.push(arg)
      out.push(arg)
      continue
    }
    const equals = arg.indexOf("=")
    const flag = (equals === -1 ? arg : arg.slice(0, equals)).toLowerCase()
    if (flag === "--help" || flag === "-h") return Effect.succeed(argv)
    if (!(REPEATED_FLAGS[words.join(" ")] ?? []).includes(flag)) {
      // Another flag, and its value when it takes one.
      out.push(arg)
      if (equals === -1 && !VALUELESS_FLAGS.has(flag) && i + 1 < end) out.push(args[++i] ?? "")
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
