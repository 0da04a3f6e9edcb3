"""test/e2e/purchases.py - the purchase driver of the commit -> browser measurement
(latency_test.js): reads a plan (one JSON array of [student, course, time_slot] on stdin),
then at RATE per second (an open-loop schedule) creates each payment and confirms it in its
own autocommit statement over one connection, and prints one JSON line per purchase with
t_commit: time.time() in ms right after the confirming COMMIT returned (CLOCK_REALTIME, the
clock the browser's performance.timeOrigin + performance.now() is anchored to; late by this
process's own scheduling delay when the host is busy) and t_sent (before the statement). Then one
line per purchase with t_generated: when its SESSIONS_GENERATED got its log position.

usage: purchases.py DATABASE_URL RATE < plan.json
"""
import json
import sys
import time

import psycopg2


def main():
    dsn, rate = sys.argv[1], float(sys.argv[2])
    plan = json.load(sys.stdin)
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    cur = conn.cursor()
    start = time.time() + 0.2
    ids = []
    for i, (student, course, slot) in enumerate(plan):
        wait = start + i / rate - time.time()
        if wait > 0:
            time.sleep(wait)
        cur.execute("SELECT kc_flow.create_payment(%s, %s, 10, %s::jsonb)", (student, course, json.dumps(slot)))
        payment = cur.fetchone()[0]
        ids.append(str(payment))
        t0 = time.time()
        cur.execute("SELECT kc_flow.confirm_payment(%s)", (payment,))
        t1 = time.time()
        print(json.dumps({"i": i, "payment": payment, "t_sent": t0 * 1000, "t_commit": t1 * 1000,
                          "confirm_ms": (t1 - t0) * 1000}), flush=True)
    seconds = time.time() - start
    # when a sequencer round gave each purchase's SESSIONS_GENERATED its log position
    # (event_log.logged_at, just before the round's commit), to split the latency into the
    # pipeline's part and the push and render's part
    deadline = time.time() + 20
    while time.time() < deadline:
        cur.execute("SELECT p.id::text, extract(epoch FROM l.logged_at) * 1000"
                    "  FROM unnest(%s::uuid[]) AS p(id)"
                    "  JOIN kc_flow.events e ON e.correlation_id = p.id AND e.event_type = 'SESSIONS_GENERATED'"
                    "  JOIN kc_flow.event_log l ON l.event_id = e.id",
                    (ids,))
        got = dict(cur.fetchall())
        if len(got) == len(ids) or time.time() >= deadline:
            break
        time.sleep(0.2)
    for i, pid in enumerate(ids):
        if pid in got:
            print(json.dumps({"i": i, "t_generated": float(got[pid])}), flush=True)
    print(json.dumps({"done": True, "seconds": seconds}), flush=True)


main()
