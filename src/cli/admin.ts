/**
 * The admin commands: `workspace`, `root-key`, `identity` and `audit`, each a thin layer over the
 * admin API (`Admin.*`) on a kit built from the storage flags. A missing identity or key is exit 3,
 * a duplicate externalId exit 4, input the admin API refuses exit 2 (`failure.ts`).
 */
import { Args, Command, Options } from "@effect/cli"
import { Effect, Option, Redacted } from "effect"
import * as Admin from "../Admin.js"
import { MAX_EPOCH_MILLIS } from "../domain/AdminInput.js"
import type { JsonObject } from "../domain/Json.js"
import { isJsonObject } from "../domain/Json.js"
import type { Identity, RootKeyInfo, Workspace } from "../domain/Model.js"
import { InvalidInput, ValidationIssue } from "../Errors.js"
import { IdentityStore } from "../services/IdentityStore.js"
import { type CliFailure, notFoundError, usageError } from "./failure.js"
import {
  admin,
  json,
  nextPage,
  pageFlags,
  pageQuery,
  plain,
  print,
  storageFlags,
  table,
  time,
  withKit
} from "./shared.js"

/** A root key as the CLI shows it: never its hash (the admin API lists none; `issue` answers one). */
const withoutHash = (key: RootKeyInfo & { readonly hash?: string }): RootKeyInfo => {
  const { hash: _hash, ...shown } = key
  return shown
}

/** The plaintext of an issued key, whether the admin API hands it out `Redacted` or as a string. */
const plaintext = (key: unknown): string => Redacted.isRedacted(key) ? String(Redacted.value(key)) : String(key)

const workspaceFlag = Options.text("workspace").pipe(Options.withDescription("The workspace id (ws_…)."))

// --- workspace ----------------------------------------------------------------------------------

const describeWorkspace = (workspace: Workspace): string =>
  `${workspace.id} (name: ${plain(workspace.name)}, ${workspace.enabled ? "enabled" : "disabled"})`

const workspaceCreate = Command.make(
  "create",
  {
    id: Options.text("id").pipe(Options.withDescription("The id to use (default: a new ws_… id). An existing workspace with this id gets the name and state given (workspace update changes one)."), Options.optional),
    name: Options.text("name").pipe(Options.withDescription("Default: default."), Options.optional),
    disabled: Options.boolean("disabled").pipe(Options.withDescription("Create it disabled: its keys are answered 403.")),
    json,
    ...storageFlags
  },
  (flags) =>
    withKit(flags, (kit) =>
      admin(
        kit,
        Admin.createWorkspace({
          ...(Option.isSome(flags.id) ? { id: flags.id.value } : {}),
          ...(Option.isSome(flags.name) ? { name: flags.name.value } : {}),
          enabled: !flags.disabled
        })
      )).pipe(Effect.flatMap((workspace) => print(flags.json, workspace, (ws) => `Created workspace ${describeWorkspace(ws)}`)))
).pipe(Command.withDescription("Create a workspace (or set the name and state of the one with --id)."))

/** `error` with the issues at `from` (and inside it) reported at `to`. */
const relocated = (error: InvalidInput, from: string, to: string): InvalidInput =>
  new InvalidInput({
    detail: error.detail,
    errors: error.errors.map((issue) =>
      issue.location === from || issue.location.startsWith(`${from}.`) || issue.location.startsWith(`${from}[`)
        ? new ValidationIssue({ ...issue, location: `${to}${issue.location.slice(from.length)}` })
        : issue
    )
  })

const workspaceUpdate = Command.make(
  "update",
  {
    id: Args.text({ name: "workspaceId" }).pipe(Args.withDescription("The workspace's id (ws_…).")),
    name: Options.text("name").pipe(Options.withDescription("Its new name."), Options.optional),
    enable: Options.boolean("enable").pipe(Options.withDescription("Enable it: its keys work again.")),
    disable: Options.boolean("disable").pipe(Options.withDescription("Disable it: every key of it is answered 403.")),
    json,
    ...storageFlags
  },
  (flags) =>
    Effect.gen(function*() {
      if (flags.enable && flags.disable) return yield* usageError("--enable and --disable exclude each other")
      const patch = {
        ...(Option.isSome(flags.name) ? { name: flags.name.value } : {}),
        ...(flags.enable || flags.disable ? { enabled: flags.enable } : {})
      }
      if (Object.keys(patch).length === 0) return yield* usageError("nothing to change: give --name, --enable or --disable")
      const updated = yield* withKit(flags, (kit) => admin(kit, Admin.updateWorkspace(flags.id, patch))).pipe(
        // The id is this command's argument, not the `--workspace` flag of the others.
        Effect.mapError((error) => error instanceof InvalidInput ? relocated(error, "workspaceId", "<workspaceId>") : error)
      )
      if (updated === null) return yield* notFoundError(`no workspace with id ${flags.id}`)
      yield* print(flags.json, updated, (ws) => `Updated workspace ${describeWorkspace(ws)}`)
    })
).pipe(Command.withDescription("Rename, enable or disable a workspace (keeping the rest)."))

const workspaceList = Command.make(
  "list",
  { ...pageFlags, json, ...storageFlags },
  (flags) =>
    withKit(flags, (kit) => admin(kit, Admin.listWorkspaces(pageQuery(flags)))).pipe(
      Effect.flatMap((page) =>
        print(flags.json, page, ({ cursor, items }) =>
          table(
            ["ID", "NAME", "STATE", "CREATED"],
            items.map((ws) => [ws.id, ws.name, ws.enabled ? "enabled" : "disabled", time(ws.createdAt)])
          ) + nextPage(cursor))
      )
    )
).pipe(Command.withDescription("List workspaces, by id."))

const workspace = Command.make("workspace").pipe(
  Command.withDescription("Create, update and list workspaces."),
  Command.withSubcommands([workspaceCreate, workspaceUpdate, workspaceList])
)

// --- root-key -----------------------------------------------------------------------------------

// ISO 8601 with a time zone: `Date.parse` alone reads "Dec 25", "-5" or local times, and rolls
// 2030-02-30 over to March.
const ISO_DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,3})?)?(Z|[+-]\d{2}:\d{2}))?$/

/**
 * `--expires-at`: epoch milliseconds, or an ISO 8601 date (UTC midnight) or date-time with a zone,
 * in the future; or `never` (`null`).
 */
const parseExpiresAt = (text: string) =>
  Effect.suspend((): Effect.Effect<number | null, CliFailure> => {
    const invalid = (why: string) =>
      Effect.fail(usageError(`--expires-at ${why}, got ${JSON.stringify(text)}`))
    if (/^\s*never\s*$/i.test(text)) return Effect.succeed(null)
    let ms: number
    if (/^\d+$/.test(text)) ms = Number(text)
    else {
      const match = ISO_DATE_TIME.exec(text)
      if (match === null || (match[4] !== undefined && match[7] === undefined)) {
        return invalid("must be epoch milliseconds, an ISO 8601 date-time with a time zone (2030-01-01T00:00:00Z), or never")
      }
      ms = Date.parse(match[4] === undefined ? `${text}T00:00:00Z` : text)
      // The calendar date as written: no roll-over of day 30 of February.
      const day = new Date(Date.parse(`${match[1]}-${match[2]}-${match[3]}T00:00:00Z`))
      if (Number.isNaN(day.getTime()) || day.getUTCDate() !== Number(match[3])) return invalid("is not a calendar date")
    }
    if (!Number.isSafeInteger(ms)) return invalid("is not a time")
    if (ms > MAX_EPOCH_MILLIS) return invalid(`is later than a date can be (${MAX_EPOCH_MILLIS} ms, +275760-09-13)`)
    if (ms <= Date.now()) return invalid("is in the past: the key would be expired at once")
    return Effect.succeed(ms)
  })

const keyState = (key: RootKeyInfo, now: number, workspaceDisabled = false): string =>
  key.deletedAt !== null
    ? "revoked"
    : workspaceDisabled
    ? "workspace disabled"
    : key.expiresAt !== null && key.expiresAt <= now
    ? "expired"
    : key.enabled
    ? "active"
    : "disabled"

/** The text `issue` and `update` print of a key: its id, name, workspace, permissions, state and expiry. */
const describeKey = (lead: string, key: RootKeyInfo): ReadonlyArray<string> => [
  `${lead} ${key.id} (${plain(key.name)}) for workspace ${key.workspaceId}`,
  `  permissions: ${plain(key.permissions.join(", "))}`,
  `  state: ${keyState(key, Date.now())}`,
  `  expires: ${key.expiresAt === null ? "never" : time(key.expiresAt)}`
]

const rootKeyIssue = Command.make(
  "issue",
  {
    workspace: workspaceFlag,
    permissions: Options.text("permission").pipe(
      Options.withDescription(
        "A permission, repeatable: identity.*.create_identity, identity.*.read_identity, identity.*.update_identity, " +
          "identity.*.delete_identity (or identity.<id>.…). Default: identity.*.update_identity."
      ),
      Options.repeated
    ),
    name: Options.text("name").pipe(Options.withDescription("Default: root key."), Options.optional),
    expiresAt: Options.text("expires-at").pipe(
      Options.withDescription("When it expires: epoch milliseconds or ISO 8601 (2030-01-01T00:00:00Z). Default: never."),
      Options.optional
    ),
    json,
    ...storageFlags
  },
  (flags) =>
    Effect.gen(function*() {
      // `never` is the default: no expiry.
      const expiresAt = Option.isSome(flags.expiresAt) ? (yield* parseExpiresAt(flags.expiresAt.value)) ?? undefined : undefined
      const issued = yield* withKit(flags, (kit) =>
        admin(
          kit,
          Admin.issueRootKey({
            workspaceId: flags.workspace,
            ...(flags.permissions.length > 0 ? { permissions: flags.permissions } : {}),
            ...(Option.isSome(flags.name) ? { name: flags.name.value } : {}),
            ...(expiresAt !== undefined ? { expiresAt } : {})
          })
        ))
      // The one place the CLI prints a key: the plaintext just issued, which is stored only as a hash.
      const key = plaintext(issued.key)
      const rootKey = withoutHash(issued.rootKey)
      yield* print(flags.json, { key, rootKey }, () =>
        [
          ...describeKey("Issued root key", rootKey).filter((line) => !line.startsWith("  state:")),
          "",
          "The key (it will not be shown again; only its SHA-256 hash is stored):",
          `  ${key}`
        ].join("\n"))
    })
).pipe(Command.withDescription("Issue a root key and print it once."))

const rootKeyList = Command.make(
  "list",
  { workspace: workspaceFlag, ...pageFlags, json, ...storageFlags },
  (flags) =>
    withKit(flags, (kit) =>
      Effect.all([
        admin(kit, Admin.listRootKeys(flags.workspace, pageQuery(flags))),
        // Its keys are answered 403 while the workspace is disabled: the state column says so.
        admin(
          kit,
          Effect.flatMap(IdentityStore, (store) => store.listWorkspaces({ limit: 1, cursor: flags.workspace }))
        ).pipe(Effect.map(({ items: [found] }) => found?.id === flags.workspace && !found.enabled))
      ])).pipe(
      Effect.flatMap(([page, workspaceDisabled]) => {
        const shown = { ...page, items: page.items.map(withoutHash) }
        const now = Date.now()
        return print(flags.json, shown, ({ cursor, items }) =>
          table(
            ["ID", "NAME", "STATE", "PERMISSIONS", "EXPIRES", "CREATED"],
            items.map((key) => [
              key.id,
              key.name,
              keyState(key, now, workspaceDisabled),
              key.permissions.join(","),
              key.expiresAt === null ? "never" : time(key.expiresAt),
              time(key.createdAt)
            ])
          ) + nextPage(cursor))
      })
    )
).pipe(Command.withDescription("List a workspace's root keys (never the keys themselves)."))

const rootKeyUpdate = Command.make(
  "update",
  {
    keyId: Args.text({ name: "keyId" }).pipe(Args.withDescription("The root key's id (key_…).")),
    enable: Options.boolean("enable").pipe(Options.withDescription("Enable it (a disabled key is answered 403).")),
    disable: Options.boolean("disable").pipe(Options.withDescription("Disable it: answered 403 until enabled again.")),
    permissions: Options.text("permission").pipe(
      Options.withDescription("Its permissions from now on (repeatable; they replace the old set)."),
      Options.repeated
    ),
    expiresAt: Options.text("expires-at").pipe(
      Options.withDescription("When it expires: epoch milliseconds, ISO 8601, or never."),
      Options.optional
    ),
    json,
    ...storageFlags
  },
  (flags) =>
    Effect.gen(function*() {
      if (flags.enable && flags.disable) return yield* usageError("--enable and --disable exclude each other")
      const expiresAt = Option.isNone(flags.expiresAt) ? undefined : yield* parseExpiresAt(flags.expiresAt.value)
      const patch = {
        ...(flags.enable || flags.disable ? { enabled: flags.enable } : {}),
        ...(flags.permissions.length > 0 ? { permissions: flags.permissions } : {}),
        ...(expiresAt !== undefined ? { expiresAt } : {})
      }
      if (Object.keys(patch).length === 0) {
        return yield* usageError("nothing to change: give --enable, --disable, --permission or --expires-at")
      }
      const updated = yield* withKit(flags, (kit) => admin(kit, Admin.updateRootKey(flags.keyId, patch)))
      if (updated === null) return yield* notFoundError(`no live root key with id ${flags.keyId} (none, or revoked)`)
      const shown = withoutHash(updated)
      yield* print(flags.json, shown, (key) => describeKey("Updated root key", key).join("\n"))
    })
).pipe(Command.withDescription("Enable or disable a root key, or change its permissions or expiry."))

const rootKeyRevoke = Command.make(
  "revoke",
  { keyId: Args.text({ name: "keyId" }).pipe(Args.withDescription("The root key's id (key_…).")), json, ...storageFlags },
  (flags) =>
    withKit(flags, (kit) => admin(kit, Admin.revokeRootKey(flags.keyId))).pipe(
      Effect.filterOrFail((revoked) => revoked, () => notFoundError(`no root key with id ${flags.keyId}`)),
      Effect.flatMap(() =>
        print(flags.json, { id: flags.keyId, revoked: true }, () =>
          `Revoked root key ${flags.keyId}: it is answered as unknown (401) from now on.`)
      )
    )
).pipe(Command.withDescription("Revoke a root key (a soft delete: requests with it get 401)."))

const rootKey = Command.make("root-key").pipe(
  Command.withDescription("Issue, list, update and revoke root keys."),
  Command.withSubcommands([rootKeyIssue, rootKeyList, rootKeyUpdate, rootKeyRevoke])
)

// --- identity -----------------------------------------------------------------------------------

const DURATION_UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/** `--ratelimit name=limit/duration[/auto]`; the duration in ms, or with a unit (`60s`, `1m`, `1h`, `1d`). */
const parseRatelimit = (text: string) =>
  Effect.suspend(() => {
    const match = /^(.+)=(-?\d+)\/(-?\d+)(ms|s|m|h|d)?(\/auto)?$/.exec(text)
    if (match === null || match[1] === undefined || match[2] === undefined || match[3] === undefined) {
      return Effect.fail(
        usageError(`--ratelimit must be name=limit/duration[/auto], e.g. requests=100/60000 or requests=100/1m/auto; got ${JSON.stringify(text)}`)
      )
    }
    return Effect.succeed({
      name: match[1],
      limit: Number(match[2]),
      duration: Number(match[3]) * (DURATION_UNITS[match[4] ?? "ms"] ?? 1),
      autoApply: match[5] !== undefined
    })
  })

/** `--meta`: a JSON object. */
const parseMeta = (text: string) =>
  Effect.suspend(() => {
    let value: unknown
    try {
      value = JSON.parse(text)
    } catch (error) {
      return Effect.fail(usageError(`--meta is not JSON (${error instanceof Error ? error.message : String(error)})`))
    }
    return isJsonObject(value)
      ? Effect.succeed<JsonObject>(value)
      : Effect.fail(usageError("--meta must be a JSON object, e.g. '{\"plan\":\"free\"}'"))
  })

const describeIdentity = (identity: Identity, lead = "Identity"): string =>
  [
    `${lead} ${identity.id} (externalId: ${identity.externalId}, workspace: ${identity.workspaceId})`,
    `  environment: ${plain(identity.environment)}`,
    `  meta: ${plain(JSON.stringify(identity.meta))}`,
    identity.ratelimits.length === 0 ? "  ratelimits: none" : "  ratelimits:",
    ...identity.ratelimits.map((rl) =>
      `    ${plain(rl.name)}: ${rl.limit} per ${rl.duration} ms${rl.autoApply ? ", auto-applied" : ""} (${rl.id})`
    ),
    `  created: ${time(identity.createdAt)}, updated: ${time(identity.updatedAt)}`
  ].join("\n")

const identityArg = Args.text({ name: "identity" }).pipe(Args.withDescription("The identity's id (id_…) or externalId."))

const identityCreate = Command.make(
  "create",
  {
    workspace: workspaceFlag,
    externalId: Options.text("external-id").pipe(Options.withDescription("Your id for it (a user, an org), unique among live identities.")),
    environment: Options.text("environment").pipe(Options.withDescription("Default: default."), Options.optional),
    meta: Options.text("meta").pipe(Options.withDescription("Metadata, a JSON object: '{\"plan\":\"free\"}'."), Options.optional),
    ratelimits: Options.text("ratelimit").pipe(
      Options.withDescription("A ratelimit, repeatable: name=limit/duration[/auto], the duration in ms or 60s, 1m, 1h, 1d."),
      Options.repeated
    ),
    json,
    ...storageFlags
  },
  (flags) =>
    Effect.gen(function*() {
      const meta = Option.isSome(flags.meta) ? yield* parseMeta(flags.meta.value) : undefined
      const ratelimits = yield* Effect.forEach(flags.ratelimits, parseRatelimit)
      const identity = yield* withKit(flags, (kit) =>
        admin(
          kit,
          Admin.createIdentity({
            workspaceId: flags.workspace,
            externalId: flags.externalId,
            ...(Option.isSome(flags.environment) ? { environment: flags.environment.value } : {}),
            ...(meta !== undefined ? { meta } : {}),
            ...(ratelimits.length > 0 ? { ratelimits } : {})
          })
        ))
      yield* print(flags.json, identity, (created) => describeIdentity(created, "Created identity"))
    })
).pipe(Command.withDescription("Create an identity with its metadata and ratelimits."))

const identityGet = Command.make(
  "get",
  { workspace: workspaceFlag, identity: identityArg, json, ...storageFlags },
  (flags) =>
    withKit(flags, (kit) => admin(kit, Admin.getIdentity(flags.workspace, flags.identity))).pipe(
      Effect.flatMap((identity) =>
        identity === null
          ? Effect.fail(notFoundError(`no identity ${flags.identity} in workspace ${flags.workspace}`))
          : print(flags.json, identity, (found) => describeIdentity(found))
      )
    )
).pipe(Command.withDescription("Show a live identity, by id or externalId."))

const identityList = Command.make(
  "list",
  {
    workspace: workspaceFlag,
    ...pageFlags,
    search: Options.text("search").pipe(Options.withDescription("Only identities whose id or externalId contains this."), Options.optional),
    json,
    ...storageFlags
  },
  (flags) =>
    withKit(flags, (kit) =>
      admin(
        kit,
        Admin.listIdentities(flags.workspace, {
          ...pageQuery(flags),
          ...(Option.isSome(flags.search) ? { search: flags.search.value } : {})
        })
      )).pipe(
        Effect.flatMap((page) =>
          print(flags.json, page, ({ cursor, items }) =>
            table(
              ["ID", "EXTERNAL ID", "RATELIMITS", "META"],
              items.map((identity) => [
                identity.id,
                identity.externalId,
                identity.ratelimits.map((rl) => `${rl.name}=${rl.limit}/${rl.duration}`).join(",") || "-",
                JSON.stringify(identity.meta)
              ])
            ) + nextPage(cursor))
        )
      )
).pipe(Command.withDescription("List a workspace's live identities, by id."))

const identityDelete = Command.make(
  "delete",
  { workspace: workspaceFlag, identity: identityArg, json, ...storageFlags },
  (flags) =>
    withKit(flags, (kit) => admin(kit, Admin.deleteIdentity(flags.workspace, flags.identity))).pipe(
      Effect.filterOrFail(
        (deleted) => deleted,
        () => notFoundError(`no identity ${flags.identity} in workspace ${flags.workspace}`)
      ),
      Effect.flatMap(() =>
        print(
          flags.json,
          { workspaceId: flags.workspace, identity: flags.identity, deleted: true },
          () => `Deleted identity ${flags.identity} from workspace ${flags.workspace}`
        )
      )
    )
).pipe(Command.withDescription("Delete (soft-delete) an identity, by id or externalId."))

const identity = Command.make("identity").pipe(
  Command.withDescription("Create, show, list and delete identities."),
  Command.withSubcommands([identityCreate, identityGet, identityList, identityDelete])
)

// --- audit --------------------------------------------------------------------------------------

const auditList = Command.make(
  "list",
  { workspace: workspaceFlag, ...pageFlags, json, ...storageFlags },
  (flags) =>
    withKit(flags, (kit) => admin(kit, Admin.listAuditLog(flags.workspace, pageQuery(flags)))).pipe(
      Effect.flatMap((page) =>
        print(flags.json, page, ({ cursor, items }) =>
          table(
            ["TIME", "EVENT", "ACTOR", "DISPLAY"],
            items.map((entry) => [time(entry.time), entry.event, `${entry.actorName} (${entry.actorId})`, entry.display])
          ) + nextPage(cursor))
      )
    )
).pipe(Command.withDescription("List a workspace's audit log, oldest first."))

const audit = Command.make("audit").pipe(
  Command.withDescription("Read the audit log the API writes."),
  Command.withSubcommands([auditList])
)

/** The admin commands, for the root command. */
export const adminCommands = [workspace, rootKey, identity, audit] as const
