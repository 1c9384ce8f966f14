/**
 * The plain request and response every adapter speaks: no WHATWG `Request`/`Response`, no
 * `@effect/platform` objects. The core's request program (`./program.ts`) turns one `PlainRequest`
 * into one `PlainResponse`; adapters only translate their host's objects into these and back.
 */

/**
 * Where the body comes from. Either the bytes (a framework already read them: Fastify's parser, a
 * body parser's value re-encoded) or a reader the program calls at most once, after routing.
 */
export type PlainBody = Uint8Array | BodyReader

/**
 * Reads the whole body and calls `done` exactly once: with the bytes; with `"too-large"` as soon as
 * more than `limit` bytes arrived (the reader stops reading); or with an `Error` when the stream
 * failed or the client went away. May return a function that stops reading (called when the request
 * is interrupted before `done`).
 */
export type BodyReader = (
  limit: number,
  done: (result: Uint8Array | "too-large" | Error) => void
) => void | (() => void)

/** One request, as the host received it. */
export interface PlainRequest {
  /** Upper-case method, e.g. `POST`. */
  readonly method: string
  /** The path below the mount point, as sent (dot segments not resolved), without the query. */
  readonly path: string
  /**
   * Headers by lower-case name, as Node's `IncomingMessage.headers` has them (repeated headers
   * joined with `", "`; `set-cookie` an array). Only a few are read: `authorization`,
   * `content-type`, `content-length`, `accept`, `user-agent`, and `x-forwarded-for` when
   * `clientIp` is absent and the kit's `trustProxy` allows it.
   */
  readonly headers: Readonly<Record<string, string | ReadonlyArray<string> | undefined>>
  readonly body: PlainBody
  /** The peer address of the connection, when the host knows it (audit log, spec §5.3). */
  readonly remoteAddress?: string | undefined
  /**
   * The client address as the host framework determined it under its own proxy settings (Express
   * `req.ip`, Fastify `request.ip`): recorded as is. Absent, the kit's `trustProxy` picks between
   * `remoteAddress` and `X-Forwarded-For`.
   */
  readonly clientIp?: string | undefined
  /**
   * The host's id for this request (Fastify's `request.id`, an `X-Request-Id` header): logged and
   * recorded in the audit entry next to the kit's own `req_…` id. Use `hostRequestIdOf` to check one.
   */
  readonly hostRequestId?: string | undefined
}

/** One answer: status, headers (lower-case names) and a JSON body as text. */
export interface PlainResponse {
  readonly status: number
  readonly headers: Readonly<Record<string, string>>
  /** The body, JSON text; the writer encodes it as UTF-8. */
  readonly body: string
}

/** The first value of a header (`string` as is, an array's first item). */
export const headerValue = (
  headers: PlainRequest["headers"],
  name: string
): string | undefined => {
  const value = headers[name]
  return typeof value === "string" ? value : value?.[0]
}

const EMPTY = new Uint8Array(0)

/**
 * A web body stream as a `PlainBody`: a plain reader loop (an Effect stream here cost ~0.5 ms a
 * request, bench/), cancelled past the limit or when the request is interrupted.
 */
export const streamBody = (stream: ReadableStream<Uint8Array> | null): PlainBody =>
  stream === null ? EMPTY : (limit, done) => {
    const reader = stream.getReader()
    const chunks: Array<Uint8Array> = []
    let size = 0
    let stopped = false
    const stop = () => {
      stopped = true
      reader.cancel().catch(() => {})
    }
    const pump = (): void => {
      reader.read().then(({ done: end, value }) => {
        if (stopped) return
        if (end) return done(Buffer.concat(chunks, size))
        size += value.length
        if (size > limit) {
          stop()
          return done("too-large")
        }
        chunks.push(value)
        pump()
      }, (cause: unknown) => {
        if (!stopped) done(cause instanceof Error ? cause : new Error("the request body stream failed"))
      })
    }
    pump()
    return stop
  }

/**
 * A host request id as the kit accepts it: 1–200 visible ASCII characters (ids are logged and
 * stored; a client can send any `X-Request-Id`), else undefined. Numbers (Fastify's default ids)
 * are taken as their decimal text.
 */
export const hostRequestIdOf = (value: unknown): string | undefined => {
  const text = typeof value === "number" && Number.isSafeInteger(value) ? String(value) : value
  return typeof text === "string" && text.length > 0 && text.length <= 200 && /^[\x21-\x7e]+$/.test(text)
    ? text
    : undefined
}
