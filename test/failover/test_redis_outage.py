"""test/failover/test_redis_outage.py - a Redis outage under steady purchases does not stop the
WebSocket pushes, and no view cached before or during it is served stale once Redis is back
(test/suites/48_redis_outage.sh: the harness's Postgres, a Redis of its own with persistence,
so that it comes back with the views and the watermark it had).

Prints "ok - redis outage: ..." lines and the push latencies as "# figure: ..." lines.
"""
import os
import subprocess
import sys
import threading
import time
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fo_lib import (RESULTS, Gateway, Listener, buy, figure, new_student, q, settled,  # noqa: E402
                    stale_answers, wait_for)
import fo_lib  # noqa: E402

TMP = os.environ["RO_TMP"]
PORT = int(os.environ["PGPORT"])
DB = os.environ.get("PGDATABASE", "kc_test")
REDIS_DIR = os.environ["RO_REDIS_DIR"]
REDIS_PORT = os.environ["RO_REDIS_PORT"]
RATE = 4.0              # purchases per second, each by a student of its own
BEFORE, OUTAGE, AFTER = 4.0, 6.0, 4.0
STUDENTS = int(RATE * (BEFORE + OUTAGE + AFTER)) + 8


def report(ok, name, detail=""):
    return fo_lib.report(ok, name, detail, prefix="redis outage")


def redis(action):
    extra = " persist" if action == "start" else ""
    return subprocess.run(["bash", "-c", ". '%s/test/cluster.sh'; kc_redis_%s '%s' %s%s"
                           % (fo_lib.ROOT, action, REDIS_DIR, REDIS_PORT if action == "start" else "", extra)],
                          capture_output=True, text=True, timeout=60)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))] if xs else float("nan")


def latencies(events, lo, hi):
    """Push latency (event created_at -> message received) of the events received in [lo, hi)."""
    out = []
    for e in events:
        if lo <= e["_at"] < hi:
            out.append(e["_at"] - datetime.fromisoformat(e["created_at"]).timestamp())
    return out


def redis_cli(*args):
    return subprocess.run(["redis-cli", "-p", REDIS_PORT] + list(args), capture_output=True, text=True,
                          timeout=10).stdout.strip()


def test_rewound_log(gw):
    """A Redis watermark past the log's end (as after a failover that lost commits, or a restored
    database): the resync starts again at the log's end instead of skipping the positions the
    log will give again."""
    s = new_student(PORT, "ro-rewound", DB)
    gw.home(s)
    redis_cli("SET", "kc:gateway:watermark", "900000000000")
    q(PORT, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
      "WHERE application_name = 'kc-gateway-listener' AND datname = %s", (DB,), DB)
    report(wait_for(lambda: "the event log was rewound under a cursor" in gw.log_text(), 15),
           "rewound log: the resync says the log ends before the Redis watermark")
    end = int(q(PORT, "SELECT kc_flow.settled_event_id()", (), DB))
    report(wait_for(lambda: int(redis_cli("GET", "kc:gateway:watermark") or 0) <= end + 1000 and
                    gw.readyz()[1].get("cache_synced"), 15),
           "rewound log: the Redis watermark is brought back to the log's end", redis_cli("GET", "kc:gateway:watermark"))
    buy(PORT, s, DB)
    report(wait_for(lambda: q(PORT, "SELECT count(*) FROM kc_flow.events WHERE student_id = %s AND "
                              "event_type = 'SESSIONS_GENERATED'", (s,), DB) == 1, 60) and settled(gw, PORT, DB),
           "rewound log: a purchase completes and is applied")
    stale, failed, total = stale_answers(gw, PORT, [s], 2.0, DB)
    report(stale == 0 and failed == 0 and total > 5,
           "rewound log: 0 stale answers after a purchase (%d reads)" % total)


def main():
    students = [new_student(PORT, "ro-%d" % i, DB) for i in range(STUDENTS)]
    gw = Gateway(TMP, "redis-outage", KC_DATABASE_URL="postgresql://postgres@127.0.0.1:%d/%s" % (PORT, DB),
                 KC_REDIS_URL="redis://127.0.0.1:%s/0" % REDIS_PORT)
    try:
        ops = Listener(gw, "ops", role="admin")
        report(ops.hello is not None, "an admin WebSocket client (every student's events)", ops.error)
        for s in students:
            gw.home(s)
        report(all(gw.home(s)[2] == "HIT" for s in students), "%d students' homes are cached in Redis" % STUDENTS)

        errors = []
        t_start = time.time()

        def purchases():
            n = 0
            while time.time() < t_start + BEFORE + OUTAGE + AFTER:
                try:
                    buy(PORT, students[n], DB)
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(repr(e))
                n += 1
                time.sleep(max(0.0, t_start + n / RATE - time.time()))
        load = threading.Thread(target=purchases)
        load.start()
        time.sleep(BEFORE)
        res = redis("stop")
        t_down = time.time()
        report(res.returncode == 0, "Redis stopped under load (%.0f purchases/s)" % RATE, res.stderr)
        ready = []
        while time.time() < t_down + OUTAGE:
            st, v, xc = gw.home(students[0])
            rz = gw.readyz()
            ready.append((st, xc, rz[0]))
            time.sleep(0.2)
        report(all(r[0] == 200 and r[1] == "BYPASS" for r in ready),
               "during the outage reads answer from Postgres (BYPASS)", ready[:5])
        report(all(r[2] == 200 for r in ready[len(ready) // 2:]),
               "during the outage /readyz stays 200 (pushes go on)", ready)
        res = redis("start")
        t_up = time.time()
        report(res.returncode == 0, "Redis back, with the views and the watermark it had (append-only file)",
               res.stderr)
        load.join()
        report(not errors, "every purchase committed", errors[:3])

        during = latencies(ops.events, t_down, t_up)
        before = latencies(ops.events, t_start, t_down)
        report(len(during) >= OUTAGE * RATE, "pushes go on during the outage: %d events pushed in %.1f s"
               % (len(during), t_up - t_down))
        report(during and pct(during, 99) < 3.0, "push latency during the outage p99 under 3 s (%.3f s)"
               % pct(during, 99) if during else "no push during the outage")
        figure("redis outage: pushes during the outage %d, latency created_at->received p50 %.1f ms p99 %.1f ms; "
               "before it %d, p50 %.1f ms p99 %.1f ms (loadavg %s)"
               % (len(during), pct(during, 50) * 1e3, pct(during, 99) * 1e3, len(before), pct(before, 50) * 1e3,
                  pct(before, 99) * 1e3, open("/proc/loadavg").read().split()[0]))

        report(wait_for(lambda: gw.readyz()[1].get("cache_synced"), 15), "the cache resyncs once Redis is back")
        report(settled(gw, PORT, DB), "the pipeline settles: queue empty, the whole log applied",
               (q(PORT, "SELECT kc_flow.health()::text", (), DB), gw.readyz()))
        stale, failed, total = stale_answers(gw, PORT, students, 3.0, DB)
        report(stale == 0 and failed == 0 and total >= STUDENTS,
               "after Redis returns: 0 stale answers (%d reads, %d failed)" % (total, failed))
        report(any(gw.home(s)[2] == "HIT" for s in students), "after Redis returns: the cache serves hits again")
        log = q(PORT, "SELECT coalesce(string_agg(pos::text, ',' ORDER BY pos), '') FROM "
                "kc_flow.events_since(%s, NULL, 10000)", (ops.hello["last_event_id"],), DB)
        want = [int(x) for x in log.split(",") if x]
        wait_for(lambda: len(ops.ids()) >= len(want), 10)
        got = ops.ids()
        report(got == want, "the WebSocket got every event of the log once, in order, across the outage (%d)"
               % len(want), (got[-5:], want[-5:], len(got), len(want)))
        ops.close()
        report('"redis unavailable, serving from postgres"' in gw.log_text() and '"cache synced"' in gw.log_text(),
               "the outage and the resync are logged")
        test_rewound_log(gw)
    finally:
        gw.stop()
    return 0 if RESULTS["fail"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
