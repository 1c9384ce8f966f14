/**
 * The package as users get it (issue 10): built and packed into a tarball like `npm publish` would,
 * then installed with npm's defaults into fresh consumer projects from the registry:
 *
 * - a host that never writes Effect but already depends on `effect@4` (npm's `latest`): plain values
 *   at the boundary, the package's own Effect 3 copy nested under it;
 * - an Effect 3 host: one copy of `effect`, shared, so its `Layer`s and `Redacted`s compose with ours.
 *
 * Slow (two `npm install`s from the registry), so one file that does both once.
 */
import { execFile, spawn } from "node:child_process"
import { once } from "node:events"
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { Unkey } from "@unkey/api"
import { Effect, Exit, Layer, Scope } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freshSchema, withSearchPath } from "./support/postgres.js"

const run = promisify(execFile)
const root = fileURLToPath(new URL("..", import.meta.url))
const npm = process.platform === "win32" ? "npm.cmd" : "npm"
const DATABASE_URL = process.env["DATABASE_URL"]

let work = ""
let tarball = ""

/** Builds `dist/` into a staging copy of the published files and packs it. */
const pack = async (): Promise<string> => {
  const manifest = JSON.parse(await readFile(join(root, "package.json"), "utf8")) as { files: Array<string> }
  const stage = join(work, "stage")
  await mkdir(stage, { recursive: true })
  await cp(join(root, "package.json"), join(stage, "package.json"))
  for (const entry of manifest.files) {
    if (entry === "dist") continue
    await cp(join(root, entry), join(stage, entry), { recursive: true })
  }
  await writeFile(join(stage, "tsconfig.json"), JSON.stringify({
    extends: join(root, "tsconfig.build.json"),
    // `types: ["node"]` resolves from the tsconfig's folder: point it at this repository's.
    compilerOptions: { outDir: join(stage, "dist"), rootDir: root, noCheck: true, typeRoots: [join(root, "node_modules", "@types")] },
    include: [join(root, "src"), join(root, "adapters")]
  }))
  await run(process.execPath, [join(root, "node_modules", "typescript", "bin", "tsc"), "-p", join(stage, "tsconfig.json")])
  const { stdout } = await run(npm, ["pack", "--ignore-scripts", "--json", "--pack-destination", work], { cwd: stage })
  const [packed] = JSON.parse(stdout) as Array<{ filename: string }>
  return join(work, packed?.filename ?? "")
}

/** A fresh project with `dependencies`, installed with npm's defaults; answers npm's stderr. */
const consumer = async (name: string, dependencies: Record<string, string>): Promise<{ dir: string; warnings: string }> => {
  const dir = join(work, name)
  await mkdir(dir, { recursive: true })
  await writeFile(join(dir, "package.json"), JSON.stringify({ name, private: true, type: "module", dependencies }))
  const { stderr } = await run(npm, ["install", "--no-audit", "--no-fund"], { cwd: dir, maxBuffer: 16 * 1024 * 1024 })
  return { dir, warnings: stderr }
}

/** npm's warnings, less the one no package can silence (see README "Dependencies, and why"). */
const unexpectedWarnings = (stderr: string): Array<string> =>
  stderr.split("\n").filter((line) => /npm warn/i.test(line) && !/install-scripts|msgpackr-extract|allowScripts/.test(line))

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "identity-kit-consumer-"))
  tarball = await pack()
}, 120_000)

afterAll(async () => {
  if (work !== "") await rm(work, { recursive: true, force: true })
})

describe("a consumer project", () => {
  it("with effect@4 installed: installs cleanly, plain values in and out, Effect 4's Redacted refused clearly, PGlite optional", async () => {
    const { dir, warnings } = await consumer("host-effect4", { "identity-kit": `file:${tarball}`, effect: "^4" })
    expect(unexpectedWarnings(warnings)).toEqual([])
    await writeFile(join(dir, "check.mjs"), `
import assert from "node:assert/strict"
import { Redacted } from "effect"
import { IdentityConflict, layerMemory, makeIdentityKit, permissions } from "identity-kit"
import { layerPostgres } from "identity-kit/postgres"

const kit = makeIdentityKit({ storage: layerMemory })
const workspace = await kit.admin.createWorkspace({ name: "consumer" })
const issued = await kit.admin.issueRootKey({ workspaceId: workspace.id, permissions: Object.values(permissions) })
assert.equal(typeof issued.key, "string")
await kit.admin.createIdentity({ workspaceId: workspace.id, externalId: "user_1" })
const duplicate = await kit.admin.createIdentity({ workspaceId: workspace.id, externalId: "user_1" }).catch((e) => e)
assert.ok(duplicate instanceof IdentityConflict, String(duplicate))
const response = await kit.fetch(new Request("http://localhost/v2/identities.updateIdentity", {
  method: "POST",
  headers: { authorization: "Bearer " + issued.key, "content-type": "application/json" },
  body: JSON.stringify({ identity: "user_1", meta: { plan: "pro" } })
}))
assert.equal(response.status, 200)
assert.deepEqual((await response.json()).data.meta, { plan: "pro" })
await kit.dispose()
// The host's own Effect 4 Redacted cannot be read by the package's Effect 3: a TypeError that says so.
assert.throws(() => layerPostgres({ url: Redacted.make("postgres://u:secret@localhost/db") }), (error) =>
  error instanceof TypeError && /string/.test(error.message) && !error.message.includes("secret"))
// PGlite is an optional peer, not installed here: its subpath imports, and says what to install.
const { layerPglite } = await import("identity-kit/pglite")
const embedded = makeIdentityKit({ storage: layerPglite() })
const missing = await embedded.ready().catch((e) => e)
assert.ok(String(missing?.message).includes("npm install @electric-sql/pglite"), String(missing?.message))
await embedded.dispose()
console.log("effect4 host ok")
`)
    const { stdout } = await run(process.execPath, [join(dir, "check.mjs")], { cwd: dir })
    expect(stdout.trim()).toBe("effect4 host ok")
    const { stdout: tree } = await run(npm, ["ls", "effect", "--all", "--json"], { cwd: dir })
    const versions = new Set([...tree.matchAll(/"effect":\s*\{\s*"version":\s*"([^"]+)"/g)].map((m) => m[1]?.split(".")[0]))
    // The host's 4 at the top, the package's own 3 nested: two copies, each app talks to its own.
    expect([...versions].sort()).toEqual(["3", "4"])
  }, 240_000)

  it.runIf(DATABASE_URL !== undefined)(
    "npx identity-kit: migrate, workspace create, root-key issue, serve; Unkey's SDK works against it; SIGTERM exits 0",
    async () => {
      const dir = join(work, "host-effect4")
      const schema = `consumer_${process.pid}_${Date.now()}`
      const scope = Effect.runSync(Scope.make())
      await Effect.runPromise(Layer.buildWithScope(freshSchema(DATABASE_URL ?? "", schema), scope))
      try {
        const env = { ...process.env, DATABASE_URL: withSearchPath(DATABASE_URL ?? "", schema) }
        const npx = (...args: Array<string>) => run("npx", ["--no-install", "identity-kit", ...args], { cwd: dir, env })
        await npx("migrate")
        await npx("workspace", "create", "--id", "ws_npx", "--name", "npx")
        const issued = JSON.parse((await npx(
          "root-key", "issue", "--workspace", "ws_npx", "--permission", "identity.*.create_identity",
          "--permission", "identity.*.update_identity", "--json"
        )).stdout) as { key: string }
        // The bin npm linked, run as is (npx would stand between it and the signal).
        const server = spawn(join(dir, "node_modules", ".bin", "identity-kit"), ["serve", "--port", "0", "--json"], {
          cwd: dir,
          env,
          stdio: ["ignore", "pipe", "pipe"]
        })
        try {
          const line = await new Promise<string>((resolve, reject) => {
            let out = ""
            server.stdout.on("data", (chunk: Buffer) => {
              out += chunk.toString("utf8")
              if (out.includes("\n")) resolve(out.split("\n")[0] ?? "")
            })
            server.once("exit", (code) => reject(new Error(`serve exited with ${code}`)))
          })
          const { url } = JSON.parse(line) as { url: string }
          const unkey = new Unkey({ rootKey: issued.key, serverURL: url, retryConfig: { strategy: "none" } })
          await unkey.identities.createIdentity({ externalId: "user_npx", meta: { plan: "free" } })
          const { data } = await unkey.identities.updateIdentity({ identity: "user_npx", meta: { plan: "pro" } })
          expect(data.meta).toEqual({ plan: "pro" })
          const exited = once(server, "exit")
          server.kill("SIGTERM")
          expect((await exited)[0]).toBe(0)
        } finally {
          if (server.exitCode === null && server.signalCode === null) server.kill("SIGKILL")
        }
      } finally {
        await Effect.runPromise(Scope.close(scope, Exit.void))
      }
    },
    120_000
  )

  it("with effect@3 installed: one shared copy, the host's Layer and Redacted compose with the package's", async () => {
    const { dir, warnings } = await consumer("host-effect3", { "identity-kit": `file:${tarball}`, effect: "~3.22.0" })
    expect(unexpectedWarnings(warnings)).toEqual([])
    const { stdout: tree } = await run(npm, ["ls", "effect", "--all", "--parseable"], { cwd: dir })
    const copies = new Set(tree.split("\n").filter((line) => /node_modules\/effect$/.test(line)))
    expect([...copies]).toHaveLength(1)
    await writeFile(join(dir, "check.mjs"), `
import assert from "node:assert/strict"
import { Effect, Layer, Redacted } from "effect"
import { Admin, IdentityStore, layerMemory, makeIdentityKit } from "identity-kit"

// A host layer wrapping the package's storage, with the host's own Effect.
const storage = Layer.effect(IdentityStore, Effect.map(IdentityStore, (store) => store)).pipe(Layer.provide(layerMemory))
const kit = makeIdentityKit({ storage })
const workspace = await kit.run(Admin.createWorkspace({ name: "effect3" }))
const issued = await kit.run(Admin.issueRootKey({ workspaceId: workspace.id, key: Redacted.make("unkey_host_given_key_0123456789") }))
assert.equal(Redacted.value(issued.key), "unkey_host_given_key_0123456789")
await kit.dispose()
console.log("effect3 host ok")
`)
    const { stdout } = await run(process.execPath, [join(dir, "check.mjs")], { cwd: dir })
    expect(stdout.trim()).toBe("effect3 host ok")
  }, 240_000)
})
