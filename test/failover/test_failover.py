"""test/failover/test_failover.py - kc-gateway on a primary and its synchronous hot standby
(test/suites/47_failover.sh makes them): read replicas, a URL of standbys only, and a failover.

Each check prints "ok - failover: ..." or "not ok - failover: ..."; measured times print as
"# figure: ..." lines.
"""
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fo_lib import (RESULTS, Gateway, Listener, buy, connect, db_version, figure, new_student, purchase_done,  # noqa: E402
                    q, report, settled, stale_answers, view_version, wait_for)

TMP = os.environ["FO_TMP"]
PG_BIN = os.environ["PG_BIN"]
P = int(os.environ["PRIMARY_PORT"])
S = int(os.environ["STANDBY_PORT"])
PRIMARY_DIR = os.environ["PRIMARY_DIR"]
STANDBY_DIR = os.environ["STANDBY_DIR"]
REDIS = "redis://127.0.0.1:%s/" % os.environ["REDIS_PORT"]
URL = "postgresql://postgres@127.0.0.1:%d/kc_fo"
BOTH = "postgresql://postgres@127.0.0.1:%d,127.0.0.1:%d/kc_fo?target_session_attrs=read-write" % (P, S)
WORKERS = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'kc_flow worker'"


def as_pg(cmd):
    return (["runuser", "-u", "postgres", "--"] + cmd) if os.getuid() == 0 else cmd


def redis_cli(db, *args):
    port = os.environ["REDIS_PORT"]
    return subprocess.run(["redis-cli", "-p", port, "-n", str(db)] + list(args),
                          capture_output=True, text=True, timeout=10).stdout.strip()


def replicated(students):
    return q(S, "SELECT count(*) FROM kc_flow.students WHERE id = ANY(%s::uuid[])", (students,)) == len(students)


def fence(db, student):
    v = redis_cli(db, "GET", "student:ver:" + student)
    return int(v) if v else -1


def replica_lag():
    """From a commit's acknowledgement on the primary to its row read on the standby, 5 times,
    on connections held open (polling as fast as one query allows)."""
    lags = []
    primary, standby = connect(P), connect(S)
    for i in range(5):
        with primary.cursor() as cur:
            cur.execute("INSERT INTO kc_flow.students (display_name) VALUES (%s) RETURNING id::text", ("fo-lag-%d" % i,))
            s = cur.fetchone()[0]
        t = time.time()             # the insert's commit is acknowledged (autocommit)
        with standby.cursor() as cur:
            while time.time() < t + 10:
                cur.execute("SELECT count(*) FROM kc_flow.students WHERE id = %s", (s,))
                if cur.fetchone()[0]:
                    break
        lags.append(time.time() - t)
    primary.close()
    standby.close()
    figure("replica lag (synchronous standby): a commit acknowledged on the primary -> readable on "
           "the standby: %s ms (loadavg %s)" % (", ".join("%.1f" % (x * 1e3) for x in lags),
                                                open("/proc/loadavg").read().split()[0]))


def test_replicas(students):
    a, b, c, d = students[:4]
    replica_lag()
    # Redis alone (no in-process cache), so that deleting a view in Redis makes the next read a miss
    gw = Gateway(TMP, "replica", KC_DATABASE_URL=URL % P, KC_REPLICA_URL=URL % S, KC_REDIS_URL=REDIS + "0",
                 KC_LOCAL_CACHE=0)
    try:
        reads, falls = gw.metric("kc_replica_reads_total"), gw.metric("kc_replica_fallbacks_total")
        for s in (a, c):
            st, v, xc = gw.home(s)
            report(st == 200 and xc == "MISS" and v == db_version(P, s) and fence(0, s) == v and
                   gw.metric("kc_replica_reads_total") == reads,
                   "with no fence in Redis a miss is read on the primary, and its fill sets the fence (v%s)" % v,
                   (st, v, xc, fence(0, s)))
            redis_cli(0, "DEL", "student:home:" + s)
        report(gw.metric("kc_replica_fallbacks_total") == falls + 2,
               "... counted as replica fallbacks (the replica's view was refused without a fence)")
        st, v, xc = gw.home(a)
        report(st == 200 and xc == "MISS" and v == db_version(P, a) and
               gw.metric("kc_replica_reads_total") == reads + 1,
               "a miss is answered by the replica when it has replayed the student's version", (st, v, xc))
        st, v2, xc = gw.home(a)
        report(st == 200 and xc == "HIT" and v2 == v, "the replica's view was filled: the next read hits", xc)

        q(S, "SELECT pg_wal_replay_pause()")
        report(wait_for(lambda: q(S, "SELECT pg_get_wal_replay_pause_state()") == "paused", 10),
               "the replica's replay is paused (pg_wal_replay_pause)")
        for s in (b, d):
            buy(P, s)
        report(wait_for(lambda: purchase_done(P, b) and purchase_done(P, d) and
                        fence(0, b) >= db_version(P, b) and fence(0, d) >= db_version(P, d), 20),
               "purchases of B and D are applied by the gateway (fences raised)")
        behind = view_version(S, b)
        report(behind < db_version(P, b), "the paused replica shows B's older view (v%d < v%d)"
               % (behind, db_version(P, b)))
        reads, falls = gw.metric("kc_replica_reads_total"), gw.metric("kc_replica_fallbacks_total")
        st, v, xc = gw.home(b)
        report(st == 200 and v == db_version(P, b) and gw.metric("kc_replica_reads_total") == reads and
               gw.metric("kc_replica_fallbacks_total") == falls + 1,
               "a lagging replica never answers an older view than the fence: the primary does", (st, v, behind))
        st, v, xc = gw.home(c)
        report(st == 200 and v == db_version(P, c) and gw.metric("kc_replica_reads_total") == reads + 1,
               "the paused replica still answers a student it is current for", (st, v))
        # the fence lost (as after a Redis flush): ?min_version= alone keeps the older view out
        redis_cli(0, "DEL", "student:ver:" + d, "student:home:" + d)
        want = db_version(P, d)
        st, v, xc = gw.home(d, "?min_version=%d" % want)
        report(st == 200 and v == want and view_version(S, d) < want,
               "?min_version=V above the replica's replay: the primary answers (v%s)" % v, (st, v, want))
        stale, failed, total = stale_answers(gw, P, [a, b, c, d], 2.0)
        report(stale == 0 and failed == 0 and total > 8,
               "replica paused: 0 stale answers (%d reads, %d failed)" % (total, failed))
        q(S, "SELECT pg_wal_replay_resume()")
        report(wait_for(lambda: view_version(S, b) == db_version(P, b), 15), "the replica catches up once resumed")
    finally:
        q(S, "SELECT pg_wal_replay_resume()")
        gw.stop()

    # a replica that is down: every miss goes to the primary, said once in the log
    dead = Gateway(TMP, "dead-replica", KC_DATABASE_URL=URL % P, KC_REPLICA_URL=URL % 1,
                   KC_REDIS_URL=REDIS + "1")
    try:
        answers = [dead.home(s) for s in (a, b, c)]
        report(all(st == 200 and v == db_version(P, s) for (st, v, _), s in zip(answers, (a, b, c))) and
               dead.metric("kc_replica_fallbacks_total") >= 3 and dead.metric("kc_replica_reads_total") == 0,
               "a replica that is down: misses are answered by the primary", answers)
        report(dead.log_text().count('"replica unavailable"') == 1,
               "a replica that is down is logged once (replica unavailable)", dead.log_text()[-800:])
    finally:
        dead.stop()


def test_standby_only():
    """A gateway whose URL lists only the standby: says so, 503 with the reason, keeps trying.
    Left running: the failover test checks that it becomes ready on promotion."""
    gw = Gateway(TMP, "standby-only", ready=False, KC_DATABASE_URL=URL % S + "?target_session_attrs=read-write",
                 KC_REDIS_URL=REDIS + "2")
    r = wait_for(lambda: (lambda x: x if x[0] == 503 and x[1].get("reason", "").startswith("postgres:") else None)
                 (gw.readyz()), 10)
    report(r is not None and r[1]["reason"] == "postgres: no read-write server (only standbys)",
           "URL of standbys only: /readyz 503 \"postgres: no read-write server (only standbys)\"", r)
    log = gw.log_text()
    report("no read-write server, only standbys" in log and '"hosts":"127.0.0.1"' in log and
           '"ports":"%d"' % S in log, "URL of standbys only: the log names the hosts and says it retries",
           log[-1000:])
    time.sleep(2)
    report(gw.alive() and log.count("only standbys") <= 2,
           "URL of standbys only: the gateway keeps running and does not repeat the line", log[-600:])
    return gw


def test_failover(students, standby_only):
    a, b, c, d, e, f = students
    report(q(S, WORKERS) == 0 and q(P, WORKERS) >= 1,
           "before promotion: kc_flow workers run on the primary (%s), none on the standby (%s)"
           % (q(P, WORKERS), q(S, WORKERS)))
    gw = Gateway(TMP, "failover", KC_DATABASE_URL=BOTH, KC_REDIS_URL=REDIS + "3")
    ws = Listener(gw, e)
    report(ws.hello is not None, "a WebSocket client of E is connected", ws.error)
    for s in students:
        gw.home(s)
    report(all(gw.home(s)[2] == "HIT" for s in students), "views of six students are cached")
    buy(P, f)       # acknowledged: on the standby too (synchronous)
    polls = []
    stop = threading.Event()

    def poll_ready():
        while not stop.is_set():
            st, body = gw.readyz()
            polls.append((time.time(), st, body.get("reason")))
            time.sleep(0.05)
    poller = threading.Thread(target=poll_ready, daemon=True)
    poller.start()

    pid = int(open(os.path.join(PRIMARY_DIR, "data", "postmaster.pid")).readline())
    t0 = time.time()
    os.kill(pid, 9)
    wait_for(lambda: not os.path.exists("/proc/%d" % pid) or
             open("/proc/%d/stat" % pid).read().split(") ")[1][0] == "Z", 10, 0.02)
    time.sleep(1.0)          # what a failover tool's detection would take at least
    t_kill_seen = time.time()
    res = subprocess.run(as_pg([os.path.join(PG_BIN, "pg_ctl"), "-D", os.path.join(STANDBY_DIR, "data"),
                                "promote", "-w", "-t", "60"]), capture_output=True, text=True)
    t_promoted = time.time()
    report(res.returncode == 0, "pg_ctl promote of the standby", res.stderr)

    def fresh_read():
        st, v, _ = gw.home(a)
        return st == 200 and v >= db_version(S, a)
    report(wait_for(fresh_read, 30, 0.02), "the gateway answers from the new primary")
    t_read = time.time()
    t_buy = None
    for _ in range(300):
        try:
            buy(S, e)
            t_buy = time.time()
            break
        except Exception:
            time.sleep(0.05)
    report(t_buy is not None, "a purchase commits on the new primary")
    # E bought nothing before: any event of E now is its new purchase's
    pushed = wait_for(lambda: [x for x in ws.events if x["_at"] > t0], 30, 0.02)
    report(bool(pushed), "pushes resume: E's WebSocket gets its new purchase's events", ws.events[-3:])
    stop.set()
    poller.join(5)
    if pushed:
        figure("failover: kill -9 -> promote done %.2f s (1.0 s of it waiting before promote), "
               "-> first fresh read %.2f s (%.2f s after promote), -> first purchase committed %.2f s, "
               "-> its first push %.2f s (loadavg %s)" % (t_promoted - t0, t_read - t0, t_read - t_promoted,
                                                          t_buy - t0, pushed[0]["_at"] - t0,
                                                          open("/proc/loadavg").read().split()[0]))
    # readyz: 503 while there is no primary, 200 again after
    down = [p for p in polls if t0 + 0.3 < p[0] < t_promoted]
    report(down and all(p[1] == 503 for p in down),
           "readyz: 503 from the kill to the promotion (%d polls, reasons %s)"
           % (len(down), sorted({str(p[2]) for p in down})), [p for p in down if p[1] != 503][:5])
    report(wait_for(lambda: gw.readyz()[0] == 200, 15), "readyz: 200 again on the new primary")
    # nothing lost, nothing twice: E's pushes are its log from the hello on, in order
    log = [r for r in (q(S, "SELECT string_agg(pos::text, ',' ORDER BY pos) FROM kc_flow.events_since(%s, %s, 10000)",
                         (ws.hello["last_event_id"], e)) or "").split(",") if r]
    wait_for(lambda: len(ws.ids()) >= len(log), 10)
    report(ws.ids() == [int(x) for x in log],
           "E's WebSocket got every event of its log once, in order (%d events)" % len(log), (ws.ids(), log))
    ws.close()
    report(wait_for(lambda: purchase_done(S, f) == 1, 20),
           "a purchase acknowledged before the kill ends with its sessions exactly once on the new primary")
    report(settled(gw, S), "the pipeline settles on the new primary: queue empty, the whole log applied")
    stale, failed, total = stale_answers(gw, S, students, 3.0)
    report(stale == 0 and failed == 0 and total > 20,
           "after the failover: 0 stale answers (%d reads, %d failed)" % (total, failed))
    report(wait_for(lambda: q(S, WORKERS) >= 1, 15),
           "after promotion: kc_flow workers run on the promoted standby (%s)" % q(S, WORKERS))
    t = time.time()
    ok = wait_for(lambda: standby_only.readyz()[0] == 200, 20)
    report(ok and standby_only.alive(), "the gateway started on the standby-only URL becomes ready once it is "
           "promoted (%.1f s after the check began)" % (time.time() - t))
    report('"listen connection lost"' in gw.log_text() or "listening on kc_flow_events" in gw.log_text(),
           "the gateway logged the lost connection and LISTENs again")
    standby_only.stop()
    gw.stop()


def main():
    report(wait_for(lambda: q(P, "SELECT sync_state FROM pg_stat_replication") == "sync", 20),
           "the standby streams synchronously (pg_stat_replication)")
    students = [new_student(P, "fo-%d" % i) for i in range(6)]
    report(wait_for(lambda: replicated(students), 10), "the students reach the standby")
    test_replicas(students)
    standby_only = test_standby_only()
    test_failover(students, standby_only)
    return 0 if RESULTS["fail"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
