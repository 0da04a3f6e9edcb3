"""Without shared_preload_libraries: everything but the automatic workers
works.  run_pending() drives the pipeline and gives log positions, as the
workers would; until someone runs it, events_since() shows nothing new, and
an open transaction that emitted an event still holds back only its own;
run_pending() also rotates the log's ring when it is due."""
import time

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

after = one(conn, "SELECT kc_flow.settled_event_id()")
writer = connect(autocommit=False)
one(writer, "SELECT kc_flow.emit_event('ALLOCATION_PENDING', gen_random_uuid(), %s, '{}')", (world.students[0],))
other = connect()
one(other, "SELECT kc_flow.emit_event('ALLOCATION_PENDING', gen_random_uuid(), %s, '{}')", (world.students[1],))
reader = connect()
run(reader, "SET statement_timeout = '300ms'")
got = rows(reader, "SELECT student_id::text FROM kc_flow.events_since(%s, NULL, 100)", (after,))
ok(got == [], "a committed event has no position until someone sequences: events_since() shows nothing new", got)
ok(one(reader, "SELECT (kc_flow.health()->>'log_unsequenced')::int") == 1,
   "health() counts it as unsequenced")
one(conn, "SELECT kc_flow.run_pending(100)")
got = rows(reader, "SELECT student_id::text FROM kc_flow.events_since(%s, NULL, 100)", (after,))
ok([g[0] for g in got] == world.students[1:2],
   "run_pending() sequences it; the open transaction's event does not hold it back", got)
time.sleep(0.05)
ok(one(reader, "SELECT (kc_flow.health()->>'oldest_xact_holding_events_seconds')::float8") >= 0.05,
   "health() sees the open transaction that emitted an event (advisory lock, no shared memory)")
writer.commit()
one(conn, "SELECT kc_flow.run_pending(100)")
got = rows(reader, "SELECT student_id::text FROM kc_flow.events_since(%s, NULL, 100)", (after,))
ok([g[0] for g in got] == [world.students[1], world.students[0]],
   "once committed and sequenced it follows, in commit order", got)

# a first event in a subtransaction that rolls back, then one that stays: still seen
writer = connect(autocommit=False)
run(writer, "SAVEPOINT first")
one(writer, "SELECT kc_flow.emit_event('ALLOCATION_PENDING', gen_random_uuid(), %s, '{}')", (world.students[0],))
run(writer, "ROLLBACK TO SAVEPOINT first")
one(writer, "SELECT kc_flow.emit_event('ALLOCATION_PENDING', gen_random_uuid(), %s, '{}')", (world.students[0],))
time.sleep(0.05)
age = one(reader, "SELECT (kc_flow.health()->>'oldest_xact_holding_events_seconds')::float8")
ok(age is not None and age >= 0.05,
   "health() still sees a transaction whose first event was in a subtransaction that rolled back", age)
writer.rollback()

# run_pending() rotates the log's ring too, as worker 0 does, once its current tables have been
# current for half of kc_flow.event_retention
run(conn, "SET kc_flow.event_retention = '1s'")
generation = one(conn, "SELECT last_value FROM kc_flow.log_generation")
time.sleep(0.6)
one(conn, "SELECT kc_flow.run_pending(100)")
ok(one(conn, "SELECT last_value FROM kc_flow.log_generation") == generation + 1,
   "run_pending() rotates the log's ring once it is due")
run(conn, "RESET kc_flow.event_retention")
finish()
