/**
 * What the PostgreSQL tests share: a schema of their own on the shared server, and a TCP proxy in
 * front of it that can drop every connection (stop, start again on the same port) or go silent
 * (freeze: no byte passes either way and nothing is closed, as a dead route looks to both ends).
 * Tests never stop or freeze the shared server itself.
 */
import { createServer, type Server, type Socket, connect } from "node:net"
import { SqlClient } from "@effect/sql"
import { Effect, Layer } from "effect"
import { layerPostgresClient } from "identity-kit/postgres"

/** `url` with every connection's `search_path` set to `schema` (a startup option, no extra query). */
export const withSearchPath = (url: string, schema: string): string => {
  const parsed = new URL(url)
  parsed.searchParams.set("options", `-c search_path=${schema}`)
  return parsed.toString()
}

/** A schema of its own: created when the layer is built, dropped (with everything in it) when it is released. */
export const freshSchema = (url: string, schema: string) =>
  Layer.scopedDiscard(Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* Effect.acquireRelease(
      sql.unsafe(`CREATE SCHEMA "${schema}"`),
      () => sql.unsafe(`DROP SCHEMA "${schema}" CASCADE`).pipe(Effect.orDie)
    )
  })).pipe(Layer.provide(layerPostgresClient({ url, maxConnections: 1 })))

/** A TCP forwarder to `host:targetPort` on 127.0.0.1, on a port of its own (kept across stop/start). */
export const makeProxy = (host: string, targetPort: number) => {
  let server: Server | undefined
  let frozen = false
  let port = 0
  const sockets = new Set<Socket>()
  return {
    get port() {
      return port
    },
    /** Listens (again, on the same port once it has one). */
    start: () =>
      new Promise<number>((resolve) => {
        const next = createServer((client) => {
          const upstream = connect(targetPort, host)
          for (const socket of [client, upstream]) {
            sockets.add(socket)
            socket.on("close", () => sockets.delete(socket))
            socket.on("error", () => {
              client.destroy()
              upstream.destroy()
            })
          }
          client.on("data", (chunk: Buffer) => {
            if (!frozen) upstream.write(chunk)
          })
          upstream.on("data", (chunk: Buffer) => {
            if (!frozen) client.write(chunk)
          })
        })
        next.listen(port, "127.0.0.1", () => {
          const address = next.address()
          if (typeof address === "object" && address !== null) port = address.port
          server = next
          resolve(port)
        })
      }),
    /** From now on no byte passes, and no connection is closed. */
    freeze: () => {
      frozen = true
    },
    /** Drops every connection and stops listening. */
    stop: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy()
        sockets.clear()
        if (server === undefined) return resolve()
        server.close(() => resolve())
        server = undefined
      })
  }
}
