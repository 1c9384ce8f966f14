/**
 * The demo server behind `npm start`: Node's http with identity-kit's node handler, storage in
 * PGlite under `./.data` (or PostgreSQL when `DATABASE_URL` is set). The first start migrates and
 * seeds a workspace, a root key for all five endpoints and the identity `user_123`, and prints
 * curls that work as they are.
 * Restarts keep the data and seed nothing again.
 *
 * Env: PORT (default 3000; 0 picks a free port), HOST (default 127.0.0.1), DATABASE_URL,
 * PGLITE_DATA_DIR (default ./.data), ROOT_KEY (use this plaintext as the demo root key).
 */
import { createServer } from "node:http"
import { Cause, Effect, Redacted, Runtime } from "effect"
import { hashRootKey, IdentityStore } from "identity-kit"
import { createNodeHandler } from "identity-kit/node"
import { layerPglite } from "identity-kit/pglite"
import { layerPostgres } from "identity-kit/postgres"
import { curlFor, demoPermissions, listCurlFor, portOf } from "./demo.js"

const WORKSPACE = "ws_demo"
const env = process.env
const databaseUrl = env["DATABASE_URL"]
const dataDir = env["PGLITE_DATA_DIR"] ?? ".data"
const storage = databaseUrl
  ? layerPostgres({ url: Redacted.make(databaseUrl) })
  : layerPglite({ dataDir })
const handler = createNodeHandler({ storage })
const { kit } = handler

/** Whether a plaintext root key is already stored (by its hash). */
const isKnownKey = (key: string) =>
  kit.run(Effect.flatMap(IdentityStore, (store) => store.findRootKey(hashRootKey(key)))).then((found) => found !== null)

// Seed once: the identity is the marker, so a restart finds it and seeds nothing.
let shownKey: string | undefined
const given = env["ROOT_KEY"]
// A storage that cannot start (a locked PGlite directory, an unreachable database) ends the demo
// with its reason and exit code 1, not a stack trace.
const reasonOf = (error: unknown): string => {
  let current: unknown = Runtime.isFiberFailure(error) ? Cause.squash(error[Runtime.FiberFailureCauseId]) : error
  while (current instanceof Error && current.cause instanceof Error) current = current.cause
  return current instanceof Error ? current.message : String(current)
}
let firstStart: boolean
try {
  firstStart = (await kit.admin.getIdentity(WORKSPACE, "user_123")) === null
} catch (error) {
  console.error(`identity-kit demo: the storage did not start: ${reasonOf(error)}`)
  await handler.dispose()
  process.exit(1)
}
if (firstStart) {
  await kit.admin.createWorkspace({ id: WORKSPACE, name: "demo" })
  await kit.admin.createIdentity({
    workspaceId: WORKSPACE,
    externalId: "user_123",
    meta: { plan: "free" },
    ratelimits: [{ name: "requests", limit: 100, duration: 60_000 }]
  })
}
if (given !== undefined && given !== "") {
  if (!(await isKnownKey(given))) {
    await kit.admin.issueRootKey({
      workspaceId: WORKSPACE,
      name: "demo key",
      key: Redacted.make(given),
      permissions: demoPermissions
    })
  }
  shownKey = given
} else if (firstStart) {
  const { key } = await kit.admin.issueRootKey({ workspaceId: WORKSPACE, name: "demo key", permissions: demoPermissions })
  shownKey = Redacted.value(key)
}

const server = createServer(handler)
await new Promise<void>((resolve) => server.listen(Number(env["PORT"] ?? 3000), env["HOST"] ?? "127.0.0.1", resolve))
const url = `http://127.0.0.1:${portOf(server)}`

console.log(`identity-kit demo listening on ${url} (storage: ${databaseUrl ? "PostgreSQL" : `PGlite in ${dataDir}`})`)
if (shownKey !== undefined && given === undefined) {
  console.log(`\nRoot key for workspace ${WORKSPACE} (shown once; only its SHA-256 hash is stored):\n  ${shownKey}`)
}
console.log(
  `\nTry it (the key may create, get, list, update and delete identities):\n` +
    `${curlFor(url, shownKey ?? "$ROOT_KEY")}\n\n${listCurlFor(url, shownKey ?? "$ROOT_KEY")}\n`
)
if (shownKey === undefined) {
  console.log("(The root key was printed at the first start. Restart with ROOT_KEY=<key> to use a key of your choice.)")
}

let closing = false
const shutdown = () => {
  if (closing) return
  closing = true
  server.close()
  server.closeAllConnections()
  // Disposing closes the pool or PGlite cleanly, so the data directory is left consistent.
  void handler.dispose().finally(() => process.exit(0))
}
process.on("SIGINT", shutdown)
process.on("SIGTERM", shutdown)
