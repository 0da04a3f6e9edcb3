"""Without shared_preload_libraries: everything but the automatic workers
works.  run_pending() drives the pipeline, and events_since() stays gap-free
by waiting for open event writers instead of reading the shared horizon."""
import psycopg2

from kcflow_test import World, connect, one, rows, run, ok, check_invariants, finish

conn = connect()
ok(one(conn, "SELECT count(*) FROM kc_flow.worker_status()") == 0, "no workers without preloading")
world = World(conn, trainers=3, students=5)
payments = world.payments()
for p in payments:
    one(conn, "SELECT kc_flow.confirm_payment(%s)", (p,))
handled = one(conn, "SELECT kc_flow.run_pending(100)")
ok(handled == 15, "run_pending() handles the 5 purchases, allocations and session generations", handled)
check_invariants(conn, world.course, "no preload")

after = one(conn, "SELECT coalesce(max(id), 0) FROM kc_flow.events")
writer = connect(autocommit=False)
one(writer, "SELECT kc_flow.emit_event('ALLOCATION_PENDING', gen_random_uuid(), %s, '{}')", (world.students[0],))
other = connect()
one(other, "SELECT kc_flow.emit_event('ALLOCATION_PENDING', gen_random_uuid(), %s, '{}')", (world.students[1],))
reader = connect()
run(reader, "SET statement_timeout = '300ms'")
try:
    one(reader, "SELECT count(*) FROM kc_flow.events_since(%s, NULL, 100)", (after,))
    blocked = False
except psycopg2.errors.QueryCanceled:
    blocked = True
ok(blocked, "events_since() waits while a smaller event id is still open")
writer.commit()
got = rows(reader, "SELECT student_id::text FROM kc_flow.events_since(%s, NULL, 100)", (after,))
ok([g[0] for g in got] == world.students[:2], "then it returns both events, in id order", got)
finish()
