/**
 * Every example is executed, not only compiled: started in process (its exported `start`) and
 * called with fetch and the official SDK, then started as a script exactly as its header says,
 * driven with the request its printed curl makes, and stopped with SIGTERM.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { once } from "node:events"
import { fileURLToPath } from "node:url"
import { Unkey } from "@unkey/api"
import { describe, expect, it } from "vitest"
import * as expressApp from "../examples/express-app.js"
import * as fastifyApp from "../examples/fastify-app.js"
import * as honoApp from "../examples/hono.js"
import * as nodeHttp from "../examples/node-http.js"

const examples = [
  { file: "express-app.ts", start: expressApp.start },
  { file: "fastify-app.ts", start: fastifyApp.start },
  { file: "node-http.ts", start: nodeHttp.start },
  { file: "hono.ts", start: honoApp.start }
] as const

const update = (url: string, rootKey: string) =>
  fetch(`${url}/v2/identities.updateIdentity`, {
    method: "POST",
    headers: { authorization: `Bearer ${rootKey}`, "content-type": "application/json" },
    body: JSON.stringify({
      identity: "user_123",
      meta: { plan: "premium" },
      ratelimits: [{ name: "requests", limit: 1000, duration: 3_600_000, autoApply: true }]
    })
  })

/** Reads the child's stdout until `pattern` matches (or it exits, or time runs out). */
const waitForOutput = (child: ChildProcess, pattern: RegExp, ms: number): Promise<string> =>
  new Promise((resolve, reject) => {
    let output = ""
    const timer = setTimeout(() => reject(new Error(`no ${pattern} within ${ms} ms; got:\n${output}`)), ms)
    child.stdout?.on("data", (chunk: Buffer) => {
      output += chunk.toString("utf8")
      if (pattern.test(output)) {
        clearTimeout(timer)
        resolve(output)
      }
    })
    child.stderr?.on("data", (chunk: Buffer) => {
      output += chunk.toString("utf8")
    })
    child.once("exit", (code) => {
      clearTimeout(timer)
      reject(new Error(`exited with ${code} before printing ${pattern}:\n${output}`))
    })
  })

describe("examples", () => {
  for (const example of examples) {
    it(`${example.file}: start(), update user_123 with fetch and the SDK, close()`, async () => {
      const app = await example.start({ port: 0 })
      try {
        const response = await update(app.url, app.demo.rootKey)
        expect(response.status).toBe(200)
        expect(await response.json()).toMatchObject({
          data: { id: app.demo.identityId, externalId: "user_123", meta: { plan: "premium" } }
        })
        const unkey = new Unkey({ rootKey: app.demo.rootKey, serverURL: app.url, retryConfig: { strategy: "none" } })
        const { data } = await unkey.identities.updateIdentity({ identity: "user_123", meta: { plan: "enterprise" } })
        expect(data.meta).toEqual({ plan: "enterprise" })
        expect(data.ratelimits?.[0]).toMatchObject({ name: "requests", limit: 1000 })
      } finally {
        await app.close()
      }
    })

    it(`${example.file}: runs as a script and its printed curl works`, async () => {
      const script = fileURLToPath(new URL(`../examples/${example.file}`, import.meta.url))
      const child = spawn(process.execPath, ["--import", "tsx", "--conditions=@identity-kit/source", script], {
        env: { ...process.env, PORT: "0" },
        stdio: ["ignore", "pipe", "pipe"]
      })
      try {
        const output = await waitForOutput(child, /Content-Type: application\/json/, 20_000)
        const url = /listening on (\S+)/.exec(output)?.[1]
        const rootKey = /Bearer ([^'"\s]+)/.exec(output)?.[1]
        expect(url).toBeDefined()
        expect(rootKey).toBeDefined()
        const response = await update(url ?? "", rootKey ?? "")
        expect(response.status).toBe(200)
        const exited = once(child, "exit")
        child.kill("SIGTERM")
        // The example's SIGTERM handler closes the server and disposes the kit, then exits 0.
        expect((await exited)[0]).toBe(0)
      } finally {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
      }
    })
  }
})
