"""test/failover/test_rewind.py - a failover that loses commits (test/suites/47_failover.sh
runs it after test_failover.py): the primary (the standby promoted there) gets an
asynchronous standby, which is cut off (primary_conninfo emptied) while the primary commits a
student's purchase; then a kill -9 of the primary and the promotion of the standby, whose log
ends below the positions the gateways saw, and which gives them again to other events.

More new events than were lost are sequenced before any gateway reconnects (the gateway that
watched is frozen with SIGSTOP meanwhile), so the new log's end is past every watermark: only
the identity of the event at a cursor tells that the log was rewound. A gateway started after
the failover has only the Redis watermark to go by; the frozen one resumes with Redis stopped,
so only its own cursor can tell. Checked: no stale home of the student whose purchase was
lost, its WebSocket gets "refetch" and then the new events (Redis still down), and after= above
the head is 410.
"""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fo_lib import (ROOT, RESULTS, Gateway, Listener, buy, db_version, new_student, purchase_done,  # noqa: E402
                    q, report, settled, token, wait_for)

TMP = os.environ["FO_TMP"]
PG_BIN = os.environ["PG_BIN"]
P = int(os.environ["STANDBY_PORT"])         # the primary now: promoted by test_failover.py
R = int(os.environ["REWIND_PORT"])          # its asynchronous standby
P_DIR = os.environ["STANDBY_DIR"]
R_DIR = os.environ["REWIND_DIR"]
REDIS_PORT = os.environ["REDIS_PORT"]
REDIS_DIR = os.environ["REDIS_DIR"]
REDIS = "redis://127.0.0.1:%s/5" % REDIS_PORT
BOTH = "postgresql://postgres@127.0.0.1:%d,127.0.0.1:%d/kc_fo?target_session_attrs=read-write" % (P, R)


def redis(action):
    """Stops or starts the suite's Redis (test/cluster.sh; no persistence: it comes back empty)."""
    return subprocess.run(["bash", "-c", ". '%s/test/cluster.sh'; kc_redis_%s '%s' %s"
                           % (ROOT, action, REDIS_DIR, REDIS_PORT if action == "start" else "")],
                          capture_output=True, text=True, timeout=60)


def as_pg(cmd):
    return (["runuser", "-u", "postgres", "--"] + cmd) if os.getuid() == 0 else cmd


def head(port):
    return int(q(port, "SELECT kc_flow.settled_event_id()"))


def exact_answers(gw, port, students, seconds):
    """Home reads over `seconds` once all is settled: (wrong, total); a read is wrong when
    its version is not the database's (a view of lost purchases is above it)."""
    wrong = total = 0
    end = time.time() + seconds
    while time.time() < end:
        for s in students:
            want = db_version(port, s)
            st, v, xc = gw.home(s)
            total += 1
            if st != 200 or v != want:
                wrong += 1
                if wrong <= 3:
                    print("# wrong: %s %s v%s != v%s (X-Cache %s)" % (s, st, v, want, xc), flush=True)
    return wrong, total


def cut_off_standby():
    """The standby stops receiving WAL: what it has not got by now, a failover loses."""
    q(R, "ALTER SYSTEM SET primary_conninfo = ''")
    q(R, "SELECT pg_reload_conf()")
    return wait_for(lambda: q(R, "SELECT count(*) FROM pg_stat_wal_receiver") == 0 and
                    q(P, "SELECT count(*) FROM pg_stat_replication") == 0, 20)


def fail_over():
    pid = int(open(os.path.join(P_DIR, "data", "postmaster.pid")).readline())
    os.kill(pid, 9)
    wait_for(lambda: not os.path.exists("/proc/%d" % pid) or
             open("/proc/%d/stat" % pid).read().split(") ")[1][0] == "Z", 10, 0.02)
    res = subprocess.run(as_pg([os.path.join(PG_BIN, "pg_ctl"), "-D", os.path.join(R_DIR, "data"),
                                "promote", "-w", "-t", "60"]), capture_output=True, text=True)
    return res.returncode == 0, res.stderr


def main():
    report(wait_for(lambda: q(P, "SELECT state FROM pg_stat_replication") == "streaming" and
                    q(P, "SELECT sync_state FROM pg_stat_replication") == "async", 30),
           "rewind: the new standby streams asynchronously")
    x = new_student(P, "rw-x")
    report(wait_for(lambda: q(R, "SELECT count(*) FROM kc_flow.students WHERE id = %s", (x,)) == 1, 10),
           "rewind: the standby has X")
    gw = Gateway(TMP, "rewind", KC_DATABASE_URL=BOTH, KC_REDIS_URL=REDIS)
    report(settled(gw, P), "rewind: the gateway has applied the whole log")
    ws = Listener(gw, x)
    report(ws.hello is not None, "rewind: a WebSocket client of X is connected", ws.error)

    report(cut_off_standby(), "rewind: the standby is cut off from the primary (primary_conninfo '')")
    kept_end = head(R)
    buy(P, x)
    report(wait_for(lambda: purchase_done(P, x) == 1, 30) and settled(gw, P),
           "rewind: X's purchase ends on the primary, the gateway applied it")
    lost_end = head(P)
    x_last = int(q(P, "SELECT max(pos) FROM kc_flow.event_log WHERE student_id = %s", (x,)))
    gw.home(x)
    st, lost_version, xc = gw.home(x)
    report(xc == "HIT" and lost_version == db_version(P, x) > 0,
           "rewind: X's home is cached with the purchase to be lost (v%s, %s)" % (lost_version, xc))
    report(wait_for(lambda: ws.ids() and ws.ids()[-1] == x_last, 10),
           "rewind: X's WebSocket got the events to be lost (up to position %d)" % x_last, ws.ids()[-5:])
    lost = lost_end - kept_end
    report(lost > 0 and head(R) == kept_end, "rewind: the standby misses positions %d..%d" % (kept_end + 1, lost_end))

    # the watching gateway is frozen through the failover and the new events
    gw.proc.send_signal(signal.SIGSTOP)
    ok, err = fail_over()
    report(ok, "rewind: kill -9 of the primary, pg_ctl promote of the standby", err)
    t_promoted = time.time()
    # other students' purchases take the lost positions and carry the log's end past them
    others = []
    while head(R) <= lost_end + 1 and len(others) < 20:
        others.append(new_student(R, "rw-y%d" % len(others)))
        buy(R, others[-1])
        wait_for(lambda: purchase_done(R, others[-1]) == 1, 30)
    report(wait_for(lambda: int(q(R, "SELECT (kc_flow.health()->>'queue_depth')::int")) == 0, 30) and
           head(R) > lost_end and db_version(R, x) < lost_version,
           "rewind: the new primary's log ends at %d > %d (%d new events, %d lost), X's version is "
           "v%d there" % (head(R), lost_end, head(R) - kept_end, lost, db_version(R, x)))
    y = others[-1]

    # a gateway started now has only the Redis watermark and its event to go by
    fresh = Gateway(TMP, "rewind-fresh", KC_DATABASE_URL=BOTH, KC_REDIS_URL=REDIS)
    report(settled(fresh, R), "rewind: a gateway started after the failover syncs")
    wrong, total = exact_answers(fresh, R, [x, y], 2.0)
    report(wrong == 0 and total > 10,
           "rewind: the new gateway answers X's and Y's homes at the new primary's versions "
           "(%d of %d reads wrong)" % (wrong, total))
    report(fresh.metric("kc_log_rewinds_total") >= 1 and "rewound" in fresh.log_text(),
           "rewind: the new gateway found the log rewound under the Redis watermark (logged, counted)")

    # the frozen gateway resumes while Redis is down: only its own cursor can tell
    report(redis("stop").returncode == 0, "rewind: Redis is stopped before the frozen gateway resumes")
    n_before = len(ws.messages)
    gw.proc.send_signal(signal.SIGCONT)
    refetch = wait_for(lambda: [m for m in ws.messages[n_before:] if m.get("type") == "refetch"], 15)
    report(bool(refetch) and refetch[0].get("reason") == "rewound" and refetch[0]["last_event_id"] >= lost_end,
           "rewind: with Redis down, X's WebSocket is told to refetch, from the new log's end (%.1f s after "
           "the promotion)" % (time.time() - t_promoted), ws.messages[n_before:][-5:])
    report(gw.metric("kc_log_rewinds_total") >= 1 and '"cursor":"listener"' in gw.log_text(),
           "rewind: the resumed gateway found the log rewound under its own cursor")
    mark = len(ws.messages)
    buy(R, x)
    wait_for(lambda: purchase_done(R, x) == 1, 30)
    log = [int(r) for r in (q(R, "SELECT string_agg(pos::text, ',' ORDER BY pos) FROM kc_flow.events_since(%s, %s, 1000)",
                             (refetch[0]["last_event_id"] if refetch else head(R), x)) or "").split(",") if r]
    wait_for(lambda: len([m for m in ws.messages[mark:] if m.get("type") == "event"]) >= len(log), 10)
    got = [m["id"] for m in ws.messages[n_before:] if m.get("type") == "event"]
    report(bool(log) and got == log,
           "rewind: after the refetch X's WebSocket gets X's new events, each once, in order, Redis still "
           "down (%d)" % len(log), (got, log))
    report(redis("start").returncode == 0, "rewind: Redis is back (empty)")
    report(settled(gw, R) and wait_for(lambda: gw.readyz()[1].get("cache_synced"), 15),
           "rewind: the resumed gateway syncs its cache with the new primary")
    wrong, total = exact_answers(gw, R, [x, y], 2.0)
    report(wrong == 0 and total > 10,
           "rewind: the resumed gateway answers X's and Y's homes at the new primary's versions "
           "(%d of %d reads wrong)" % (wrong, total))

    # a cursor above the head (the lost positions, once the log is past them: any far one)
    past = head(R) + 1000
    st, _, body = gw.get("/api/v1/events/recent?after=%d" % past, token(x))
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = None
    report(st == 410 and code == "refetch" and "past the end" in body, "rewind: /events/recent with after= above the log's head is "
           "410 refetch (%s %s)" % (st, body[:200]))
    ws.close()
    fresh.stop()
    gw.stop()
    return 0 if RESULTS["fail"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
