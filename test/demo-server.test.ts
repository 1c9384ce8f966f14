/**
 * `npm start` (`identity-kit serve --demo`) end to end: the demo server on PGlite in a temporary
 * directory, the printed curl's key and URL, an update, a restart that keeps the data and seeds
 * nothing again.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, assert, describe, it } from "@effect/vitest"

const dataDir = mkdtempSync(join(tmpdir(), "identity-kit-demo-"))
// What `npm start` runs.
const demoServer = ["--import", "tsx", "--conditions=@identity-kit/source", "src/cli/main.ts", "serve", "--demo"]
afterAll(() => rmSync(dataDir, { recursive: true, force: true }))

interface Started {
  readonly child: ChildProcess
  readonly url: string
  readonly output: string
}

/** Starts the demo server and waits for its curl (the last thing it prints at start). */
const startDemo = (env: Record<string, string> = {}): Promise<Started> =>
  new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      demoServer,
      { env: { ...process.env, PORT: "0", PGLITE_DATA_DIR: dataDir, DATABASE_URL: "", ...env }, stdio: ["ignore", "pipe", "pipe"] }
    )
    let output = ""
    const timer = setTimeout(() => reject(new Error(`demo server did not start:\n${output}`)), 45_000)
    const onData = (chunk: Buffer) => {
      output += chunk.toString()
      const url = /listening on (http:\/\/\S+)/.exec(output)?.[1]
      if (url !== undefined && output.includes("-d '{")) {
        clearTimeout(timer)
        resolve({ child, url, output })
      }
    }
    child.stdout.on("data", onData)
    child.stderr.on("data", onData)
    child.on("exit", (code) => reject(new Error(`demo server exited with ${code}:\n${output}`)))
  })

/** Runs the demo server until it exits by itself; its exit code and everything it printed. */
const runToExit = (): Promise<{ readonly code: number | null; readonly output: string }> =>
  new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      demoServer,
      { env: { ...process.env, PORT: "0", PGLITE_DATA_DIR: dataDir, DATABASE_URL: "" }, stdio: ["ignore", "pipe", "pipe"] }
    )
    let output = ""
    const timer = setTimeout(() => {
      child.kill("SIGKILL")
      reject(new Error(`the second demo server did not exit:\n${output}`))
    }, 45_000)
    child.stdout.on("data", (chunk: Buffer) => void (output += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => void (output += chunk.toString()))
    child.on("exit", (code) => {
      clearTimeout(timer)
      resolve({ code, output })
    })
  })

const stop = (child: ChildProcess) =>
  new Promise<number | null>((resolve) => {
    child.removeAllListeners("exit")
    child.on("exit", (code) => resolve(code))
    child.kill("SIGINT")
  })

const post = async (url: string, route: string, key: string, body: object) => {
  const response = await fetch(`${url}/v2/identities.${route}`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify(body)
  })
  return { status: response.status, body: await response.json() }
}
const update = (url: string, key: string, body: object) => post(url, "updateIdentity", key, body)

describe("npm start (demo server)", () => {
  it("seeds once, answers the printed curl, keeps data across a restart", async () => {
    const first = await startDemo()
    const key = /Bearer (unkey_[1-9A-HJ-NP-Za-km-z]+)/.exec(first.output)?.[1]
    assert.isDefined(key, first.output)
    const curlBody = /-d '(\{.*\})'/.exec(first.output)?.[1]
    assert.isDefined(curlBody)
    const answer = await update(first.url, key!, JSON.parse(curlBody!))
    assert.strictEqual(answer.status, 200, JSON.stringify(answer.body))
    assert.deepStrictEqual(answer.body.data.meta, { plan: "premium" })
    assert.strictEqual(answer.body.data.ratelimits[0].limit, 1000)
    // The second printed curl lists identities with the same key.
    const listBody = [...first.output.matchAll(/-d '(\{.*\})'/g)][1]?.[1]
    assert.isDefined(listBody)
    const listed = await post(first.url, "listIdentities", key!, JSON.parse(listBody!))
    assert.strictEqual(listed.status, 200, JSON.stringify(listed.body))
    assert.deepStrictEqual(listed.body.data.map((identity: { externalId: string }) => identity.externalId), ["user_123"])
    assert.strictEqual(await stop(first.child), 0)

    const second = await startDemo()
    assert.notInclude(second.output, "shown once")
    // The key from the first start still works and the update is still there.
    const again = await update(second.url, key!, { identity: "user_123" })
    assert.strictEqual(again.status, 200)
    assert.deepStrictEqual(again.body.data.meta, { plan: "premium" })
    assert.strictEqual(again.body.data.id, answer.body.data.id)
    assert.strictEqual(again.body.data.ratelimits[0].id, answer.body.data.ratelimits[0].id)
    assert.strictEqual(await stop(second.child), 0)

    // ROOT_KEY makes the key predictable for scripts.
    const third = await startDemo({ ROOT_KEY: "unkey_scripted_demo_key" })
    assert.include(third.output, "Bearer unkey_scripted_demo_key")
    assert.strictEqual((await update(third.url, "unkey_scripted_demo_key", { identity: "user_123" })).status, 200)

    // A second demo on the same data directory is refused with one clear line, not a stack trace.
    const refused = await runToExit()
    assert.strictEqual(refused.code, 1)
    assert.match(refused.output, /^identity-kit: .*the PGlite data directory .* is in use by process \d+[^\n]*\n$/)
    assert.notInclude(refused.output, "FiberFailure")
    assert.strictEqual(await stop(third.child), 0)
  }, 120_000)
})
