"""500 payments confirmed from 8 connections at once, each confirmed twice
(once through confirm_payment(), once by a plain UPDATE from another
connection): exactly one purchase, allocation and N sessions each, no trainer
overlap, no dead letters.  The background workers do the work."""
import random
import threading
import time

from kcflow_test import wait_workers, World, connect, one, ok, check_invariants, wait_quiet, finish

PAYMENTS = 500
CONNECTIONS = 8

setup = connect()
ok(wait_workers(setup), "the background workers are attached")
# 84 distinct weekly slots, ~6 students on each: 80 trainers x 8 places leave room for everyone
world = World(setup, trainers=80, students=PAYMENTS, capacity=8)
payments = world.payments()

work = [(p, "confirm") for p in payments] + [(p, "update") for p in payments]
random.Random(7).shuffle(work)
lanes = [work[i::CONNECTIONS] for i in range(CONNECTIONS)]
errors = []
barrier = threading.Barrier(CONNECTIONS)


def lane(items):
    conn = connect()
    barrier.wait()
    for payment, how in items:
        try:
            with conn.cursor() as cur:
                if how == "confirm":
                    cur.execute("SELECT kc_flow.confirm_payment(%s)", (payment,))
                else:
                    cur.execute("UPDATE kc_flow.payments SET status = 'succeeded' WHERE id = %s", (payment,))
        except Exception as e:  # noqa: BLE001 - reported as a test failure below
            errors.append("%s %s: %s" % (how, payment, e))
    conn.close()


t0 = time.time()
threads = [threading.Thread(target=lane, args=(items,)) for items in lanes]
for t in threads:
    t.start()
for t in threads:
    t.join()
confirm_s = time.time() - t0
ok(not errors, "1000 confirmations from %d connections raise no error" % CONNECTIONS, "\n".join(errors[:5]))
ok(one(setup, "SELECT count(*) FROM kc_flow.payments WHERE course_id = %s AND status = 'succeeded'", (world.course,))
   == PAYMENTS, "all %d payments are succeeded" % PAYMENTS)
ok(one(setup, """SELECT count(*) FROM kc_flow.events e JOIN kc_flow.payments p ON p.id = e.correlation_id
                 WHERE p.course_id = %s AND e.event_type = 'PURCHASE_CONFIRMED'""", (world.course,)) == PAYMENTS,
   "exactly one PURCHASE_CONFIRMED per payment despite the duplicates")

waited = wait_quiet(setup, world.course, PAYMENTS, timeout=120)
ok(waited is not None, "the workers finish all %d purchases (confirm %.1f s, then %.1f s more)"
   % (PAYMENTS, confirm_s, waited or -1))
check_invariants(setup, world.course, "concurrency")
pending = one(setup, "SELECT count(*) FROM kc_flow.trainer_allocations WHERE course_id = %s AND status <> 'approved'",
              (world.course,))
ok(pending == 0, "every allocation is approved (there was room for all)", "%s not approved" % pending)
finish()
