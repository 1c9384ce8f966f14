/**
 * A workspace's whole audit log, oldest first, read page after page (`listAuditLog` answers one
 * page at a time): through a kit, the `Admin` Effect, or a store.
 */
import { Effect } from "effect"
import { Admin, type AuditLogEntry, type IdentityKit, type IdentityStoreService } from "identity-kit"

/** Every entry of the workspace, through `kit.admin.listAuditLog`. */
export const auditLogOf = async (kit: IdentityKit, workspaceId: string): Promise<ReadonlyArray<AuditLogEntry>> => {
  const entries: Array<AuditLogEntry> = []
  let cursor: string | undefined
  do {
    const page = await kit.admin.listAuditLog(workspaceId, cursor === undefined ? { limit: 1000 } : { limit: 1000, cursor })
    entries.push(...page.items)
    cursor = page.cursor
  } while (cursor !== undefined)
  return entries
}

/** Every entry of the workspace, through `Admin.listAuditLog`. */
export const adminAuditLog = (workspaceId: string) =>
  Effect.gen(function*() {
    const entries: Array<AuditLogEntry> = []
    let cursor: string | undefined
    do {
      const page = yield* Admin.listAuditLog(workspaceId, cursor === undefined ? { limit: 1000 } : { limit: 1000, cursor })
      entries.push(...page.items)
      cursor = page.cursor
    } while (cursor !== undefined)
    return entries
  })

/** Every entry of the workspace, through the store's `listAuditLog`. */
export const storeAuditLog = (store: IdentityStoreService, workspaceId: string) =>
  Effect.gen(function*() {
    const entries: Array<AuditLogEntry> = []
    let cursor: number | undefined
    do {
      const page = yield* store.listAuditLog(workspaceId, { limit: 1000, cursor })
      entries.push(...page.items)
      cursor = page.cursor
    } while (cursor !== undefined)
    return entries
  })
