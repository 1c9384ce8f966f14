-- Our own ceiling: one call of identity_kit_update_identity_v4 (migration 0008) per transaction, the request mix of
-- peers/README.md (spread: n uniform in 1..10,000; run.ts rewrites the \set n line for hot), with
-- the ids the kit generates in Node passed in as the kit passes them. :key_id and :now come from
-- run.ts (pgbench -D). :r makes the ids unique for the whole run (ratelimit ids are only used when a
-- ratelimit is created; 5 audit ids cover an update with 2 ratelimits). No ":" right before a
-- letter inside a literal: pgbench would read it as a variable. The set goes as the kit sends it: four
-- array literals (names, limits, durations, autoApply), and the request ids as the kit passes them (a
-- `req_…` id, no host id). pgbench-ours-v3.sql and -v2.sql are the same mix on the older functions.
--   pgbench -n -M prepared -c 16 -j 2 -T 10 -D key_id=key_x -D now=1764000000000 -f pgbench-ours.sql DB
\set n random(1, 10000)
\set r random(1, 9000000000000000000)
SELECT * FROM identity_kit_update_identity_v4(
  'ws_bench', 'user_' || :n,
  ('{"plan":"premium","n":' || :n || '}')::json,
  '{"rl1","rl2"}'::text[], '{1000,50}'::bigint[], '{3600000,60000}'::bigint[], '{t,f}'::boolean[],
  ARRAY['rl_' || :client_id || '_' || :r || '_1', 'rl_' || :client_id || '_' || :r || '_2'],
  ARRAY['log_' || :client_id || '_' || :r || '_1', 'log_' || :client_id || '_' || :r || '_2',
        'log_' || :client_id || '_' || :r || '_3', 'log_' || :client_id || '_' || :r || '_4',
        'log_' || :client_id || '_' || :r || '_5'],
  :key_id, 'bench', '127.0.0.1', 'pgbench', 'req_' || :client_id || '_' || :r, '', :now);
