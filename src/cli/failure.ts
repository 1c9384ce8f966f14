/**
 * How the CLI fails: one line on stderr (`identity-kit: …`, never SQL, a stack or a credential for
 * an expected failure) and an exit code a script can branch on. The code comes from the error's
 * `_tag`, so a tagged error the admin API adds later gets a sensible code without a change here.
 */
import { ValidationError } from "@effect/cli"
import { Cause, Data, Option, Runtime } from "effect"
import { causeMessages, classifyStorageFailure } from "../internal/log.js"
import { PromptsUnsupported } from "./platform.js"
import { plain } from "./text.js"

/** The exit codes (docs/cli.md). */
export const ExitCode = {
  ok: 0,
  /** The storage cannot be reached or is not ready, a migration failed, the server cannot listen, a bug. */
  failure: 1,
  /** A flag or argument the parser refuses, or input the admin API refuses (`InvalidInput`). */
  usage: 2,
  /** No such workspace, root key or identity. */
  notFound: 3,
  /** It exists already (a live identity with this externalId). */
  conflict: 4
} as const

/** A failure the CLI itself names: its line and its exit code. */
export class CliFailure extends Data.TaggedError("CliFailure")<{
  readonly message: string
  readonly exitCode: number
}> {}

/** Exit 2: a flag or value the command refuses. */
export const usageError = (message: string) => new CliFailure({ message, exitCode: ExitCode.usage })
/** Exit 3: what the command names does not exist. */
export const notFoundError = (message: string) => new CliFailure({ message, exitCode: ExitCode.notFound })
/** Exit 1: the storage, the network or the server failed. */
export const runtimeError = (message: string) => new CliFailure({ message, exitCode: ExitCode.failure })

/** The exit code of a tagged error, by the convention of the package's tags. */
export const exitCodeOfTag = (tag: string): number =>
  /^(Invalid|Malformed)/.test(tag)
    ? ExitCode.usage
    : /NotFound$/.test(tag)
    ? ExitCode.notFound
    : /(Conflict|Exists)$/.test(tag)
    ? ExitCode.conflict
    : ExitCode.failure

const PREFIX = "identity-kit: "

/** One line: no prefix twice, no line breaks. */
const oneLine = (text: string): string => {
  const flat = text.replace(/\s*\n\s*/g, " ").trim()
  return flat.startsWith(PREFIX) ? flat.slice(PREFIX.length) : flat
}

/** Why a storage operation failed, with what to do when that is known (as `kit.ready()` says it). */
export const describeStorageFailure = (failure: unknown): string => {
  // `kit.ready()` rejects with its sentence around the failure; read the failure itself, so the
  // detail is its chain of causes without the wrappers' own messages.
  const cause = failure instanceof Error && failure.message.startsWith(PREFIX) && failure.cause !== undefined
    ? failure.cause
    : failure
  const found = classifyStorageFailure(cause)
  switch (found.kind) {
    // The storage's own sentence (a database behind this version: what to run).
    case "own":
      return oneLine(found.message)
    // PGlite is an optional peer: the default storage of every command needs it installed.
    case "pglite-missing":
      return "PGlite (the storage without a database URL) is not installed: npm install @electric-sql/pglite, or use PostgreSQL with --database-url / DATABASE_URL."
    case "no-tables":
      return `the database has no identity-kit tables (${found.relation}). Run \`identity-kit migrate\` with the same storage flags.`
    case "unreachable":
      return `cannot reach the database (${oneLine(found.detail)}). Check the URL, that the server runs and accepts connections from here.`
    case "other":
      return `the storage failed (${oneLine(found.detail)})`
  }
}

const isRecord = (value: unknown): value is Record<string, unknown> => typeof value === "object" && value !== null

// The admin API's parameters as the command line spells them (an issue's `location` names the
// parameter, then the path inside it: `input.ratelimits[0].limit`).
const FLAGS: Readonly<Record<string, string>> = {
  externalId: "--external-id",
  environment: "--environment",
  meta: "--meta",
  ratelimits: "--ratelimit",
  permissions: "--permission",
  name: "--name",
  expiresAt: "--expires-at",
  workspaceId: "--workspace",
  id: "--id",
  limit: "--limit",
  cursor: "--cursor",
  search: "--search",
  key: "ROOT_KEY",
  keyId: "<keyId>",
  identity: "<identity>"
}

/**
 * An issue's location as a flag: `input.ratelimits[0].limit` → `--ratelimit #1 .limit`,
 * `query.limit` → `--limit`, `input.meta.tags[2]` → `--meta .tags[2]`; unknown ones as they are.
 */
export const flagOf = (location: string): string => {
  const match = /^(?:(?:input|query|patch)\.)?([A-Za-z]+)(?:\[(\d+)\])?(.*)$/.exec(location)
  const flag = match?.[1] === undefined ? undefined : FLAGS[match[1]]
  if (match === null || flag === undefined) return location
  const index = match[2] === undefined ? "" : ` #${Number(match[2]) + 1}`
  const rest = match[3] === undefined || match[3] === "" ? "" : ` ${match[3]}`
  return `${flag}${index}${rest}`
}

/** `WorkspaceNotFound` → `workspace not found`. */
const words = (tag: string): string => tag.replace(/([a-z0-9])([A-Z])/g, "$1 $2").toLowerCase()

/** The line for a tagged error: what the known ones mean, else its tag in words and its string fields. */
const describeTagged = (tag: string, error: Record<string, unknown>): string => {
  switch (tag) {
    case "CliFailure":
      return oneLine(String(error["message"]))
    case "StorageError":
      return describeStorageFailure(error["cause"])
    case "InvalidInput": {
      const issues = Array.isArray(error["errors"])
        ? error["errors"].filter(isRecord).map((issue) => `${flagOf(String(issue["location"]))}: ${String(issue["message"])}`)
        : []
      // Each issue names its field; the detail only repeats the first of them.
      return oneLine(`invalid input: ${issues.length > 0 ? issues.join("; ") : String(error["detail"])}`)
    }
    case "RootKeyConflict":
      return "a root key with this plaintext exists already (only one key may have it): choose another"
    case "IdentityConflict":
      return `an identity with externalId ${JSON.stringify(error["externalId"])} already exists in workspace ${
        String(error["workspaceId"])
      }`
  }
  const facts = Object.entries(error)
    .filter(([key, value]) => key !== "_tag" && key !== "message" && (typeof value === "string" || typeof value === "number"))
    .map(([key, value]) => `${key}: ${String(value)}`)
  return `${words(tag)}${facts.length > 0 ? ` (${facts.join(", ")})` : ""}`
}

/** What a failed run prints and exits with. `null` line: already printed (the parser's own error). */
export interface Outcome {
  readonly line: string | null
  readonly exitCode: number
}

/** The outcome of a failure: an error value, or a `Cause` from the run. */
export const outcomeOf = (failure: unknown): Outcome => {
  if (Cause.isCause(failure)) {
    const error = Cause.failureOption(failure)
    if (Option.isSome(error)) return outcomeOf(error.value)
    const defect = Cause.squash(failure)
    if (defect instanceof PromptsUnsupported) return { line: defect.message, exitCode: ExitCode.usage }
    // A bug, not an expected failure: the whole cause, so it can be reported.
    return { line: `unexpected error: ${Cause.pretty(failure)}`, exitCode: ExitCode.failure }
  }
  if (Runtime.isFiberFailure(failure)) return outcomeOf(failure[Runtime.FiberFailureCauseId])
  // The parser printed it already (through the CLI console).
  if (ValidationError.isValidationError(failure)) return { line: null, exitCode: ExitCode.usage }
  if (isRecord(failure) && typeof failure["_tag"] === "string") {
    const tag = failure["_tag"]
    const exitCode = failure instanceof CliFailure ? failure.exitCode : exitCodeOfTag(tag)
    return { line: describeTagged(tag, failure), exitCode }
  }
  return { line: oneLine(causeMessages(failure).join(": ") || String(failure)), exitCode: ExitCode.failure }
}

/**
 * The line as printed, prefixed, its controls escaped as `plain` escapes them (a not-found line
 * repeats what the user typed) but for the line breaks of a bug's report.
 */
export const formatLine = (line: string): string => `${PREFIX}${line.split("\n").map(plain).join("\n")}\n`
