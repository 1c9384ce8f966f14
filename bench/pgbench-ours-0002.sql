-- Fallback of pgbench-ours.sql while identity_kit_update_identity_v2 is not in the bench database:
-- the same mix through migration 0002's identity_kit_update_identity, which generates its ids in
-- plpgsql. run.ts labels its figure "0002 function".
\set n random(1, 10000)
SELECT * FROM identity_kit_update_identity(
  'ws_bench', 'user_' || :n,
  ('{"plan":"premium","n":' || :n || '}')::json,
  '[{"name":"rl1","limit":1000,"duration":3600000,"autoApply": true},{"name":"rl2","limit":50,"duration":60000,"autoApply": false}]'::json,
  :key_id, 'bench', '127.0.0.1', 'pgbench', :now);
