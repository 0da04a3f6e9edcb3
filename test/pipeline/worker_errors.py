"""A worker whose rounds keep failing goes on once the cause is gone: with
the database read-only (as a failover tool makes a promoted node for a few
seconds) every round's claim fails; after the second such error the worker
used to loop for ever inside the error machinery (its error context stack
pointed at a dead frame of the failed round). Then read-write again: the
payment confirmed meanwhile completes."""
import time

from kcflow_test import wait_workers, World, connect, run, one, ok, check_invariants, finish

conn = connect()
ok(wait_workers(conn), "worker errors: the background workers are attached")
world = World(conn, trainers=1, students=1)
payment = world.payments(tiers=(10,))[0]

run(conn, "ALTER SYSTEM SET default_transaction_read_only = on")
one(conn, "SELECT pg_reload_conf()")
try:
    run(conn, "SET default_transaction_read_only = off")
    one(conn, "SELECT kc_flow.confirm_payment(%s)", (payment,))
    time.sleep(3.5)     # three or more failed rounds at the default poll interval of 1 s
    failed = one(conn, "SELECT count(*) FROM kc_flow.student_course_purchases WHERE payment_id = %s", (payment,))
    ok(failed == 0, "worker errors: nothing is written while the database is read-only", failed)
finally:
    run(conn, "ALTER SYSTEM RESET default_transaction_read_only")
    one(conn, "SELECT pg_reload_conf()")

deadline = time.time() + 15
sessions = 0
while time.time() < deadline:
    sessions = one(conn, """SELECT count(*) FROM kc_flow.tutoring_sessions s
                              JOIN kc_flow.student_course_purchases p ON p.student_id = s.student_id
                             WHERE p.payment_id = %s""", (payment,))
    if sessions == 10:
        break
    time.sleep(0.2)
ok(sessions == 10, "worker errors: after repeated failed rounds the workers go on (10 sessions)", sessions)
check_invariants(conn, world.course, "worker errors")
finish()
