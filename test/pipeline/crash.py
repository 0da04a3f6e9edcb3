"""Crashes mid-pipeline: kill -9 of a background worker (the postmaster then
restarts every backend) and an immediate stop of the server, while payments
are being processed.  Afterwards the pipeline finishes with the invariants.

Runs against its own throwaway cluster (KC_CRASH_DIR, PGPORT), which it may
stop and start through test/cluster.sh."""
import os
import signal
import subprocess
import time

import psycopg2

from kcflow_test import wait_workers, World, connect, one, run, ok, check_invariants, wait_quiet, finish

DIR = os.environ["KC_CRASH_DIR"]
ROOT = os.environ["KC_ROOT"]


def cluster(cmd):
    subprocess.run(["bash", "-c", 'source "%s/test/cluster.sh"; %s' % (ROOT, cmd)], check=True)


def reconnect(timeout=60):
    start = time.time()
    while time.time() - start < timeout:
        try:
            conn = connect()
            one(conn, "SELECT 1")
            return conn
        except psycopg2.Error:
            time.sleep(0.2)
    raise RuntimeError("server did not come back")


def queued(conn):
    return one(conn, "SELECT count(*) FROM kc_flow.event_queue")


def kill_worker(conn):
    pids = [r for r in [one(conn, "SELECT pid FROM kc_flow.worker_status() WHERE pid <> 0 LIMIT 1")] if r]
    if pids:
        os.kill(pids[0], signal.SIGKILL)
        time.sleep(1.0)     # let the postmaster notice and reinitialise before reconnecting
    return bool(pids)


conn = connect()
ok(wait_workers(conn), "the background workers are attached")
world = World(conn, trainers=40, students=300, capacity=8)
payments = world.payments()
chunks = [payments[i:i + 100] for i in range(0, 300, 100)]


def confirm(conn, chunk):
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        for p in chunk:
            cur.execute("SELECT kc_flow.confirm_payment(%s)", (p,))
        cur.execute("COMMIT")


# 1: kill -9 a worker while the first hundred are being processed
confirm(conn, chunks[0])
time.sleep(0.05)
busy = queued(conn)
killed = kill_worker(conn)
ok(killed and busy > 0, "kill -9 of a worker mid-pipeline (%d events queued at the time)" % busy)
conn = reconnect()

# 2: immediate stop and restart of the server while the second hundred are processed
confirm(conn, chunks[1])
time.sleep(0.05)
busy = queued(conn)
conn.close()
cluster('kc_pg_stop "%s" immediate' % DIR)
cluster('kc_pg_start "%s"' % DIR)
conn = reconnect()
ok(busy > 0, "immediate stop and restart mid-pipeline (%d events queued at the time)" % busy)

# 3: and once more a worker, during the last hundred
confirm(conn, chunks[2])
time.sleep(0.05)
busy = queued(conn)
killed = kill_worker(conn)
ok(killed, "second kill -9 of a worker (%d events queued at the time)" % busy)
conn = reconnect()

waited = wait_quiet(conn, world.course, len(payments), timeout=120)
ok(waited is not None, "after the crashes the pipeline finishes all %d purchases" % len(payments))
check_invariants(conn, world.course, "after crashes")
restarts = one(conn, "SELECT count(*) FROM kc_flow.worker_status() WHERE pid <> 0")
ok(restarts >= 1, "workers are running again after the crashes")

# SIGTERM (pg_terminate_backend) ends one worker cleanly; the postmaster starts it again
old = one(conn, "SELECT pid FROM kc_flow.worker_status() WHERE worker = 0")
one(conn, "SELECT pg_terminate_backend(%s)", (old,))
new = None
for _ in range(150):
    new = one(conn, "SELECT pid FROM kc_flow.worker_status() WHERE worker = 0")
    if new and new != old:
        break
    time.sleep(0.1)
ok(new and new != old, "a worker ended by SIGTERM is restarted (pid %s -> %s)" % (old, new))
# and SIGHUP: a reload with a new setting is taken without a restart
run(conn, "ALTER SYSTEM SET kc_flow.poll_interval_ms = 500")
one(conn, "SELECT pg_reload_conf()")
time.sleep(0.5)
same = one(conn, "SELECT pid FROM kc_flow.worker_status() WHERE worker = 0")
ok(same == new, "a configuration reload (SIGHUP) keeps the workers running")
run(conn, "ALTER SYSTEM RESET kc_flow.poll_interval_ms")
one(conn, "SELECT pg_reload_conf()")
finish()
