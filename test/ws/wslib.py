"""test/ws/wslib.py - helpers of the WebSocket tests: tokens, the gateway process,
Postgres access, and a raw RFC 6455 client for the frames a polite client never sends
(unmasked, oversized, invalid UTF-8) and for a consumer that stops reading.
"""
import base64
import functools
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request

import psycopg2

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import kc_client  # noqa: E402

ROOT = os.environ.get("KC_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "../..")))
SECRET = "ws-test-secret"
RESULTS = {"ok": 0, "fail": 0}


def report(ok, name, detail=""):
    RESULTS["ok" if ok else "fail"] += 1
    print(("ok" if ok else "not ok") + " - ws: " + name, flush=True)
    if not ok and detail:
        lines = str(detail).splitlines()
        if len(lines) > 15:     # a traceback: its start and its end, where the error is
            lines = lines[:3] + ["..."] + lines[-12:]
        for line in lines:
            print("#   " + line, flush=True)


token = functools.partial(kc_client.token, secret=SECRET)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def db():
    c = psycopg2.connect(host=os.environ.get("PGHOST", "127.0.0.1"), port=os.environ["PGPORT"],
                         user=os.environ.get("PGUSER", "postgres"), dbname=os.environ.get("PGDATABASE", "kc_test"))
    c.autocommit = True
    return c


def new_student(conn, name="ws"):
    with conn.cursor() as cur:
        cur.execute("INSERT INTO kc_flow.students (display_name, timezone) VALUES (%s, 'UTC') RETURNING id::text",
                    (name,))
        return cur.fetchone()[0]


def log_settle(conn, timeout=5.0):
    """Waits until every event committed so far has its log position (the workers give
    them within milliseconds of the commit)."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_current_snapshot()")
        snap = cur.fetchone()[0]
        end = time.time() + timeout
        while True:
            cur.execute("SELECT kc_flow.log_covers(%s::pg_snapshot)", (snap,))
            if cur.fetchone()[0] or time.time() > end:
                return
            time.sleep(0.005)


def emit(conn, student, n=1, payload=None, event_type="SESSIONS_GENERATED"):
    """Emits n events, one transaction each; returns their log positions, in order."""
    ids = []
    with conn.cursor() as cur:
        for i in range(n):
            cur.execute("SELECT kc_flow.emit_event(%s, gen_random_uuid(), %s, %s::jsonb)",
                        (event_type, student, json.dumps(payload if payload is not None else {"n": i})))
            ids.append(cur.fetchone()[0])
    log_settle(conn)
    with conn.cursor() as cur:
        cur.execute("SELECT event_id, pos FROM kc_flow.event_log WHERE event_id = ANY(%s)", (ids,))
        pos = dict(cur.fetchall())
    return [pos[i] for i in ids]


def log_floor(conn):
    """The oldest cursor kc_flow.events_since still answers (below it: KC410, refetch)."""
    with conn.cursor() as cur:
        cur.execute("SELECT kc_flow.log_floor()")
        return cur.fetchone()[0]


def log_ids(conn, student, after=None):
    """The student's log positions after `after` (default: the log's floor), once everything
    committed has one."""
    if after is None:
        after = log_floor(conn)
    log_settle(conn)
    with conn.cursor() as cur:
        cur.execute("SELECT pos FROM kc_flow.events_since(%s, %s, 10000)", (after, student))
        return [r[0] for r in cur.fetchall()]


class Gateway:
    """A kc-gateway on a free port with the test secret; stopped with SIGTERM."""

    def __init__(self, tmp, name, **env):
        self.port = free_port()
        self.log_path = os.path.join(tmp, "gateway-%s.log" % name)
        e = dict(os.environ)
        e.update({"KC_LISTEN": "127.0.0.1:%d" % self.port, "KC_JWT_SECRET": SECRET,
                  "KC_STATIC_DIR": os.path.join(ROOT, "gateway/static"), "KC_THREADS": "2"})
        e.update({k: str(v) for k, v in env.items()})
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([os.path.join(ROOT, "gateway/kc-gateway")], env=e,
                                     stdout=self.log, stderr=self.log)
        for _ in range(100):
            try:
                if json.loads(self.get("/readyz")[2]).get("status") == "ready":
                    return
            except Exception:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("gateway %s did not become ready (log: %s)" % (name, self.log_path))

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def ws_url(self, path):
        return "ws://127.0.0.1:%d%s" % (self.port, path)

    def get(self, path, headers=None, method="GET"):
        req = urllib.request.Request(self.url(path), headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    def metric(self, name):
        for line in self.get("/metrics")[2].splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def stop(self, timeout=15):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


# ---- a raw client --------------------------------------------------------------

KEY = base64.b64encode(os.urandom(16)).decode()


def handshake(port, path, headers=None, rcvbuf=None, key=KEY, version="13", upgrade=True):
    """Sends a handshake; returns (status, headers dict lower-case, socket, leftover bytes)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    lines = ["GET %s HTTP/1.1" % path, "Host: 127.0.0.1:%d" % port]
    if upgrade:
        lines += ["Upgrade: websocket", "Connection: Upgrade"]
    if key is not None:
        lines.append("Sec-WebSocket-Key: " + key)
    if version is not None:
        lines.append("Sec-WebSocket-Version: " + version)
    for k, v in (headers or {}).items():
        lines.append("%s: %s" % (k, v))
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    hl = head.decode(errors="replace").split("\r\n")
    status = int(hl[0].split()[1]) if hl and len(hl[0].split()) > 1 else 0
    hdrs = {}
    for line in hl[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, s, rest


def frame(opcode, payload, mask=True, fin=True):
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", b0, (0x80 if mask else 0) | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, (0x80 if mask else 0) | 126, n)
    else:
        head = struct.pack("!BBQ", b0, (0x80 if mask else 0) | 127, n)
    if not mask:
        return head + payload
    m = os.urandom(4)
    return head + m + bytes(b ^ m[i % 4] for i, b in enumerate(payload))


class FrameReader:
    def __init__(self, sock, leftover=b""):
        self.s = sock
        self.buf = leftover

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk

    def next(self):
        """(opcode, payload bytes) of the next frame from the server."""
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        n = b1 & 0x7F
        off = 2
        if n == 126:
            self._need(4)
            n = struct.unpack("!H", self.buf[2:4])[0]
            off = 4
        elif n == 127:
            self._need(10)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            off = 10
        self._need(off + n)
        payload = self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        return b0 & 0x0F, payload

    def until_close(self, limit=100000):
        """Reads frames until a close frame; returns (close code or None, list of text messages)."""
        texts = []
        for _ in range(limit):
            try:
                op, p = self.next()
            except (EOFError, ConnectionResetError, socket.timeout):
                return None, texts
            if op == 8:
                return (struct.unpack("!H", p[:2])[0] if len(p) >= 2 else 1005), texts
            if op == 1:
                texts.append(json.loads(p.decode()))
        return None, texts
