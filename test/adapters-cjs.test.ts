/**
 * `require("identity-kit/express")` — and every other entry point of package.json `exports` — from
 * CommonJS, against the package as published: the entry points are compiled with
 * tsconfig.build.json (emit only) into a throwaway package (this package.json, its `exports` map,
 * `dist/`), and a `.cjs` script requires each through the package's own name — Node ≥ 20.19 loads
 * the ESM build through `require` — then serves one request with Express 4. The throwaway package
 * sits under node_modules/.cache so that its dependencies resolve to this repository's node_modules.
 */
import { execFile } from "node:child_process"
import { copyFile, cp, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises"
import { createRequire } from "node:module"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { expect, it } from "vitest"

const run = promisify(execFile)
const root = fileURLToPath(new URL("..", import.meta.url))

// Every entry point of package.json `exports`: its specifier and its source file.
const entryPoints = async (): Promise<ReadonlyArray<{ readonly specifier: string; readonly source: string }>> => {
  const manifest: unknown = JSON.parse(await readFile(join(root, "package.json"), "utf8"))
  const exportsMap: unknown = typeof manifest === "object" && manifest !== null ? Reflect.get(manifest, "exports") : undefined
  if (typeof exportsMap !== "object" || exportsMap === null) throw new Error("package.json has no exports map")
  return Object.entries(exportsMap).flatMap(([subpath, target]: [string, unknown]) => {
    const source: unknown = typeof target === "object" && target !== null ? Reflect.get(target, "@identity-kit/source") : undefined
    return typeof source === "string" ? [{ specifier: `identity-kit${subpath.slice(1)}`, source }] : []
  })
}

const checkScript = (specifiers: ReadonlyArray<string>) => `
const assert = require("node:assert/strict")
const http = require("node:http")
const express = require("express4")

for (const specifier of ${JSON.stringify(specifiers)}) {
  assert.ok(Object.keys(require(specifier)).length > 0, specifier + " exports nothing")
}
const { identityKit } = require("identity-kit/express")
const { layerMemory } = require("identity-kit")
assert.equal(typeof require("identity-kit/fastify").identityKit, "function")
assert.equal(typeof require("identity-kit/node").createNodeHandler, "function")

const identities = identityKit({ storage: layerMemory })
const app = express()
app.use("/api", identities)
const server = http.createServer(app).listen(0, "127.0.0.1", async () => {
  const { port } = server.address()
  const response = await fetch("http://127.0.0.1:" + port + "/api/v2/identities.updateIdentity", { method: "POST" })
  const body = await response.json()
  assert.equal(response.status, 400)
  assert.equal(body.error.detail, "Authorization header for 'bearer' scheme")
  server.close()
  await identities.dispose()
  console.log("cjs ok")
})
`

it("require() of every entry point in package.json exports works from CommonJS, against the built package", async () => {
  const cache = join(root, "node_modules", ".cache")
  await mkdir(cache, { recursive: true })
  const dir = await mkdtemp(join(cache, "identity-kit-cjs-"))
  try {
    const entries = await entryPoints()
    expect(entries.map((entry) => entry.specifier)).toEqual(
      expect.arrayContaining(["identity-kit", "identity-kit/express", "identity-kit/fastify", "identity-kit/node"])
    )
    await writeFile(join(dir, "tsconfig.json"), JSON.stringify({
      extends: join(root, "tsconfig.build.json"),
      compilerOptions: {
        outDir: join(dir, "dist"),
        rootDir: root,
        declaration: false,
        declarationMap: false,
        sourceMap: false,
        // Emit only: type errors are `npm run typecheck`'s business, and checking would triple the time.
        noCheck: true
      },
      include: [],
      files: entries.map((entry) => join(root, entry.source))
    }))
    await copyFile(join(root, "package.json"), join(dir, "package.json"))
    // The `require` entries (cjs/*.cjs) load the built ES modules.
    await cp(join(root, "cjs"), join(dir, "cjs"), { recursive: true })
    await run(process.execPath, [join(root, "node_modules", "typescript", "bin", "tsc"), "-p", join(dir, "tsconfig.json")])
    await writeFile(join(dir, "check.cjs"), checkScript(entries.map((entry) => entry.specifier)))
    const { stdout } = await run(process.execPath, [join(dir, "check.cjs")], { cwd: dir })
    expect(stdout.trim()).toBe("cjs ok")
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}, 60_000)

it("on a Node.js that cannot require() ES modules (ERR_REQUIRE_ESM), the require entry says what to do", () => {
  const load = createRequire(import.meta.url)(join(root, "cjs", "require.cjs")) as (importer: () => unknown) => unknown
  const tooOld = Object.assign(new Error("require() of ES Module … not supported."), { code: "ERR_REQUIRE_ESM" })
  expect(() => load(() => { throw tooOld })).toThrow(/identity-kit is an ES module: require\(\) loads it on Node\.js 20\.19 or newer .*Upgrade Node\.js, or load it with import\(\)/)
  const other = new Error("something else")
  expect(() => load(() => { throw other })).toThrow(other)
  expect(load(() => 42)).toBe(42)
})
