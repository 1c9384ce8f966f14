/**
 * The replace-set rule of spec §5.2 and the audit entries of §5.3, shared by storage layers that
 * compute the change in JavaScript.
 */
import { newId } from "../domain/Ids.js"
import type { AuditLogEntry, IdentityUpdate, Ratelimit, RatelimitInput } from "../domain/Model.js"

/** What replacing an identity's ratelimit set does. */
export interface RatelimitPlan {
  /** The set after the change, in request order. */
  readonly result: ReadonlyArray<Ratelimit>
  readonly created: ReadonlyArray<Ratelimit>
  readonly updated: ReadonlyArray<Ratelimit>
  readonly deleted: ReadonlyArray<Ratelimit>
}

/** Kept names keep their id and get the new values; new names get a new id; the rest go. */
export const planRatelimitChanges = (
  current: ReadonlyArray<Ratelimit>,
  requested: ReadonlyArray<RatelimitInput>,
  now: number
): RatelimitPlan => {
  const existing = new Map(current.map((rl) => [rl.name, rl]))
  const created: Array<Ratelimit> = []
  const updated: Array<Ratelimit> = []
  const result = requested.map((input): Ratelimit => {
    const old = existing.get(input.name)
    const values = { name: input.name, limit: input.limit, duration: input.duration, autoApply: input.autoApply }
    if (old === undefined) {
      const rl = { id: newId("rl", now), ...values, createdAt: now, updatedAt: null }
      created.push(rl)
      return rl
    }
    const rl = { ...old, ...values, updatedAt: now }
    updated.push(rl)
    return rl
  })
  const kept = new Set(requested.map((rl) => rl.name))
  const deleted = current.filter((rl) => !kept.has(rl.name))
  return { result, created, updated, deleted }
}

/** The audit entries of one update: `identity.update`, then one per ratelimit touched. */
export const updateAuditEntries = (
  identity: { readonly id: string; readonly externalId: string },
  plan: RatelimitPlan | undefined,
  update: IdentityUpdate
): Array<AuditLogEntry> => {
  const base = {
    workspaceId: update.workspaceId,
    actorType: "rootkey" as const,
    actorId: update.audit.actorId,
    actorName: update.audit.actorName,
    remoteIp: update.audit.remoteIp,
    userAgent: update.audit.userAgent,
    time: update.now
  }
  const identityResource = { type: "identity" as const, id: identity.id, name: identity.externalId }
  const entries: Array<AuditLogEntry> = [{
    ...base,
    id: newId("log", update.now),
    event: "identity.update",
    display: `Updated identity ${identity.id}`,
    resources: [identityResource]
  }]
  if (plan === undefined) return entries
  const touched = [
    ...plan.created.map((rl) => ["create", "Created", rl] as const),
    ...plan.updated.map((rl) => ["update", "Updated", rl] as const),
    ...plan.deleted.map((rl) => ["delete", "Deleted", rl] as const)
  ]
  for (const [verb, display, rl] of touched) {
    entries.push({
      ...base,
      id: newId("log", update.now),
      event: `ratelimit.${verb}`,
      display: `${display} ratelimit ${rl.id}`,
      resources: [identityResource, { type: "ratelimit", id: rl.id, name: rl.name }]
    })
  }
  return entries
}
