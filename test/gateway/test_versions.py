#!/usr/bin/env python3
"""test/gateway/test_versions.py - version tokens (docs/design.md §6) with two gateways.

Gateways A and B share one Redis and keep views in process (--local-cache). A client is
pushed an event by A, then reads its home through B with ?min_version=<the event's
version>. B is made deliberately late: its LISTEN backend is stopped (SIGSTOP) before the
event, so B's listener neither hears the notification nor catches up, while B stays
"synced" and keeps serving from its in-process copy. (Terminating that backend instead
would not make B late: a gateway that loses LISTEN marks its cache unsynced and bypasses
it until it has caught up.) Each round checks:
  - the control: without min_version B answers the older version it holds (B is late,
    so the checks below can fail);
  - with ?min_version=V, or the KC-Min-Version header, B answers version >= V, and an
    If-None-Match of the older ETag gets the new body, not a 304;
  - once B's backend runs again, B catches up and answers the new version unasked.
The pushed version is also checked against the student's cache_versions in Postgres.

Run by test/suites/52_version_tokens.sh on the harness's Postgres (workers on) and Redis.
"""
import asyncio
import json
import os
import signal
import sys
import time

import websockets

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ws"))
from wslib import Gateway, db, emit, new_student, token  # noqa: E402

TMP = os.environ["KC_VERSIONS_TMP"]
ROUNDS = 5
failed = 0


def check(ok, name, detail=""):
    global failed
    print(("ok" if ok else "not ok") + " - versions: " + name, flush=True)
    if not ok:
        failed += 1
        for line in str(detail).splitlines()[:15]:
            print("#   " + line, flush=True)
    return ok


def listener_pids(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'kc-gateway-listener'")
        return {r[0] for r in cur.fetchall()}


def db_version(conn, student):
    with conn.cursor() as cur:
        cur.execute("SELECT version FROM kc_flow.cache_versions WHERE student_id = %s", (student,))
        row = cur.fetchone()
        return row[0] if row else 0


def home(gw, student, query="", headers=None):
    h = {"Authorization": "Bearer " + token(student)}
    h.update(headers or {})
    st, hh, body = gw.get("/api/v1/students/%s/home%s" % (student, query), h)
    version = json.loads(body)["version"] if st == 200 else None
    return st, hh.get("X-Cache"), version


def synced(gw):
    return json.loads(gw.get("/readyz")[2]).get("cache_synced") is True


def watermark(gw):
    return json.loads(gw.get("/readyz")[2]).get("watermark", -1)


def wait(pred, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


async def next_event(ws, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        msg = json.loads(await asyncio.wait_for(ws.recv(), end - time.time()))
        if msg.get("type") == "event":
            return msg
    raise TimeoutError("no event pushed")


def one_round(conn, a, b, b_listener, student, n):
    """One push through A while B is late; returns the list of failures (empty: passed)."""
    bad = []
    st, xc, held = home(b, student)
    st, xc, held = home(b, student)
    if xc != "HIT":
        bad.append("round %d: B does not hold the view in process (X-Cache %s)" % (n, xc))

    async def push():
        url = a.ws_url("/api/v1/ws?access_token=" + token(student))
        async with websockets.connect(url) as ws:
            json.loads(await ws.recv())     # hello
            os.kill(b_listener, signal.SIGSTOP)
            emit(conn, student, 1)
            return await next_event(ws)

    try:
        ev = asyncio.run(push())
        pushed = ev["version"]
        if pushed != db_version(conn, student) or pushed <= held:
            bad.append("round %d: pushed version %s, cache_versions %s, held %s"
                       % (n, pushed, db_version(conn, student), held))
        st, xc, v = home(b, student)
        if not (st == 200 and v is not None and v < pushed and xc == "HIT"):
            bad.append("round %d: control: B without min_version answered %s %s v%s, expected the older v%s"
                       " from its own memory (is B late at all?)" % (n, st, xc, v, held))
        st, xc, v = home(b, student, "?min_version=%d" % pushed)
        if not (st == 200 and v is not None and v >= pushed):
            bad.append("round %d: B with ?min_version=%d answered %s %s v%s" % (n, pushed, st, xc, v))
        st, xc, v = home(b, student, headers={"KC-Min-Version": str(pushed)})
        if not (st == 200 and v is not None and v >= pushed):
            bad.append("round %d: B with KC-Min-Version: %d answered %s %s v%s" % (n, pushed, st, xc, v))
        st, xc, v = home(b, student, "?min_version=%d" % pushed, {"If-None-Match": '"v%d"' % held})
        if not (st == 200 and v is not None and v >= pushed):
            bad.append("round %d: If-None-Match of the old ETag with min_version answered %s v%s" % (n, st, v))
        st, xc, v = home(b, student, "?min_version=%d" % pushed, {"If-None-Match": '"v%d"' % pushed})
        if st != 304:
            bad.append("round %d: If-None-Match of the pushed ETag with min_version answered %s" % (n, st))
    finally:
        os.kill(b_listener, signal.SIGCONT)
    # caught up: B's listener applied everything A's did (its own answers may already be new)
    caught_up = wait(lambda: watermark(b) >= watermark(a)) and home(b, student)[2] >= pushed
    if not caught_up:
        bad.append("round %d: B never caught up after its LISTEN backend resumed" % n)
    return bad


def main():
    conn = db()
    student = new_student(conn, "versions")
    env = {"KC_LOCAL_CACHE": 1024, "KC_LOG_LEVEL": "info"}
    before = listener_pids(conn)
    b = Gateway(TMP, "B", **env)
    a = None
    try:
        check(wait(lambda: synced(b)), "gateway B ready and synced")
        wait(lambda: listener_pids(conn) - before)
        mine = listener_pids(conn) - before
        if not check(len(mine) == 1, "B's LISTEN backend found", mine):
            return
        b_listener = mine.pop()
        a = Gateway(TMP, "A", **env)
        check(wait(lambda: synced(a)), "gateway A ready and synced, sharing B's Redis")
        failures = []
        for n in range(ROUNDS):
            failures += one_round(conn, a, b, b_listener, student, n)
        check(not [f for f in failures if "control" in f],
               "control: a late gateway without min_version answers the older view (%d rounds)"
               % ROUNDS, "\n".join(failures))
        check(not [f for f in failures if "control" not in f],
               "a push from A then a read through late B with min_version (query or header) "
               "is never older, If-None-Match included (%d rounds)" % ROUNDS, "\n".join(failures))
    finally:
        if a:
            a.stop()
        check(b.stop() == 0, "gateway B exits 0 on SIGTERM")


if __name__ == "__main__":
    main()
    sys.exit(1 if failed else 0)
