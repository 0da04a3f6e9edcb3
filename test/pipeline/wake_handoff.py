"""A payment goes to the idle worker, not to one already woken.

A commit that queued events wakes one idle worker (shared_state.c). On a
loaded machine the woken worker may wait for a CPU for milliseconds; a second
payment committed meanwhile must wake the other idle worker instead of
setting the same latch again, or it waits behind the first worker's whole
batch (or, here, the other worker's poll interval). The test stops worker 0
(SIGSTOP) while both sleep with a poll interval of a minute, confirms one
payment (its wake goes to worker 0, which cannot run) and then a second: worker
1 must handle both within seconds while worker 0 is still stopped."""
import os
import signal
import time

from kcflow_test import wait_workers, World, connect, run, one, ok, check_invariants, finish

POLL_MS = 60000


def sessions_of(conn, payments):
    return one(conn, """SELECT count(*) FROM kc_flow.tutoring_sessions s
                          JOIN kc_flow.student_course_purchases p ON p.student_id = s.student_id
                         WHERE p.payment_id = ANY (%s::uuid[])""", (payments,))


def set_poll(conn, value):
    if value is None:
        run(conn, "ALTER SYSTEM RESET kc_flow.poll_interval_ms")
    else:
        run(conn, "ALTER SYSTEM SET kc_flow.poll_interval_ms = %d" % value)
    one(conn, "SELECT pg_reload_conf()")


conn = connect()
ok(wait_workers(conn), "wake hand-off: the background workers are attached")
ok(one(conn, "SELECT count(*) FROM kc_flow.worker_status()") == 2, "wake hand-off: two workers")
world = World(conn, trainers=2, students=2)
first, second = world.payments(tiers=(10, 10))
worker0 = one(conn, "SELECT pid FROM kc_flow.worker_status() WHERE worker = 0")

set_poll(conn, POLL_MS)
stopped = False
try:
    time.sleep(1.5)     # both workers read the setting, ran a round and sleep for a minute
    os.kill(worker0, signal.SIGSTOP)
    stopped = True
    one(conn, "SELECT kc_flow.confirm_payment(%s)", (first,))
    time.sleep(0.2)
    one(conn, "SELECT kc_flow.confirm_payment(%s)", (second,))
    deadline = time.time() + 5
    n = 0
    while time.time() < deadline and n < 20:
        n = sessions_of(conn, [first, second])
        time.sleep(0.1)
    ok(n == 20, "wake hand-off: the idle worker handles both payments while the woken one cannot run"
                " (20 sessions within 5 s)", n)
finally:
    if stopped:
        os.kill(worker0, signal.SIGCONT)
    set_poll(conn, None)
deadline = time.time() + 15
while time.time() < deadline and sessions_of(conn, [first, second]) < 20:
    time.sleep(0.1)
check_invariants(conn, world.course, "wake hand-off")
finish()
