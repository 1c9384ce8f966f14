-- The root-key lookup a request makes when the key is not cached (the statement of
-- IdentityStore.findRootKey in src/storage/sql.ts). run.ts puts it before the update script, so one
-- pgbench transaction is what one request costs the database without the cache: two round trips.
-- :hash comes from run.ts (pgbench -D hash=...).
SELECT k.id, k.workspace_id, k.hash, k.name, k.permissions::text AS permissions, k.enabled,
       k.expires_at, k.deleted_at, k.created_at,
       w.name AS workspace_name, w.enabled AS workspace_enabled, w.created_at AS workspace_created_at
FROM identity_kit_root_keys k
LEFT JOIN identity_kit_workspaces w ON w.id = k.workspace_id
WHERE k.hash = :hash;
