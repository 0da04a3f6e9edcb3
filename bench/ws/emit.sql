-- bench/ws/emit.sql: one event for a random benchmark student, stamped with the time inside
-- its transaction (pgbench -f; autocommit, so the commit follows at once)
\set n random(1, :students)
SELECT kc_flow.emit_event('SESSIONS_GENERATED', gen_random_uuid(), id,
                          jsonb_build_object('t', extract(epoch from clock_timestamp()), 'bench', true))
  FROM ws_bench_students WHERE n = :n;
