"""test/failover/fo_lib.py - what the failover and Redis-outage tests share: reporting, SQL on
a given server, purchases, gateways as child processes, a WebSocket listener on its own
thread, and the stale-answer check (an answer whose version is below the one the database
had before the request was sent).
"""
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import psycopg2
import websockets

ROOT = os.environ.get("KC_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "../..")))
sys.path.insert(0, os.path.join(ROOT, "test", "lib"))
import kc_client  # noqa: E402

SECRET = "failover-test-secret"
COURSE = "fa110000-0000-4000-8000-0000000000c1"		# test/failover/fixture.sql
RESULTS = {"ok": 0, "fail": 0}


def report(ok, name, detail="", prefix="failover"):
    RESULTS["ok" if ok else "fail"] += 1
    print(("ok" if ok else "not ok") + " - %s: %s" % (prefix, name), flush=True)
    if not ok and detail:
        for line in str(detail).splitlines()[:15]:
            print("#   " + line[:300], flush=True)
    return ok


def figure(text):
    print("# figure: " + text, flush=True)


def token(sub, role=None):
    return kc_client.token(sub, role=role, secret=SECRET)


def wait_for(pred, timeout=15.0, step=0.1):
    end = time.time() + timeout
    while True:
        try:
            v = pred()
        except Exception:
            v = None
        if v or time.time() > end:
            return v
        time.sleep(step)


def connect(port, db="kc_fo"):
    c = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname=db, connect_timeout=3)
    c.autocommit = True
    return c


def q(port, sql, args=(), db="kc_fo"):
    """One statement on a fresh connection (servers die in these tests); the first row's first value."""
    c = connect(port, db)
    try:
        with c.cursor() as cur:
            cur.execute(sql, args)
            row = cur.fetchone() if cur.description else None
            return row[0] if row else None
    finally:
        c.close()


def new_student(port, name, db="kc_fo"):
    return q(port, "INSERT INTO kc_flow.students (display_name, timezone) VALUES (%s, 'UTC') RETURNING id::text",
             (name,), db)


_slot = [0]


def buy(port, student, db="kc_fo"):
    """A payment confirmed (acknowledged once this returns); its id. Each purchase asks for a
    time slot of its own (50 minutes apart, one weekday of five), so that the fixture's three
    trainers can take every one at once and no allocation waits for a free trainer."""
    k = _slot[0]
    _slot[0] += 1
    slot = json.dumps({"weekdays": [1 + k // 84 % 5], "start": "%02d:%02d" % (k % 28 * 50 // 60, k % 28 * 50 % 60),
                       "timezone": "UTC"})
    return q(port, "SELECT kc_flow.confirm_payment(kc_flow.create_payment(%s, %s, 10, %s::jsonb, 100, 'INR'))::text",
             (student, COURSE, slot), db)


def db_version(port, student, db="kc_fo"):
    return int(q(port, "SELECT coalesce((SELECT version FROM kc_flow.cache_versions WHERE student_id = %s), 0)",
                 (student,), db))


def view_version(port, student, db="kc_fo"):
    """The version student_home shows on that server (a standby's replay decides it)."""
    return int(q(port, "SELECT (kc_flow.student_home(%s)->>'version')::bigint", (student,), db))


def purchase_done(port, student, db="kc_fo"):
    return int(q(port, "SELECT count(*) FROM kc_flow.events WHERE student_id = %s AND "
                 "event_type = 'SESSIONS_GENERATED'", (student,), db))


class Gateway:
    """A kc-gateway child process; its log in tmp. ready=False starts it without waiting."""

    def __init__(self, tmp, name, ready=True, **env):
        s = __import__("socket").socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.log_path = os.path.join(tmp, "gateway-%s.log" % name)
        e = dict(os.environ)
        e.update({"KC_LISTEN": "127.0.0.1:%d" % self.port, "KC_JWT_SECRET": SECRET, "KC_THREADS": "4"})
        e.update({k: str(v) for k, v in env.items()})
        self.log = open(self.log_path, "w")
        # KC_GATEWAY_BIN as in test/cluster.sh: another build (an older one, to see a test fail)
        self.proc = subprocess.Popen([os.environ.get("KC_GATEWAY_BIN", os.path.join(ROOT, "gateway/kc-gateway"))], env=e,
                                     stdout=self.log, stderr=self.log)
        if ready and not wait_for(lambda: self.get("/readyz")[0] == 200, 15):
            raise RuntimeError("gateway %s did not become ready (log: %s)" % (name, self.log_path))

    def get(self, path, tok=None):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.port, path),
                                     headers={"Authorization": "Bearer " + tok} if tok else {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            return 0, {}, str(e)

    def home(self, student, extra=""):
        """(status, version or None, X-Cache)."""
        st, h, body = self.get("/api/v1/students/%s/home%s" % (student, extra), token(student))
        try:
            v = json.loads(body)["version"] if st == 200 else None
        except ValueError:
            v = None
        return st, v, h.get("X-Cache")

    def readyz(self):
        st, _, body = self.get("/readyz")
        try:
            return st, json.loads(body)
        except ValueError:
            return st, {}

    def metric(self, name):
        for line in self.get("/metrics")[2].splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0

    def log_text(self):
        with open(self.log_path) as f:
            return f.read()

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def settled(gw, port, db="kc_fo", timeout=60):
    """Waits until the workers' queue is empty and the gateway has applied the whole log: from
    then on an answer older than the database is stale, not merely early."""
    return wait_for(lambda: int(q(port, "SELECT (kc_flow.health()->>'queue_depth')::int", (), db)) == 0 and
                    gw.readyz()[1].get("watermark", -1) >= int(q(port, "SELECT kc_flow.settled_event_id()", (), db)),
                    timeout, 0.2)


def stale_answers(gw, port, students, seconds, db="kc_fo", at_least=21):
    """Home reads over `seconds`, and on until `at_least` reads were made (a loaded machine
    may make few in the time; ten times `seconds` at most): (stale, failed, total). A read is
    stale when its version is below the one the database had before the request was sent."""
    stale = failed = total = 0
    start = time.time()
    while time.time() < start + seconds or (total < at_least and time.time() < start + 10 * seconds):
        for s in students:
            want = db_version(port, s, db)
            st, v, xc = gw.home(s)
            total += 1
            if st != 200:
                failed += 1
            elif v < want:
                stale += 1
                if stale <= 3:
                    print("# stale: %s v%s < v%s (X-Cache %s)" % (s, v, want, xc), flush=True)
    return stale, failed, total


class Listener:
    """A WebSocket client of one student (or, with role "admin", of every student) on its own
    thread: every event message with the wall-clock time it arrived; every message after the
    hello, events and others ("refetch"), in arrival order, in messages."""

    def __init__(self, gw, student, role=None):
        self.events = []
        self.messages = []
        self.hello = None
        self.error = None
        self._stop = False
        self.url = "ws://127.0.0.1:%d/api/v1/ws?access_token=%s" % (gw.port, token(student, role))
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.thread.start()
        wait_for(lambda: self.hello is not None or self.error, 10)

    async def _run(self):
        try:
            async with websockets.connect(self.url, max_queue=None) as ws:
                while not self._stop:
                    try:
                        m = json.loads(await asyncio.wait_for(ws.recv(), 0.2))
                    except asyncio.TimeoutError:
                        continue
                    m["_at"] = time.time()
                    if m.get("type") == "hello":
                        self.hello = m
                        continue
                    self.messages.append(m)
                    if m.get("type") == "event":
                        self.events.append(m)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = repr(e)

    def ids(self):
        return [e["id"] for e in self.events]

    def close(self):
        self._stop = True
        self.thread.join(5)
