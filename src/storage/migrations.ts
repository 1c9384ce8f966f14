/**
 * The SQL schema of spec §6, as `@effect/sql` migrations recorded in `identity_kit_migrations`.
 * Plain PostgreSQL (13 or later: `gen_random_uuid` is core from 13), so the same migrations run on a
 * server and on PGlite. Every name is prefixed `identity_kit_` so the tables can live in a host
 * app's own database.
 *
 * Types, and why:
 * - times are `bigint` epoch milliseconds, as the domain model carries them;
 * - `limit` and `duration` are `bigint` (64-bit, spec §1/§6); they come back as JS numbers, which is
 *   exact because validation keeps them ≤ 2^53−1;
 * - `meta` (and the small JSON columns) are `json`, not `jsonb`: `json` keeps the text exactly as
 *   sent (key order, duplicate keys, number spelling) and accepts the escape `\u0000`, which `jsonb`
 *   rejects with an error. The package answers meta as stored, and client input must never turn into
 *   a 500. Unlike `text`, `json` still makes the database refuse anything that is not JSON.
 */
import * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import { Duration, Effect, Layer, Schedule } from "effect"
import { StorageError } from "../Errors.js"
import { causeMessages } from "../internal/log.js"
import { withSpan } from "../internal/trace.js"
import { hasSqlState } from "./internal.js"
import { rootKeyNotifyMigration } from "./notify.js"

/** The table where applied migrations are recorded. */
export const MIGRATIONS_TABLE = "identity_kit_migrations"

/** Name of the partial unique index behind "one live identity per (workspace, externalId)". */
export const LIVE_EXTERNAL_ID_INDEX = "identity_kit_identities_live_external_id"

const createTables = [
  `CREATE TABLE identity_kit_workspaces (
    id text PRIMARY KEY,
    name text NOT NULL,
    enabled boolean NOT NULL DEFAULT true,
    created_at bigint NOT NULL
  )`,
  // No foreign key to workspaces: a key whose workspace is gone must still be found (spec §4 A9).
  `CREATE TABLE identity_kit_root_keys (
    id text PRIMARY KEY,
    workspace_id text NOT NULL,
    hash text NOT NULL CONSTRAINT identity_kit_root_keys_hash_key UNIQUE,
    name text NOT NULL,
    permissions json NOT NULL DEFAULT '[]',
    enabled boolean NOT NULL DEFAULT true,
    expires_at bigint,
    deleted_at bigint,
    created_at bigint NOT NULL
  )`,
  `CREATE TABLE identity_kit_identities (
    id text PRIMARY KEY,
    workspace_id text NOT NULL,
    external_id text NOT NULL,
    environment text NOT NULL DEFAULT 'default',
    meta json NOT NULL DEFAULT '{}',
    deleted boolean NOT NULL DEFAULT false,
    created_at bigint NOT NULL,
    updated_at bigint
  )`,
  // Soft-deleted identities keep their externalId, so uniqueness only holds among live ones.
  `CREATE UNIQUE INDEX ${LIVE_EXTERNAL_ID_INDEX}
    ON identity_kit_identities (workspace_id, external_id) WHERE NOT deleted`,
  // `position`: the item's index in the set that last wrote it, so deletions are audited in the
  // order the set was given (as the memory layer does).
  `CREATE TABLE identity_kit_ratelimits (
    id text PRIMARY KEY,
    workspace_id text NOT NULL,
    identity_id text NOT NULL REFERENCES identity_kit_identities (id),
    name text NOT NULL,
    "limit" bigint NOT NULL,
    duration bigint NOT NULL,
    auto_apply boolean NOT NULL DEFAULT false,
    position integer NOT NULL DEFAULT 0,
    created_at bigint NOT NULL,
    updated_at bigint,
    CONSTRAINT identity_kit_ratelimits_identity_name UNIQUE (identity_id, name)
  )`,
  // `seq` orders entries oldest first; entries of one write share their `time`.
  `CREATE TABLE identity_kit_audit_log (
    id text PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    workspace_id text NOT NULL,
    event text NOT NULL,
    display text NOT NULL,
    actor_type text NOT NULL,
    actor_id text NOT NULL,
    actor_name text NOT NULL,
    remote_ip text NOT NULL,
    user_agent text NOT NULL,
    time bigint NOT NULL,
    resources json NOT NULL
  )`,
  `CREATE INDEX identity_kit_audit_log_workspace_seq ON identity_kit_audit_log (workspace_id, seq)`
]

// Ids in the format of `newId` (src/domain/Ids.ts): 4 bytes of seconds since 1,700,000,000, then 8
// random bytes, base58. The random bytes come from a v4 UUID (a strong random source in core
// PostgreSQL), taken where no version or variant bits live: byte 0 and bytes 9–15.
const newIdFunction = `CREATE OR REPLACE FUNCTION identity_kit_new_id(p_prefix text, p_now bigint)
RETURNS text LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
  alphabet constant text := '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';
  random_bytes bytea := uuid_send(gen_random_uuid());
  bytes bytea;
  value numeric := 0;
  encoded text := '';
BEGIN
  bytes := decode(lpad(to_hex(greatest(0, p_now / 1000 - 1700000000) % 4294967296), 8, '0'), 'hex')
    || substring(random_bytes FROM 1 FOR 1) || substring(random_bytes FROM 10 FOR 7);
  FOR i IN 0..11 LOOP
    value := value * 256 + get_byte(bytes, i);
  END LOOP;
  WHILE value > 0 LOOP
    encoded := substr(alphabet, (value % 58)::integer + 1, 1) || encoded;
    value := div(value, 58);
  END LOOP;
  FOR i IN 0..11 LOOP
    EXIT WHEN get_byte(bytes, i) <> 0;
    encoded := '1' || encoded;
  END LOOP;
  RETURN p_prefix || '_' || encoded;
END
$fn$`

/**
 * The write of spec §5 in one call, so one round trip and one (implicit) transaction.
 *
 * Why a function and not one CTE statement: a statement's snapshot is taken when it starts, before
 * it waits for the row lock, so after the wait it cannot see ratelimits a concurrent update just
 * committed (it would miss deleting them, or collide on their names). In a VOLATILE plpgsql function
 * each statement takes a fresh snapshot, so everything after the `FOR UPDATE` sees the state left by
 * whoever held the lock before. Concurrent updates of one identity queue on that one row lock; they
 * never lock anything else first, so they cannot deadlock.
 *
 * Returns no row when there is no live identity with this id or externalId in the workspace (an id
 * match wins). `p_meta` NULL keeps the meta; `p_ratelimits` NULL keeps the set, else it is a JSON
 * array of `{ name, limit, duration, autoApply }` with unique names that replaces the set.
 */
const updateIdentityFunction = `CREATE OR REPLACE FUNCTION identity_kit_update_identity(
  p_workspace_id text,
  p_identity text,
  p_meta json,
  p_ratelimits json,
  p_actor_id text,
  p_actor_name text,
  p_remote_ip text,
  p_user_agent text,
  p_now bigint
) RETURNS TABLE (
  id text, external_id text, environment text, meta text, created_at bigint, updated_at bigint, ratelimits text
) LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
  v_id text;
  v_external_id text;
BEGIN
  SELECT i.id, i.external_id INTO v_id, v_external_id
  FROM identity_kit_identities i
  WHERE i.workspace_id = p_workspace_id AND NOT i.deleted AND (i.id = p_identity OR i.external_id = p_identity)
  ORDER BY i.id = p_identity DESC
  LIMIT 1
  FOR UPDATE;
  IF NOT FOUND THEN
    RETURN;
  END IF;

  -- One statement for the whole change: its CTEs share one snapshot (taken after the lock), so the
  -- delete, update and insert each see exactly the rows that existed before this write.
  WITH req AS (
    SELECT e.ord::integer - 1 AS ord,
           e.value->>'name' AS name,
           (e.value->>'limit')::bigint AS lim,
           (e.value->>'duration')::bigint AS dur,
           coalesce((e.value->>'autoApply')::boolean, false) AS auto_apply
    FROM json_array_elements(p_ratelimits) WITH ORDINALITY AS e(value, ord)
  ),
  meta_update AS (
    UPDATE identity_kit_identities SET meta = p_meta, updated_at = p_now
    WHERE id = v_id AND p_meta IS NOT NULL
  ),
  deleted AS (
    DELETE FROM identity_kit_ratelimits r
    WHERE p_ratelimits IS NOT NULL AND r.identity_id = v_id
      AND NOT EXISTS (SELECT 1 FROM req WHERE req.name = r.name)
    RETURNING r.id, r.name, r.position
  ),
  updated AS (
    UPDATE identity_kit_ratelimits r
    SET "limit" = req.lim, duration = req.dur, auto_apply = req.auto_apply, position = req.ord, updated_at = p_now
    FROM req
    WHERE r.identity_id = v_id AND r.name = req.name
    RETURNING r.id, r.name, req.ord
  ),
  created AS (
    INSERT INTO identity_kit_ratelimits
      (id, workspace_id, identity_id, name, "limit", duration, auto_apply, position, created_at, updated_at)
    SELECT identity_kit_new_id('rl', p_now), p_workspace_id, v_id, req.name, req.lim, req.dur, req.auto_apply,
           req.ord, p_now, NULL
    FROM req
    WHERE NOT EXISTS (SELECT 1 FROM identity_kit_ratelimits r WHERE r.identity_id = v_id AND r.name = req.name)
    RETURNING id, name, position
  ),
  -- Audit entries in the memory layer's order: the identity, then created, updated, deleted.
  entries AS (
    SELECT 0 AS grp, 0::bigint AS ord, 'identity.update' AS event, 'Updated identity ' || v_id AS display,
           NULL::text AS rl_id, NULL::text AS rl_name
    UNION ALL
    SELECT 1, c.position, 'ratelimit.create', 'Created ratelimit ' || c.id, c.id, c.name FROM created c
    UNION ALL
    SELECT 2, u.ord, 'ratelimit.update', 'Updated ratelimit ' || u.id, u.id, u.name FROM updated u
    UNION ALL
    SELECT 3, row_number() OVER (ORDER BY d.position, d.name COLLATE "C"), 'ratelimit.delete',
           'Deleted ratelimit ' || d.id, d.id, d.name
    FROM deleted d
  )
  INSERT INTO identity_kit_audit_log
    (id, workspace_id, event, display, actor_type, actor_id, actor_name, remote_ip, user_agent, time, resources)
  SELECT identity_kit_new_id('log', p_now), p_workspace_id, e.event, e.display, 'rootkey', p_actor_id, p_actor_name,
         p_remote_ip, p_user_agent, p_now,
         CASE WHEN e.rl_id IS NULL
           THEN json_build_array(json_build_object('type', 'identity', 'id', v_id, 'name', v_external_id))
           ELSE json_build_array(
             json_build_object('type', 'identity', 'id', v_id, 'name', v_external_id),
             json_build_object('type', 'ratelimit', 'id', e.rl_id, 'name', e.rl_name))
         END
  FROM entries e
  ORDER BY e.grp, e.ord;

  RETURN QUERY
  SELECT i.id, i.external_id, i.environment, i.meta::text, i.created_at, i.updated_at,
         (SELECT coalesce(json_agg(json_build_object(
                   'id', r.id, 'name', r.name, 'limit', r."limit", 'duration', r.duration,
                   'autoApply', r.auto_apply, 'createdAt', r.created_at, 'updatedAt', r.updated_at)
                 ORDER BY r.name COLLATE "C"), '[]'::json)::text
          FROM identity_kit_ratelimits r WHERE r.identity_id = i.id)
  FROM identity_kit_identities i
  WHERE i.id = v_id;
END
$fn$`

/**
 * Version 2 of the write (migration 0003), what this version of the package calls. Version 1 stays
 * as it was: instances of the previous version keep calling it during a rolling upgrade.
 *
 * The same write, with the same properties (one call, the identity locked `FOR UPDATE`, the change
 * in one statement whose snapshot is taken after the lock, audit entries in the same order), and:
 * - the ids come from the caller (`newId` in Node; base58 in plpgsql cost ~31 µs an id):
 *   `p_rl_ids[i]` is the id of request item i when its name is new, `p_log_ids` the audit entries'
 *   ids in order. Entries beyond `p_log_ids` (more deletions than the caller planned for) and items
 *   beyond `p_rl_ids` get an id from `identity_kit_new_id`;
 * - it answers only what `IdentityStore.updateIdentity` needs: `meta` is NULL when `p_meta` was
 *   given (the caller has it), and the ratelimits are those the change returned (created and
 *   updated) rather than a second read of the table, or the stored set when `p_ratelimits` is NULL.
 *   The identity row comes from the locking read, so no final read of either table.
 */
const updateIdentityV2Function = `CREATE OR REPLACE FUNCTION identity_kit_update_identity_v2(
  p_workspace_id text,
  p_identity text,
  p_meta json,
  p_ratelimits json,
  p_rl_ids text[],
  p_log_ids text[],
  p_actor_id text,
  p_actor_name text,
  p_remote_ip text,
  p_user_agent text,
  p_now bigint
) RETURNS TABLE (
  id text, external_id text, environment text, meta text, created_at bigint, updated_at bigint, ratelimits text
) LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
  v_id text;
  v_external_id text;
BEGIN
  -- The locking read also answers the identity's fields: a concurrent writer that held the lock
  -- committed before this read returns, and under READ COMMITTED FOR UPDATE returns its version.
  SELECT i.id, i.external_id, i.environment, CASE WHEN p_meta IS NULL THEN i.meta::text END, i.created_at,
         CASE WHEN p_meta IS NULL THEN i.updated_at ELSE p_now END
  INTO v_id, v_external_id, environment, meta, created_at, updated_at
  FROM identity_kit_identities i
  WHERE i.workspace_id = p_workspace_id AND NOT i.deleted AND (i.id = p_identity OR i.external_id = p_identity)
  ORDER BY i.id = p_identity DESC
  LIMIT 1
  FOR UPDATE;
  IF NOT FOUND THEN
    RETURN;
  END IF;

  -- One statement for the whole change: its CTEs share one snapshot (taken after the lock), so the
  -- delete, update and insert each see exactly the rows that existed before this write.
  -- Data-modifying CTEs always run to completion, read or not.
  WITH req AS (
    SELECT e.ord::integer - 1 AS ord,
           e.value->>'name' AS name,
           (e.value->>'limit')::bigint AS lim,
           (e.value->>'duration')::bigint AS dur,
           coalesce((e.value->>'autoApply')::boolean, false) AS auto_apply,
           p_rl_ids[e.ord::integer] AS new_id
    FROM json_array_elements(p_ratelimits) WITH ORDINALITY AS e(value, ord)
  ),
  meta_update AS (
    UPDATE identity_kit_identities SET meta = p_meta, updated_at = p_now
    WHERE id = v_id AND p_meta IS NOT NULL
  ),
  deleted AS (
    DELETE FROM identity_kit_ratelimits r
    WHERE p_ratelimits IS NOT NULL AND r.identity_id = v_id
      AND NOT EXISTS (SELECT 1 FROM req WHERE req.name = r.name)
    RETURNING r.id, r.name, r.position
  ),
  updated AS (
    UPDATE identity_kit_ratelimits r
    SET "limit" = req.lim, duration = req.dur, auto_apply = req.auto_apply, position = req.ord, updated_at = p_now
    FROM req
    WHERE r.identity_id = v_id AND r.name = req.name
    RETURNING r.id, r.name, req.ord, r."limit", r.duration, r.auto_apply, r.created_at, r.updated_at
  ),
  created AS (
    INSERT INTO identity_kit_ratelimits
      (id, workspace_id, identity_id, name, "limit", duration, auto_apply, position, created_at, updated_at)
    SELECT coalesce(req.new_id, identity_kit_new_id('rl', p_now)), p_workspace_id, v_id, req.name, req.lim, req.dur,
           req.auto_apply, req.ord, p_now, NULL
    FROM req
    WHERE NOT EXISTS (SELECT 1 FROM identity_kit_ratelimits r WHERE r.identity_id = v_id AND r.name = req.name)
    RETURNING id, name, position, "limit", duration, auto_apply, created_at, updated_at
  ),
  -- Audit entries in the memory layer's order: the identity, then created, updated, deleted;
  -- n numbers them in that order, to pick their id from p_log_ids.
  entries AS (
    SELECT e.*, row_number() OVER (ORDER BY e.grp, e.ord)::integer AS n
    FROM (
      SELECT 0 AS grp, 0::bigint AS ord, 'identity.update' AS event, 'Updated identity ' || v_id AS display,
             NULL::text AS rl_id, NULL::text AS rl_name
      UNION ALL
      SELECT 1, c.position, 'ratelimit.create', 'Created ratelimit ' || c.id, c.id, c.name FROM created c
      UNION ALL
      SELECT 2, u.ord, 'ratelimit.update', 'Updated ratelimit ' || u.id, u.id, u.name FROM updated u
      UNION ALL
      SELECT 3, row_number() OVER (ORDER BY d.position, d.name COLLATE "C"), 'ratelimit.delete',
             'Deleted ratelimit ' || d.id, d.id, d.name
      FROM deleted d
    ) e
  ),
  logged AS (
    INSERT INTO identity_kit_audit_log
      (id, workspace_id, event, display, actor_type, actor_id, actor_name, remote_ip, user_agent, time, resources)
    SELECT coalesce(p_log_ids[e.n], identity_kit_new_id('log', p_now)), p_workspace_id, e.event, e.display, 'rootkey',
           p_actor_id, p_actor_name, p_remote_ip, p_user_agent, p_now,
           CASE WHEN e.rl_id IS NULL
             THEN json_build_array(json_build_object('type', 'identity', 'id', v_id, 'name', v_external_id))
             ELSE json_build_array(
               json_build_object('type', 'identity', 'id', v_id, 'name', v_external_id),
               json_build_object('type', 'ratelimit', 'id', e.rl_id, 'name', e.rl_name))
           END
    FROM entries e
    ORDER BY e.n
  )
  -- The set after the change: with p_ratelimits, exactly the rows created and updated; without,
  -- the stored set (this snapshot is after the lock, and nothing here touched ratelimits).
  SELECT CASE WHEN p_ratelimits IS NULL THEN (
           SELECT coalesce(json_agg(json_build_object(
                    'id', r.id, 'name', r.name, 'limit', r."limit", 'duration', r.duration,
                    'autoApply', r.auto_apply, 'createdAt', r.created_at, 'updatedAt', r.updated_at)
                  ORDER BY r.name COLLATE "C"), '[]'::json)::text
           FROM identity_kit_ratelimits r WHERE r.identity_id = v_id)
         ELSE (
           SELECT coalesce(json_agg(json_build_object(
                    'id', s.id, 'name', s.name, 'limit', s."limit", 'duration', s.duration,
                    'autoApply', s.auto_apply, 'createdAt', s.created_at, 'updatedAt', s.updated_at)
                  ORDER BY s.name COLLATE "C"), '[]'::json)::text
           FROM (
             SELECT c.id, c.name, c."limit", c.duration, c.auto_apply, c.created_at, c.updated_at FROM created c
             UNION ALL
             SELECT u.id, u.name, u."limit", u.duration, u.auto_apply, u.created_at, u.updated_at FROM updated u
           ) s)
         END
  INTO ratelimits;

  id := v_id;
  external_id := v_external_id;
  RETURN NEXT;
END
$fn$`

/**
 * Version 3 of the write (migration 0006). Versions 1 and 2 stay as they were: instances of
 * earlier versions keep calling them during a rolling upgrade. Version 4 (migration 0008) is made
 * from this text, so editing it would change an applied migration twice over.
 *
 * The same write with the same properties as version 2 (one call, the identity locked `FOR UPDATE`,
 * the change in statements whose snapshots are taken after the lock, audit entries in the same
 * order with the same fields, ids from the caller with `identity_kit_new_id` as the fallback, the
 * same answer), at less CPU for PostgreSQL. Measured with pgbench on the bench volume, most of
 * version 2's time went to starting its executor plan (~40 nodes: JSON parsing, three window/sort
 * pairs, an anti-join per CTE) rather than to the rows. So:
 * - the set comes as four parallel arrays (`p_rl_names`, `p_rl_limits`, `p_rl_durations`,
 *   `p_rl_auto_apply`; all NULL keeps the set) read with `unnest`, not JSON parsed and cast;
 * - kept and new names are written by one `INSERT … ON CONFLICT (identity_id, name) DO UPDATE`
 *   rather than an UPDATE joined to the request plus an INSERT … WHERE NOT EXISTS. A created row
 *   is told from an updated one by `updated_at`: NULL only on a row created now (an update sets it);
 * - one window orders the audit entries (the deletions by position, then name, as before);
 * - the `resources` JSON is concatenated from `to_json` of each value, in `json_build_array` /
 *   `json_build_object`'s exact spelling, so the stored text does not change;
 * - meta is written by its own small UPDATE only when given, and without a ratelimit set the
 *   function takes a short path (one audit row, the stored set);
 * - the answered set is not ordered here (the caller sorts it by name).
 * Why separate statements are safe where version 1 needed one: every writer of an identity's
 * ratelimits holds its row lock, taken before any of them, so nothing changes the set between
 * these statements; each still takes its snapshot after the lock.
 */
const updateIdentityV3Function = `CREATE OR REPLACE FUNCTION identity_kit_update_identity_v3(
  p_workspace_id text,
  p_identity text,
  p_meta json,
  p_rl_names text[],
  p_rl_limits bigint[],
  p_rl_durations bigint[],
  p_rl_auto_apply boolean[],
  p_rl_ids text[],
  p_log_ids text[],
  p_actor_id text,
  p_actor_name text,
  p_remote_ip text,
  p_user_agent text,
  p_now bigint
) RETURNS TABLE (
  id text, external_id text, environment text, meta text, created_at bigint, updated_at bigint, ratelimits text
) LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
  v_id text;
  v_external_id text;
  v_identity_resource text;
BEGIN
  -- As version 2: the locking read also answers the identity's fields.
  SELECT i.id, i.external_id, i.environment, CASE WHEN p_meta IS NULL THEN i.meta::text END, i.created_at,
         CASE WHEN p_meta IS NULL THEN i.updated_at ELSE p_now END
  INTO v_id, v_external_id, environment, meta, created_at, updated_at
  FROM identity_kit_identities i
  WHERE i.workspace_id = p_workspace_id AND NOT i.deleted AND (i.id = p_identity OR i.external_id = p_identity)
  ORDER BY i.id = p_identity DESC
  LIMIT 1
  FOR UPDATE;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  id := v_id;
  external_id := v_external_id;

  IF p_meta IS NOT NULL THEN
    UPDATE identity_kit_identities i SET meta = p_meta, updated_at = p_now WHERE i.id = v_id;
  ELSIF current_setting('transaction_isolation') <> 'read committed' THEN
    -- Under REPEATABLE READ or SERIALIZABLE a waiting writer's snapshot predates its lock wait. A
    -- row that was only locked lets it through with that stale snapshot (it would replace the set
    -- it saw, leaving this call's ratelimits behind); a row that was written makes it fail with a
    -- serialization failure instead, which the caller retries with a fresh snapshot.
    UPDATE identity_kit_identities i SET updated_at = i.updated_at WHERE i.id = v_id;
  END IF;

  -- json_build_object's spelling of the identity resource; to_json quotes and escapes a text.
  v_identity_resource := '{"type" : "identity", "id" : ' || to_json(v_id)::text || ', "name" : ' || to_json(v_external_id)::text || '}';

  IF p_rl_names IS NULL THEN
    INSERT INTO identity_kit_audit_log
      (id, workspace_id, event, display, actor_type, actor_id, actor_name, remote_ip, user_agent, time, resources)
    VALUES (coalesce(p_log_ids[1], identity_kit_new_id('log', p_now)), p_workspace_id, 'identity.update', 'Updated identity ' || v_id,
            'rootkey', p_actor_id, p_actor_name, p_remote_ip, p_user_agent, p_now, ('[' || v_identity_resource || ']')::json);
    SELECT coalesce(json_agg(json_build_object(
             'id', r.id, 'name', r.name, 'limit', r."limit", 'duration', r.duration,
             'autoApply', r.auto_apply, 'createdAt', r.created_at, 'updatedAt', r.updated_at)), '[]'::json)::text
    INTO ratelimits
    FROM identity_kit_ratelimits r WHERE r.identity_id = v_id;
    RETURN NEXT;
    RETURN;
  END IF;

  -- Names are unique in the request, so no row is written twice. Data-modifying CTEs run to the end.
  WITH deleted AS (
    DELETE FROM identity_kit_ratelimits r
    WHERE r.identity_id = v_id AND r.name <> ALL (p_rl_names)
    RETURNING r.id, r.name, r.position
  ),
  written AS (
    INSERT INTO identity_kit_ratelimits AS r
      (id, workspace_id, identity_id, name, "limit", duration, auto_apply, position, created_at, updated_at)
    SELECT coalesce(p_rl_ids[q.ord], identity_kit_new_id('rl', p_now)), p_workspace_id, v_id, q.name, q.lim, q.dur,
           coalesce(q.auto_apply, false), q.ord::integer - 1, p_now, NULL
    FROM unnest(p_rl_names, p_rl_limits, p_rl_durations, p_rl_auto_apply) WITH ORDINALITY AS q(name, lim, dur, auto_apply, ord)
    ON CONFLICT (identity_id, name) DO UPDATE
    SET "limit" = excluded."limit", duration = excluded.duration, auto_apply = excluded.auto_apply,
        position = excluded.position, updated_at = p_now
    RETURNING r.id, r.name, r.position, r."limit", r.duration, r.auto_apply, r.created_at, r.updated_at
  ),
  -- The identity, then created, updated (by position) and deleted (by position, then name): n numbers
  -- them in that order to pick their id from p_log_ids. updated_at is NULL only on a created row.
  entries AS (
    SELECT e.*, row_number() OVER (ORDER BY e.grp, e.ord, e.rl_name COLLATE "C")::integer AS n
    FROM (
      SELECT 0 AS grp, 0 AS ord, 'identity.update' AS event, 'Updated identity ' || v_id AS display,
             NULL::text AS rl_id, NULL::text AS rl_name
      UNION ALL
      SELECT CASE WHEN w.updated_at IS NULL THEN 1 ELSE 2 END, w.position,
             CASE WHEN w.updated_at IS NULL THEN 'ratelimit.create' ELSE 'ratelimit.update' END,
             CASE WHEN w.updated_at IS NULL THEN 'Created ratelimit ' ELSE 'Updated ratelimit ' END || w.id, w.id, w.name
      FROM written w
      UNION ALL
      SELECT 3, d.position, 'ratelimit.delete',
             'Deleted ratelimit ' || d.id, d.id, d.name
      FROM deleted d
    ) e
  ),
  logged AS (
    INSERT INTO identity_kit_audit_log
      (id, workspace_id, event, display, actor_type, actor_id, actor_name, remote_ip, user_agent, time, resources)
    SELECT coalesce(p_log_ids[e.n], identity_kit_new_id('log', p_now)), p_workspace_id, e.event, e.display, 'rootkey',
           p_actor_id, p_actor_name, p_remote_ip, p_user_agent, p_now,
           (CASE WHEN e.rl_id IS NULL THEN '[' || v_identity_resource || ']'
             ELSE '[' || v_identity_resource || ', {"type" : "ratelimit", "id" : ' || to_json(e.rl_id)::text
                  || ', "name" : ' || to_json(e.rl_name)::text || '}]'
           END)::json
    FROM entries e
    ORDER BY e.grp, e.ord, e.rl_name COLLATE "C"
  )
  -- The set after the change is exactly the rows written.
  SELECT coalesce(json_agg(json_build_object(
           'id', w.id, 'name', w.name, 'limit', w."limit", 'duration', w.duration,
           'autoApply', w.auto_apply, 'createdAt', w.created_at, 'updatedAt', w.updated_at)), '[]'::json)::text
  INTO ratelimits
  FROM written w;
  RETURN NEXT;
END
$fn$`

/** Name of the index behind `listIdentities`' pages: a workspace's live ids in byte order. */
export const LIVE_ID_INDEX = "identity_kit_identities_live_workspace_id"

/**
 * `listIdentities` (migration 0005) reads a page as `workspace_id = $1 AND NOT deleted AND
 * id COLLATE "C" >= $cursor ORDER BY id COLLATE "C" LIMIT n`: this index answers it with an index
 * scan that stops after n rows, whatever the workspace's size and the database's default collation.
 * (Plain CREATE INDEX: migrations run in a transaction, where CONCURRENTLY is refused; it holds off
 * writes to the table while it is built.)
 */
const liveIdIndex = `CREATE INDEX IF NOT EXISTS ${LIVE_ID_INDEX}
  ON identity_kit_identities (workspace_id, id COLLATE "C") WHERE NOT deleted`

/**
 * The soft delete of identities contract §4 in one call (migration 0005; version 2, made from this
 * text, in 0008), so one round trip and one (implicit) transaction. Answers whether a live identity with this id or externalId (an id match
 * wins) was found in the workspace.
 *
 * 1. Find it (no lock): none → false.
 * 2. `UPDATE … SET deleted = true WHERE id = v_id AND NOT deleted` (`updated_at` untouched, as the
 *    reference). Under READ COMMITTED a concurrent delete of the same row makes it wait, then find
 *    the row deleted and change nothing: that delete won, so answer true and write no audit
 *    (Decision 2). A concurrent updateIdentity holding the row lock makes it wait too, then go on.
 * 3. The audit entries (`p_log_ids` NULL: none), `identity.delete` then one `ratelimit.delete` per
 *    ratelimit (rows kept) in the order the set was last given. Why a function and not one CTE
 *    statement: this statement takes a fresh snapshot after 2 holds the row lock, so it lists the
 *    ratelimits a concurrent update just committed, not those of the snapshot before the wait.
 *    Entries beyond `p_log_ids` get an id from `identity_kit_new_id`.
 *
 * Under REPEATABLE READ the wait in 2 ends in a serialization failure instead; the caller runs the
 * call again, which then finds nothing live (false).
 */
const deleteIdentityFunction = `CREATE OR REPLACE FUNCTION identity_kit_delete_identity_v1(
  p_workspace_id text,
  p_identity text,
  p_log_ids text[],
  p_actor_id text,
  p_actor_name text,
  p_remote_ip text,
  p_user_agent text,
  p_now bigint
) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
  v_id text;
  v_external_id text;
BEGIN
  SELECT i.id, i.external_id INTO v_id, v_external_id
  FROM identity_kit_identities i
  WHERE i.workspace_id = p_workspace_id AND NOT i.deleted AND (i.id = p_identity OR i.external_id = p_identity)
  ORDER BY i.id = p_identity DESC
  LIMIT 1;
  IF NOT FOUND THEN
    RETURN false;
  END IF;

  UPDATE identity_kit_identities u SET deleted = true WHERE u.id = v_id AND NOT u.deleted;
  IF NOT FOUND THEN
    RETURN true;
  END IF;

  IF p_log_ids IS NOT NULL THEN
    INSERT INTO identity_kit_audit_log
      (id, workspace_id, event, display, actor_type, actor_id, actor_name, remote_ip, user_agent, time, resources)
    SELECT coalesce(p_log_ids[e.n], identity_kit_new_id('log', p_now)), p_workspace_id, e.event, e.display, 'rootkey',
           p_actor_id, p_actor_name, p_remote_ip, p_user_agent, p_now,
           CASE WHEN e.rl_id IS NULL
             THEN json_build_array(json_build_object('type', 'identity', 'id', v_id, 'name', v_external_id))
             ELSE json_build_array(
               json_build_object('type', 'identity', 'id', v_id, 'name', v_external_id),
               json_build_object('type', 'ratelimit', 'id', e.rl_id, 'name', e.rl_name))
           END
    FROM (
      SELECT 1 AS n, 'identity.delete' AS event, 'Deleted identity ' || v_id || '.' AS display,
             NULL::text AS rl_id, NULL::text AS rl_name
      UNION ALL
      SELECT (1 + row_number() OVER (ORDER BY r.position, r.name COLLATE "C"))::integer, 'ratelimit.delete',
             'Deleted ratelimit ' || r.id || '.', r.id, r.name
      FROM identity_kit_ratelimits r
      WHERE r.identity_id = v_id
    ) e
    ORDER BY e.n;
  END IF;
  RETURN true;
END
$fn$`

/**
 * `text` with each `[from, to, count]` applied in turn: `from` must occur exactly `count` times,
 * else this throws when the module loads (so in every test), rather than a function that misses
 * a spot. Used to make a new version of a function from the previous one's text, which is as
 * immutable as the migration that installed it.
 */
const derive = (
  text: string,
  replacements: ReadonlyArray<readonly [from: string, to: string, count: number]>
): string =>
  replacements.reduce((derived, [from, to, count]) => {
    const parts = derived.split(from)
    if (parts.length - 1 !== count) {
      throw new Error(`identity-kit migrations: expected ${count} of ${JSON.stringify(from)}, found ${parts.length - 1}`)
    }
    return parts.join(to)
  }, text)

/**
 * The request ids of audit entries (migration 0008): the kit's `req_…` and the host's own. `''`
 * by default, so the rows written before, and those instances of earlier versions write during a
 * rolling upgrade (through the functions and statement they know), read as "none given". A
 * constant default is only recorded in the catalog (PostgreSQL 11 and later): the table is not
 * rewritten, so the ALTER's exclusive lock lasts as long as the migration's transaction (the two
 * functions below), after the writes in flight on the table end.
 */
const auditRequestIdColumns = `ALTER TABLE identity_kit_audit_log
  ADD COLUMN request_id text NOT NULL DEFAULT '',
  ADD COLUMN host_request_id text NOT NULL DEFAULT ''`

// The audit parameters a function takes, and what its audit inserts name and write, before and
// after the request ids.
const auditSignature = [
  "  p_user_agent text,\n  p_now bigint",
  "  p_user_agent text,\n  p_request_id text,\n  p_host_request_id text,\n  p_now bigint"
] as const
const auditColumns = [
  "remote_ip, user_agent, time, resources)",
  "remote_ip, user_agent, request_id, host_request_id, time, resources)"
] as const
const auditValues = [
  "p_remote_ip, p_user_agent, p_now",
  "p_remote_ip, p_user_agent, p_request_id, p_host_request_id, p_now"
] as const

/**
 * Version 4 of the write (migration 0008), what this version of the package calls: version 3 with
 * `p_request_id` and `p_host_request_id` (after `p_user_agent`) written into each audit entry.
 * Nothing else changes: the same statements, locks and plans. Versions 1–3 stay as they were for
 * instances of earlier versions.
 */
const updateIdentityV4Function = derive(updateIdentityV3Function, [
  ["FUNCTION identity_kit_update_identity_v3(", "FUNCTION identity_kit_update_identity_v4(", 1],
  [...auditSignature, 1],
  // The short path's one entry, and the entries of a new set.
  [...auditColumns, 2],
  [...auditValues, 2]
])

/** Version 2 of the soft delete (migration 0008): version 1 with the request ids, as `updateIdentityV4Function`. */
const deleteIdentityV2Function = derive(deleteIdentityFunction, [
  ["FUNCTION identity_kit_delete_identity_v1(", "FUNCTION identity_kit_delete_identity_v2(", 1],
  [...auditSignature, 1],
  [...auditColumns, 1],
  [...auditValues, 1]
])

/** Name of the foreign key root keys → workspaces (migration 0009). */
export const ROOT_KEYS_WORKSPACE_FK = "identity_kit_root_keys_workspace_fk"
/** Name of the foreign key identities → workspaces (migration 0009). */
export const IDENTITIES_WORKSPACE_FK = "identity_kit_identities_workspace_fk"

/**
 * Migration 0009: root keys and identities belong to a workspace that exists, and the admin lists'
 * indexes.
 *
 * Decision: the foreign keys are added `NOT VALID`. A database may already hold root keys and
 * identities of a workspace that does not exist (the admin API accepted them before this version).
 * `NOT VALID` leaves those rows as they are (such a key is still answered 404 workspace_not_found,
 * spec A9, as before) and checks every row written from now on; it reads no table, so the migration
 * holds its locks (SHARE ROW EXCLUSIVE on the tables named, until it commits) only for a moment. Not
 * chosen: creating the missing workspaces as disabled placeholders, which would change what those
 * keys are answered (404 → 403) and invent rows; validating here, which scans both tables while
 * writes wait. An operator can validate later without stopping writes (README, "Admin API").
 *
 * Not added, on purpose: audit log → workspaces, and ratelimits → workspaces. Each row the write
 * function inserts there would cost an index lookup and a FOR KEY SHARE lock on the workspace's row,
 * which every writer of the workspace shares (a MultiXact under concurrency), on the update's hot
 * path. Their `workspace_id` is copied by the functions from an identity they just found in that
 * workspace, which this foreign key now covers. Ratelimits → identities exists since 0001.
 *
 * The indexes answer `listWorkspaces` and `listRootKeys` with an index scan that stops after a page,
 * in code-unit order whatever the database's collation (as `LIVE_ID_INDEX`); the audit log's page
 * uses `identity_kit_audit_log_workspace_seq` of 0001.
 */
const workspaceForeignKeys = [
  `ALTER TABLE identity_kit_root_keys ADD CONSTRAINT ${ROOT_KEYS_WORKSPACE_FK}
    FOREIGN KEY (workspace_id) REFERENCES identity_kit_workspaces (id) NOT VALID`,
  `ALTER TABLE identity_kit_identities ADD CONSTRAINT ${IDENTITIES_WORKSPACE_FK}
    FOREIGN KEY (workspace_id) REFERENCES identity_kit_workspaces (id) NOT VALID`,
  `CREATE INDEX IF NOT EXISTS identity_kit_workspaces_id_c ON identity_kit_workspaces (id COLLATE "C")`,
  `CREATE INDEX IF NOT EXISTS identity_kit_root_keys_workspace_id
    ON identity_kit_root_keys (workspace_id, id COLLATE "C")`
]

const statements = (texts: ReadonlyArray<string>): Effect.Effect<void, unknown, SqlClient.SqlClient> =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => Effect.forEach(texts, (text) => sql.unsafe(text), { discard: true }))

/** The migrations, by `<id>_<name>`. Never edit an applied one: add the next id. */
export const migrations: Record<string, Effect.Effect<void, unknown, SqlClient.SqlClient>> = {
  "0001_create_tables": statements(createTables),
  "0002_update_identity_function": statements([newIdFunction, updateIdentityFunction]),
  "0003_update_identity_v2": statements([updateIdentityV2Function]),
  "0004_root_key_notify": rootKeyNotifyMigration,
  "0005_identities_api": statements([liveIdIndex, deleteIdentityFunction]),
  "0006_update_identity_v3": statements([updateIdentityV3Function]),
  // v3 again (CREATE OR REPLACE), now writing the identity row under REPEATABLE READ/SERIALIZABLE
  // even when only ratelimits change: databases that applied 0006 before that fix get it here.
  "0007_update_identity_v3_isolation": statements([updateIdentityV3Function]),
  "0008_audit_request_ids": statements([auditRequestIdColumns, updateIdentityV4Function, deleteIdentityV2Function]),
  "0009_workspace_foreign_keys": statements(workspaceForeignKeys)
}

/** A migration as the migrator records it: `0004_root_key_notify` is id 4, name `root_key_notify`. */
export interface MigrationRecord {
  readonly id: number
  readonly name: string
}

/** `0004_root_key_notify`: a migration as its key in `migrations` spells it. */
const migrationKey = (migration: MigrationRecord): string => `${String(migration.id).padStart(4, "0")}_${migration.name}`

/** The newest migration of this version: the schema its statements need (parsed as `Migrator.fromRecord` does). */
export const LATEST_MIGRATION: MigrationRecord = Object.keys(migrations).reduce<MigrationRecord>((latest, key) => {
  const match = /^(\d+)_(.+)$/.exec(key)
  const id = Number(match?.[1])
  return match?.[2] !== undefined && id > latest.id ? { id, name: match[2] } : latest
}, { id: 0, name: "" })

const RUN_MIGRATIONS = "Run the migrations: `migrate` (or `layerMigrations`) from identity-kit/sql, " +
  "or build the storage with `migrate: true` (the default of `layerPostgres`; `layerPglite` always migrates)."

/** The readiness probe's sentence for a database without identity-kit's tables. */
export const noTablesMessage = (detail: string): string =>
  `identity-kit: the database has no identity-kit tables (${detail}). ${RUN_MIGRATIONS}`

/**
 * Why a database whose newest recorded migration is `applied` (`undefined`: none) cannot serve this
 * version, or `undefined` when it can. The migrator only ever applies the migrations above the
 * newest one recorded, so that one alone tells the schema's state.
 *
 * A database ahead of this version (migrated by a newer one, e.g. during a rolling upgrade) is
 * fine: migrations are additive (a new function version beside the old one, a new index; never a
 * drop, and what an older version calls keeps its signature and meaning), so everything this
 * version needs is there.
 */
export const schemaProblem = (applied: MigrationRecord | undefined): string | undefined =>
  applied === undefined
    ? noTablesMessage(`${MIGRATIONS_TABLE} is empty: no migration was applied`)
    : applied.id < LATEST_MIGRATION.id
    ? `identity-kit: the database is at migration ${migrationKey(applied)}, and this version of identity-kit needs ` +
      `${migrationKey(LATEST_MIGRATION)}. ${RUN_MIGRATIONS}`
    : undefined

const run = Migrator.make({})

// The migrator creates its table outside its transaction and only after a failing probe, which
// races when several processes start at once; creating it up front (retrying the lost race once)
// leaves the migrator's table-level lock to serialise the migrations themselves.
const ensureMigrationsTable = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  sql.unsafe(`CREATE TABLE IF NOT EXISTS ${MIGRATIONS_TABLE} (
    migration_id integer PRIMARY KEY,
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    name text NOT NULL
  )`).pipe(Effect.retry({ times: 1 })))

/**
 * How long one migration statement may wait for a table lock (`lock_timeout`). PostgreSQL queues
 * lock requests in order, so an `ALTER TABLE` waiting behind a long reader makes every write to
 * that table wait behind it: unbounded, a migration during a slow report would stall the API for
 * as long as the report runs. Bounded, the migration gives up, rolls back and tries again.
 */
export const MIGRATION_LOCK_TIMEOUT = Duration.seconds(2)

/** Tries in all before migrations that cannot get their locks fail: about two and a half minutes with the backoff. */
export const MIGRATION_LOCK_ATTEMPTS = 25

// 250 ms, doubling up to 5 s, jittered so that instances starting together spread out.
const lockBackoff = (attempts: number) =>
  Schedule.exponential("250 millis").pipe(
    Schedule.union(Schedule.spaced("5 seconds")),
    Schedule.jittered,
    Schedule.intersect(Schedule.recurs(attempts - 1))
  )

const LOCK_NOT_AVAILABLE: ReadonlySet<string> = new Set(["55P03"])

/** SQLSTATE lock_not_available: a statement waited `lock_timeout` for a lock (its transaction is rolled back). */
const isLockTimeout = (error: StorageError): boolean => hasSqlState(error, LOCK_NOT_AVAILABLE)

// Each migration first bounds its own lock waits. The migrator's lock on its table comes before and
// is unbounded (`migrateOnce` clears a server's or role's default lock_timeout): waiting for another
// instance to finish migrating is meant, and holds up no write.
const boundedLockMigrations = (timeout: Duration.Duration) =>
  Object.fromEntries(
    Object.entries(migrations).map(([key, migration]) => [
      key,
      Effect.zipRight(
        Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(`SET LOCAL lock_timeout = ${Math.ceil(Duration.toMillis(timeout))}`)),
        migration
      )
    ])
  )

/** `0008_audit_request_ids`: the migration a failed try names (the migrator's `Migration "8_…" failed`). */
const blockedMigration = (error: StorageError): string => {
  for (const message of causeMessages(error)) {
    const match = /^Migration "(\d+)_(.+)" failed/.exec(message)
    if (match?.[1] !== undefined && match[2] !== undefined) return `${match[1].padStart(4, "0")}_${match[2]}`
  }
  return "(unknown)"
}

/** Options of `migrate` (tests shorten them; the defaults are `MIGRATION_LOCK_TIMEOUT` and `MIGRATION_LOCK_ATTEMPTS`). */
export interface MigrateOptions {
  readonly lockTimeout?: Duration.DurationInput
  readonly lockAttempts?: number
}

/** One try: all pending migrations in one transaction, failures as `StorageError`. */
const migrateOnce = (lockTimeout: Duration.Duration) =>
  ensureMigrationsTable.pipe(
    // In a transaction of ours with no statement_timeout (`layerPostgres`' statementTimeout): the
    // migrator's table lock may wait for another instance's migrations, and a migration may build
    // an index on a large table. The migrator's own transaction becomes a savepoint inside it.
    Effect.zipRight(Effect.flatMap(SqlClient.SqlClient, (sql) =>
      sql.withTransaction(
        Effect.zipRight(
          Effect.zipRight(sql.unsafe("SET LOCAL statement_timeout = 0"), sql.unsafe("SET LOCAL lock_timeout = 0")),
          run({ loader: Migrator.fromRecord(boundedLockMigrations(lockTimeout)), table: MIGRATIONS_TABLE })
        )
      ))),
    Effect.mapError((cause) => new StorageError({ operation: "migrate", cause })),
    Effect.catchAllDefect((cause) => Effect.fail(new StorageError({ operation: "migrate", cause })))
  )

/**
 * `migrate` with its lock bounds set: each migration statement waits at most `lockTimeout` for a
 * table lock; a try that timed out is rolled back whole and run again after a backoff, at most
 * `lockAttempts` tries in all, each retry logged as a warning.
 */
export const migrateWith = (
  options: MigrateOptions = {}
): Effect.Effect<ReadonlyArray<readonly [id: number, name: string]>, StorageError, SqlClient.SqlClient> => {
  const lockTimeout = Duration.decode(options.lockTimeout ?? MIGRATION_LOCK_TIMEOUT)
  const attempts = options.lockAttempts ?? MIGRATION_LOCK_ATTEMPTS
  // PostgreSQL takes whole milliseconds, 0 meaning no bound.
  if (!Duration.isFinite(lockTimeout) || Duration.toMillis(lockTimeout) < 1) {
    throw new TypeError(`migrateWith: lockTimeout must be finite and at least 1 ms, got ${Duration.format(lockTimeout)}`)
  }
  if (!Number.isSafeInteger(attempts) || attempts < 1) {
    throw new TypeError(`migrateWith: lockAttempts must be a whole number of at least 1, got ${attempts}`)
  }
  const gaveUp = (error: StorageError) =>
    new StorageError({
      operation: "migrate",
      cause: new Error(
        `identity-kit: the migrations could not get their table locks in ${attempts} tries (each waiting ` +
          `${Duration.format(lockTimeout)}): another session holds them, a long transaction or report. ` +
          "Find it in pg_stat_activity and end it, or migrate when it is done; nothing was changed.",
        { cause: error.cause }
      )
    })
  return Effect.suspend(() => {
    let tries = 0
    const once = Effect.suspend(() => {
      tries++
      return migrateOnce(lockTimeout)
    })
    return once.pipe(
      Effect.tapError((error) =>
        isLockTimeout(error) && tries < attempts
          ? Effect.logWarning(
            `identity-kit: migration ${blockedMigration(error)} waited ${Duration.format(lockTimeout)} for a table lock ` +
              `that another session holds (a long transaction or report?); rolled back, trying again (try ${tries + 1} ` +
              `of ${attempts})`
          )
          : Effect.void
      ),
      Effect.retry({ schedule: lockBackoff(attempts), while: isLockTimeout }),
      Effect.mapError((error) => isLockTimeout(error) ? gaveUp(error) : error)
    )
  }).pipe(withSpan("IdentityKit.migrate"))
}

/**
 * Applies the pending migrations on the `SqlClient`; answers the ones applied now. Failures are
 * `StorageError`s (the migrator reports a failed migration as a defect; it is caught here). A
 * migration waits at most `MIGRATION_LOCK_TIMEOUT` for a table lock, so it never holds up the
 * API's writes for longer; it then rolls back and tries again, up to `MIGRATION_LOCK_ATTEMPTS`.
 */
export const migrate: Effect.Effect<ReadonlyArray<readonly [id: number, name: string]>, StorageError, SqlClient.SqlClient> =
  migrateWith()

/** Runs `migrate` when built: put it before `layerSql` so the tables exist before the first request. */
export const layerMigrations: Layer.Layer<never, StorageError, SqlClient.SqlClient> = Layer.effectDiscard(migrate)
