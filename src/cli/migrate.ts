/**
 * `identity-kit migrate`: applies the pending migrations to the storage the flags name, and says
 * which. Safe to run from several processes at once, and again (then nothing is applied).
 */
import { Command } from "@effect/cli"
import { Effect, Layer } from "effect"
import { StorageError } from "../Errors.js"
import { classifyStorageFailure } from "../internal/log.js"
import { migrate as runMigrations } from "../storage/migrations.js"
import { layerPostgresClient } from "../storage/postgres.js"
import { describeStorageFailure, runtimeError } from "./failure.js"
import { json, loadPglite, print, storageFlags, type StorageTarget, targetOf } from "./shared.js"

const clientOf = (target: StorageTarget) =>
  target.kind === "postgres"
    ? Effect.succeed(layerPostgresClient({ url: target.url }))
    : Effect.map(loadPglite, ({ layerPgliteClient }) =>
      layerPgliteClient({ dataDir: target.dataDir }).pipe(
        Layer.mapError((cause) => new StorageError({ operation: "connect", cause }))
      ))

/**
 * Why `migrate` failed: a database that cannot be reached, PGlite missing, or the storage's own
 * sentence as they say it; anything else a migration met as "migration failed" with its detail
 * (never the advice to run the migrations: that is what failed).
 */
const why = (error: StorageError): string => {
  const found = classifyStorageFailure(error.cause)
  if (error.operation !== "migrate" || found.kind === "unreachable" || found.kind === "pglite-missing" || found.kind === "own") {
    return describeStorageFailure(error)
  }
  return `migration failed: ${found.kind === "no-tables" ? found.relation : found.detail}`
}

/** `identity-kit migrate`. */
export const migrate = Command.make("migrate", { json, ...storageFlags }, (flags) =>
  Effect.gen(function*() {
    const target = yield* targetOf(flags)
    const client = yield* clientOf(target)
    const applied = yield* runMigrations.pipe(
      Effect.provide(client),
      Effect.mapError((error) => runtimeError(`${target.label}: ${why(error)}`))
    )
    const names = applied.map(([id, name]) => `${String(id).padStart(4, "0")}_${name}`)
    yield* print(flags.json, { storage: target.label, applied: names }, () =>
      names.length === 0 ? `${target.label}: up to date` : `${target.label}: applied ${names.join(", ")}`)
  })).pipe(Command.withDescription("Apply the pending migrations (serve and the other commands also migrate when they start)."))
