/**
 * Per-request facts the HTTP edge knows and the handler records: request id, remote IP and user
 * agent (spec §3, §5.3). Time comes from Effect's `Clock`, so tests can use `TestClock`.
 */
import { Context } from "effect"

/** The request context service. */
export interface RequestContextService {
  /** `req_…`, answered in `meta.requestId` on every response. */
  readonly requestId: string
  /** First `X-Forwarded-For` value, else the peer address, else `""`. */
  readonly remoteIp: string
  readonly userAgent: string
}

/** The request context tag; provided per request by the HTTP edge. */
export class RequestContext extends Context.Tag("identity-kit/RequestContext")<RequestContext, RequestContextService>() {}

/** The peer address of the connection, handed in by adapters that know it (Node http, Express, Fastify). */
export class ClientAddress extends Context.Tag("identity-kit/ClientAddress")<ClientAddress, string>() {}

/** Remote IP for the audit log: the first `X-Forwarded-For` value, else the peer address. */
export const remoteIpOf = (forwardedFor: string | undefined, peer: string | undefined): string => {
  const first = forwardedFor?.split(",")[0]?.trim()
  return first !== undefined && first !== "" ? first : peer ?? ""
}
