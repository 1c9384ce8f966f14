/**
 * `npm run migrate`: applies identity-kit's migrations to PostgreSQL at `DATABASE_URL`, or, when it
 * is not set, to the PGlite database in `PGLITE_DATA_DIR` (default `./.data`).
 */
import { Cause, Effect, Exit, Layer } from "effect"
import { StorageError } from "identity-kit"
import { layerPgliteClient } from "identity-kit/pglite"
import { layerPostgresClient } from "identity-kit/postgres"
import { migrate } from "identity-kit/sql"

const url = process.env["DATABASE_URL"]
const dataDir = process.env["PGLITE_DATA_DIR"] ?? "./.data"

// Name the target without credentials.
const target = url === undefined
  ? `PGlite at ${dataDir}`
  : (() => {
    const parsed = new URL(url)
    return `PostgreSQL at ${parsed.hostname}:${parsed.port || 5432}${parsed.pathname}`
  })()

const client = url === undefined
  ? layerPgliteClient({ dataDir }).pipe(Layer.mapError((cause) => new StorageError({ operation: "connect", cause })))
  : layerPostgresClient({ url })

const exit = await Effect.runPromiseExit(migrate.pipe(Effect.provide(client)))
if (Exit.isSuccess(exit)) {
  const applied = exit.value
  console.log(
    applied.length === 0
      ? `${target}: up to date`
      : `${target}: applied ${applied.map(([id, name]) => `${id}_${name}`).join(", ")}`
  )
} else {
  console.error(`${target}: migration failed\n${Cause.pretty(exit.cause)}`)
  process.exitCode = 1
}
