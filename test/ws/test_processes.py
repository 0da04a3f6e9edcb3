"""test/ws/test_processes.py - kc-gateway --processes 2 (gateway/supervisor.c): one port served
by two children under a supervisor, fed by one listener process (gateway/feed.h). The home is
served and both children answer; a push reaches sockets held by each child; the gateway holds
one LISTEN connection and invalidates each event once, not once per child; /metrics adds both
children's requests up; a child killed with SIGKILL is restarted while the port keeps answering;
the listener process killed with SIGKILL is restarted and the sockets of both children get every
event committed meanwhile, in order, once; the events of one transaction, more than the feed
sends to a child at once, reach both children's sockets in order, once; SIGTERM stops every process; children that keep dying
make the supervisor give up with exit status 1. A child stopped (SIGSTOP) while more events are
committed than its feed buffer holds is dropped from the feed (the listener process logs it), its
sockets get {"type":"refetch"} while the other child's get every event, and once resumed it
serves a home that shows those events and reports ready at the head of the log.

Which child holds a socket is read from /proc: the child whose descriptors include the socket
inode that /proc/net/tcp gives for the client's port. Each check prints "ok - ws: ..." or
"not ok - ws: ...".
"""
import asyncio
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import traceback

import websockets

sys.path.insert(0, os.path.dirname(__file__))
from wslib import Gateway, ROOT, SECRET, db, emit, log_settle, new_student, report, token, RESULTS  # noqa: E402
from test_ws import read_events, recv_json, strictly_increasing  # noqa: E402

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


PAD = 30000     # bytes of padding per event: a feed buffer of 4 MiB fills in about 140 of them


def emit_padded(conn, student, n):
    """n events of about PAD bytes each, in one transaction; their log positions, in order."""
    with conn.cursor() as cur:
        cur.execute("SELECT kc_flow.emit_event('SESSIONS_GENERATED', gen_random_uuid(), %s, "
                    "jsonb_build_object('n', g, 'pad', repeat('x', %s))) FROM generate_series(1, %s) g",
                    (student, PAD, n))
        eids = [r[0] for r in cur.fetchall()]
    log_settle(conn)
    with conn.cursor() as cur:
        cur.execute("SELECT pos FROM kc_flow.event_log WHERE event_id = ANY(%s) ORDER BY pos", (eids,))
        return [r[0] for r in cur.fetchall()]


def emit_many(conn, student, n, pad):
    """n events of pad bytes of padding each, in one transaction; their log positions, in order."""
    with conn.cursor() as cur:
        cur.execute("SELECT kc_flow.emit_event('SESSIONS_GENERATED', gen_random_uuid(), %s, "
                    "jsonb_build_object('n', g, 'pad', repeat('x', %s))) FROM generate_series(1, %s) g",
                    (student, pad, n))
        eids = [r[0] for r in cur.fetchall()]
    log_settle(conn)
    with conn.cursor() as cur:
        cur.execute("SELECT pos FROM kc_flow.event_log WHERE event_id = ANY(%s) ORDER BY pos", (eids,))
        return [r[0] for r in cur.fetchall()]


def test_batches(gw, conn, student):
    """The feed hands a catch-up batch to each child in sendmmsg calls of at most 64 events and
    64 KiB (feed.c): a transaction of 150 small events and one of 6 events of 30,000 bytes each
    take several; every socket of both children gets every event, in order, once."""
    kids = children(gw.proc.pid)

    async def run():
        wss = [await websockets.connect(gw.ws_url("/api/v1/ws?access_token=" + token(student)),
                                        max_size=None) for _ in range(8)]
        for w in wss:
            await recv_json(w)
        held = [holder(gw.port, w.local_address[1], kids) for w in wss]
        ids = emit_many(conn, student, 150, 10) + emit_many(conn, student, 6, PAD)
        got = [await read_events(w, ids, 20) for w in wss]
        extra = []
        for w in wss:
            try:
                extra.append(await recv_json(w, 0.3))
            except asyncio.TimeoutError:
                pass
            await w.close()
        return held, ids, got, extra
    held, ids, got, extra = asyncio.run(run())
    report(set(held) == set(kids) and len(ids) == 156 and all([e["id"] for e in g] == ids for g in got)
           and not [m for m in extra if m.get("type") == "event"],
           "--processes 2: 150 events of one transaction, then 6 of 30,000 bytes: the sockets of both "
           "children get all 156, in order, once", (held, len(ids), [len(g) for g in got], extra[:2]))


def student_version(conn, student):
    """The version of the student's newest event."""
    with conn.cursor() as cur:
        cur.execute("SELECT max(version) FROM kc_flow.events_since(kc_flow.log_floor(), %s, 10000)", (student,))
        return cur.fetchone()[0]


def log_lines(gw, text):
    with open(gw.log_path) as f:
        return [json.loads(l) for l in f if text in l]


def keepalive_to(gw, pid, tries=40):
    """A kept-alive HTTP connection that the child pid serves, and that child's "process"."""
    for _ in range(tries):
        c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        c.connect()
        if holder(gw.port, c.sock.getsockname()[1], [pid]) == pid:
            c.request("GET", "/readyz")
            return c, json.loads(c.getresponse().read()).get("process")
        c.close()
    return None, None


def get_on(c, path, headers=None):
    c.request("GET", path, headers=headers or {})
    r = c.getresponse()
    return r.status, dict(r.getheaders()), r.read().decode()


async def collect(ws, into, stop):
    """Every message of ws into `into` until stop is set or the socket closes."""
    while not stop.is_set():
        try:
            into.append(json.loads(await asyncio.wait_for(ws.recv(), 0.2)))
        except asyncio.TimeoutError:
            continue
        except websockets.ConnectionClosed:
            return


def test_child_behind(gw, conn):
    """A child that falls behind the feed by more than its buffer: dropped, refetch, resync."""
    student = new_student(conn, "ws processes behind")
    quiet = new_student(conn, "ws processes behind, quiet")     # its events come only past the buffer
    auth = {"Authorization": "Bearer " + token(student)}
    home = "/api/v1/students/%s/home" % student
    quiet_auth = {"Authorization": "Bearer " + token(quiet)}
    quiet_home = "/api/v1/students/%s/home" % quiet
    kids = children(gw.proc.pid)
    slow = kids[0]
    ka, slow_index = keepalive_to(gw, slow)
    kb, _ = keepalive_to(gw, kids[1])
    stopped = []

    async def run():
        loop = asyncio.get_running_loop()
        wss = [await websockets.connect(gw.ws_url("/api/v1/ws?access_token=" + token(student)),
                                        max_size=None) for _ in range(12)]
        for w in wss:
            await recv_json(w)
        held = [holder(gw.port, w.local_address[1], kids) for w in wss]
        # the slow child's in-process cache holds the home before it falls behind
        get_on(ka, home, auth)
        st, h, body = get_on(ka, home, auth)
        warm = (st, h.get("X-Cache"), json.loads(body).get("version"))
        get_on(ka, quiet_home, quiet_auth)
        st, h, body = get_on(ka, quiet_home, quiet_auth)
        quiet_warm = (st, h.get("X-Cache"), json.loads(body).get("version"))
        msgs = [[] for _ in wss]
        stop = asyncio.Event()
        readers = [asyncio.create_task(collect(w, m, stop)) for w, m in zip(wss, msgs)]
        os.kill(slow, signal.SIGSTOP)
        stopped.append(slow)

        async def readyz_others(n=3):
            """/readyz as the other child answers it n times, on its kept-alive connection (a new
            connection may be handed to the stopped child's listening socket and never answered)."""
            return [await loop.run_in_executor(None, get_on, kb, "/readyz") for _ in range(n)]
        # stopped but not dropped: one event it is not handed for more than 5 s after the
        # listener process handed it out (to the other child's sockets too)
        ids = await loop.run_in_executor(None, emit, conn, student, 1)
        deadline = time.time() + 10
        while time.time() < deadline and not any(
                m.get("id") == ids[0] for ms, k in zip(msgs, held) if k != slow for m in ms):
            await asyncio.sleep(0.02)
        await asyncio.sleep(5.6)
        ready_behind = await readyz_others()
        while len(ids) < 600 and not log_lines(gw, "feed: dropping a gateway process"):
            ids += await loop.run_in_executor(None, emit_padded, conn, student, 20)
        # past the drop: events the stopped child is never handed, for a student it holds in cache
        await loop.run_in_executor(None, emit, conn, quiet, 2)
        quiet_version = student_version(conn, quiet)
        # asked of the stopped child now, answered when it resumes, before it has read its feed
        early = loop.run_in_executor(None, get_on, ka, "%s?min_version=%d" % (quiet_home, quiet_version),
                                     quiet_auth)
        # while it is stopped and dropped, the other child answers /readyz (the stopped one cannot)
        ready_other = await readyz_others()
        os.kill(slow, signal.SIGCONT)
        stopped.pop()
        st, h, body = await early
        quiet_early = (st, h.get("X-Cache"), json.loads(body).get("version"), quiet_version)
        # resumed: its sockets get refetch, then new events again
        deadline = time.time() + 15
        while time.time() < deadline and not all(
                any(m.get("type") == "refetch" for m in ms) for ms, k in zip(msgs, held) if k == slow):
            await asyncio.sleep(0.1)
        after = await loop.run_in_executor(None, emit, conn, student, 1)
        ids += after
        deadline = time.time() + 15
        while time.time() < deadline and not all(
                any(m.get("id") == after[0] for m in ms) for ms in msgs):
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*readers)
        for w in wss:
            await w.close()
        return held, warm, quiet_warm, quiet_early, ids, msgs, ready_behind, ready_other
    try:
        held, warm, quiet_warm, quiet_early, ids, msgs, ready_behind, ready_other = asyncio.run(run())
    finally:
        for p in stopped:
            os.kill(p, signal.SIGCONT)
    # the resumed child: its home shows the last event, and it is ready at the log's head
    st, h, body = get_on(ka, home, auth)
    fresh = (st, h.get("X-Cache"), json.loads(body).get("version"))
    st, h, body = get_on(ka, quiet_home, quiet_auth)
    quiet_fresh = (st, h.get("X-Cache"), json.loads(body).get("version"))
    st, h, body = get_on(kb, quiet_home, quiet_auth)
    quiet_other = (st, h.get("X-Cache"), json.loads(body).get("version"))
    ready_after = None
    for _ in range(50):
        st, _, body = get_on(kb, "/readyz")
        ready_after = (st, json.loads(body))
        if st == 200:
            break
        time.sleep(0.1)
    kb.close()
    ready_slow = None
    for _ in range(50):
        ready_slow = json.loads(get_on(ka, "/readyz")[2])
        if ready_slow.get("status") == "ready" and ready_slow.get("watermark", 0) >= ids[-1]:
            break
        time.sleep(0.1)
    ka.close()
    last_version = max((m["version"] for ms in msgs for m in ms if m.get("id") == ids[-1]), default=None)
    slow_msgs = [ms for ms, k in zip(msgs, held) if k == slow]
    other_msgs = [ms for ms, k in zip(msgs, held) if k != slow]
    dropped = log_lines(gw, "feed: dropping a gateway process")
    lost = [l for l in log_lines(gw, "feed from the listener process lost")
            if l.get("pid") == slow and dropped and l["ts"] >= dropped[0]["ts"]]
    listener = listener_process(gw.proc.pid)

    def event_ids(ms):
        return [m["id"] for m in ms if m.get("type") == "event"]
    report(len(ids) <= 601 and dropped and dropped[0].get("pid") == listener and
           dropped[0].get("reason") == "its socket buffer is full" and lost,
           "--processes 2: a child stopped while %d events were committed is dropped from the feed, and "
           "the listener process logs why" % len(ids), (len(ids), dropped, lost))
    report(slow_msgs and other_msgs and all(event_ids(ms) == ids for ms in other_msgs),
           "--processes 2: the other child's sockets get every event meanwhile, in order, once",
           (held, ids[:3], ids[-3:], [event_ids(ms)[-3:] for ms in other_msgs]))
    report(slow_msgs and all(any(m.get("type") == "refetch" for m in ms) and
                             strictly_increasing(event_ids(ms)) and event_ids(ms)[-1:] == ids[-1:]
                             for ms in slow_msgs),
           "--processes 2: the dropped child's sockets are told to refetch, then get new events",
           [[(m.get("type"), m.get("id")) for m in ms][-4:] for ms in slow_msgs])
    report(warm[0] == 200 and warm[1] == "HIT" and fresh[0] == 200 and last_version is not None and
           fresh[2] >= last_version and quiet_warm[0] == 200 and quiet_warm[1] == "HIT" and
           quiet_fresh[0] == 200 and quiet_other[0] == 200 and quiet_fresh[2] == quiet_other[2] > quiet_warm[2],
           "--processes 2: the resumed child's homes show the events committed while it was behind, "
           "those it was never handed too (its warm in-process cache is not served)",
           (warm, fresh, last_version, quiet_warm, quiet_fresh, quiet_other))
    report(quiet_early[0] == 200 and quiet_early[2] >= quiet_early[3] > quiet_warm[2],
           "--processes 2: a home asked with min_version of the stopped child, answered as it resumes, "
           "is not its older in-process view", quiet_early)
    named = "process %s (pid %d)" % (slow_index, slow)

    def refuses(answers, why):
        return answers and all(st == 503 and json.loads(b).get("status") == "not_ready" and
                               json.loads(b).get("process") != slow_index and
                               json.loads(b).get("reason", "").startswith(named + " " + why)
                               for st, _, b in answers)
    report(refuses(ready_behind, "is ") and "s behind the events the listener process handed out" in
           json.loads(ready_behind[0][2]).get("reason", ""),
           "--processes 2: a child stopped more than 5 s behind the feed makes the other answer /readyz "
           "503 naming it", ready_behind)
    report(refuses(ready_other, "was dropped from the feed"),
           "--processes 2: a child stopped and dropped from the feed makes the other answer /readyz "
           "503 naming it", ready_other)
    report(ready_after[0] == 200 and ready_after[1].get("status") == "ready" and
           ready_after[1].get("process") != slow_index and
           ready_slow.get("status") == "ready" and ready_slow.get("process") == slow_index and
           ready_slow.get("watermark", 0) >= ids[-1],
           "--processes 2: once the child resumed and resynced, both children answer /readyz ready, "
           "it at the log's head", (ready_after, ready_slow, ids[-1]))


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
        check("batches", lambda: test_batches(gw, conn, student))
        check("restart", lambda: test_restart(gw))
        check("listener restart", lambda: test_listener_restart(gw, conn, student))
        check("child behind", lambda: test_child_behind(gw, conn))
        check("stop", lambda: test_stop(gw))
    finally:
        gw.stop()
    check("give up", test_give_up)
    print("# ws processes: %d passed, %d failed" % (RESULTS["ok"], RESULTS["fail"]))


if __name__ == "__main__":
    main()
