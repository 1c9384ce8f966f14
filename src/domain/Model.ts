/**
 * The stored entities (spec §6). Times are epoch milliseconds; `null` means "not set" in storage
 * and never reaches a response body.
 */
import type { JsonObject } from "./Json.js"

/** A workspace: the tenant that owns root keys and identities. */
export interface Workspace {
  readonly id: string
  readonly name: string
  readonly enabled: boolean
  readonly createdAt: number
}

/** A root key as stored: only the SHA-256 hash of the token, never the token itself. */
export interface RootKey {
  readonly id: string
  /** The workspace the key acts on. */
  readonly workspaceId: string
  /** base64(sha256(token)), standard alphabet, padded. */
  readonly hash: string
  readonly name: string
  readonly permissions: ReadonlyArray<string>
  readonly enabled: boolean
  readonly expiresAt: number | null
  readonly deletedAt: number | null
  readonly createdAt: number
}

/** A root key as the admin API lists it: everything but its hash. */
export type RootKeyInfo = Omit<RootKey, "hash">

/** A root key found by its hash, with its workspace when that still exists. */
export interface RootKeyLookup {
  readonly key: RootKey
  readonly workspace: Workspace | null
}

/** A ratelimit attached to an identity. `limit` and `duration` are 64-bit in storage. */
export interface Ratelimit {
  readonly id: string
  readonly name: string
  readonly limit: number
  /** Window length in milliseconds. */
  readonly duration: number
  readonly autoApply: boolean
  readonly createdAt: number
  readonly updatedAt: number | null
}

/** An identity with its ratelimits (ordered by name unless said otherwise). */
export interface Identity {
  readonly id: string
  readonly workspaceId: string
  readonly externalId: string
  readonly environment: string
  readonly meta: JsonObject
  readonly deleted: boolean
  readonly createdAt: number
  readonly updatedAt: number | null
  readonly ratelimits: ReadonlyArray<Ratelimit>
}

/** A resource named by an audit entry. */
export interface AuditResource {
  readonly type: "identity" | "ratelimit"
  readonly id: string
  readonly name: string
}

/** The events this package writes to the audit log. */
export type AuditEvent =
  | "identity.create"
  | "identity.update"
  | "identity.delete"
  | "ratelimit.create"
  | "ratelimit.update"
  | "ratelimit.delete"

/** One audit log entry (spec §5.3). */
export interface AuditLogEntry {
  readonly id: string
  readonly workspaceId: string
  readonly event: AuditEvent
  readonly display: string
  readonly actorType: "rootkey"
  readonly actorId: string
  readonly actorName: string
  readonly remoteIp: string
  readonly userAgent: string
  /** The kit's id of the request that wrote it (`req_…`, as in `meta.requestId`); `""` when none was given. */
  readonly requestId: string
  /** The host's id of that request (Fastify's `request.id`, an `X-Request-Id`); `""` when none was given. */
  readonly hostRequestId: string
  readonly time: number
  readonly resources: ReadonlyArray<AuditResource>
}

/** A ratelimit as a request or an admin call gives it. */
export interface RatelimitInput {
  readonly name: string
  readonly limit: number
  readonly duration: number
  readonly autoApply: boolean
}

/** Who did it, from where and in which request: recorded on every audit entry. */
export interface AuditContext {
  readonly actorId: string
  readonly actorName: string
  readonly remoteIp: string
  readonly userAgent: string
  /** The kit's request id (`req_…`); stored as `""` when left out. */
  readonly requestId?: string | undefined
  /** The host's request id (at most 200 visible ASCII characters, checked before storage); stored as `""` when left out. */
  readonly hostRequestId?: string | undefined
}

/** The write of spec §5, as the storage receives it. */
export interface IdentityUpdate {
  readonly workspaceId: string
  /** An identity id or externalId; an id match wins. */
  readonly identity: string
  /** The new metadata, already serialised as compact JSON; `undefined` keeps the stored one. */
  readonly meta?: string | undefined
  /** The new full set of ratelimits; `undefined` keeps the stored set. Names are unique. */
  readonly ratelimits?: ReadonlyArray<RatelimitInput> | undefined
  readonly audit: AuditContext
  /** Epoch milliseconds used for every timestamp written. */
  readonly now: number
}

/**
 * What the admin API's list operations take: at most `limit` items (default 100, 1–1000), from
 * `cursor` on (the `cursor` of the previous page; left out: from the start).
 */
export interface PageQuery {
  readonly limit?: number
  readonly cursor?: string
}

/**
 * One page of an admin list. `cursor` is there only when a next page exists: pass it back as the
 * query's `cursor`. Cursors are opaque: made by the list that answered them, for that list only.
 */
export interface Page<A> {
  readonly items: ReadonlyArray<A>
  readonly cursor?: string
}

/** What `listIdentities` of the admin API takes: a `PageQuery` and `search`, as over HTTP. */
export interface IdentityPageQuery extends PageQuery {
  /** Only identities whose id or externalId contains this (trimmed; ASCII letters in any case). */
  readonly search?: string
}
