"""test/ws/test_ws.py - the WebSocket route of kc-gateway (docs/design.md §8) against a real
gateway, Postgres (the harness's cluster, workers on) and Redis, with real clients:
python3-websockets for well-behaved ones and a raw socket (wslib) for bad ones.

Each check prints "ok - ws: ..." or "not ok - ws: ...".
"""
import asyncio
import json
import os
import random
import socket
import sys
import threading
import time
import traceback
import uuid

import websockets

sys.path.insert(0, os.path.dirname(__file__))
from wslib import (Gateway, FrameReader, db, emit, frame, handshake, log_floor, log_ids, new_student,  # noqa: E402
                   report, token, RESULTS)

TMP = os.environ.get("KC_WS_TMP", "/tmp")
COURSE = "eeeeeeee-0000-4000-8000-0000000000c1"		# test/ws/fixture.sql


async def recv_json(ws, timeout=10):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def read_events(ws, want_ids, timeout=15):
    """Reads messages until every id in want_ids has been seen (or timeout); returns the events."""
    got = []
    want = set(want_ids)
    deadline = time.time() + timeout
    while want - {e["id"] for e in got} and time.time() < deadline:
        try:
            m = await recv_json(ws, max(0.1, deadline - time.time()))
        except asyncio.TimeoutError:
            break
        if m.get("type") == "event":
            got.append(m)
    return got


def strictly_increasing(ids):
    return all(a < b for a, b in zip(ids, ids[1:]))


def check(name, fn):
    try:
        fn()
    except Exception:
        report(False, name + " (raised)", traceback.format_exc())


# ---------------------------------------------------------------------------------

def test_handshakes(gw, student, other):
    t = token(student)
    path = "/api/v1/ws?access_token=" + t

    st, h, s, _ = handshake(gw.port, path, upgrade=False)
    s.close()
    report(st == 426 and h.get("sec-websocket-version") == "13", "no Upgrade header: 426 with Sec-WebSocket-Version", st)
    st, h, s, _ = handshake(gw.port, path, key="not-a-key")
    s.close()
    report(st == 400, "bad Sec-WebSocket-Key: 400", st)
    st, h, s, _ = handshake(gw.port, path, key=None)
    s.close()
    report(st == 400, "missing Sec-WebSocket-Key: 400", st)
    st, h, s, _ = handshake(gw.port, path, version="8")
    s.close()
    report(st == 426 and h.get("sec-websocket-version") == "13", "version 8: 426 naming version 13", st)
    st, h, s, _ = handshake(gw.port, "/api/v1/ws")
    s.close()
    report(st == 401, "no token: 401", st)
    st, h, s, _ = handshake(gw.port, "/api/v1/ws?access_token=" + token(student, secret="wrong"))
    s.close()
    report(st == 401, "token signed with another secret: 401", st)
    st, h, s, _ = handshake(gw.port, "/api/v1/ws?access_token=%s&student=%s" % (t, other))
    s.close()
    report(st == 403, "student token asking for another student: 403", st)
    st, h, s, _ = handshake(gw.port, path + "&after=-3")
    s.close()
    report(st == 400, "after=-3: 400", st)
    st, h, s, _ = handshake(gw.port, "/api/v1/ws?access_token=" + token(str(uuid.uuid4())))
    s.close()
    report(st == 404, "token of a student that does not exist: 404, as on the HTTP routes", st)
    st, h, s, _ = handshake(gw.port, "/api/v1/ws?student=%s&access_token=%s" % (uuid.uuid4(), token("ops", role="admin")))
    s.close()
    report(st == 404, "admin naming a student that does not exist: 404", st)
    st, h, s, _ = handshake(gw.port, path)
    ok = st == 101 and h.get("upgrade", "").lower() == "websocket" and "sec-websocket-accept" in h
    import base64
    import hashlib
    from wslib import KEY
    want = base64.b64encode(hashlib.sha1((KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
    s.close()
    report(ok and h["sec-websocket-accept"] == want, "valid handshake: 101 with the right Sec-WebSocket-Accept", h)
    st, h, s, _ = handshake(gw.port, "/api/v1/ws", headers={"Authorization": "Bearer " + t})
    s.close()
    report(st == 101, "token in the Authorization header works too", st)


def test_bad_frames(gw, student):
    path = "/api/v1/ws?access_token=" + token(student)
    cases = [
        ("unmasked client frame: close 1002", frame(1, b'{"x":1}', mask=False), 1002),
        ("client message above 4 KiB: close 1009", frame(1, b"x" * 8000), 1009),
        ("text frame with invalid UTF-8: close 1007", frame(1, b"\xff\xfe\xfd"), 1007),
        ("unknown opcode: close 1002", frame(3, b"abc"), 1002),
    ]
    for name, data, want in cases:
        st, h, s, rest = handshake(gw.port, path)
        r = FrameReader(s, rest)
        op, hello = r.next()
        s.sendall(data)
        code, _ = r.until_close()
        s.close()
        report(st == 101 and code == want, name, "status %s, close code %s" % (st, code))
    # a text message from the client is ignored, a ping is answered
    st, h, s, rest = handshake(gw.port, path)
    r = FrameReader(s, rest)
    r.next()
    s.sendall(frame(1, b'{"type":"hi"}') + frame(9, b"p1"))
    op, p = r.next()
    s.close()
    report(op == 10 and p == b"p1", "client ping answered with pong, client text ignored", (op, p))


def test_split_frames(gw, student):
    """The hub keeps a socket's wslay context only while a frame or a message is half read."""
    path = "/api/v1/ws?access_token=" + token(student)
    st, h, s, rest = handshake(gw.port, path)
    r = FrameReader(s, rest)
    r.next()
    ping = frame(9, b"split")
    s.sendall(ping[:3])
    time.sleep(0.3)
    s.sendall(ping[3:])
    op, p = r.next()
    report(st == 101 and op == 10 and p == b"split", "a ping that arrives in two pieces is answered", (op, p))
    # a message in two fragments, a pause between them: still one message to wslay
    s.sendall(frame(1, b"a" * 3000, fin=False))
    time.sleep(0.3)
    s.sendall(frame(0, b"b" * 3000))
    code, _ = r.until_close()
    s.close()
    report(code == 1009, "a fragmented client message above 4 KiB across a pause: close 1009 (not 1002)", code)


def gateway_rss_kib(gw):
    with open("/proc/%d/status" % gw.proc.pid) as f:
        return int(f.read().split("VmRSS:")[1].split()[0])


def test_idle_memory(gw, conn, student):
    """Idle sockets cost the gateway little: libmicrohttpd's connection memory is given back."""
    n = 400
    path = "/api/v1/ws?access_token=" + token(student)
    socks = []
    before = gateway_rss_kib(gw)
    try:
        for _ in range(n):
            st, h, s, rest = handshake(gw.port, path)
            r = FrameReader(s, rest)
            if st == 101 and r.next()[0] == 1:
                socks.append(r)
            else:
                s.close()
        time.sleep(0.5)
        per = (gateway_rss_kib(gw) - before) / n
        report(len(socks) == n and per < 10, "%d idle sockets: %.1f KiB of gateway RSS each (limit 10)" % (n, per),
               (len(socks), per))
        ids = emit(conn, student, 1)
        got = 0
        for r in socks:
            op, p = r.next()
            while op != 1:
                op, p = r.next()
            got += json.loads(p)["id"] == ids[0]
        report(got == n, "every one of the %d idle sockets receives the next event" % n, got)
    finally:
        for r in socks:
            r.s.close()


def test_replay(gw, conn, student):
    ids = emit(conn, student, 12)
    t = token(student)
    # the oldest cursor the log still answers: 0 until the log's ring has removed positions
    # (earlier suites on this cluster shorten kc_flow.event_retention); below it is a refetch
    start = log_floor(conn)

    async def run():
        async with websockets.connect(gw.ws_url("/api/v1/ws?after=%d&access_token=%s" % (start, t))) as ws:
            hello = await recv_json(ws)
            evs = await read_events(ws, ids)
            return hello, evs
    hello, evs = asyncio.run(run())
    report(hello == {"type": "hello", "student_id": student, "last_event_id": start},
           "hello names the student and the starting position", hello)
    got = [e["id"] for e in evs]
    report(got == log_ids(conn, student, start), "replay from the log's floor: every event of the student, in log order",
           got)
    e = evs[0] if evs else {}
    report(set(e) == {"type", "id", "event_type", "correlation_id", "version", "created_at", "payload"} and
           e["payload"] == {"n": 0} and e["event_type"] == "SESSIONS_GENERATED",
           "event message has the fields of DESIGN §8", e)
    st, _, body = gw.get("/api/v1/events/recent?after=%d&limit=1000" % start, {"Authorization": "Bearer " + t})
    polled = json.loads(body)["events"]
    same = [(p["id"], p["event_type"], p["version"], p["created_at"], p["payload"]) for p in polled] == \
           [(e["id"], e["event_type"], e["version"], e["created_at"], e["payload"]) for e in evs]
    report(same, "replay equals the polling fallback /events/recent", (polled[:2], evs[:2]))

    async def partial():
        async with websockets.connect(gw.ws_url("/api/v1/ws?after=%d&access_token=%s" % (ids[5], t))) as ws:
            hello = await recv_json(ws)
            return hello, await read_events(ws, ids[6:])
    hello, evs = asyncio.run(partial())
    report(hello["last_event_id"] == ids[5] and [e["id"] for e in evs] == ids[6:],
           "replay from after=N starts right after N", [e["id"] for e in evs])


def concurrent_emitters(student, total, threads=4, pause=0.003, types="SESSIONS_GENERATED"):
    """Emits total events for student from several sessions, each holding its transaction open a
    random moment, so that ids commit out of order."""
    done = []

    def worker(k, n):
        c = db()
        c.autocommit = False
        with c.cursor() as cur:
            for i in range(n):
                cur.execute("SELECT kc_flow.emit_event(%s, gen_random_uuid(), %s, %s::jsonb)",
                            (types, student, json.dumps({"w": k, "i": i})))
                done.append(cur.fetchone()[0])
                time.sleep(random.random() * pause)
                c.commit()
        c.close()
    per = total // threads
    ts = [threading.Thread(target=worker, args=(k, per)) for k in range(threads)]
    for t in ts:
        t.start()
    return ts, done


def test_live_order(gw, conn, student):
    t = token(student)

    async def run():
        async with websockets.connect(gw.ws_url("/api/v1/ws?access_token=" + t)) as ws:
            hello = await recv_json(ws)
            ts, done = concurrent_emitters(student, 200)
            await asyncio.get_running_loop().run_in_executor(None, lambda: [x.join() for x in ts])
            want = log_ids(conn, student, hello["last_event_id"])
            evs = await read_events(ws, want)
            return hello, want, evs, done
    hello, want, evs, done = asyncio.run(run())
    got = [e["id"] for e in evs]
    report(len(want) == 200 and got == want,
           "200 live events from 4 concurrent sessions (out-of-order commits): all, in log order, no duplicate",
           "want %d got %d, first mismatch %s" % (len(want), len(got),
                                                  next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)))


def test_reconnect(gw, conn, student):
    """A client that keeps dropping its socket (cleanly or not) and reconnecting with after=
    while events keep coming loses nothing and never sees one twice."""
    t = token(student)
    seen = []
    reconnects = [0]

    async def run():
        ts = []
        after = None
        start = time.time()
        while time.time() - start < 30:
            q = "/api/v1/ws?access_token=" + t + ("" if after is None else "&after=%d" % after)
            ws = await websockets.connect(gw.ws_url(q))
            hello = await recv_json(ws)
            if after is None:
                after = hello["last_event_id"]
                base = after
                # the events start after the first hello: an event logged before it would
                # lie at or below base, outside both the stream and the count
                ts, _ = concurrent_emitters(student, 400, threads=4, pause=0.02)
            take = random.randint(5, 40)
            try:
                while take > 0:
                    m = await recv_json(ws, 3)
                    if m["type"] == "event":
                        seen.append(m["id"])
                        after = m["id"]
                        take -= 1
            except asyncio.TimeoutError:
                pass
            if random.random() < 0.5:
                ws.transport.abort()		# vanish without a close frame
            else:
                await ws.close()
            reconnects[0] += 1
            if not any(x.is_alive() for x in ts) and log_ids(conn, student, base)[-1:] == seen[-1:]:
                break
        for x in ts:
            x.join()
        return base
    base = asyncio.run(run())
    want = log_ids(conn, student, base)
    report(len(want) == 400 and seen == want,
           "reconnecting %d times with after= while 400 events arrive: nothing lost, nothing twice" % reconnects[0],
           "want %d got %d dupes %d" % (len(want), len(seen), len(seen) - len(set(seen))))


def test_isolation(gw, conn, a, b):
    async def run():
        wa = await websockets.connect(gw.ws_url("/api/v1/ws?access_token=" + token(a)))
        wb = await websockets.connect(gw.ws_url("/api/v1/ws?access_token=" + token(b)))
        wadm = await websockets.connect(gw.ws_url("/api/v1/ws?student=%s&access_token=%s" % (b, token("admin", "admin"))))
        for w in (wa, wb, wadm):
            await recv_json(w)
        ia, ib = [], []
        for i in range(10):
            ia += emit(conn, a, 1)
            ib += emit(conn, b, 1)
        ga = await read_events(wa, ia, 10)
        gb = await read_events(wb, ib, 10)
        gadm = await read_events(wadm, ib, 10)
        # anything else pending for a or b would be a leak: give it a moment
        extra = []
        for w in (wa, wb):
            try:
                extra.append(await recv_json(w, 0.5))
            except asyncio.TimeoutError:
                pass
        for w in (wa, wb, wadm):
            await w.close()
        return ia, ib, ga, gb, gadm, extra
    ia, ib, ga, gb, gadm, extra = asyncio.run(run())
    report([e["id"] for e in ga] == ia and [e["id"] for e in gb] == ib and not extra,
           "two students side by side: each receives exactly their own events", (ia, [e["id"] for e in ga], extra))
    report([e["id"] for e in gadm] == ib, "an admin token with student= follows that student", [e["id"] for e in gadm])


def test_fresh_after_push(gw, conn, student):
    """Invalidate before push: a client that refetches home on each event sees that event's version."""
    t = {"Authorization": "Bearer " + token(student)}
    gw.get("/api/v1/students/%s/home" % student, t)
    st, h, _ = gw.get("/api/v1/students/%s/home" % student, t)
    stale = []

    async def run():
        async with websockets.connect(gw.ws_url("/api/v1/ws?access_token=" + token(student))) as ws:
            await recv_json(ws)
            ids = []
            for _ in range(15):
                ids += emit(conn, student, 1)
                ev = (await read_events(ws, ids[-1:], 10))[-1]
                _, hh, body = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: gw.get("/api/v1/students/%s/home" % student, t))
                v = json.loads(body)["version"]
                if v < ev["version"]:
                    stale.append((ev["id"], ev["version"], v, hh.get("X-Cache")))
    asyncio.run(run())
    report(h.get("X-Cache") == "HIT" and not stale,
           "home fetched right after each push is never older than the pushed event (cache was warm)", stale)


def test_demo_route(gw, gw_nodemo, conn):
    student = new_student(conn, "ws demo")
    t = {"Authorization": "Bearer " + token(student)}
    st, _, _ = gw_nodemo.get("/api/v1/demo/purchase", t, method="POST")
    report(st == 404, "POST /api/v1/demo/purchase without --demo: 404", st)
    st, _, _ = gw.get("/api/v1/demo/purchase", t)
    report(st == 405, "GET /api/v1/demo/purchase: 405", st)

    async def run():
        async with websockets.connect(gw.ws_url("/api/v1/ws?access_token=" + token(student))) as ws:
            await recv_json(ws)
            st, _, body = await asyncio.get_running_loop().run_in_executor(
                None, lambda: gw.get("/api/v1/demo/purchase?course=" + COURSE, t, method="POST"))
            types = []
            deadline = time.time() + 20
            while "SESSIONS_GENERATED" not in types and time.time() < deadline:
                try:
                    m = await recv_json(ws, 1)
                    types.append(m.get("event_type"))
                except asyncio.TimeoutError:
                    pass
            return st, body, types
    st, body, types = asyncio.run(run())
    report(st == 200 and types[:1] == ["PURCHASE_CONFIRMED"] and "SESSIONS_GENERATED" in types,
           "demo purchase: payment confirmed, the pipeline's events arrive on the socket", (st, body, types))


def test_replay_bound(gw_slow, conn, queue=16):
    """A replay exactly --ws-queue events long is a whole replay: all delivered, the socket kept
    (a live event follows it). One event more is "too far behind": 1008."""
    student = new_student(conn, "ws bound")
    ids = emit(conn, student, queue)
    t = token(student)

    async def whole():
        hello, evs, live, closed = {}, [], [], None
        try:
            async with websockets.connect(gw_slow.ws_url("/api/v1/ws?after=%d&access_token=%s"
                                                         % (ids[0] - 1, t))) as ws:
                hello = await recv_json(ws)
                evs = await read_events(ws, ids, 10)
                live = emit(conn, student, 1)
                evs += await read_events(ws, live, 10)
        except websockets.ConnectionClosed as e:
            closed = (e.code, e.reason)
        return hello, evs, live, closed
    hello, evs, live, closed = asyncio.run(whole())
    got = [e["id"] for e in evs]
    report(hello.get("type") == "hello" and got == ids + live and live and not closed,
           "a replay of exactly ws-queue (%d) events: all delivered, the socket kept for live events" % queue,
           (hello, got, closed))

    other = new_student(conn, "ws bound+1")
    more = emit(conn, other, queue + 1)

    async def longer():
        got = []
        try:
            async with websockets.connect(gw_slow.ws_url("/api/v1/ws?after=%d&access_token=%s"
                                                         % (more[0] - 1, token(other)))) as ws:
                while True:
                    m = await recv_json(ws)
                    if m["type"] == "event":
                        got.append(m["id"])
        except websockets.ConnectionClosed as e:
            return got, e.code, e.reason
        except asyncio.TimeoutError:
            return got, None, "no close"
    got, code, reason = asyncio.run(longer())
    report(got == more[:queue] and code == 1008 and
           reason == "too far behind: reconnect with after=%d" % more[queue - 1],
           "a replay of ws-queue + 1 events: the first ws-queue delivered, then 1008 naming the last of them",
           (got, code, reason))

def test_slow_consumer(gw_slow, conn):
    student = new_student(conn, "ws slow")
    st, h, s, rest = handshake(gw_slow.port, "/api/v1/ws?access_token=" + token(student), rcvbuf=4096)
    r = FrameReader(s, rest)
    r.next()
    before = gw_slow.metric("kc_ws_slow_closed_total") or 0
    big = {"blob": "x" * 16000}
    emit(conn, student, 300, payload=big)
    deadline = time.time() + 15
    while (gw_slow.metric("kc_ws_slow_closed_total") or 0) <= before and time.time() < deadline:
        time.sleep(0.1)
    code, texts = r.until_close()
    s.close()
    ids = [m["id"] for m in texts]
    report(code == 1008 and 0 < len(ids) < 300 and strictly_increasing(ids),
           "consumer that stops reading: closed with 1008 after a gap-free prefix (%d of 300 events)" % len(ids),
           "code %s, %d events" % (code, len(ids)))


def test_dead_peer(gw_slow, conn):
    student = new_student(conn, "ws dead")
    before = gw_slow.metric("kc_ws_dead_closed_total") or 0
    st, h, s, rest = handshake(gw_slow.port, "/api/v1/ws?access_token=" + token(student))

    async def live():
        async with websockets.connect(gw_slow.ws_url("/api/v1/ws?access_token=" + token(student))) as ws:
            await recv_json(ws)
            await asyncio.sleep(4.5)		# ping interval 1 s, pong timeout 1 s
            ids = emit(conn, student, 1)
            return await read_events(ws, ids, 5)
    evs = asyncio.run(live())
    after = gw_slow.metric("kc_ws_dead_closed_total") or 0
    s.settimeout(2)
    gone = False
    try:
        data = b""
        while True:
            chunk = s.recv(65536)		# pings, then EOF or reset
            if not chunk:
                gone = True
                break
            data += chunk
    except (ConnectionResetError, BrokenPipeError):
        gone = True
    except socket.timeout:
        pass
    s.close()
    report(after >= before + 1 and gone, "a peer that never answers pings is dropped", (before, after, gone))
    report(len(evs) == 1, "a peer that answers pings stays connected and keeps receiving", evs)


def test_shutdown(gw, student):
    async def run():
        wss = [await websockets.connect(gw.ws_url("/api/v1/ws?access_token=" + token(student))) for _ in range(3)]
        for w in wss:
            await recv_json(w)
        t0 = time.time()
        rc = await asyncio.get_running_loop().run_in_executor(None, gw.stop)
        codes = []
        for w in wss:
            try:
                await asyncio.wait_for(w.recv(), 3)
            except websockets.ConnectionClosed as e:
                codes.append(e.code)
            except Exception as e:
                codes.append(repr(e))
        return rc, codes, time.time() - t0
    rc, codes, took = asyncio.run(run())
    report(rc == 0 and codes == [1001, 1001, 1001] and took < 5,
           "SIGTERM: every socket closed with 1001, exit 0 in %.1f s" % took, (rc, codes))


def test_metrics(gw):
    body = gw.get("/metrics")[2]
    names = ["kc_ws_connections", "kc_ws_messages_total", "kc_ws_resumes_total", "kc_ws_slow_closed_total",
             "kc_ws_dead_closed_total", 'kc_http_requests_total{route="ws",code="101"}']
    missing = [n for n in names if n not in body]
    report(not missing and (gw.metric("kc_ws_messages_total") or 0) > 0, "metrics count WebSocket connections and messages",
           missing)


def main():
    conn = db()
    s1, s2, s3, s4, s5 = [new_student(conn, "ws %d" % i) for i in range(5)]
    gw = Gateway(TMP, "main", KC_DEMO="on", KC_WS_PING_INTERVAL=30,
                 KC_REDIS_URL=os.environ["KC_REDIS_URL"].rsplit("/", 1)[0] + "/5")
    try:
        gw_slow = Gateway(TMP, "slow", KC_WS_QUEUE=16, KC_WS_PING_INTERVAL=1, KC_WS_PONG_TIMEOUT=1,
                          KC_REDIS_URL=os.environ["KC_REDIS_URL"].rsplit("/", 1)[0] + "/6")
    except Exception:
        gw.stop()
        raise
    try:
        check("handshakes", lambda: test_handshakes(gw, s1, s2))
        check("bad frames", lambda: test_bad_frames(gw, s1))
        check("split frames", lambda: test_split_frames(gw, s1))
        check("idle memory", lambda: test_idle_memory(gw, conn, new_student(conn, "ws idle")))
        check("replay", lambda: test_replay(gw, conn, s1))
        check("live order", lambda: test_live_order(gw, conn, s2))
        check("reconnect", lambda: test_reconnect(gw, conn, s3))
        check("isolation", lambda: test_isolation(gw, conn, s4, s5))
        check("fresh after push", lambda: test_fresh_after_push(gw, conn, s1))
        check("demo route", lambda: test_demo_route(gw, gw_slow, conn))
        check("replay bound", lambda: test_replay_bound(gw_slow, conn))
        check("slow consumer", lambda: test_slow_consumer(gw_slow, conn))
        check("dead peer", lambda: test_dead_peer(gw_slow, conn))
        check("metrics", lambda: test_metrics(gw))
        check("shutdown", lambda: test_shutdown(gw, s1))
    finally:
        gw.stop()
        gw_slow.stop()
    print("# ws: %d passed, %d failed" % (RESULTS["ok"], RESULTS["fail"]))


if __name__ == "__main__":
    main()
