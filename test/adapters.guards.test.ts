/**
 * Adapter guard rails (issue 10, item 6): a `basePath` together with the framework's own mount path
 * (`/api/api/v2/…`) and one kit mounted twice in the same app are said once, as Node process
 * warnings with a code a host can filter; the right set-ups say nothing.
 */
import { createServer, type Server } from "node:http"
import type { AddressInfo } from "node:net"
import express4 from "express4"
import express5 from "express5"
import fastify5 from "fastify5"
import { layerMemory, makeIdentityKit } from "identity-kit"
import { identityKit as expressKit } from "identity-kit/express"
import { identityKit as fastifyKit } from "identity-kit/fastify"
import { afterEach, beforeEach, describe, expect, it } from "vitest"

const ROUTE = "/v2/identities.getIdentity"

let warnings: Array<{ readonly code: string | undefined; readonly message: string }> = []
const onWarning = (warning: Error & { code?: string }) => warnings.push({ code: warning.code, message: warning.message })
beforeEach(() => {
  warnings = []
  process.on("warning", onWarning)
})
afterEach(() => {
  process.off("warning", onWarning)
})

/** Warnings are emitted on the next tick. */
const settled = () => new Promise((resolve) => setImmediate(resolve))
const codes = () => warnings.map((w) => w.code).filter((code) => code?.startsWith("IDENTITY_KIT_"))

const listen = async (handler: Parameters<typeof createServer>[1]): Promise<{ url: string; server: Server }> => {
  const server = createServer(handler)
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server }
}
const post = (url: string) => fetch(url, { method: "POST" }).then((r) => r.status)

describe.each([["Express 4", express4], ["Express 5", express5]] as const)("%s", (_name, express) => {
  it("basePath and the same mount path: warned once, the route stays where it is (/api/api/…)", async () => {
    const app = express()
    const identities = expressKit({ storage: layerMemory, basePath: "/api" })
    app.use("/api", identities)
    const { url, server } = await listen(app)
    try {
      // As the user meant it: not a route (Express's own 404), and a warning saying why.
      expect(await post(`${url}/api${ROUTE}`)).toBe(404)
      expect(await post(`${url}/api${ROUTE}`)).toBe(404)
      // Where it really is: the kit's 400 (no Authorization).
      expect(await post(`${url}/api/api${ROUTE}`)).toBe(400)
      await settled()
      expect(codes()).toEqual(["IDENTITY_KIT_BASE_PATH_AND_MOUNT"])
      expect(warnings.find((w) => w.code === "IDENTITY_KIT_BASE_PATH_AND_MOUNT")?.message).toContain("drop basePath")
    } finally {
      server.close()
      await identities.dispose()
    }
  })

  it("one kit at two mount paths of one app: warned once; both still serve", async () => {
    const kit = makeIdentityKit({ storage: layerMemory })
    const app = express()
    app.use("/a", expressKit({ kit }))
    app.use("/b", expressKit({ kit }))
    const { url, server } = await listen(app)
    try {
      expect(await post(`${url}/a${ROUTE}`)).toBe(400)
      expect(await post(`${url}/b${ROUTE}`)).toBe(400)
      expect(await post(`${url}/b${ROUTE}`)).toBe(400)
      await settled()
      expect(codes()).toEqual(["IDENTITY_KIT_MOUNTED_TWICE"])
    } finally {
      server.close()
      await kit.dispose()
    }
  })

  it("no warning for the right set-ups: a mount path alone; one kit in two apps", async () => {
    const kit = makeIdentityKit({ storage: layerMemory })
    const first = express()
    first.use("/api", expressKit({ kit }))
    const second = express()
    second.use("/v", expressKit({ kit }))
    const one = await listen(first)
    const two = await listen(second)
    try {
      expect(await post(`${one.url}/api${ROUTE}`)).toBe(400)
      expect(await post(`${two.url}/v${ROUTE}`)).toBe(400)
      await settled()
      expect(codes()).toEqual([])
    } finally {
      one.server.close()
      two.server.close()
      await kit.dispose()
    }
  })
})

describe("Fastify", () => {
  it("a prefix with basePath, and one kit registered at two prefixes: warned at registration", async () => {
    const kit = makeIdentityKit({ storage: layerMemory, basePath: "/api" })
    const app = fastify5()
    await app.register(fastifyKit, { kit, prefix: "/api" })
    await app.ready()
    await settled()
    expect(codes()).toEqual(["IDENTITY_KIT_BASE_PATH_AND_MOUNT"])
    await app.close()

    warnings = []
    const plain = makeIdentityKit({ storage: layerMemory })
    const twice = fastify5()
    await twice.register(fastifyKit, { kit: plain, prefix: "/a" })
    await twice.register(fastifyKit, { kit: plain, prefix: "/b" })
    await twice.ready()
    expect((await twice.inject({ method: "POST", url: `/b${ROUTE}` })).statusCode).toBe(400)
    await settled()
    expect(codes()).toEqual(["IDENTITY_KIT_MOUNTED_TWICE"])
    await twice.close()

    warnings = []
    const once = fastify5()
    await once.register(fastifyKit, { kit: plain, prefix: "/a" })
    await once.ready()
    await settled()
    expect(codes()).toEqual([])
    await once.close()
    await kit.dispose()
    await plain.dispose()
  })
})

describe("Express mounts that are one mount", () => {
  it("a parameter in the mount path and a case-insensitive match: no warning", async () => {
    const app = express5()
    const identities = expressKit({ storage: layerMemory })
    app.use("/:tenant", identities)
    const { url, server } = await listen(app)
    try {
      expect(await post(`${url}/acme${ROUTE}`)).toBe(400)
      expect(await post(`${url}/globex${ROUTE}`)).toBe(400)
      expect(await post(`${url}/ACME${ROUTE}`)).toBe(400)
      await settled()
      expect(codes()).toEqual([])
    } finally {
      server.close()
      await identities.dispose()
    }
  })
})
