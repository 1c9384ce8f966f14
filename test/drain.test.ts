/**
 * Shutting down under load. The host's part is to stop its server (`server.close()`) and dispose the
 * kit; whichever comes first, requests in flight finish (200), requests that still arrive get 503
 * (never 500), and nothing hangs.
 */
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { Effect, Layer } from "effect"
import { IdentityStore, makeMemory } from "identity-kit"
import { createNodeHandler } from "identity-kit/node"
import { describe, expect, it } from "vitest"

/** Memory storage whose writes take a little while, so requests overlap the shutdown. */
const slowStorage = Layer.effect(
  IdentityStore,
  Effect.map(makeMemory, (memory) => ({
    ...memory,
    updateIdentity: (update: Parameters<typeof memory.updateIdentity>[0]) =>
      Effect.zipRight(Effect.sleep("15 millis"), memory.updateIdentity(update))
  }))
)

describe("shutdown under load (Node http)", () => {
  it("dispose() mid-load: in-flight requests finish, later ones get 503, none 500; then the server closes", async () => {
    const handler = createNodeHandler({ storage: slowStorage })
    await handler.kit.admin.createWorkspace({ id: "ws_drain" })
    await handler.kit.admin.createIdentity({ workspaceId: "ws_drain", externalId: "user_1" })
    const { key } = await handler.kit.admin.issueRootKey({ workspaceId: "ws_drain" })
    const server = createServer(handler)
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v2/identities.updateIdentity`

    const statuses = new Map<number, number>()
    let stopped = false
    // 16 clients on kept-alive connections, each sending updates until the server is gone.
    const client = async (n: number) => {
      for (let i = 0; !stopped; i++) {
        try {
          const response = await fetch(url, {
            method: "POST",
            headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
            body: JSON.stringify({ identity: "user_1", meta: { n, i } })
          })
          await response.arrayBuffer()
          statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1)
        } catch {
          // The connection closed under the client (server.close() ends idle keep-alive sockets):
          // no HTTP answer, and nothing more to send on it.
          return
        }
      }
    }
    const clients = Array.from({ length: 16 }, (_, n) => client(n))
    await new Promise((resolve) => setTimeout(resolve, 300))
    // dispose() mid-load, the server still taking requests: those in flight finish (200), every
    // later one that needs storage gets 503 until the host stops its server.
    const disposing = handler.dispose()
    await new Promise((resolve) => setTimeout(resolve, 100))
    stopped = true
    server.close()
    server.closeAllConnections()
    await Promise.all([disposing, ...clients])

    expect(statuses.get(200) ?? 0).toBeGreaterThan(0)
    expect(statuses.get(503) ?? 0).toBeGreaterThan(0)
    expect(statuses.get(500) ?? 0).toBe(0)
    expect([...statuses.keys()].every((status) => status === 200 || status === 503)).toBe(true)
  }, 30_000)
})

describe("dispose before the storage was ever built", () => {
  it("a fetch request still reading its body when dispose() is called gets 503, not a startup 500", async () => {
    const { layerMemory, makeIdentityKit } = await import("identity-kit")
    const kit = makeIdentityKit({ storage: layerMemory })
    let push: ((chunk: string) => void) | undefined
    let end: (() => void) | undefined
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        push = (chunk) => controller.enqueue(new TextEncoder().encode(chunk))
        end = () => controller.close()
      }
    })
    const answer = kit.fetch(new Request("http://localhost/v2/identities.updateIdentity", {
      method: "POST",
      headers: { authorization: "Bearer some-key", "content-type": "application/json" },
      body,
      duplex: "half"
    } as RequestInit))
    push?.('{"identity":')
    const disposed = kit.dispose()
    push?.('"user_1"}')
    end?.()
    const response = await answer
    await disposed
    expect(response.status).toBe(503)
  })
})
