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

/** `identity-kit migrate`. */
export const migrate = Command.make("migrate", { json, ...storageFlags }, (flags) =>
  Effect.gen(function*() {
    const target = yield* targetOf(flags)
    const client = yield* clientOf(target)
    const applied = yield* runMigrations.pipe(
      Effect.provide(client),
      // "migration failed" only for what a migration did: a database that cannot be reached, PGlite
      // missing or an unusable directory say so themselves.
      Effect.mapError((error) =>
        runtimeError(
          `${target.label}: ${
            error.operation === "migrate" && classifyStorageFailure(error.cause).kind === "other" ? "migration failed: " : ""
          }${
            describeStorageFailure(error)
          }`
        )
      )
    )
    const names = applied.map(([id, name]) => `${String(id).padStart(4, "0")}_${name}`)
    yield* print(flags.json, { storage: target.label, applied: names }, () =>
      names.length === 0 ? `${target.label}: up to date` : `${target.label}: applied ${names.join(", ")}`)
  })).pipe(Command.withDescription("Apply the pending migrations (serve and the other commands also migrate when they start)."))
