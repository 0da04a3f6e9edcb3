#!/usr/bin/env python3
"""test/gateway/test_gateway.py - integration tests of kc-gateway against real Postgres and Redis.

Run by test/suites/40_gateway.sh, which starts a private Postgres cluster (kc_flow preloaded,
workers on, demo data loaded) and a private Redis with persistence, and passes them in:
  GW_BIN, GW_STATIC, GW_TMP, PG_PORT, PG_DIR, PG_DB, REDIS_PORT, REDIS_DIR, ENV_SH
The tests stop and restart those private servers (never the harness's shared ones).
Prints one "ok - name" / "not ok - name" line per check; exit status 1 if any failed.
Python standard library only; tokens are signed here with hmac, independently of the gateway.
"""
import functools
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import kc_client  # noqa: E402

GW_BIN = os.environ["GW_BIN"]
GW_STATIC = os.environ["GW_STATIC"]
TMP = os.environ["GW_TMP"]
PG_PORT = os.environ["PG_PORT"]
PG_DIR = os.environ["PG_DIR"]
PG_DB = os.environ.get("PG_DB", "kc_test")
REDIS_PORT = os.environ["REDIS_PORT"]
REDIS_DIR = os.environ["REDIS_DIR"]
ENV_SH = os.environ["ENV_SH"]
SECRET = "gateway-test-secret"
DB_URL = "postgresql://postgres@127.0.0.1:%s/%s" % (PG_PORT, PG_DB)
REDIS_URL = "redis://127.0.0.1:%s/0" % REDIS_PORT

S1 = "11111111-1111-4111-8111-111111111111"
S2 = "22222222-2222-4222-8222-222222222222"
S3 = "33333333-3333-4333-8333-333333333333"
UNKNOWN = "99999999-9999-4999-8999-999999999999"
COURSE_MUSIC = "cccccccc-0000-4000-8000-000000000004"
COURSE_ALGEBRA = "cccccccc-0000-4000-8000-000000000002"
COURSE_PYTHON = "cccccccc-0000-4000-8000-000000000003"

failures = 0


def check(cond, name, diag=None):
    global failures
    print("%s - %s" % ("ok" if cond else "not ok", name), flush=True)
    if not cond:
        failures += 1
        if diag is not None:
            for line in str(diag).splitlines()[:15]:
                print("# " + line[:300], flush=True)
    return cond


# ---- helpers: tokens, SQL, Redis, HTTP ----------------------------------------------------

token = functools.partial(kc_client.token, secret=SECRET)


def as_pg(cmd):
    return (["runuser", "-u", "postgres", "--"] + cmd) if os.getuid() == 0 else cmd


def sql(query, check_ok=True):
    r = subprocess.run(as_pg(["psql", "-h", "127.0.0.1", "-p", PG_PORT, "-U", "postgres", "-d", PG_DB,
                              "-v", "ON_ERROR_STOP=1", "-Atqc", query]),
                       capture_output=True, text=True, timeout=60)
    if check_ok and r.returncode != 0:
        raise RuntimeError("psql failed: %s" % r.stderr)
    return r.stdout.strip()


def redis(*args):
    r = subprocess.run(["redis-cli", "-p", REDIS_PORT] + list(args), capture_output=True, text=True, timeout=10)
    return r.stdout.strip()


def shell(script):
    return subprocess.run(["bash", "-c", ". '%s'; %s" % (ENV_SH, script)], capture_output=True, text=True,
                          timeout=120)


class Resp:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)

    def header(self, name):
        return self.headers.get(name.lower())


def request(port, path, method="GET", headers=None, body=None, timeout=15):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        c.close()


def get(port, path, tok=None, extra=None):
    h = dict(extra or {})
    if tok:
        h["Authorization"] = "Bearer " + tok
    return request(port, path, headers=h)


def error_code(resp):
    try:
        return resp.json()["error"]["code"]
    except Exception:
        return None


def wait_for(pred, timeout=15.0, step=0.1):
    end = time.time() + timeout
    while time.time() < end:
        try:
            v = pred()
            if v:
                return v
        except Exception:
            pass
        time.sleep(step)
    return None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Gateway:
    """One kc-gateway process with its own log file."""

    def __init__(self, name, **env):
        self.port = free_port()
        self.log_path = os.path.join(TMP, "gateway-%s.log" % name)
        e = dict(os.environ)
        e.update({"KC_DATABASE_URL": DB_URL, "KC_REDIS_URL": REDIS_URL, "KC_JWT_SECRET": SECRET,
                  "KC_LISTEN": "127.0.0.1:%d" % self.port, "KC_STATIC_DIR": GW_STATIC,
                  "KC_LOG_LEVEL": "info", "KC_THREADS": "4", "KC_RETRY_AFTER": "3"})
        e.update(env)
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen([GW_BIN], env=e, stdout=self.log, stderr=subprocess.STDOUT)

    def ready(self, timeout=15):
        return wait_for(lambda: request(self.port, "/readyz").status == 200, timeout)

    def log_lines(self):
        with open(self.log_path) as f:
            out = []
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    out.append({"raw": line})
            return out

    def log_text(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def db_version(student):
    return int(sql("SELECT coalesce((SELECT version FROM kc_flow.cache_versions WHERE student_id = '%s'), 0)"
                   % student) or 0)


def buy(student, course, tier=10, weekdays="[1,2,3,4,5]", start="08:00"):
    return sql("SELECT kc_flow.confirm_payment(kc_flow.create_payment('%s', '%s', %d, "
               "'{\"weekdays\":%s,\"start\":\"%s\",\"timezone\":\"Asia/Kolkata\"}', 100, 'INR'))"
               % (student, course, tier, weekdays, start))


def sessions_generated(student, after_id=0):
    """(id, version) of the student's latest SESSIONS_GENERATED event after after_id, or None."""
    row = sql("SELECT id || ' ' || version FROM kc_flow.events WHERE student_id = '%s' AND "
              "event_type = 'SESSIONS_GENERATED' AND id > %d ORDER BY id DESC LIMIT 1" % (student, after_id))
    return tuple(int(x) for x in row.split()) if row else None


def max_event_id():
    return int(sql("SELECT coalesce(max(id), 0) FROM kc_flow.events"))


# ---- the tests ----------------------------------------------------------------------------

def test_help():
    r = subprocess.run([GW_BIN, "--help"], capture_output=True, text=True, timeout=10)
    names = ["KC_DATABASE_URL", "KC_REDIS_URL", "KC_LISTEN", "KC_JWT_SECRET", "KC_AUTH", "KC_CACHE_TTL",
             "KC_CORS_ORIGINS", "KC_LOG_LEVEL"]
    check(r.returncode == 0 and all(n in r.stdout for n in names) and 'default "127.0.0.1:8080"' in r.stdout,
          "--help lists every option of the contract with its default", r.stdout)
    e = dict(os.environ)
    e.pop("KC_JWT_SECRET", None)
    e["KC_AUTH"] = "on"
    r = subprocess.run([GW_BIN], capture_output=True, text=True, timeout=10, env=e)
    check(r.returncode == 2 and "KC_JWT_SECRET" in r.stderr, "refuses to start with auth on and no secret", r.stderr)
    r = subprocess.run([GW_BIN, "--cache-ttl=soon"], capture_output=True, text=True, timeout=10, env=e)
    check(r.returncode == 2 and "--cache-ttl" in r.stderr, "a bad option value is named in the error", r.stderr)


def test_routes(gw):
    p = gw.port
    t1 = token(S1)
    admin = token("ops", role="admin")

    r = get(p, "/healthz")
    check(r.status == 200 and r.json()["status"] == "ok", "GET /healthz 200")
    r = get(p, "/readyz")
    j = r.json()
    check(r.status == 200 and j["postgres"] and j["redis"] and j["listen"] and j["cache_synced"],
          "GET /readyz 200 with postgres, redis, listen and cache state", r.body)
    r = get(p, "/")
    check(r.status == 200 and r.header("content-type").startswith("text/html") and b"/api/v1/students/" in r.body,
          "GET / serves the demo home page")
    r = get(p, "/metrics")
    check(r.status == 200 and b"kc_http_requests_total" in r.body and b"kc_event_lag_seconds" in r.body,
          "GET /metrics serves Prometheus text")

    # authentication and authorization
    r = get(p, "/api/v1/students/%s/home" % S1)
    check(r.status == 401 and error_code(r) == "unauthorized" and r.header("www-authenticate"),
          "no token: 401 JSON error with WWW-Authenticate", r.body)
    r = get(p, "/api/v1/students/%s/home" % S1, token(S1, ttl=-10))
    check(r.status == 401 and error_code(r) == "token_expired", "expired token: 401 token_expired", r.body)
    r = get(p, "/api/v1/students/%s/home" % S1, token(S1, alg="none"))
    check(r.status == 401, "alg none token: 401", r.body)
    r = get(p, "/api/v1/students/%s/home" % S1, token(S1, alg="HS512"))
    check(r.status == 401, "HS512 token: 401", r.body)
    r = get(p, "/api/v1/students/%s/home" % S1, token(S1, secret="wrong"))
    check(r.status == 401, "token signed with another secret: 401", r.body)
    r = get(p, "/api/v1/students/%s/home" % S1, token(S1, with_exp=False))
    check(r.status == 401, "token without exp: 401", r.body)
    r = get(p, "/api/v1/students/%s/home" % S2, t1)
    check(r.status == 403 and error_code(r) == "forbidden", "another student's home: 403", r.body)
    r = get(p, "/api/v1/students/%s/learning" % S2, t1)
    check(r.status == 403, "another student's learning: 403")
    r = get(p, "/api/v1/students/%s/sessions" % S2, t1)
    check(r.status == 403, "another student's sessions: 403")
    r = get(p, "/api/v1/students/%s/home" % S2, admin)
    check(r.status == 200 and r.json()["student_id"] == S2, "admin token reads any student")

    # bad input and unknown things
    r = get(p, "/api/v1/students/not-a-uuid/home", admin)
    check(r.status == 400 and error_code(r) == "bad_request", "bad student id: 400", r.body)
    r = get(p, "/api/v1/students/%s/home" % UNKNOWN, admin)
    check(r.status == 404 and error_code(r) == "not_found", "unknown student: 404", r.body)
    r = get(p, "/api/v1/nothing", admin)
    check(r.status == 404 and error_code(r) == "not_found", "unknown route: 404", r.body)
    r = request(p, "/api/v1/students/%s/home" % S1, method="DELETE", headers={"Authorization": "Bearer " + t1})
    check(r.status == 405 and "GET" in (r.header("allow") or "") and error_code(r) == "method_not_allowed",
          "DELETE on a route: 405 with Allow", r.body)
    r = request(p, "/api/v1/students/%s/home" % S1, method="POST", body=b"x" * 20000,
                headers={"Authorization": "Bearer " + t1, "Content-Type": "application/octet-stream"})
    check(r.status == 413 and error_code(r) == "payload_too_large", "oversized body: 413", r.body)

    # home: MISS then HIT, ETag and 304
    redis("DEL", "student:home:" + S1, "student:learning:" + S1)
    r1 = get(p, "/api/v1/students/%s/home" % S1, t1)
    r2 = get(p, "/api/v1/students/%s/home" % S1, t1)
    v = r1.json()["version"] if r1.status == 200 else None
    check(r1.status == 200 and r1.header("x-cache") == "MISS" and r1.header("etag") == '"v%s"' % v,
          "home: first read is a MISS with ETag \"v{version}\"", r1.headers)
    check(r2.status == 200 and r2.header("x-cache") == "HIT" and r2.body == r1.body,
          "home: second read is a HIT with the same body", r2.headers)
    check(v == db_version(S1), "home: version is the student's cache version")
    h = r1.json()
    check(set(h) >= {"student_id", "version", "overview", "upcoming_sessions", "recent_courses",
                     "trending_courses", "generated_at"} and
          set(h["overview"]) >= {"active_courses", "upcoming_sessions", "completed_sessions",
                                  "pending_allocations", "next_session"},
          "home: JSON has the fields of the contract", sorted(h))
    r = get(p, "/api/v1/students/%s/home" % S1, t1, {"If-None-Match": r1.header("etag")})
    check(r.status == 304 and r.body == b"" and r.header("etag") == r1.header("etag"),
          "home: If-None-Match with the current ETag: 304 without body", r.status)
    r = get(p, "/api/v1/students/%s/home" % S1, t1, {"If-None-Match": '"v0"'})
    check(r.status == 200, "home: stale If-None-Match: 200")
    r = request(p, "/api/v1/students/%s/home" % S1, method="HEAD", headers={"Authorization": "Bearer " + t1})
    check(r.status == 200 and r.body == b"", "home: HEAD answers without a body")

    # learning
    redis("DEL", "student:learning:" + S1)
    r1 = get(p, "/api/v1/students/%s/learning" % S1, t1)
    r2 = get(p, "/api/v1/students/%s/learning" % S1, t1)
    ok = r1.status == 200 and r1.header("x-cache") == "MISS" and r2.header("x-cache") == "HIT"
    courses = r1.json().get("courses", []) if r1.status == 200 else []
    check(ok and len(courses) == 2 and all("sessions" in c and "progress" in c and "allocation" in c
                                           for c in courses),
          "learning: per-course allocation, progress and sessions, MISS then HIT", r1.body[:300])

    # sessions: keyset pagination
    total = int(sql("SELECT count(*) FROM kc_flow.tutoring_sessions WHERE student_id = '%s'" % S1))
    seen, after, pages = [], None, 0
    while pages < 50:
        path = "/api/v1/students/%s/sessions?limit=7" % S1 + ("&after=" + after if after else "")
        r = get(p, path, t1)
        if r.status != 200:
            break
        j = r.json()
        seen += [(s["starts_at"], s["id"]) for s in j["sessions"]]
        pages += 1
        after = j["next_after"]
        if after is None:
            break
    check(len(seen) == total and len(set(x[1] for x in seen)) == total and total > 7,
          "sessions: following next_after returns every session exactly once (%d in %d pages)" % (total, pages),
          (len(seen), total))
    check(seen == sorted(seen, key=lambda x: (x[0], x[1])) if seen else False, "sessions: pages are in start order")
    r = get(p, "/api/v1/students/%s/sessions?status=completed" % S1, t1)
    check(r.status == 200 and r.json()["sessions"] == [] and r.json()["next_after"] is None,
          "sessions: status filter")
    first = seen[0][0] if seen else "2000-01-01T00:00:00Z"
    r = get(p, "/api/v1/students/%s/sessions?from=%s&to=%s" % (S1, first.replace("+", "%2B"),
                                                              first.replace("+", "%2B")), t1)
    check(r.status == 200 and r.json()["sessions"] == [], "sessions: empty [from, to) range")
    for q, name in (("status=bogus", "bad status"), ("limit=0", "limit 0"), ("limit=x", "non-numeric limit"),
                    ("limit=500", "limit above 200"), ("after=garbage!", "bad cursor"),
                    ("after=YWJj", "cursor with a bad shape"), ("from=yesterday-ish", "bad from")):
        r = get(p, "/api/v1/students/%s/sessions?%s" % (S1, q), t1)
        check(r.status == 400 and error_code(r) == "bad_request", "sessions: %s: 400" % name, r.body)
    r = get(p, "/api/v1/students/%s/sessions" % UNKNOWN, admin)
    check(r.status == 404, "sessions: unknown student: 404")

    # events/recent
    r = get(p, "/api/v1/events/recent?after=0&limit=1000", t1)
    evs = r.json()["events"] if r.status == 200 else []
    mine = int(sql("SELECT count(*) FROM kc_flow.events WHERE student_id = '%s'" % S1))
    check(r.status == 200 and len(evs) == mine and all(e["student_id"] == S1 for e in evs),
          "events/recent: a student gets exactly their own events", (len(evs), mine))
    check(evs and r.json()["next_after"] == evs[-1]["id"] and [e["id"] for e in evs] == sorted(e["id"] for e in evs),
          "events/recent: ordered by id, next_after is the last id")
    if len(evs) > 2:
        r = get(p, "/api/v1/events/recent?after=%d&limit=1" % evs[0]["id"], t1)
        j = r.json()
        check(len(j["events"]) == 1 and j["events"][0]["id"] == evs[1]["id"] and j["next_after"] == evs[1]["id"],
              "events/recent: after and limit page through the log")
    head = int(sql("SELECT kc_flow.settled_event_id()"))
    r = get(p, "/api/v1/events/recent?after=%d" % head, t1)
    check(r.status == 200 and r.json() == {"events": [], "next_after": head},
          "events/recent: nothing new keeps next_after")
    # above the head: a position of a log since rewound (failover, restore)
    r = get(p, "/api/v1/events/recent?after=999999999", t1)
    check(r.status == 410 and error_code(r) == "refetch" and b"past the end" in r.body,
          "events/recent: after above the log's head: 410 refetch", (r.status, r.body[:200]))
    r = get(p, "/api/v1/events/recent?student=%s" % S2, t1)
    check(r.status == 403, "events/recent: another student's events: 403")
    r = get(p, "/api/v1/events/recent?after=0&limit=1000", admin)
    check(r.status == 200 and len(r.json()["events"]) == max(1, int(sql("SELECT count(*) FROM kc_flow.events"))),
          "events/recent: admin reads every student's events")
    for q in ("after=-1", "after=abc", "limit=0", "limit=100000", "student=nope"):
        r = get(p, "/api/v1/events/recent?" + q, admin)
        check(r.status == 400, "events/recent: %s: 400" % q, r.body)
    r = get(p, "/api/v1/events/recent")
    check(r.status == 401, "events/recent without token: 401")


def test_hostile_input(gw):
    """Malformed requests must not crash or hang the gateway."""
    payloads = [b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 100000 + b"\r\n\r\n",
                b"GET /api/v1/students/%00/home HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET /api/v1/students/" + b"1" * 5000 + b"/home HTTP/1.1\r\nHost: x\r\n\r\n",
                b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffff\r\n" + b"z" * 30000,
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"a." * 3000 + b"\r\n\r\n"]
    for data in payloads:
        try:
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
            s.sendall(data)
            s.recv(4096)
            s.close()
        except OSError:
            pass
    t = token(S1)
    for q in ("?after=%ff", "?limit=" + "9" * 40, "?from=" + "x" * 200, "?status=" + "%00"):
        get(gw.port, "/api/v1/students/%s/sessions%s" % (S1, q), t)
    r = get(gw.port, "/api/v1/students/%s/home" % ("A" * 36), token("ops", role="admin"))
    check(r.status == 400, "hostile: 36 letters as id: 400")
    check(gw.proc.poll() is None and get(gw.port, "/healthz").status == 200,
          "hostile: malformed requests leave the gateway serving")


def test_purchase_flow(gw):
    """A purchase reaches the home JSON right after SESSIONS_GENERATED, with the cache invalidated."""
    p, t3 = gw.port, token(S3)
    r = get(p, "/api/v1/students/%s/home" % S3, t3)
    r = get(p, "/api/v1/students/%s/home" % S3, t3)
    before = r.json()
    check(r.header("x-cache") == "HIT" and before["upcoming_sessions"] == [],
          "flow: the empty home of a new student is cached (HIT)", r.headers)
    start_id = max_event_id()
    buy(S3, COURSE_MUSIC, tier=10)
    ev = wait_for(lambda: sessions_generated(S3, start_id), 20)
    check(ev is not None, "flow: the pipeline emits SESSIONS_GENERATED")
    if not ev:
        return
    ev_id, ev_version = ev

    def invalidated():
        for line in gw.log_lines():
            if (line.get("msg") == "Cache INVALIDATED" and line.get("studentId") == S3 and
                    line.get("version") == ev_version and line.get("cacheKey") == "student:home:" + S3):
                return line
        return None
    line = wait_for(invalidated, 10, 0.02)
    check(line is not None and line["reason"] == "SESSIONS_GENERATED" and
          all(k in line for k in ("ts", "level", "studentId", "cacheKey", "reason", "existedBefore",
                                  "version", "durationMs")),
          "flow: a Cache INVALIDATED log line with the fields of §6 follows the notification", line)
    first_inval = None
    for l in gw.log_lines():
        if l.get("msg") == "Cache INVALIDATED" and l.get("studentId") == S3 and l.get("cacheKey", "").startswith(
                "student:home:"):
            first_inval = l
            break
    check(first_inval is not None and first_inval["existedBefore"] is True,
          "flow: the first invalidation deleted the cached view (existedBefore true)", first_inval)
    check(int(redis("GET", "student:ver:" + S3) or -1) >= ev_version, "flow: the fence is at the event's version")
    r = get(p, "/api/v1/students/%s/home" % S3, t3)
    j = r.json()
    check(r.status == 200 and r.header("x-cache") == "MISS" and j["version"] >= ev_version and
          len(j["upcoming_sessions"]) == 10 and j["overview"]["active_courses"] == 1,
          "flow: right after the invalidation the home shows the 10 new sessions (MISS)",
          (r.headers, j.get("version"), len(j.get("upcoming_sessions", []))))
    r = get(p, "/api/v1/students/%s/home" % S3, t3)
    check(r.header("x-cache") == "HIT" and r.json()["version"] == j["version"], "flow: and is cached again (HIT)")
    r = get(p, "/api/v1/events/recent?after=%d" % start_id, t3)
    types = [e["event_type"] for e in r.json()["events"]]
    check(types[:1] == ["PURCHASE_CONFIRMED"] and "SESSIONS_GENERATED" in types,
          "flow: events/recent shows the purchase's events", types)


S7 = "77777777-7777-4777-8777-777777777777"

# A session that makes the gateway's home read of S7 a deadlock's victim: it holds courses,
# waits until the read (which holds students since require_student) queues for courses, then
# asks for students itself. The read waited first, so its deadlock check finds the cycle and
# rolls it back; the rerun queues behind this session, which lets go 0.3 s later. This session
# never runs a deadlock check of its own (its deadlock_timeout is a minute), so on a loaded
# machine, where either backend's check could come first, the read is still the one chosen.
DEADLOCK_SQL = """
SET deadlock_timeout = '60s';
BEGIN;
LOCK TABLE kc_flow.courses IN ACCESS EXCLUSIVE MODE;
DO $$
BEGIN
    LOOP
        PERFORM pg_stat_clear_snapshot();
        EXIT WHEN EXISTS (SELECT 1 FROM pg_locks k JOIN pg_stat_activity a ON a.pid = k.pid
                           WHERE NOT k.granted AND k.relation = 'kc_flow.courses'::regclass
                             AND a.application_name = 'kc-gateway');
        PERFORM pg_sleep(0.005);
    END LOOP;
    LOCK TABLE kc_flow.students IN ACCESS EXCLUSIVE MODE;
END $$;
SELECT pg_sleep(0.3);
ROLLBACK;
"""


def test_deadlock_rerun(gw):
    """A read chosen by Postgres as a deadlock's victim (40P01) is run again: the client gets its
    200, the gateway logs the rerun. Without the rerun the answer would be a 503."""
    sql("INSERT INTO kc_flow.students (id, display_name) VALUES ('%s', 'S7') ON CONFLICT DO NOTHING" % S7)
    maker = subprocess.Popen(as_pg(["psql", "-h", "127.0.0.1", "-p", PG_PORT, "-U", "postgres", "-d", PG_DB,
                                    "-X", "-q", "-v", "ON_ERROR_STOP=1"]),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env=dict(os.environ, PGAPPNAME="deadlock-maker"))
    maker.stdin.write(DEADLOCK_SQL)
    maker.stdin.close()
    held = wait_for(lambda: sql("SELECT count(*) FROM pg_locks k JOIN pg_stat_activity a ON a.pid = k.pid "
                                "WHERE a.application_name = 'deadlock-maker' AND k.granted "
                                "AND k.relation = 'kc_flow.courses'::regclass") == "1", 10)
    r = get(gw.port, "/api/v1/students/%s/home" % S7, token(S7)) if held else None
    out = maker.stdout.read()
    maker.wait(30)
    reruns = [line for line in gw.log_lines()
              if "statement rolled back by postgres (40P01), running it again" in line.get("msg", "")]
    check(held and maker.returncode == 0, "deadlock: a session holds courses, then takes students", out)
    check(r is not None and r.status == 200 and r.json()["student_id"] == S7 and len(reruns) == 1,
          "deadlock: a home read chosen as the deadlock's victim is run again and answers 200",
          (r and r.status, r and r.body[:200], reruns))


def test_catch_up_after_restart(gw_env):
    """Events that happen while the gateway is down are replayed at start: no stale key survives."""
    gw = Gateway("restart-a", **gw_env)
    check(gw.ready() is not None, "restart: gateway ready")
    t1 = token(S1)
    get(gw.port, "/api/v1/students/%s/home" % S1, t1)
    r = get(gw.port, "/api/v1/students/%s/home" % S1, t1)
    cached_v = r.json()["version"]
    check(r.header("x-cache") == "HIT", "restart: S1 home cached before the stop")
    rc = gw.stop()
    check(rc == 0 and "kc-gateway stopped" in gw.log_text(), "restart: SIGTERM stops the gateway cleanly (exit 0)",
          rc)
    start_id = max_event_id()
    buy(S1, COURSE_ALGEBRA, tier=10, weekdays="[6,7]", start="11:00")
    ev = wait_for(lambda: sessions_generated(S1, start_id), 20)
    check(ev is not None and db_version(S1) > cached_v, "restart: events for S1 happen while the gateway is down")
    check(redis("HGET", "student:home:" + S1, "v") == str(cached_v),
          "restart: the stale view is still in Redis while the gateway is down")
    gw2 = Gateway("restart-b", **gw_env)
    ok = gw2.ready()
    check(ok is not None, "restart: gateway ready again")
    v = redis("HGET", "student:home:" + S1, "v")
    check(v == "" or int(v) >= db_version(S1), "restart: catch-up removed the stale view before serving", v)
    r = get(gw2.port, "/api/v1/students/%s/home" % S1, t1)
    check(r.status == 200 and r.json()["version"] == db_version(S1) and len(r.json()["recent_courses"]) == 3,
          "restart: the home shows the purchase made while the gateway was down",
          (r.header("x-cache"), r.json().get("version"), db_version(S1)))
    synced = [l for l in gw2.log_lines() if l.get("msg") == "cache synced"]
    check(synced and synced[0]["replayedFrom"] <= start_id < synced[0]["watermark"],
          "restart: the log shows the replay from the stored watermark", synced[:1])
    gw2.stop()


def test_redis_outage(gw_env):
    """Redis down: BYPASS answers from Postgres; back: resync, no stale view served. The
    Redis path alone (KC_LOCAL_CACHE=0): with the in-process cache, the default, hits are served
    from memory and the outage is seen at the next Redis operation (an invalidation drops the
    views in process whatever Redis answers; the held-transaction test covers that path)."""
    gw = Gateway("redis", **dict(gw_env, KC_LOCAL_CACHE="0"))
    check(gw.ready() is not None, "redis outage: gateway ready")
    t2 = token(S2)
    get(gw.port, "/api/v1/students/%s/home" % S2, t2)
    r = get(gw.port, "/api/v1/students/%s/home" % S2, t2)
    cached_v = r.json()["version"]
    check(r.header("x-cache") == "HIT", "redis outage: S2 home cached")
    redis("SAVE")
    res = shell("kc_redis_stop '%s'" % REDIS_DIR)
    check(res.returncode == 0, "redis outage: Redis stopped", res.stderr)
    r = get(gw.port, "/api/v1/students/%s/home" % S2, t2)
    check(r.status == 200 and r.header("x-cache") == "BYPASS" and r.json()["version"] == cached_v,
          "redis outage: home answers 200 from Postgres with X-Cache: BYPASS", (r.status, r.headers))
    r = get(gw.port, "/readyz")
    check(r.status == 200 and r.json()["redis"] is False, "redis outage: still ready, reports redis false", r.body)
    start_id = max_event_id()
    buy(S2, COURSE_MUSIC, tier=10, weekdays="[1,3]", start="07:30")
    ev = wait_for(lambda: sessions_generated(S2, start_id), 20)
    check(ev is not None, "redis outage: an event for S2 happens while Redis is down")
    r = get(gw.port, "/api/v1/students/%s/home" % S2, t2)
    check(r.status == 200 and r.header("x-cache") == "BYPASS" and r.json()["version"] == db_version(S2),
          "redis outage: BYPASS answers are current", r.headers)
    res = shell("kc_redis_start '%s' %s persist" % (REDIS_DIR, REDIS_PORT))
    check(res.returncode == 0 and redis("HGET", "student:home:" + S2, "v") in (str(cached_v), ""),
          "redis outage: Redis back (with the old view restored from disk)", res.stderr)
    r = wait_for(lambda: (lambda x: x if x.header("x-cache") != "BYPASS" else None)(
        get(gw.port, "/api/v1/students/%s/home" % S2, t2)), 15)
    check(r is not None and r.json()["version"] == db_version(S2),
          "redis outage: after recovery the cache serves the current view, never the restored stale one",
          r and (r.headers, r.json().get("version"), db_version(S2)))
    r = get(gw.port, "/api/v1/students/%s/home" % S2, t2)
    check(r.header("x-cache") == "HIT", "redis outage: cache hits again")
    m = re.search(rb"^kc_redis_reconnects_total (\d+)$", get(gw.port, "/metrics").body, re.M)
    check(m is not None and int(m.group(1)) >= 1, "redis outage: the recovery is counted in kc_redis_reconnects_total",
          m and m.group(0))
    check(any(l.get("msg") == "cache synced" for l in gw.log_lines()[1:]) and
          "redis unavailable" in gw.log_text(), "redis outage: outage and resync are logged")
    gw.stop()


def test_postgres_restart(gw_env):
    """Postgres down: 503 with Retry-After; back: automatic recovery of requests and LISTEN."""
    gw = Gateway("pg", **gw_env)
    check(gw.ready() is not None, "pg restart: gateway ready")
    t1 = token(S1)
    res = shell("kc_pg_stop '%s' fast" % PG_DIR)
    check(res.returncode == 0, "pg restart: Postgres stopped", res.stderr)
    r = get(gw.port, "/api/v1/students/%s/learning" % S1, t1)
    check(r.status == 503 and r.header("retry-after") == "3" and error_code(r) == "unavailable",
          "pg restart: 503 with Retry-After while Postgres is down", (r.status, r.headers, r.body))
    r = get(gw.port, "/readyz")
    check(r.status == 503 and r.json()["postgres"] is False, "pg restart: readyz 503", r.body)
    check(get(gw.port, "/healthz").status == 200, "pg restart: healthz stays 200")
    res = shell("kc_pg_start '%s' %s %s" % (PG_DIR, PG_PORT, PG_DB))
    check(res.returncode == 0, "pg restart: Postgres started again", res.stderr)
    r = wait_for(lambda: (lambda x: x if x.status == 200 else None)(
        get(gw.port, "/api/v1/students/%s/learning" % S1, t1)), 20)
    check(r is not None, "pg restart: requests recover without restarting the gateway")
    check(gw.ready(20) is not None and get(gw.port, "/readyz").json()["listen"],
          "pg restart: LISTEN reconnects")
    start_id = max_event_id()
    buy(S3, COURSE_ALGEBRA, tier=10, weekdays="[2]", start="09:00")
    ev = wait_for(lambda: sessions_generated(S3, start_id), 20)
    found = ev and wait_for(lambda: any(l.get("msg") == "Cache INVALIDATED" and l.get("version") == ev[1]
                                        and l.get("studentId") == S3 for l in gw.log_lines()), 10)
    check(bool(found), "pg restart: invalidations flow again after the reconnect")
    m = get(gw.port, "/metrics").body.decode()
    check("kc_listen_reconnects_total 1" in m or "kc_listen_reconnects_total 2" in m,
          "pg restart: metrics count the LISTEN reconnect")
    gw.stop()


def test_local_cache(gw_env):
    """--local-cache: hits skip Redis, yet an event empties it before anything can be served stale."""
    gw = Gateway("local", KC_LOCAL_CACHE="1024", **gw_env)
    check(gw.ready() is not None and wait_for(lambda: get(gw.port, "/readyz").json()["cache_synced"], 10),
          "local cache: gateway ready and synced")
    t1 = token(S1)
    path = "/api/v1/students/%s/home" % S1
    get(gw.port, path, t1)
    r = get(gw.port, path, t1)
    cached = r.json()
    check(r.header("x-cache") == "HIT", "local cache: second read is a HIT", r.headers)
    redis("DEL", "student:home:" + S1)
    r = get(gw.port, path, t1)
    check(r.header("x-cache") == "HIT" and r.json()["version"] == cached["version"],
          "local cache: a hit is served from the process (no Redis read)", r.headers)
    start_id = max_event_id()
    buy(S1, COURSE_MUSIC, tier=10, weekdays="[4]", start="18:00")
    ev = wait_for(lambda: sessions_generated(S1, start_id), 20)
    check(ev is not None, "local cache: a purchase of S1 reaches SESSIONS_GENERATED")
    if not ev:
        gw.stop()
        return

    def invalidated():
        return any(l.get("msg") == "Cache INVALIDATED" and l.get("studentId") == S1 and
                   l.get("version") == ev[1] for l in gw.log_lines())
    check(wait_for(invalidated, 10, 0.01), "local cache: the event is invalidated")
    r = get(gw.port, path, t1)
    j = r.json()
    check(r.header("x-cache") in ("MISS", "BYPASS") and j["version"] >= ev[1] and
          len(j["recent_courses"]) == len(cached["recent_courses"]) + 1,
          "local cache: right after the invalidation the home is rebuilt with the purchase",
          (r.headers, j.get("version"), ev))
    r = get(gw.port, path, t1)
    check(r.header("x-cache") == "HIT" and r.json()["version"] == j["version"], "local cache: and is cached again")
    m = get(gw.port, "/metrics").body.decode()
    check("kc_cache_fills_total" in m, "local cache: metrics still served")
    gw.stop()


def test_drain(gw_env):
    """SIGTERM lets a request in flight finish, then exits 0."""
    gw = Gateway("drain", **gw_env)
    check(gw.ready() is not None, "drain: gateway ready")
    admin = token("ops", role="admin")
    redis("DEL", "student:learning:" + S2)
    locker = subprocess.Popen(as_pg(["psql", "-h", "127.0.0.1", "-p", PG_PORT, "-U", "postgres", "-d", PG_DB,
                                     "-qc", "BEGIN; LOCK TABLE kc_flow.courses IN ACCESS EXCLUSIVE MODE; "
                                     "SELECT pg_sleep(2); COMMIT;"]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    result = {}

    def slow():
        result["r"] = get(gw.port, "/api/v1/students/%s/learning" % S2, admin)
    th = threading.Thread(target=slow)
    th.start()
    time.sleep(0.5)
    t0 = time.time()
    gw.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    refused = False
    try:
        request(gw.port, "/healthz", timeout=2)
    except OSError:
        refused = True
    th.join(15)
    locker.wait(15)
    rc = gw.proc.wait(15)
    r = result.get("r")
    check(refused, "drain: no new connections after SIGTERM")
    check(r is not None and r.status == 200, "drain: the request in flight completes with 200",
          r and (r.status, r.body[:200]))
    check(rc == 0 and time.time() - t0 >= 1.0, "drain: the gateway exits 0 after the request finished", rc)
    gw.stop()


def test_cors_and_auth_off():
    gw = Gateway("cors", KC_CORS_ORIGINS="http://app.example, http://other.example")
    gw.ready()
    t1 = token(S1)
    r = get(gw.port, "/api/v1/students/%s/home" % S1, t1, {"Origin": "http://app.example"})
    check(r.header("access-control-allow-origin") == "http://app.example" and
          "ETag" in (r.header("access-control-expose-headers") or ""), "cors: allowed origin echoed", r.headers)
    r = get(gw.port, "/api/v1/students/%s/home" % S1, t1, {"Origin": "http://evil.example"})
    check(r.header("access-control-allow-origin") is None, "cors: other origin gets no CORS headers")
    r = request(gw.port, "/api/v1/students/%s/home" % S1, method="OPTIONS",
                headers={"Origin": "http://app.example", "Access-Control-Request-Method": "GET"})
    check(r.status == 204 and "GET" in (r.header("access-control-allow-methods") or "") and
          "Authorization" in (r.header("access-control-allow-headers") or ""), "cors: preflight 204", r.headers)
    gw.stop()
    gw = Gateway("noauth", KC_AUTH="off", KC_JWT_SECRET="")
    gw.ready()
    r = get(gw.port, "/api/v1/students/%s/home" % S2)
    check(r.status == 200 and r.header("x-kc-auth") == "off", "auth off: serves without a token, marked X-KC-Auth")
    check("AUTHENTICATION IS OFF" in gw.log_text(), "auth off: said loudly at start")
    gw.stop()


def test_ready_means_synced(gw_env, starts=6):
    """/readyz says ready only once the first catch-up is done: never 200 with cache_synced false."""
    early = []
    for i in range(starts):
        redis("SET", "kc:gateway:watermark", "0")     # a whole log to replay before the cache is synced
        gw = Gateway("ready-%d" % i, **gw_env)
        first = None
        end = time.time() + 15
        while first is None and time.time() < end:
            try:
                r = get(gw.port, "/readyz")
                if r.status == 200:
                    first = r.json()
            except OSError:
                pass
            time.sleep(0.002)
        gw.stop()
        if first is None or not first["cache_synced"]:
            early.append(first)
    check(not early, "readyz: ready only after the first catch-up (%d starts, polled every 2 ms)" % starts, early)


# ---- an unrelated transaction held open (docs/extension.md, "Gap-free event log") ---------

S4 = "44444444-4444-4444-8444-444444444444"
S5 = "55555555-5555-4555-8555-555555555555"
S6 = "66666666-6666-4666-8666-666666666666"


class HeldTransaction:
    """A psql session left in a transaction that emitted an event: a pending payment of S6
    confirmed and never committed (under 0.1.0 this held back every reader of the log)."""

    def __init__(self):
        sql("INSERT INTO kc_flow.students (id, display_name) VALUES ('%s', 'S4'), ('%s', 'S5'), ('%s', 'S6') "
            "ON CONFLICT DO NOTHING" % (S4, S5, S6))
        self.payment = sql("SELECT kc_flow.create_payment('%s', '%s', 10, "
                           "'{\"weekdays\":[6],\"start\":\"06:00\",\"timezone\":\"UTC\"}')" % (S6, COURSE_MUSIC))
        self.proc = subprocess.Popen(as_pg(["psql", "-h", "127.0.0.1", "-p", PG_PORT, "-U", "postgres", "-d", PG_DB,
                                            "-X", "-q", "-v", "ON_ERROR_STOP=1"]),
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     text=True, env=dict(os.environ, PGAPPNAME="held-open"))
        self.proc.stdin.write("BEGIN;\nUPDATE kc_flow.payments SET status = 'succeeded' WHERE id = '%s';\n"
                              % self.payment)
        self.proc.stdin.flush()
        self.open = wait_for(lambda: sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'held-open' "
                                         "AND state = 'idle in transaction'") == "1", 10)

    def close(self):
        self.proc.stdin.write("ROLLBACK;\n\\q\n")
        self.proc.stdin.close()
        self.proc.wait(10)


def purchase_done(student, after_id):
    """True once the student's purchase after event after_id reached its last event."""
    return sql("SELECT count(*) FROM kc_flow.events WHERE student_id = '%s' AND id > %d AND "
               "event_type IN ('SESSIONS_GENERATED', 'ALLOCATION_PENDING')" % (student, after_id)) != "0"


def stale_answers(gw, student, seconds=5.0):
    """Home answers over `seconds` whose version is below the database's: (stale, total)."""
    want = db_version(student)
    tok = token(student)
    stale = total = 0
    end = time.time() + seconds
    while time.time() < end:
        r = get(gw.port, "/api/v1/students/%s/home" % student, tok)
        total += 1
        if r.status != 200 or r.json()["version"] < want:
            stale += 1
        time.sleep(0.05)
    return stale, total


def metric(gw, name):
    m = re.search((r"^%s ([0-9.e+-]+)$" % re.escape(name)).encode(), get(gw.port, "/metrics").body, re.M)
    return float(m.group(1)) if m else None


def warm(gw, student):
    tok = token(student)
    get(gw.port, "/api/v1/students/%s/home" % student, tok)
    return get(gw.port, "/api/v1/students/%s/home" % student, tok).header("x-cache") == "HIT"


def test_held_transaction(gw_env):
    """With a transaction that emitted an event held open: other events are pushed at once, and
    neither a gateway kill -9, a Redis restart from an older dump, nor the loss of the gateway's
    Postgres connections leaves a stale view served (0 stale answers over 5 s each)."""
    held = HeldTransaction()
    check(held.open, "held xact: a transaction that emitted an event stays open")
    try:
        gw = Gateway("held-a", **gw_env)
        check(gw.ready() is not None and warm(gw, S4), "held xact: gateway ready, S4 home cached")
        age = wait_for(lambda: (lambda v: v if v and v > 0.5 else None)(
            metric(gw, "kc_flow_oldest_xact_holding_events_seconds")), 10)
        check(age is not None, "held xact: kc_flow_oldest_xact_holding_events_seconds shows it", age)
        start_id = max_event_id()
        buy(S4, COURSE_ALGEBRA, weekdays="[1]", start="05:00")
        pushed = wait_for(lambda: purchase_done(S4, start_id) and
                          get(gw.port, "/api/v1/students/%s/home" % S4, token(S4)).json()["version"]
                          == db_version(S4), 10)
        check(pushed, "held xact: a later purchase is applied at once, not held back")
        # (a) kill -9 the gateway, a purchase completes, start again
        gw.stop(signal.SIGKILL)
        start_id = max_event_id()
        buy(S4, COURSE_MUSIC, weekdays="[2]", start="05:00")
        check(wait_for(lambda: purchase_done(S4, start_id), 20), "held xact: a purchase completes while the gateway is down")
        gw = Gateway("held-b", **gw_env)
        check(gw.ready() is not None, "held xact: gateway ready after kill -9")
        stale, total = stale_answers(gw, S4)
        check(stale == 0 and total > 20, "held xact: kill -9 + restart: 0 stale answers (%d of %d)" % (stale, total))
        # (b) Redis restarted from a dump older than the purchase
        check(warm(gw, S5), "held xact: S5 home cached")
        shell("kc_redis_stop '%s'" % REDIS_DIR)
        old = os.path.join(TMP, "redis-older")
        subprocess.run(["rm", "-rf", old])
        subprocess.run(["cp", "-a", REDIS_DIR, old], check=True)
        shell("kc_redis_start '%s' %s persist" % (REDIS_DIR, REDIS_PORT))
        wait_for(lambda: warm(gw, S5), 15)
        start_id = max_event_id()
        buy(S5, COURSE_ALGEBRA, weekdays="[3]", start="05:00")
        # with the in-process cache the restart above is seen only now, by the invalidation:
        # the gateway resyncs, and answers BYPASS until it has
        check(wait_for(lambda: purchase_done(S5, start_id) and
                       get(gw.port, "/api/v1/students/%s/home" % S5, token(S5)).json()["version"] == db_version(S5)
                       and warm(gw, S5), 20)
              is not None, "held xact: S5 buys, the new view is cached")
        shell("kc_redis_stop '%s'" % REDIS_DIR)
        subprocess.run(["rm", "-rf", REDIS_DIR])
        subprocess.run(["cp", "-a", old, REDIS_DIR], check=True)
        res = shell("kc_redis_start '%s' %s persist" % (REDIS_DIR, REDIS_PORT))
        check(res.returncode == 0 and int(redis("HGET", "student:home:" + S5, "v") or 0) < db_version(S5),
              "held xact: Redis restarted from the older dump (S5's old view in it)", res.stderr)
        stale, total = stale_answers(gw, S5)
        check(stale == 0 and total > 20,
              "held xact: Redis from an older dump: 0 stale answers (%d of %d)" % (stale, total))
        # (c) the gateway's Postgres connections, LISTEN included, dropped
        # the restart from the older dump may be seen only now (hits were served from memory)
        check(wait_for(lambda: warm(gw, S4), 15), "held xact: S4 home cached again")
        before = metric(gw, "kc_listen_reconnects_total") or 0
        killed = sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                     "WHERE application_name LIKE 'kc-gateway%'")
        start_id = max_event_id()
        buy(S4, COURSE_PYTHON, weekdays="[4]", start="05:00")
        check(int(killed) >= 2 and wait_for(lambda: purchase_done(S4, start_id), 20),
              "held xact: the gateway's connections are terminated (%s), a purchase completes" % killed)
        check(wait_for(lambda: (metric(gw, "kc_listen_reconnects_total") or 0) > before and
                       get(gw.port, "/readyz").json()["cache_synced"], 15),
              "held xact: LISTEN reconnects and the cache resyncs")
        stale, total = stale_answers(gw, S4)
        check(stale == 0 and total > 20,
              "held xact: connections dropped: 0 stale answers (%d of %d)" % (stale, total))
        names = ["kc_flow_queue_depth", "kc_flow_dead_letters", "kc_flow_oldest_xact_holding_events_seconds",
                 "kc_flow_log_unsequenced", "kc_flow_log_unannounced", "kc_flow_notification_queue_usage",
                 "kc_catchup_lag_seconds"]
        missing = [n for n in names if metric(gw, n) is None]
        check(not missing, "metrics: the health gauges are exported", missing)
        gw.stop()
    finally:
        held.close()


def test_ready_lag(gw_env):
    """Redis away no longer holds the listener back (its pushes go on): /readyz stays 200. A
    listener that cannot read the log (here: a lock on kc_flow.event_log) turns /readyz 503,
    with a reason, once it is 5 s behind, and 200 again once it caught up."""
    gw = Gateway("lag", **gw_env)
    check(gw.ready() is not None, "readyz lag: gateway ready")
    shell("kc_redis_stop '%s'" % REDIS_DIR)
    start_id = max_event_id()
    buy(S5, COURSE_MUSIC, weekdays="[5]", start="05:00")
    check(wait_for(lambda: purchase_done(S5, start_id), 20), "readyz lag: events enter the log while Redis is away")
    time.sleep(6)
    r = get(gw.port, "/readyz")
    check(r.status == 200 and r.json()["redis"] is False and r.json()["catchup_lag_seconds"] < 5,
          "readyz lag: Redis away, events still applied (pushed): ready, lag under 5 s", r.body)
    shell("kc_redis_start '%s' %s persist" % (REDIS_DIR, REDIS_PORT))
    check(wait_for(lambda: get(gw.port, "/readyz").json()["cache_synced"], 15), "readyz lag: Redis back, cache synced")
    locker = subprocess.Popen(as_pg(["psql", "-h", "127.0.0.1", "-p", PG_PORT, "-U", "postgres", "-d", PG_DB,
                                     "-X", "-q", "-v", "ON_ERROR_STOP=1"]),
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    locker.stdin.write("BEGIN;\nLOCK TABLE kc_flow.event_log IN ACCESS EXCLUSIVE MODE;\nSELECT pg_sleep(12);\n"
                       "COMMIT;\n\\q\n")
    locker.stdin.flush()
    try:
        r = wait_for(lambda: (lambda x: x if x.status == 503 else None)(get(gw.port, "/readyz")), 12, 0.2)
        check(r is not None and r.json().get("reason") == "catch-up behind the newest committed event" and
              r.json()["catchup_lag_seconds"] > 5, "readyz lag: a listener blocked on the log: 503 with the reason "
              "after 5 s", r and r.body)
    finally:
        locker.stdin.close()
        locker.wait(30)
    check(gw.ready(15) is not None and get(gw.port, "/readyz").json()["catchup_lag_seconds"] < 5,
          "readyz lag: ready again once caught up")
    gw.stop()


def ws_messages(port, path, count, timeout=10):
    """The HTTP status and the first count text messages (JSON) of a WebSocket stream."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n" % path).encode())
    buf = [b""]

    def need(n):
        while len(buf[0]) < n:
            chunk = s.recv(65536)
            if not chunk:
                raise EOFError
            buf[0] += chunk
    out = []
    try:
        while b"\r\n\r\n" not in buf[0]:
            need(len(buf[0]) + 1)
        head, _, buf[0] = buf[0].partition(b"\r\n\r\n")
        while len(out) < count:
            need(2)
            n, off = buf[0][1] & 0x7F, 2
            if n == 126:
                need(4)
                n, off = int.from_bytes(buf[0][2:4], "big"), 4
            need(off + n)
            op, payload, buf[0] = buf[0][0] & 0x0F, buf[0][off:off + n], buf[0][off + n:]
            if op == 8:
                break
            if op == 1:
                out.append(json.loads(payload))
    except (EOFError, socket.timeout):
        return None, out
    finally:
        s.close()
    return head.split(b" ")[1].decode(), out


def test_below_floor(gw_env):
    """A trim removes events a cursor had not read (kc_flow.log_floor() above it): the stopped
    gateway's watermark purges the cached views at start instead of serving them stale; after=
    below the floor is 410 "refetch" over HTTP and a "refetch" message on the WebSocket."""
    st = sql("INSERT INTO kc_flow.students (display_name, timezone) VALUES ('Floor', 'UTC') RETURNING id")
    gw = Gateway("floor-a", **gw_env)
    check(gw.ready() is not None, "floor: gateway ready")
    t1 = token(st)
    get(gw.port, "/api/v1/students/%s/home" % st, t1)
    r = get(gw.port, "/api/v1/students/%s/home" % st, t1)
    cached_v = r.json()["version"]
    check(r.header("x-cache") == "HIT", "floor: the student's home cached before the stop")
    gw.stop()
    wm = int(redis("GET", "kc:gateway:watermark") or 0)
    start_id = max_event_id()
    buy(st, COURSE_MUSIC, tier=10, weekdays="[6]", start="13:00")
    ev = wait_for(lambda: sessions_generated(st, start_id), 20)
    check(ev is not None and db_version(st) > cached_v, "floor: the student's events while the gateway is down")
    time.sleep(1.5)
    floor = int(sql("SELECT kc_flow.trim_event_log(1)"))
    head = int(sql("SELECT kc_flow.settled_event_id()"))
    check(floor > wm and int(sql("SELECT count(*) FROM kc_flow.events WHERE student_id = '%s' AND id > %d"
                                       % (st, start_id))) == 0,
          "floor: a 1 s retention trims them, the floor above the stopped gateway's watermark", (floor, start_id, wm))
    gw2 = Gateway("floor-b", **gw_env)
    check(gw2.ready() is not None, "floor: gateway ready again", gw2.log_text()[-2000:])
    r = get(gw2.port, "/api/v1/students/%s/home" % st, t1)
    check(r.status == 200 and r.json()["version"] == db_version(st) and r.header("x-cache") != "HIT",
          "floor: the home cached before the trim is not served after the restart",
          (r.header("x-cache"), r.json().get("version"), cached_v, db_version(st)))
    synced = wait_for(lambda: get(gw2.port, "/readyz").json()["cache_synced"], 5)
    get(gw2.port, "/api/v1/students/%s/home" % st, t1)
    r = get(gw2.port, "/api/v1/students/%s/home" % st, t1)
    check(synced and r.header("x-cache") == "HIT" and r.json()["version"] == db_version(st),
          "floor: the cache is synced again and serves the current home", (synced, r.header("x-cache")))
    line = [l for l in gw2.log_lines() if "below the event log's floor" in l.get("msg", "")]
    check(len(line) == 1 and line[0]["logHead"] >= floor, "floor: the catch-up logs the purge once, with the head",
          line)
    m = re.search(r"kc_catchup_below_floor_total (\d+)", get(gw2.port, "/metrics").body.decode())
    check(m is not None and int(m.group(1)) == 1, "floor: the purge is counted in kc_catchup_below_floor_total")
    r = get(gw2.port, "/api/v1/events/recent?after=%d" % (floor - 1), t1)
    j = r.json() if r.status == 410 else {}
    check(r.status == 410 and error_code(r) == "refetch" and j["error"]["log_floor"] == floor and
          j["error"]["log_head"] >= head, "floor: events/recent below the floor: 410 refetch with floor and head", r.body)
    r = get(gw2.port, "/api/v1/events/recent?after=%d" % floor, t1)
    check(r.status == 200, "floor: events/recent at the floor: 200", r.body)
    status, msgs = [None], [None]

    def stream():
        status[0], msgs[0] = ws_messages(gw2.port, "/api/v1/ws?after=0&access_token=" + t1, 3)
    reader = threading.Thread(target=stream)
    reader.start()
    time.sleep(1)
    sql("SELECT kc_flow.emit_event('SESSIONS_GENERATED', gen_random_uuid(), '%s', '{}')" % st)
    reader.join(15)
    got = msgs[0] or []
    types = [x.get("type") for x in got]
    check(status[0] == "101" and types == ["hello", "refetch", "event"] and got[1]["log_floor"] == floor and
          got[1]["last_event_id"] >= head and got[2]["id"] > got[1]["last_event_id"],
          "floor: a WebSocket resuming below the floor gets refetch, then live events past the head", got)
    r = get(gw2.port, "/metrics")
    m = re.search(r"kc_refetches_total (\d+)", r.body.decode())
    check(m is not None and int(m.group(1)) == 2, "floor: the 410 and the refetch message are counted", m and m.group(0))
    # the listener itself falls below the floor (it cannot read the log while an event is
    # trimmed) with a socket open: the socket is told to refetch, then gets the next event
    status, msgs = [None], [None]
    reader = threading.Thread(target=lambda: msgs.__setitem__(0, ws_messages(
        gw2.port, "/api/v1/ws?access_token=" + t1, 3, timeout=30)[1]))
    reader.start()
    time.sleep(1)
    sql("ALTER FUNCTION kc_flow.events_since(bigint, uuid, int) RENAME TO events_since_hidden")
    try:
        sql("SELECT kc_flow.emit_event('SESSIONS_GENERATED', gen_random_uuid(), '%s', '{}')" % st)
        time.sleep(1.5)
        floor2 = int(sql("SELECT kc_flow.trim_event_log(1)"))
    finally:
        sql("ALTER FUNCTION kc_flow.events_since_hidden(bigint, uuid, int) RENAME TO events_since")
    head2 = int(sql("SELECT kc_flow.settled_event_id()"))
    wait_for(lambda: len([l for l in gw2.log_lines() if "below the event log's floor" in l.get("msg", "")]) == 2, 10)
    sql("SELECT kc_flow.emit_event('SESSIONS_GENERATED', gen_random_uuid(), '%s', '{}')" % st)
    reader.join(20)
    got = msgs[0] or []
    check([x.get("type") for x in got] == ["hello", "refetch", "event"] and got[1]["log_floor"] == floor2 and
          got[1]["after"] == got[0]["last_event_id"] and got[1]["last_event_id"] >= head2 and
          got[2]["id"] > got[1]["last_event_id"],
          "floor: a live socket whose events the listener never read is told to refetch, then goes on", got)
    # the same while Redis is away (the listener pushes straight from the log), then Redis back
    msgs = [None]
    reader = threading.Thread(target=lambda: msgs.__setitem__(0, ws_messages(
        gw2.port, "/api/v1/ws?access_token=" + t1, 3, timeout=30)[1]))
    reader.start()
    time.sleep(1)
    told = len([l for l in gw2.log_lines() if "told to refetch" in l.get("msg", "")])
    shell("kc_redis_stop '%s'" % REDIS_DIR)
    sql("ALTER FUNCTION kc_flow.events_since(bigint, uuid, int) RENAME TO events_since_hidden")
    try:
        sql("SELECT kc_flow.emit_event('SESSIONS_GENERATED', gen_random_uuid(), '%s', '{}')" % st)
        time.sleep(1.5)
        floor3 = int(sql("SELECT kc_flow.trim_event_log(1)"))
    finally:
        sql("ALTER FUNCTION kc_flow.events_since_hidden(bigint, uuid, int) RENAME TO events_since")
    wait_for(lambda: len([l for l in gw2.log_lines() if "told to refetch" in l.get("msg", "")]) > told, 10)
    sql("SELECT kc_flow.emit_event('SESSIONS_GENERATED', gen_random_uuid(), '%s', '{}')" % st)
    reader.join(35)
    got = msgs[0] or []
    check([x.get("type") for x in got] == ["hello", "refetch", "event"] and got[1]["log_floor"] == floor3 and
          got[2]["id"] > got[1]["last_event_id"],
          "floor: with Redis away too, the socket is told to refetch, then goes on", got)
    shell("kc_redis_start '%s' %s persist" % (REDIS_DIR, REDIS_PORT))
    synced = wait_for(lambda: get(gw2.port, "/readyz").json()["cache_synced"], 15)
    get(gw2.port, "/api/v1/students/%s/home" % st, t1)
    r = get(gw2.port, "/api/v1/students/%s/home" % st, t1)
    check(synced and r.header("x-cache") == "HIT" and r.json()["version"] == db_version(st),
          "floor: Redis back below the floor: synced again, the current home cached", (synced, r.header("x-cache")))
    gw2.stop()


def redis_calls(command):
    """How many times Redis ran command since its last CONFIG RESETSTAT (INFO commandstats)."""
    m = re.search(r"^cmdstat_%s:calls=(\d+)" % command, redis("INFO", "commandstats"), re.M)
    return int(m.group(1)) if m else 0


def test_batch_invalidation(gw_env):
    """Events committed together are invalidated in one Redis script call (one round trip), not
    one each: counted with Redis' own INFO commandstats. Every view they made stale is gone and
    every fence at its student's version before the watermark moves past them."""
    gw = Gateway("batch", **gw_env)
    check(gw.ready() is not None, "batch: gateway ready")
    warmed = [warm(gw, st) for st in (S1, S2, S3)]
    students = [S1, S2, S3] + sql("INSERT INTO kc_flow.students (display_name) "
                                  "SELECT 'batch ' || g FROM generate_series(1, 17) g RETURNING id").split()
    redis("CONFIG", "RESETSTAT")
    sql("SELECT kc_flow.emit_event('SESSIONS_GENERATED', gen_random_uuid(), s, '{}') "
        "FROM unnest('{%s}'::uuid[]) AS s" % ",".join(students))
    want = {st: db_version(st) for st in students}
    fenced = wait_for(lambda: all(redis("GET", "student:ver:" + st) == str(v) for st, v in want.items()), 15)
    head = int(sql("SELECT kc_flow.settled_event_id()"))
    moved = wait_for(lambda: int(redis("GET", "kc:gateway:watermark") or 0) >= head, 10)
    views = [redis("EXISTS", "student:home:" + st) for st in (S1, S2, S3)]
    calls = redis_calls("evalsha")
    check(all(warmed) and len(students) == 20 and fenced and moved and views == ["0", "0", "0"],
          "batch: 20 events in one transaction raise 20 fences and drop the cached views",
          (warmed, len(students), fenced, moved, views))
    # the batch's script call and the watermark's; twice that if the log sequenced them in two rounds
    check(calls <= 4, "batch: 20 events invalidated in at most 2 Redis script calls, plus the watermark's",
          (calls, metric(gw, "kc_cache_invalidation_batches_total")))
    gw.stop()


def main():
    test_help()
    gw_env = {}
    gw = Gateway("main")
    if not check(gw.ready() is not None, "gateway starts and becomes ready", gw.log_text()[-2000:]):
        gw.stop()
        return 1
    try:
        test_routes(gw)
        test_hostile_input(gw)
        test_purchase_flow(gw)
        test_deadlock_rerun(gw)
        m = get(gw.port, "/metrics").body.decode()
        check('kc_cache_requests_total{route="home",outcome="hit"}' in m and
              'kc_http_requests_total{route="home",code="304"}' in m and
              "kc_cache_invalidations_total 0" not in m and "kc_event_lag_seconds_count 0" not in m,
              "metrics: requests by route and code, cache outcomes, invalidations, event lag")
    finally:
        rc = gw.stop()
    check(rc == 0, "main gateway exits 0 on SIGTERM")
    test_cors_and_auth_off()
    test_ready_means_synced(gw_env)
    test_catch_up_after_restart(gw_env)
    test_redis_outage(gw_env)
    test_postgres_restart(gw_env)
    test_local_cache(gw_env)
    test_drain(gw_env)
    test_held_transaction(gw_env)
    test_ready_lag(gw_env)
    test_below_floor(gw_env)
    test_batch_invalidation(gw_env)
    print("# gateway integration: %d failed" % failures)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
