"""test/faults/faults.py - fault injection under continuous load.

While a load thread confirms payments at a steady rate (plus a few events for the
WebSocket-watched students), readers fetch homes through the gateway and WebSocket
clients follow their students' events, this program injects, in a shuffled order:

  worker   kill -9 of a kc_flow background worker (the postmaster resets every backend)
  pg       immediate stop of Postgres, then start
  redis    Redis stopped (SIGTERM), then started again (append-only file: it keeps its data)
  gateway  kill -9 of kc-gateway, then started again on the same port
  ws       one WebSocket client disconnected mid-stream (abrupt, or a clean close), which
           reconnects with after=<last id it saw>

After each fault the load moves on to a fresh course ("world"); the worlds loaded during
the fault drain and are checked with kcflow_test.check_invariants, plus: every stage event
handled exactly once (processed_events), every WebSocket client has each of its student's
events exactly once, in order, and no Redis view is older than the invalidations the
gateway has applied. At the end the load stops, everything drains, and all of it is
checked again, the Redis views against kc_flow.cache_versions.

Output: "ok - ..." / "not ok - ..." lines, then "# faults N, payments M, violations V".
Environment: KC_ROOT, PGHOST/PGPORT/PGUSER/PGDATABASE (the throwaway cluster),
FAULT_PG_DIR, FAULT_REDIS_DIR, FAULT_REDIS_PORT, FAULT_WORK. Counts: see --help.
"""
import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request

import psycopg2
import websockets

ROOT = os.environ.get("KC_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "../..")))
sys.path.insert(0, os.path.join(ROOT, "test/pipeline"))
sys.path.insert(0, os.path.join(ROOT, "test/ws"))
import kcflow_test as kt  # noqa: E402
from wslib import token, free_port  # noqa: E402

SECRET = "faults-secret"
STAGE_CONSUMER = {"PURCHASE_CONFIRMED": "purchase", "PURCHASE_CREATED": "allocation",
                  "TRAINER_ALLOCATED": "sessions"}
STOP = threading.Event()      # the load and the readers
WS_STOP = threading.Event()   # the WebSocket clients (they outlive the load for the last check)


def log(msg):
    print("# " + msg, flush=True)


# ---- counting ---------------------------------------------------------------------

class Tally:
    def __init__(self):
        self.faults = {}
        self.violations = 0
        self.problems = 0

    def invariant(self, cond, name, diag=None):
        """An invariant: a failure is a violation."""
        if not kt.ok(cond, name, diag):
            self.violations += 1
        return cond

    def step(self, cond, name, diag=None):
        """A step of the test itself (a fault injected, a server back): a failure is a problem."""
        if not kt.ok(cond, name, diag):
            self.problems += 1
        return cond


T = Tally()


def invariants_of(fn, *args):
    """Runs kcflow_test.check_invariants (or alike) and counts its failed lines as violations."""
    before = kt.failures()
    fn(*args)
    T.violations += kt.failures() - before


# ---- servers ----------------------------------------------------------------------

def shell(cmd, timeout=120):
    r = subprocess.run(["bash", "-c", 'source "%s/test/cluster.sh"; %s' % (ROOT, cmd)],
                       capture_output=True, text=True, timeout=timeout)
    return r.returncode == 0, r.stdout + r.stderr


def connect(timeout=60):
    start = time.time()
    while True:
        try:
            c = kt.connect()
            kt.one(c, "SELECT 1")
            return c
        except psycopg2.Error:
            if time.time() - start > timeout:
                raise
            time.sleep(0.2)


class Redis:
    """A minimal RESP client (one connection, reconnects on use)."""

    def __init__(self, port):
        self.port = port
        self.sock = None

    def close(self):
        if self.sock:
            self.sock.close()
        self.sock = None

    def cmd(self, *args):
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            self.f = self.sock.makefile("rb")
        enc = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        msg = b"*%d\r\n" % len(enc) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in enc)
        try:
            self.sock.sendall(msg)
            return self._read()
        except (OSError, EOFError):
            self.close()
            raise

    def _read(self):
        line = self.f.readline()
        if not line:
            raise EOFError("redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError("redis: " + rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.f.read(n + 2)[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RuntimeError("redis: bad reply %r" % line)


class Gateway:
    """kc-gateway as the postgres user, on a fixed port across restarts."""

    def __init__(self, work, pg_port, redis_port):
        self.port = free_port()
        self.pidfile = os.path.join(work, "gateway.pid")     # run.sh stops a gateway left behind
        self.log = open(os.path.join(work, "gateway.log"), "ab")
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "KC_DATABASE_URL": "postgresql://postgres@127.0.0.1:%s/%s" % (pg_port, os.environ.get("PGDATABASE", "kc_test")),
                    "KC_REDIS_URL": "redis://127.0.0.1:%s/0" % redis_port,
                    "KC_LISTEN": "127.0.0.1:%d" % self.port, "KC_JWT_SECRET": SECRET,
                    "KC_STATIC_DIR": os.path.join(ROOT, "gateway/static"), "KC_THREADS": "2",
                    "KC_WS_PING_INTERVAL": "5", "KC_WS_PONG_TIMEOUT": "5"}
        self.proc = None

    def start(self, timeout=60):
        kw = {}
        if os.getuid() == 0:
            kw = {"user": "postgres", "group": "postgres", "extra_groups": []}
        self.proc = subprocess.Popen([os.path.join(ROOT, "gateway/kc-gateway")], env=self.env, cwd="/",
                                     stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL, **kw)
        with open(self.pidfile, "w") as f:
            f.write("%d\n" % self.proc.pid)
        start = time.time()
        while time.time() - start < timeout:
            if self.proc.poll() is not None:
                return False
            try:
                if json.loads(self.get("/readyz")[1]).get("status") == "ready":
                    return True
            except Exception:
                pass
            time.sleep(0.1)
        return False

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def get(self, path, headers=None, timeout=10):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.port, path), headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read().decode(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(), dict(e.headers)


# ---- the load ---------------------------------------------------------------------

class World(kt.World):
    """kcflow_test.World plus a payment of each watched student, spread through the list."""

    def __init__(self, conn, size, watched):
        super().__init__(conn, trainers=max(12, size // 20), students=size, capacity=30)
        self.payment_ids = self.payments()
        for j, s in enumerate(watched):
            with conn.cursor() as cur:
                cur.execute("SELECT kc_flow.create_payment(%s, %s, %s, %s, 1000)",
                            (s, self.course, (10, 20, 30)[j % 3], self.slot(size + j)))
                pos = (j + 1) * len(self.payment_ids) // (len(watched) + 1)
                self.payment_ids.insert(pos, cur.fetchone()[0])
        self.next = 0


class Load(threading.Thread):
    """Confirms the current world's payments at `rate` per second, one transaction each;
    every `tick_every`-th turn also emits an event for a watched student. Retries a
    confirmation through any outage (confirm_payment is idempotent)."""

    def __init__(self, rate, watched, tick_every=4):
        super().__init__(daemon=True)
        self.rate, self.watched, self.tick_every = rate, watched, tick_every
        self.lock = threading.Lock()
        self.world, self.used = None, []
        self.confirmed = self.retries = self.ticks = self.starved = 0
        self.paused = threading.Event()
        self.conn = None

    def rotate(self, world):
        """Switches to `world`; returns the worlds loaded since the previous switch."""
        with self.lock:
            old, self.world, self.used = self.used, world, [world]
        return old

    def _exec(self, sql, args, retry):
        """Runs one statement: True once it ran (its commit acknowledged), False when it
        gave up (no retry) or the run stopped before it could run."""
        while not STOP.is_set():
            try:
                if self.conn is None:
                    self.conn = kt.connect()
                kt.one(self.conn, sql, args)
                return True
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                try:
                    self.conn.close()
                except Exception:
                    pass
                self.conn = None
                self.retries += 1
                if not retry:
                    return False
                time.sleep(0.2)
        return False

    def run(self):
        interval = 1.0 / self.rate
        due = time.time()
        turn = 0
        while not STOP.is_set():
            due += interval
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            elif delay < -1:
                due = time.time()
            if self.paused.is_set():
                continue
            turn += 1
            with self.lock:
                w = self.world
                if w.next >= len(w.payment_ids):
                    self.starved += 1
                    continue
                # counted when acknowledged, even if the run stopped meanwhile: the
                # final check compares this count with the durable payments
                if self._exec("SELECT kc_flow.confirm_payment(%s)", (w.payment_ids[w.next],), True):
                    w.next += 1
                    self.confirmed += 1
                if STOP.is_set():
                    break
            if turn % self.tick_every == 0:
                s = self.watched[(turn // self.tick_every) % len(self.watched)]
                if self._exec("SELECT kc_flow.emit_event('SESSIONS_GENERATED', gen_random_uuid(), %s, %s)",
                              (s, json.dumps({"fault_tick": turn})), False):
                    self.ticks += 1


class Readers(threading.Thread):
    """GETs the home or learning view of random students at `rate` per second (fills the cache)."""

    def __init__(self, gw, load, watched, rate):
        super().__init__(daemon=True)
        self.gw, self.load, self.watched, self.rate = gw, load, watched, rate
        self.codes = {}
        self.auth = {"Authorization": "Bearer " + token("admin", role="admin", ttl=86400, secret=SECRET)}

    def run(self):
        while not STOP.is_set():
            time.sleep(1.0 / self.rate)
            w = self.load.world
            s = random.choice(self.watched) if random.random() < 0.3 or w is None else random.choice(w.students)
            view = random.choice(("home", "learning"))
            try:
                code = self.gw.get("/api/v1/students/%s/%s" % (s, view), self.auth, timeout=5)[0]
            except Exception as e:
                code = type(e).__name__
            self.codes[code] = self.codes.get(code, 0) + 1


class WsClient:
    def __init__(self, student):
        self.student = student
        self.ids = []           # every event id received, in order of receipt
        self.last = 0           # the after= of the next connection
        self.ws = None
        self.hellos = 0
        self.errors = []        # protocol violations seen by the client itself
        self.closes = 0


class WsClients(threading.Thread):
    """One asyncio loop with a client per watched student, each reconnecting with after=."""

    def __init__(self, gw, students):
        super().__init__(daemon=True)
        self.gw = gw
        self.clients = [WsClient(s) for s in students]
        self.loop = asyncio.new_event_loop()

    def run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(asyncio.gather(*(self.follow(c) for c in self.clients)))

    async def follow(self, c):
        tok = token(c.student, ttl=86400, secret=SECRET)
        while not WS_STOP.is_set():
            url = "ws://127.0.0.1:%d/api/v1/ws?after=%d&access_token=%s" % (self.gw.port, c.last, tok)
            try:
                async with websockets.connect(url, open_timeout=5, close_timeout=1, ping_interval=5,
                                              ping_timeout=10, max_queue=None) as ws:
                    hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if hello.get("type") != "hello" or hello.get("last_event_id") != c.last \
                            or hello.get("student_id") != c.student:
                        c.errors.append("hello %r after %d" % (hello, c.last))
                    c.hellos += 1
                    c.ws = ws
                    while not WS_STOP.is_set():
                        try:
                            raw = await asyncio.wait_for(ws.recv(), 0.5)
                        except asyncio.TimeoutError:
                            continue
                        m = json.loads(raw)
                        if m.get("type") != "event":
                            continue
                        if m["id"] <= c.last:
                            c.errors.append("id %d after %d (duplicate or out of order)" % (m["id"], c.last))
                            continue
                        c.ids.append(m["id"])
                        c.last = m["id"]
            except Exception:
                pass
            finally:
                c.ws = None
                c.closes += 1
            await asyncio.sleep(0.1 + random.random() * 0.3)

    def drop(self, c, abrupt):
        """Disconnects c's socket now; returns False when it is not connected."""
        ws = c.ws
        if ws is None:
            return False
        if abrupt:
            self.loop.call_soon_threadsafe(ws.transport.abort)
        else:
            asyncio.run_coroutine_threadsafe(ws.close(), self.loop)
        return True


# ---- checks -----------------------------------------------------------------------

def wait_for(pred, timeout):
    start = time.time()
    while time.time() - start < timeout:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def check_worlds(conn, worlds, label):
    """Drains the worlds of a phase, then check_invariants and processed_events on each."""
    for w in worlds:
        done = kt.one(conn, "SELECT count(*) FROM kc_flow.payments WHERE course_id = %s AND status = 'succeeded'",
                      (w.course,))
        waited = kt.wait_quiet(conn, w.course, done, timeout=120)
        T.invariant(waited is not None, "%s: the %d payments confirmed in course %s drain" % (label, done, w.course[:8]))
        invariants_of(kt.check_invariants, conn, w.course, label)
        bad = kt.rows(conn, """
            SELECT e.id, e.event_type, array_agg(pe.consumer) FILTER (WHERE pe.consumer IS NOT NULL)
              FROM kc_flow.events e JOIN kc_flow.payments p ON p.id = e.correlation_id
              LEFT JOIN kc_flow.processed_events pe ON pe.event_id = e.id
             WHERE p.course_id = %s AND e.event_type = ANY(%s)
             GROUP BY e.id, e.event_type
            HAVING count(pe.consumer) <> 1
                OR min(pe.consumer) <> CASE e.event_type WHEN 'PURCHASE_CONFIRMED' THEN 'purchase'
                     WHEN 'PURCHASE_CREATED' THEN 'allocation' ELSE 'sessions' END""",
                      (w.course, list(STAGE_CONSUMER)))
        T.invariant(not bad, "%s: every stage event of course %s processed exactly once by its stage (processed_events)"
                    % (label, w.course[:8]), "\n".join(map(str, bad[:5])))


def student_ids(conn, student, upto):
    """The student's log positions up to `upto` (what the WebSocket sends as "id")."""
    return [r[0] for r in kt.rows(conn, "SELECT pos FROM kc_flow.event_log WHERE student_id = %s AND pos <= %s"
                                  " ORDER BY pos", (student, upto))]


def check_ws(conn, wsc, label, timeout=60):
    """Every client has every event of its student up to the newest log position, once, in order."""
    settled = kt.one(conn, "SELECT kc_flow.settled_event_id()")
    want = {c.student: student_ids(conn, c.student, settled) for c in wsc.clients}
    wait_for(lambda: all(set(want[c.student]) <= set(c.ids) for c in wsc.clients), timeout)
    bad = []
    for c in wsc.clients:
        got = list(c.ids)
        upto = [i for i in got if i <= settled]
        if upto != want[c.student] or len(set(got)) != len(got) or c.errors:
            missing = sorted(set(want[c.student]) - set(upto))
            extra = sorted(set(upto) - set(want[c.student]))
            bad.append("student %s: %d received, %d in the log, missing %s, extra %s, errors %s"
                       % (c.student[:8], len(upto), len(want[c.student]), missing[:5], extra[:5], c.errors[:3]))
    n = sum(len(v) for v in want.values())
    T.invariant(not bad, "%s: each of %d WebSocket clients has each of its student's events exactly once, in order "
                "(%d events up to position %d)" % (label, len(wsc.clients), n, settled), "\n".join(bad))


def redis_views(r):
    """{key: version} of every cached view, read after the watermark."""
    keys, cursor = [], b"0"
    while True:
        cursor, batch = r.cmd("SCAN", cursor, "MATCH", "student:*:*", "COUNT", 1000)
        keys += [k for k in batch if k.startswith(b"student:home:") or k.startswith(b"student:learning:")]
        if cursor == b"0":
            break
    views = {}
    for k in keys:
        v = r.cmd("HGET", k, "v")
        if v is not None:
            views[k.decode()] = int(v)
    return views


def check_redis(conn, r, label, final=False, timeout=60):
    """The gateway has caught up (its watermark in Redis reaches the settled id); then no
    view is older than the newest event of its student at or below the watermark (final:
    than the student's cache_versions.version)."""
    settled = kt.one(conn, "SELECT kc_flow.settled_event_id()")

    def watermark():
        try:
            return int(r.cmd("GET", "kc:gateway:watermark") or -1)
        except Exception:
            return -1
    caught = wait_for(lambda: watermark() >= settled, timeout)
    T.invariant(caught, "%s: the gateway catches up (watermark %d, settled %d)" % (label, watermark(), settled))
    wm = watermark()
    views = redis_views(r)
    students = sorted({k.rsplit(":", 1)[1] for k in views})
    if final:
        need = dict(kt.rows(conn, "SELECT student_id::text, version FROM kc_flow.cache_versions"
                                  " WHERE student_id = ANY(%s::uuid[])", (students,)))
    else:
        need = dict(kt.rows(conn, "SELECT e.student_id::text, max(e.version) FROM kc_flow.event_log l"
                                  " JOIN kc_flow.events e ON e.id = l.event_id"
                                  " WHERE l.pos <= %s AND l.student_id = ANY(%s::uuid[]) GROUP BY 1", (wm, students)))
    stale = [(k, v, need[k.rsplit(":", 1)[1]]) for k, v in views.items() if v < need.get(k.rsplit(":", 1)[1], 0)]
    T.invariant(not stale, "%s: no cached view is older than its student's last invalidated version "
                "(%d views of %d students, watermark %d%s)" % (label, len(views), len(students), wm,
                                                                ", against cache_versions" if final else ""),
                "\n".join("%s has version %d, needs %d" % s for s in stale[:5]))


# ---- faults -----------------------------------------------------------------------

class Faults:
    def __init__(self, args, gw, wsc):
        self.args, self.gw, self.wsc = args, gw, wsc
        self.ws_turn = 0

    @staticmethod
    def busy(conn, timeout=3.0):
        """Waits (polling) until the queue holds work, i.e. a confirmation has committed and
        its stages have not; returns the number of queued jobs seen. Killing then hits a
        worker's open transaction, or the moment right before it."""
        start = time.time()
        n = 0
        while time.time() - start < timeout:
            n = kt.one(conn, "SELECT count(*) FROM kc_flow.event_queue WHERE run_after <= now()")
            if n:
                break
            time.sleep(0.002)
        return n

    def worker(self, conn):
        kt.wait_workers(conn, timeout=30)
        pids = [r[0] for r in kt.rows(conn, "SELECT pid FROM kc_flow.worker_status() WHERE pid <> 0")]
        if not pids:
            return False, "no worker running"
        queued = self.busy(conn)
        pid = random.choice(pids)
        os.kill(pid, signal.SIGKILL)
        time.sleep(1.0)         # let the postmaster notice and reset before reconnecting
        c = connect()
        back = kt.wait_workers(c, timeout=60)
        c.close()
        return back, "worker pid %d with %d jobs queued, workers back: %s" % (pid, queued, back)

    def pg(self, conn):
        queued = self.busy(conn)
        conn.close()
        a = self.args
        ok1, out1 = shell('kc_pg_stop "%s" immediate' % a.pg_dir)
        time.sleep(random.uniform(0.2, 1.5))
        ok2, out2 = shell('kc_pg_start "%s" "%s" kc_test' % (a.pg_dir, os.environ["PGPORT"]))
        return ok1 and ok2, ((out1 + out2).strip() + "\n%d jobs queued at the stop" % queued).strip()

    def redis(self, conn):
        """Alternately a clean stop (SIGTERM: the append-only file is complete) and a crash
        (kill -9: Redis comes back with what its append-only file had, fsynced every second,
        so possibly an older watermark and older fences: the gateway must replay)."""
        a = self.args
        self.redis_turn = getattr(self, "redis_turn", 0) + 1
        crash = self.redis_turn % 2 == 0
        if crash:
            with open(os.path.join(a.redis_dir, "redis.pid")) as f:
                pid = int(f.read())
            os.kill(pid, signal.SIGKILL)
            ok1 = wait_for(lambda: not os.path.exists("/proc/%d" % pid), 10)
            out1 = ""
        else:
            ok1, out1 = shell('kc_redis_stop "%s"' % a.redis_dir)
        time.sleep(random.uniform(0.5, 2.0))
        ok2, out2 = shell('kc_redis_start "%s" "%s" persist' % (a.redis_dir, a.redis_port))
        return ok1 and ok2, ((out1 + out2).strip() + "\n%s" % ("kill -9" if crash else "SIGTERM")).strip()

    def gateway(self, conn):
        pid = self.gw.proc.pid
        self.gw.kill9()
        rc = self.gw.proc.returncode
        time.sleep(random.uniform(0.2, 1.5))
        return self.gw.start(), "pid %d ended with %s, restarted on port %d" % (pid, rc, self.gw.port)

    def ws(self, conn):
        c = self.wsc.clients[self.ws_turn % len(self.wsc.clients)]
        abrupt = self.ws_turn % 2 == 0
        self.ws_turn += 1
        wait_for(lambda: c.ws is not None, 30)
        before, hellos, n = len(c.ids), c.hellos, len(c.ids)
        # mid-stream: wait until the socket has delivered a new event, then drop it at once
        wait_for(lambda: len(c.ids) > n, 10)
        if not self.wsc.drop(c, abrupt):
            return False, "client not connected"
        back = wait_for(lambda: c.hellos > hellos, 30)
        return back, "student %s, %s after %d events, reconnected: %s" % (
            c.student[:8], "abrupt" if abrupt else "clean close", before, back)


def self_test(conn, r, wsc, world):
    """The checkers must see what they are meant to see: plants a stale view in Redis, a
    missing session (in a transaction rolled back after), a duplicated and a lost
    WebSocket event, and expects each check to fail. Its lines are not violations."""
    seen = []
    real_ok, violations = kt.ok, T.violations
    kt.ok = lambda cond, name, diag=None: seen.append(bool(cond)) or bool(cond)
    try:
        def fails(fn, *args):
            del seen[:]
            fn(*args)
            return not all(seen)
        s = wsc.clients[0].student
        ver = kt.one(conn, "SELECT version FROM kc_flow.cache_versions WHERE student_id = %s", (s,))
        r.cmd("HSET", "student:home:" + s, "v", ver - 1, "b", "{}")
        redis = fails(check_redis, conn, r, "self-test", True, 5)
        r.cmd("DEL", "student:home:" + s)
        tx = kt.connect(autocommit=False)
        kt.run(tx, "DELETE FROM kc_flow.tutoring_sessions WHERE id = (SELECT s.id FROM kc_flow.tutoring_sessions s"
                   " WHERE s.course_id = %s LIMIT 1)", (world.course,))
        pipeline = fails(kt.check_invariants, tx, world.course, "self-test")
        tx.rollback()
        tx.close()
        c = wsc.clients[0]
        real = list(c.ids)
        c.ids[:] = real + real[-1:]
        dup = fails(check_ws, conn, wsc, "self-test", 1)
        c.ids[:] = real[:3] + real[4:]
        lost = fails(check_ws, conn, wsc, "self-test", 1)
        c.ids[:] = real
    finally:
        kt.ok, T.violations = real_ok, violations
    T.step(redis, "self-test: a planted stale Redis view is reported")
    T.step(pipeline, "self-test: a payment missing one session is reported by check_invariants")
    T.step(dup and lost, "self-test: a duplicated and a lost WebSocket event are reported")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", type=int, default=20, help="kill -9 of a worker")
    p.add_argument("--pg", type=int, default=5, help="immediate stop and start of Postgres")
    p.add_argument("--redis", type=int, default=5, help="Redis stop and start")
    p.add_argument("--gateway", type=int, default=5, help="kill -9 and restart of the gateway")
    p.add_argument("--ws", type=int, default=20, help="WebSocket client dropped mid-stream")
    p.add_argument("--rate", type=float, default=25, help="payments confirmed per second")
    p.add_argument("--read-rate", type=float, default=15, help="home/learning GETs per second")
    p.add_argument("--watched", type=int, default=6, help="students followed over WebSocket")
    p.add_argument("--world", type=int, default=600, help="payments prepared per course")
    p.add_argument("--load-before", type=float, default=2.0, help="seconds of load before each fault")
    p.add_argument("--seed", type=int, default=int(os.environ.get("FAULT_SEED", "0")) or int(time.time()))
    p.add_argument("--pg-dir", default=os.environ.get("FAULT_PG_DIR"))
    p.add_argument("--redis-dir", default=os.environ.get("FAULT_REDIS_DIR"))
    p.add_argument("--redis-port", default=os.environ.get("FAULT_REDIS_PORT"))
    p.add_argument("--work", default=os.environ.get("FAULT_WORK", "/tmp"))
    a = p.parse_args()
    random.seed(a.seed)
    log("seed %d (FAULT_SEED=%d repeats this order)" % (a.seed, a.seed))
    started = time.time()

    conn = connect()
    T.step(kt.wait_workers(conn), "faults: the background workers are attached")
    watched = []
    with conn.cursor() as cur:
        for i in range(a.watched):
            cur.execute("INSERT INTO kc_flow.students (display_name, timezone) VALUES (%s, 'Europe/Berlin')"
                        " RETURNING id::text", ("watched %d" % i,))
            watched.append(cur.fetchone()[0])

    gw = Gateway(a.work, os.environ["PGPORT"], a.redis_port)
    try:
        return run(a, conn, gw, watched, started)
    finally:
        STOP.set()
        WS_STOP.set()
        gw.stop()


def run(a, conn, gw, watched, started):
    if not T.step(gw.start(), "faults: kc-gateway starts (port %d)" % gw.port):
        return 1
    r = Redis(a.redis_port)
    load = Load(a.rate, watched)
    load.rotate(World(conn, a.world, watched))
    worlds = list(load.used)
    readers = Readers(gw, load, watched, a.read_rate)
    wsc = WsClients(gw, watched)
    for t in (load, readers, wsc):
        t.start()
    T.step(wait_for(lambda: all(c.hellos for c in wsc.clients), 30), "faults: %d WebSocket clients connected" % a.watched)

    plan = ["worker"] * a.worker + ["pg"] * a.pg + ["redis"] * a.redis + ["gateway"] * a.gateway + ["ws"] * a.ws
    random.shuffle(plan)
    faults = Faults(a, gw, wsc)
    nxt = World(conn, a.world, watched)
    for i, kind in enumerate(plan, 1):
        time.sleep(a.load_before * random.uniform(0.5, 1.5))
        label = "fault %d/%d %s" % (i, len(plan), kind)
        t0 = time.time()
        try:
            done, what = getattr(faults, kind)(conn)
        except Exception:
            done, what = False, traceback.format_exc()
        if kind in ("worker", "pg"):
            conn = connect()
        if done:
            T.faults[kind] = T.faults.get(kind, 0) + 1
        T.step(done, "%s injected and recovered in %.1f s (%s)" % (
            label, time.time() - t0, what.splitlines()[-1] if what else ""), what)
        # switch the load to a fresh course, check the ones loaded during this fault
        phase = load.rotate(nxt)
        worlds.append(nxt)
        check_worlds(conn, phase, label)
        check_ws(conn, wsc, label)
        check_redis(conn, r, label)
        nxt = World(conn, a.world, watched)
        log("%s: %d payments confirmed so far, %.0f s" % (label, load.confirmed, time.time() - started))

    # the end: stop the load, drain, check everything
    STOP.set()
    load.join(30)
    readers.join(30)
    last = load.rotate(nxt)
    check_worlds(conn, last, "after the load")
    T.invariant(wait_for(lambda: kt.one(conn, "SELECT count(*) FROM kc_flow.event_queue") == 0, 120),
                "end: the event queue drains")
    for w in worlds:
        invariants_of(kt.check_invariants, conn, w.course, "end, course %s" % w.course[:8])
    check_worlds_end = kt.one(conn, """
        SELECT count(*) FROM kc_flow.events e
         WHERE e.event_type = ANY(%s)
           AND (SELECT count(*) FROM kc_flow.processed_events pe WHERE pe.event_id = e.id) <> 1""",
                              (list(STAGE_CONSUMER),))
    T.invariant(check_worlds_end == 0, "end: every stage event of the whole run processed exactly once",
                "%d not" % check_worlds_end)
    check_ws(conn, wsc, "end")
    check_redis(conn, r, "end", final=True)
    T.invariant(wait_for(lambda: kt.one(conn, "SELECT (kc_flow.health()->>'log_unsequenced')::int") == 0, 30),
                "end: every committed event has its log position")
    latest = kt.one(conn, "SELECT kc_flow.settled_event_id()")
    T.invariant(wait_for(lambda: int(r.cmd("GET", "kc:gateway:watermark") or -1) == latest, 30),
                "end: the gateway's watermark is the newest log position (%d)" % latest)
    WS_STOP.set()
    wsc.join(10)
    gw.stop()
    self_test(conn, r, wsc, worlds[0])

    payments = kt.one(conn, "SELECT count(*) FROM kc_flow.payments WHERE status = 'succeeded'")
    T.invariant(payments == load.confirmed, "end: every confirmation acknowledged to the load is durable "
                "(%d succeeded payments, %d acknowledged)" % (payments, load.confirmed))
    log("load: %d confirmations (%d reconnect retries, %d turns without a payment ready), %d watched-student ticks"
        % (load.confirmed, load.retries, load.starved, load.ticks))
    log("readers: %s" % ", ".join("%s %d" % kv for kv in sorted(readers.codes.items(), key=lambda kv: str(kv[0]))))
    log("websocket: %s" % ", ".join("%s: %d events, %d connections" % (c.student[:8], len(c.ids), c.hellos)
                                    for c in wsc.clients))
    log("faults by kind: %s; %.0f s" % (", ".join("%s %d" % kv for kv in sorted(T.faults.items())), time.time() - started))
    if T.problems:
        log("%d steps of the test itself failed (see not ok lines above)" % T.problems)
    print("# faults %d, payments %d, violations %d" % (sum(T.faults.values()), payments, T.violations), flush=True)
    return 0 if T.violations == 0 and T.problems == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
