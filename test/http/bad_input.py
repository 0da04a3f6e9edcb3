"""bad_input.py: malformed input at the HTTP and WebSocket doors of kc-gateway, as a
table: each request gets the expected clear error (a JSON body with an error code for
the gateway's own answers), the gateway stays up, and nothing in the database changes.
Needs a running gateway (GW_PORT) with secret KC_JWT_SECRET on the harness's servers."""
import functools
import http.client
import os
import socket
import sys
import uuid

import psycopg2

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import kc_client  # noqa: E402
from kc_client import error_code  # noqa: E402

PORT = int(os.environ["GW_PORT"])
SECRET = os.environ["KC_JWT_SECRET"]


token = functools.partial(kc_client.token, secret=SECRET)


def request(method, path, headers=None, body=None):
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, data
    finally:
        c.close()


def raw(data):
    """Sends raw bytes; returns the status code (0 when the connection just closed) and body of the answer."""
    s = socket.create_connection(("127.0.0.1", PORT), timeout=10)
    got = b""
    try:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass                # the server may answer and close before it has read it all
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    except OSError:
        pass
    finally:
        s.close()
    parts = got.split(b" ", 2)
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0), got.partition(b"\r\n\r\n")[2]


db = psycopg2.connect(host=os.environ["PGHOST"], port=os.environ["PGPORT"], user=os.environ["PGUSER"],
                      dbname=os.environ["PGDATABASE"])
db.autocommit = True
cur = db.cursor()
cur.execute("INSERT INTO kc_flow.students (display_name) VALUES ('bad input'), ('someone else') RETURNING id")
me, other = [str(r[0]) for r in cur.fetchall()]


def counts():
    cur.execute("SELECT (SELECT count(*) FROM kc_flow.payments), (SELECT count(*) FROM kc_flow.events),"
                " (SELECT count(*) FROM kc_flow.students), (SELECT sum(version) FROM kc_flow.cache_versions)")
    return cur.fetchone()


before = counts()
mine = {"Authorization": "Bearer " + token(me)}
admin = {"Authorization": "Bearer " + token("ops", role="admin")}
home = "/api/v1/students/%s/home" % me
sessions = "/api/v1/students/%s/sessions" % me

HANDSHAKE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
             "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}

# (name, method, path, headers, body, expected statuses, expected error code or None)
TABLE = [
    ("bad uuid in the path", "GET", "/api/v1/students/not-a-uuid/home", mine, None, {400}, "bad_request"),
    ("uuid with a trailing char", "GET", "/api/v1/students/%sx/home" % me, mine, None, {400, 404}, None),
    ("no token", "GET", home, {}, None, {401}, "unauthorized"),
    ("not a JWT", "GET", home, {"Authorization": "Bearer abc.def"}, None, {401}, None),
    ("alg none", "GET", home, {"Authorization": "Bearer " + token(me, alg="none")}, None, {401}, None),
    ("alg HS512", "GET", home, {"Authorization": "Bearer " + token(me, alg="HS512")}, None, {401}, None),
    ("forged signature", "GET", home, {"Authorization": "Bearer " + token(me, secret="guess")}, None, {401}, None),
    ("expired token", "GET", home, {"Authorization": "Bearer " + token(me, ttl=-60)}, None, {401}, "token_expired"),
    ("exp as a string", "GET", home, {"Authorization": "Bearer " + token(me, claims={"exp": "tomorrow"})},
     None, {401}, None),
    ("another student's home", "GET", "/api/v1/students/%s/home" % other, mine, None, {403}, "forbidden"),
    ("another student's sessions", "GET", "/api/v1/students/%s/sessions" % other, mine, None, {403}, "forbidden"),
    ("unknown student (admin)", "GET", "/api/v1/students/%s/home" % uuid.uuid4(), admin, None, {404}, None),
    ("limit not a number", "GET", sessions + "?limit=abc", mine, None, {400}, None),
    ("limit too large", "GET", sessions + "?limit=100000", mine, None, {400}, None),
    ("limit negative", "GET", sessions + "?limit=-1", mine, None, {400}, None),
    ("unknown status", "GET", sessions + "?status=bogus", mine, None, {400}, None),
    ("injection in status", "GET", sessions + "?status=scheduled%27%3BDROP%20TABLE%20kc_flow.payments%3B--",
     mine, None, {400}, None),
    ("from not a date", "GET", sessions + "?from=yesterday-ish", mine, None, {400}, None),
    ("bad cursor", "GET", sessions + "?after=%%%%%%", mine, None, {400}, None),
    ("after negative", "GET", "/api/v1/events/recent?after=-1", mine, None, {400}, None),
    ("after beyond bigint", "GET", "/api/v1/events/recent?after=99999999999999999999", mine, None, {400}, None),
    ("min_version not a number", "GET", home + "?min_version=abc", mine, None, {400}, "bad_request"),
    ("min_version empty", "GET", home + "?min_version=", mine, None, {400}, "bad_request"),
    ("min_version negative", "GET", home + "?min_version=-1", mine, None, {400}, "bad_request"),
    ("min_version with a sign", "GET", home + "?min_version=%2B3", mine, None, {400}, "bad_request"),
    ("min_version a fraction", "GET", home + "?min_version=1.5", mine, None, {400}, "bad_request"),
    ("min_version beyond bigint", "GET", home + "?min_version=99999999999999999999", mine, None, {400},
     "bad_request"),
    ("min_version on learning", "GET", "/api/v1/students/%s/learning?min_version=v3" % me, mine, None, {400},
     "bad_request"),
    ("KC-Min-Version not a number", "GET", home, dict(mine, **{"KC-Min-Version": "latest"}), None, {400},
     "bad_request"),
    ("min_version 0 asks for any version", "GET", home + "?min_version=0", mine, None, {200}, None),
    ("min_version above every version gets the newest", "GET", home + "?min_version=9223372036854775806", mine,
     None, {200}, None),
    ("KC-Min-Version negative", "GET", home, dict(mine, **{"KC-Min-Version": "-5"}), None, {400}, "bad_request"),
    ("NUL in the path", "GET", "/api/v1/students/%00/home", mine, None, {400, 404}, None),
    ("unknown route", "GET", "/api/v2/everything", mine, None, {404}, None),
    ("DELETE on home", "DELETE", home, mine, None, {405}, "method_not_allowed"),
    ("POST with a body", "POST", home, dict(mine, **{"Content-Type": "application/json"}), b"{}", {405, 413}, None),
    ("oversized body", "POST", home, dict(mine, **{"Content-Type": "application/octet-stream"}),
     b"x" * 200000, {405, 413}, None),
    ("websocket without upgrade headers", "GET", "/api/v1/ws?after=0", mine, None, {400, 426}, None),
    ("websocket with a bad after", "GET", "/api/v1/ws?after=abc", dict(mine, **HANDSHAKE), None, {400}, None),
    ("websocket for an unknown student (admin)", "GET", "/api/v1/ws?student=%s" % uuid.uuid4(),
     dict(admin, **HANDSHAKE), None, {404}, "not_found"),
    ("websocket with the token of an unknown student", "GET", "/api/v1/ws",
     dict(HANDSHAKE, Authorization="Bearer " + token(str(uuid.uuid4()))), None, {404}, "not_found"),
    ("websocket with a bad student id", "GET", "/api/v1/ws?student=nope", dict(admin, **HANDSHAKE), None,
     {400}, "bad_request"),
    # the operator console's routes (docs/gateway.md, "Operator console")
    ("admin search without a token", "GET", "/api/v1/admin/search?q=x", {}, None, {401}, "unauthorized"),
    ("admin search with a student's token", "GET", "/api/v1/admin/search?q=x", mine, None, {403}, "forbidden"),
    ("admin story with a student's token", "GET", "/api/v1/admin/payments/%s" % uuid.uuid4(), mine, None,
     {403}, "forbidden"),
    ("admin story of a payment id that is not a uuid", "GET", "/api/v1/admin/payments/nope", admin, None,
     {400}, "bad_request"),
    ("admin story of a 5,000-character id", "GET", "/api/v1/admin/payments/" + "9" * 5000, admin, None,
     {400}, "bad_request"),
    ("admin story of an unknown payment", "GET", "/api/v1/admin/payments/%s" % uuid.uuid4(), admin, None,
     {404}, "not_found"),
    ("admin search with an injection string", "GET",
     "/api/v1/admin/search?q=%27%3B%20DROP%20TABLE%20kc_flow.payments%3B%20--", admin, None, {200}, None),
    ("admin search for a payment that does not exist", "GET", "/api/v1/admin/search?q=%s" % uuid.uuid4(), admin,
     None, {200}, None),
    ("admin search of 5,000 characters", "GET", "/api/v1/admin/search?q=" + "x" * 5000, admin, None,
     {400}, "bad_request"),
    ("admin search with a NUL byte", "GET", "/api/v1/admin/search?q=a%00b", admin, None, {400}, "bad_request"),
    ("admin search with invalid UTF-8", "GET", "/api/v1/admin/search?q=%ff%fe", admin, None, {400}, "bad_request"),
    ("admin search with limit=-1", "GET", "/api/v1/admin/search?q=a&limit=-1", admin, None, {400}, "bad_request"),
    ("admin retry of a dead letter id that is not a number", "POST", "/api/v1/admin/dead-letters/abc/retry", admin,
     None, {400}, "bad_request"),
    ("admin retry of an unknown dead letter", "POST", "/api/v1/admin/dead-letters/999999999/retry", admin, None,
     {404}, "not_found"),
    ("admin retry with GET", "GET", "/api/v1/admin/dead-letters/1/retry", admin, None, {405}, "method_not_allowed"),
    ("admin retry with a body", "POST", "/api/v1/admin/dead-letters/999999999/retry",
     dict(admin, **{"Content-Type": "application/json"}), b'{"id": 1}', {404}, "not_found"),
]

passed = failed = 0


def check(ok, name, detail=""):
    global passed, failed
    print(("ok - " if ok else "not ok - ") + "bad input: " + name, flush=True)
    if ok:
        passed += 1
    else:
        failed += 1
        print("# " + str(detail)[:300], flush=True)


for name, method, path, headers, body, statuses, code in TABLE:
    try:
        st, data = request(method, path, headers, body)
    except Exception as e:  # noqa: BLE001 - a dropped connection is a failure of this case
        check(False, name, e)
        continue
    ok = st in statuses and (code is None or error_code(data) == code)
    if ok and st in (400, 401, 403, 404, 405, 414, 431) and path.startswith("/api/"):
        ok = error_code(data) is not None      # the gateway's own answers are JSON errors
    check(ok, "%s -> %s" % (name, "/".join(map(str, sorted(statuses)))), (st, data[:200]))

# heads beyond the gateway's limits: 414 or 431 with the same JSON error as every other answer
for name, data, want, code in [
        ("a 16 KB URL", b"GET /healthz?q=" + b"a" * 16000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
        ("a 48 KB URL", b"GET /api/v1/students/" + b"a" * 48000 + b"/home HTTP/1.1\r\nHost: x\r\n\r\n", 414,
         "uri_too_long"),
        ("a 40 KB header", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 40000 + b"\r\n\r\n", 431,
         "headers_too_large"),
        ("200 headers", b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200))
         + b"\r\n", 431, "headers_too_large"),
        ("600 headers", b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(600))
         + b"\r\n", 431, "headers_too_large")]:
    st, body = raw(data)
    check(st == want and error_code(body) == code, "%s -> %d with a JSON error" % (name, want), (st, body[:200]))

# heads beyond a connection's memory (64 KiB): refused by libmicrohttpd itself with the same
# status (its own HTML body, documented in docs/gateway.md), and the gateway stays up
for name, data, want in [
        ("a 100 KB URL", b"GET /api/v1/students/" + b"a" * 100000 + b"/home HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        ("a 100 KB header", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 100000 + b"\r\n\r\n", 431),
        ("2,000 headers", b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(2000))
         + b"\r\n", 431)]:
    st, body = raw(data)
    check(st == want, "%s -> %d (libmicrohttpd's own answer)" % (name, want), (st, body[:200]))

# requests malformed for HTTP itself: refused, never a crash
for name, data in [
        ("a garbage request line", b"\x00\x01\x02 nonsense\r\n\r\n"),
        ("HTTP/9.9", b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n")]:
    st, _ = raw(data)
    check(st == 0 or 400 <= st < 500 or st == 505, "%s is refused (%s)" % (name, st or "connection closed"), st)

st, _ = request("GET", "/healthz")
check(st == 200, "the gateway is still up")
check(counts() == before, "nothing changed in the database", (before, counts()))
cur.execute("DELETE FROM kc_flow.students WHERE id IN (%s, %s)", (me, other))
print("# bad input: %d passed, %d failed" % (passed, failed))
sys.exit(0)
