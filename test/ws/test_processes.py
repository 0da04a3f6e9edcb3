"""test/ws/test_processes.py - kc-gateway --processes 2 (gateway/supervisor.c): one port served
by two children under a supervisor, fed by one listener process (gateway/feed.h). The home is
served and both children answer; a push reaches sockets held by each child; the gateway holds
one LISTEN connection and invalidates each event once, not once per child; /metrics adds both
children's requests up; a child killed with SIGKILL is restarted while the port keeps answering;
the listener process killed with SIGKILL is restarted and the sockets of both children get every
event committed meanwhile, in order, once; SIGTERM stops every process; children that keep dying
make the supervisor give up with exit status 1.

Which child holds a socket is read from /proc: the child whose descriptors include the socket
inode that /proc/net/tcp gives for the client's port. Each check prints "ok - ws: ..." or
"not ok - ws: ...".
"""
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import traceback

import websockets

sys.path.insert(0, os.path.dirname(__file__))
from wslib import Gateway, ROOT, SECRET, db, emit, new_student, report, token, RESULTS  # noqa: E402
from test_ws import read_events, recv_json  # noqa: E402

TMP = os.environ.get("KC_WS_TMP", "/tmp")
REDIS = os.environ["KC_REDIS_URL"].rsplit("/", 1)[0]


def all_children(pid):
    """The supervisor's processes, by pid: the children and the listener process."""
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return sorted(int(p) for p in f.read().split())
    except OSError:
        return []


def comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return None


def children(pid):
    """The supervisor's children that serve HTTP, by pid."""
    return [p for p in all_children(pid) if comm(p) != "kc-gw-listener"]


def listener_process(pid):
    """The listener process (gateway/feed_process.c), or None."""
    return next((p for p in all_children(pid) if comm(p) == "kc-gw-listener"), None)


def listen_connections(conn):
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'kc-gateway-listener' "
                "AND datname = current_database()")
    return cur.fetchone()[0]


def socket_inodes(pid):
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            link = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return inodes


def holder(gw_port, client_port, kids):
    """The child (pid) holding the server end of the connection from client_port, or None."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            local, remote, inode = cols[1], cols[2], cols[9]
            if int(local.split(":")[1], 16) == gw_port and int(remote.split(":")[1], 16) == client_port:
                for k in kids:
                    if inode in socket_inodes(k):
                        return k
    return None


def served_by(gw, n=40):
    """The children (their "process" in /readyz) that answered n fresh connections."""
    seen = set()
    for _ in range(n):
        seen.add(json.loads(gw.get("/readyz")[2]).get("process"))
    return seen


def test_home(gw, student):
    st, _, body = gw.get("/api/v1/students/%s/home" % student, {"Authorization": "Bearer " + token(student)})
    seen = served_by(gw)
    report(st == 200 and "version" in json.loads(body) and seen == {1, 2},
           "--processes 2: the home is served, and both children answer on the one port", (st, body[:200], seen))


def test_push_both(gw, conn, student):
    kids = children(gw.proc.pid)

    async def run():
        wss = [await websockets.connect(gw.ws_url("/api/v1/ws?access_token=" + token(student)))
               for _ in range(16)]
        for w in wss:
            await recv_json(w)
        held = [holder(gw.port, w.local_address[1], kids) for w in wss]
        gauge = gw.metric("kc_ws_connections")
        ids = emit(conn, student, 1)
        got = [await read_events(w, ids, 10) for w in wss]
        for w in wss:
            await w.close()
        return held, gauge, ids, got
    held, gauge, ids, got = asyncio.run(run())
    everyone = all([e["id"] for e in g] == ids for g in got)
    report(len(kids) == 2 and set(held) == set(kids) and everyone and gauge == 16,
           "--processes 2: a push reaches the sockets of both children; kc_ws_connections counts all 16",
           (kids, held, gauge, ids, [len(g) for g in got]))


def test_one_listener(gw, conn, student, listens_before):
    """One LISTEN connection for the gateway, and each event invalidated once, not once per child."""
    def counts():
        return [gw.metric(m) or 0 for m in ("kc_cache_invalidation_batches_total",
                                             "kc_cache_invalidations_total",
                                             "kc_cache_invalidations_skipped_total", "kc_events_total")]
    listens = listen_connections(conn) - listens_before
    before = counts()
    ids = emit(conn, student, 1)
    after = before
    for _ in range(50):
        after = counts()
        if after[3] - before[3] >= 1:
            break
        time.sleep(0.1)
    time.sleep(0.5)             # a second child's invalidation, if there were one, comes meanwhile
    after = counts()
    d = [a - b for a, b in zip(after, before)]
    report(listens == 1 and len(ids) == 1 and d[0] == 1 and d[1] + d[2] == 1 and d[3] == 1,
           "--processes 2: one LISTEN connection for the gateway; an event costs one Redis invalidation "
           "in all, not one per child", (listens, ids, before, after))


def test_listener_restart(gw, conn, student):
    """The listener process killed: restarted, and both children's sockets miss nothing."""
    kids = children(gw.proc.pid)
    victim = listener_process(gw.proc.pid)

    async def run():
        wss = [await websockets.connect(gw.ws_url("/api/v1/ws?access_token=" + token(student)))
               for _ in range(16)]
        for w in wss:
            await recv_json(w)
        held = {holder(gw.port, w.local_address[1], kids) for w in wss}
        ids = emit(conn, student, 2)
        if victim:
            os.kill(victim, signal.SIGKILL)
        ids += emit(conn, student, 3)     # committed while no listener runs
        time.sleep(0.3)
        ids += emit(conn, student, 2)
        got = [await read_events(w, ids, 15) for w in wss]
        for w in wss:
            await w.close()
        return held, ids, got
    held, ids, got = asyncio.run(run())
    ready = None
    for _ in range(100):
        body = json.loads(gw.get("/readyz")[2])
        if body.get("status") == "ready":
            ready = body
            break
        time.sleep(0.1)
    now = listener_process(gw.proc.pid)
    exact = all([e["id"] for e in g] == ids for g in got)
    report(victim and now and now != victim and held == set(kids) and len(ids) == 7 and exact and ready,
           "--processes 2: the listener process killed with SIGKILL is restarted; the sockets of both "
           "children get the 7 events committed around it, in order, once; ready again",
           (victim, now, held, kids, ids, [[e["id"] for e in g] for g in got][:2], ready))


def test_metrics_sum(gw):
    def count():
        return gw.metric('kc_http_requests_total{route="healthz",code="200"}') or 0
    before = count()
    for _ in range(30):
        gw.get("/healthz")
    after = count()
    seen = served_by(gw, 20)
    report(after - before == 30 and seen == {1, 2},
           "--processes 2: /metrics counts the requests of both children (30 of 30), whichever answers",
           (before, after, seen))


def test_restart(gw):
    kids = children(gw.proc.pid)
    victim = kids[0] if kids else 0
    if victim:
        os.kill(victim, signal.SIGKILL)
    codes = [gw.get("/healthz")[0] for _ in range(40)]
    ready = None
    for _ in range(100):
        body = json.loads(gw.get("/readyz")[2])
        if body.get("status") == "ready" and body.get("processes_serving") == 2:
            ready = body
            break
        time.sleep(0.1)
    now = children(gw.proc.pid)
    with open(gw.log_path) as f:
        died = [json.loads(l) for l in f if '"child died' in l]
    report(victim and len(now) == 2 and victim not in now and codes == [200] * 40 and ready and
           gw.metric("kc_gateway_restarts_total") == 1 and died and died[-1].get("childPid") == victim
           and died[-1].get("signal") == 9,
           "--processes 2: a child killed with SIGKILL is logged and restarted; the port answers throughout",
           (kids, now, codes, ready, died))


def test_stop(gw):
    kids = all_children(gw.proc.pid)
    rc = gw.stop()
    gone = all(not os.path.exists("/proc/%d" % k) for k in kids)
    report(len(kids) == 3 and rc == 0 and gone,
           "--processes 2: SIGTERM stops both children and the listener process, exit 0", (kids, rc, gone))


def test_give_up():
    """Children that die at start (no Redis URL they can parse) make the supervisor exit 1."""
    e = dict(os.environ, KC_LISTEN="127.0.0.1:0", KC_JWT_SECRET=SECRET, KC_PROCESSES="2",
             KC_REDIS_URL="redis://127.0.0.1:notaport/0")
    with open(os.path.join(TMP, "gateway-giveup.log"), "w") as log:
        p = subprocess.Popen([os.path.join(ROOT, "gateway/kc-gateway")], env=e, stdout=log, stderr=log)
        try:
            rc = p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
    with open(os.path.join(TMP, "gateway-giveup.log")) as f:
        text = f.read()
    report(rc == 1 and "giving up" in text, "--processes 2: children that keep dying stop the gateway, exit 1",
           (rc, text[-600:]))


def check(name, fn):
    try:
        fn()
    except Exception:
        report(False, name + " (raised)", traceback.format_exc())


def main():
    conn = db()
    student = new_student(conn, "ws processes")
    listens_before = listen_connections(conn)
    gw = Gateway(TMP, "processes", KC_PROCESSES=2, KC_REDIS_URL=REDIS + "/7")
    try:
        check("home", lambda: test_home(gw, student))
        check("push both", lambda: test_push_both(gw, conn, student))
        check("one listener", lambda: test_one_listener(gw, conn, student, listens_before))
        check("metrics sum", lambda: test_metrics_sum(gw))
        check("restart", lambda: test_restart(gw))
        check("listener restart", lambda: test_listener_restart(gw, conn, student))
        check("stop", lambda: test_stop(gw))
    finally:
        gw.stop()
    check("give up", test_give_up)
    print("# ws processes: %d passed, %d failed" % (RESULTS["ok"], RESULTS["fail"]))


if __name__ == "__main__":
    main()
