"""test_admin.py: the operator console's routes against a running gateway (GW_PORT, secret
KC_JWT_SECRET, log GW_LOG) on the harness's Postgres (PGHOST, PGPORT, PGUSER, PGDATABASE):
the page, who may call the admin routes (401, 403), a payment's story with the gateway's
invalidation and push times, search and its bad input, the retry of a dead letter, the
stats, and the metrics the console adds. OLD_PAYMENT: a payment whose events the gateway
applied before it started (test/suites/44_admin.sh makes it)."""
import functools
import http.client
import json
import os
import re
import sys
import time
import urllib.parse
import uuid

import psycopg2

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import kc_client  # noqa: E402
from kc_client import error_code as code  # noqa: E402

PORT = int(os.environ["GW_PORT"])
SECRET = os.environ["KC_JWT_SECRET"]
COURSE = "eeeeeeee-0000-4000-8000-0000000000c1"     # test/ws/fixture.sql
passed = failed = 0


def check(ok, name, detail=""):
    global passed, failed
    print(("ok - " if ok else "not ok - ") + "admin: " + name, flush=True)
    if ok:
        passed += 1
    else:
        failed += 1
        if detail != "":
            print("#   " + str(detail)[:600].replace("\n", "\n#   "))


token = functools.partial(kc_client.token, secret=SECRET)


def request(method, path, tok=None, headers=None):
    h = dict(headers or {})
    if tok:
        h["Authorization"] = "Bearer " + tok
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=15)
    try:
        c.request(method, path, headers=h)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def get_json(path, tok):
    st, h, body = request("GET", path, tok)
    try:
        return st, json.loads(body)
    except ValueError:
        return st, body


db = psycopg2.connect(host=os.environ["PGHOST"], port=os.environ["PGPORT"], user=os.environ["PGUSER"],
                      dbname=os.environ["PGDATABASE"])
db.autocommit = True
cur = db.cursor()


def one(q, args=()):
    cur.execute(q, args)
    return cur.fetchone()[0]


def wait(q, args=(), seconds=15):
    end = time.time() + seconds
    while time.time() < end:
        if one(q, args):
            return True
        time.sleep(0.1)
    return False


def slot(days):
    return json.dumps({"weekdays": days, "start": "%02d:%02d" % (7 + int(time.time() * 1000) % 13, 15 * (int(time.time()) % 4)),
                       "timezone": "UTC"})


admin = token("ops", role="admin")
name = "Admin Http %d" % (time.time_ns() % 10**9)
student = str(one("INSERT INTO kc_flow.students (display_name) VALUES (%s) RETURNING id", (name,)))
mine = token(student)

# ---- the page: anyone, no data ----
st, h, page = request("GET", "/admin")
st2, _, page2 = request("GET", "/admin.html", admin)
st3, h3, head = request("HEAD", "/admin")
check(st == 200 and h.get("Content-Type", "").startswith("text/html") and b"operator console" in page,
      "GET /admin serves the console page without a token", st)
check(st2 == 200 and page2 == page and st3 == 200 and head == b"",
      "the page is the same for anyone (no data in it), also as /admin.html and HEAD")
check(not re.search(rb"[0-9a-f]{8}-[0-9a-f]{4}-", page), "the page holds no ids")

# ---- who may call the admin routes ----
ROUTES = [("GET", "/api/v1/admin/payments/%s" % uuid.uuid4()), ("GET", "/api/v1/admin/search?q=x"),
          ("GET", "/api/v1/admin/stats"), ("POST", "/api/v1/admin/dead-letters/1/retry")]
for method, path in ROUTES:
    st, h, body = request(method, path)
    check(st == 401 and code(body) == "unauthorized" and "WWW-Authenticate" in h,
          "%s %s without a token: 401 unauthorized" % (method, path.split("?")[0]), (st, body))
    st, h, body = request(method, path, mine)
    check(st == 403 and code(body) == "forbidden", "%s %s with a student's token: 403 forbidden" % (method, path.split("?")[0]),
          (st, body))
    st, h, body = request(method, path, token("ops", role="admin", ttl=-10))
    check(st == 401 and code(body) == "token_expired", "%s %s with an expired admin token: 401 token_expired" %
          (method, path.split("?")[0]), (st, body))
st, h, body = request("DELETE", "/api/v1/admin/stats", admin)
check(st == 405 and code(body) == "method_not_allowed" and "GET" in h.get("Allow", ""), "DELETE on stats: 405 with Allow")
st, h, body = request("GET", "/api/v1/admin/dead-letters/1/retry", admin)
check(st == 405 and h.get("Allow") == "POST, OPTIONS", "GET on retry: 405, Allow: POST, OPTIONS", (st, h.get("Allow")))
st, h, body = request("OPTIONS", "/api/v1/admin/dead-letters/1/retry")
check(st == 204, "OPTIONS on retry: a CORS preflight (204), no token needed", st)

# ---- a payment's story ----
check(get_json("/api/v1/admin/payments/%s" % uuid.uuid4(), admin)[0] == 404, "an unknown payment: 404")
st, body = get_json("/api/v1/admin/payments/%s" % uuid.uuid4(), admin)
check(body == {"error": {"code": "not_found", "message": "unknown payment"}}, "... says unknown payment", body)
for bad in ["not-a-uuid", "1", "%27%3B%20DROP%20TABLE%20kc_flow.payments%3B--", "x" * 64, "x" * 300,
            str(uuid.uuid4()) + "0"]:
    st, body = get_json("/api/v1/admin/payments/" + bad, admin)
    check(st == 400 and body["error"]["code"] == "bad_request" and "uuid" in body["error"]["message"],
          "payment id %r: 400 bad_request" % bad[:40], (st, body))

pay_a = one("SELECT kc_flow.create_payment(%s, %s, 10, %s)", (student, COURSE, slot([1, 4])))
one("SELECT kc_flow.confirm_payment(%s)", (pay_a,))
check(wait("SELECT count(*) = 10 FROM kc_flow.tutoring_sessions WHERE student_id = %s", (student,)),
      "set-up: a purchase with its 10 sessions")
time.sleep(0.5)
st, s = get_json("/api/v1/admin/payments/" + str(pay_a).upper(), admin)
types = [e["type"] for e in s["events"]] if st == 200 else []
check(st == 200 and types == ["PURCHASE_CONFIRMED", "PURCHASE_CREATED", "TRAINER_ALLOCATED", "SESSIONS_GENERATED"],
      "the story lists the payment's events in order (the id in upper case is fine)", (st, types))
check(st == 200 and [[p["consumer"] for p in e["processed_by"]] for e in s["events"]] ==
      [["purchase"], ["allocation"], ["sessions"], []] and
      [e["stage"] for e in s["events"]] == ["purchase", "allocation", "sessions", None],
      "each event names the stage that consumes it and the one that handled it")
check(st == 200 and s["payment"]["student_name"] == name and s["allocation"]["status"] == "approved" and
      s["sessions"]["created"] == 10 and s["sessions"]["expected"] == 10 and len(s["sessions"]["list"]) == 10 and
      s["dead_letters"] == [], "payment, allocation and 10 of 10 sessions", s.get("sessions"))
gw = [e.get("gateway", {}) for e in s.get("events", [])]
check(gw and all(g.get("status") == "recorded" and g.get("invalidated_at") and g.get("pushed_at") and
                 g["invalidated_at"] <= g["pushed_at"] and 0 <= g["invalidated_after_ms"] <= g["pushed_after_ms"] < 60000
                 for g in gw),
      "each event: when this gateway invalidated the cache, and pushed it after", gw)
check(all(g.get("invalidated_exact") is True for g in gw), "the invalidation times are the listener's own", gw)
check(s.get("gateway", {}).get("record_capacity") == 65536 and s["gateway"]["record_newest_event_id"] >= s["events"][-1]["pos"],
      "the story says what the gateway's record holds", s.get("gateway"))

old = os.environ.get("OLD_PAYMENT")
if old:
    st, s = get_json("/api/v1/admin/payments/" + old, admin)
    gw = [e["gateway"] for e in s["events"]] if st == 200 else []
    check(gw and all(g["status"] == "before_record" and "before this gateway's record" in g["message"] and
                     "invalidated_at" not in g for g in gw),
          "events applied before this gateway started are said to be before its record, with no times", gw)

# ---- the second payment of the course: dead-lettered ----
pay_b = one("INSERT INTO kc_flow.payments (student_id, course_id, purchase_tier, time_slot, amount_cents, status) "
            "VALUES (%s, %s, 10, %s, 4200, 'succeeded') RETURNING id", (student, COURSE, slot([3, 6])))
dead_q = ("SELECT d.id FROM kc_flow.dead_letters d JOIN kc_flow.events e ON e.id = d.event_id "
          "WHERE e.correlation_id = %s AND NOT d.resolved")
check(wait("SELECT EXISTS (" + dead_q + ")", (pay_b,)), "set-up: the second payment is dead-lettered")
dead = one(dead_q, (pay_b,))
st, s = get_json("/api/v1/admin/payments/%s" % pay_b, admin)
d = s["dead_letters"][0] if st == 200 and s["dead_letters"] else {}
check(d.get("id") == dead and d.get("sqlstate") == "23505" and d.get("consumer") == "purchase" and
      "already has an active purchase" in d.get("error", "") and d.get("resolved") is False and d.get("attempts") == 1,
      "its story shows the dead letter, its stage and reason", d)
check(st == 200 and s["events"][0]["dead_letters"] == [dead] and s["events"][0]["processed_by"] == [] and
      s["purchase"] is None, "the event points at its dead letter; no purchase", s.get("events"))

# ---- search ----
st, r = get_json("/api/v1/admin/search?q=" + urllib.parse.quote(name[:-2].lower()), admin)
found = [x for x in r.get("students", []) if x["id"] == student] if st == 200 else []
check(found and found[0]["match"] == "student name" and {p["id"] for p in found[0]["payments"]} == {str(pay_a), str(pay_b)},
      "search by part of the name: the student and both payments", r)
st, r = get_json("/api/v1/admin/search?q=" + str(pay_b)[:8], admin)
check(st == 200 and str(pay_b) in [p["id"] for p in r["payments"]], "search by the first 8 characters of a payment id")
ev = one("SELECT min(id) FROM kc_flow.events WHERE correlation_id = %s", (pay_a,))
st, r = get_json("/api/v1/admin/search?q=%d" % ev, admin)
check(st == 200 and [p["match"] for p in r["payments"] if p["id"] == str(pay_a)] == ["event %d" % ev],
      "search by an event id finds its payment", r)
st, r = get_json("/api/v1/admin/search?q=" + urllib.parse.quote(name[:-2]) + "&limit=1", admin)
check(st == 200 and len(r["students"]) <= 1, "limit= bounds the answer")


def counts():
    cur.execute("SELECT (SELECT count(*) FROM kc_flow.payments), (SELECT count(*) FROM kc_flow.events),"
                " (SELECT count(*) FROM kc_flow.students), (SELECT count(*) FROM kc_flow.dead_letters WHERE resolved)")
    return cur.fetchone()


before = counts()
# (name, raw query string, status, "empty" (200, nothing found, a message) or the 400 message's words)
BAD = [
    ("an injection string", "q=%27%3B%20DROP%20TABLE%20kc_flow.payments%3B%20--", 200, "empty"),
    ("a payment that does not exist", "q=%s" % uuid.uuid4(), 200, "empty"),
    ("not a uuid", "q=not%20a%20uuid", 200, "empty"),
    ("LIKE wildcards only", "q=%25%25_", 200, "empty"),
    ("a backslash", "q=%5C", 200, "empty"),
    ("HTML", "q=%3Cscript%3Ealert(1)%3C%2Fscript%3E", 200, "empty"),
    ("20 digits", "q=" + "9" * 20, 200, "empty"),
    ("200 characters", "q=" + "x" * 200, 200, "empty"),
    ("empty", "q=", 200, "empty"),
    ("absent", "", 200, "empty"),
    ("201 characters", "q=" + "x" * 201, 400, "longer than 200"),
    ("5,000 characters", "q=" + "x" * 5000, 400, "longer than 200"),
    ("5,000 two-byte characters", "q=" + "%C3%A9" * 5000, 414, None),
    ("201 two-byte characters", "q=" + "%C3%A9" * 201, 400, "longer than 200"),
    ("a NUL byte", "q=ab%00cd", 400, "NUL"),
    ("only a NUL byte", "q=%00", 400, "NUL"),
    ("invalid UTF-8", "q=%FF%FE", 400, "UTF-8"),
    ("a lone continuation byte", "q=a%80", 400, "UTF-8"),
    ("an overlong slash", "q=%C0%AF", 400, "UTF-8"),
    ("limit 0", "q=a&limit=0", 400, "limit"),
    ("limit 101", "q=a&limit=101", 400, "limit"),
    ("limit not a number", "q=a&limit=ten", 400, "limit"),
]
for label, qs, want, what in BAD:
    st, h, body = request("GET", "/api/v1/admin/search?" + qs, admin)
    try:
        j = json.loads(body)
    except ValueError:
        j = {}
    if want == 200:
        ok = st == 200 and j.get("payments") == [] and j.get("students") == [] and j.get("message")
    elif what is None:
        ok = st == want and code(body) is not None
    else:
        ok = st == want and code(body) == "bad_request" and what in j["error"]["message"]
    check(ok, "search with %s: %d%s" % (label, want, " and a clear message" if want != 414 else ""), (st, body[:300]))
check(counts() == before, "the searches changed nothing", (before, counts()))
st, h, body = request("GET", "/healthz")
check(st == 200, "the gateway is still up")

# ---- retry ----
for bad in ["abc", "0", "-1", "1.5", "99999999999999999999", "x" * 100]:
    st, h, body = request("POST", "/api/v1/admin/dead-letters/%s/retry" % bad, admin)
    check(st == 400 and code(body) == "bad_request", "retry of dead letter %r: 400" % bad[:20], (st, body))
st, h, body = request("POST", "/api/v1/admin/dead-letters/999999999/retry", admin)
check(st == 404 and code(body) == "not_found" and b"unknown dead letter" in body, "retry of an unknown dead letter: 404")
request("POST", "/api/v1/admin/dead-letters/%d/retry" % dead, mine)
check(one("SELECT NOT resolved FROM kc_flow.dead_letters WHERE id = %s", (dead,)),
      "a student's retry (403) left the dead letter alone")
one("UPDATE kc_flow.payments SET status = 'refunded' WHERE id = %s RETURNING id", (pay_a,))
check(wait("SELECT NOT is_active FROM kc_flow.student_course_purchases WHERE payment_id = %s", (pay_a,)),
      "set-up: the first payment refunded, its purchase ended")
st, h, body = request("POST", "/api/v1/admin/dead-letters/%d/retry" % dead, admin)
j = json.loads(body) if st == 200 else {}
check(st == 200 and j.get("retried") is True and j.get("dead_letter_id") == dead and j.get("consumer") == "purchase",
      "POST retry: 200, retried", (st, body))
check(one("SELECT resolved FROM kc_flow.dead_letters WHERE id = %s", (dead,)), "the dead letter is resolved in the database")
check(wait("SELECT count(*) = 10 FROM kc_flow.tutoring_sessions s JOIN kc_flow.trainer_allocations a ON a.id = s.allocation_id "
           "JOIN kc_flow.student_course_purchases p ON p.id = a.purchase_id WHERE p.payment_id = %s", (pay_b,)),
      "the retried event ran again: the payment became a purchase with 10 sessions")
time.sleep(0.5)
st, s = get_json("/api/v1/admin/payments/%s" % pay_b, admin)
check(st == 200 and s["dead_letters"][0]["resolved"] is True and s["dead_letters"][0]["resolved_at"] and
      [e["type"] for e in s["events"]][-1] == "SESSIONS_GENERATED" and s["sessions"]["created"] == 10,
      "the story shows the dead letter resolved, the new events and the sessions")
st, h, body = request("POST", "/api/v1/admin/dead-letters/%d/retry" % dead, admin)
check(st == 409 and code(body) == "conflict" and b"already resolved" in body, "a second retry: 409, already resolved",
      (st, body))
log = open(os.environ["GW_LOG"]).read() if os.environ.get("GW_LOG") else ""
check(re.search(r'"msg":"dead letter retried","deadLetter":%d,.*"by":"ops"' % dead, log) is not None,
      "the retry is logged with who did it")

# ---- stats ----
time.sleep(5.5)
st, s = get_json("/api/v1/admin/stats", admin)
cur_ = s.get("current", {}) if st == 200 else {}
check(st == 200 and isinstance(cur_.get("queue_depth"), (int, float)) and isinstance(cur_.get("dead_letters"), (int, float))
      and cur_.get("postgres") is True, "stats: the queue depth and dead letters now, from Postgres", cur_)
samples = s.get("samples", [])
check(samples and s["interval_s"] == 5 and s["capacity"] == 180 and
      all(set(x) >= {"t", "events", "events_per_s", "lag_avg_ms", "lag_max_ms", "push_avg_ms", "queue_depth", "dead_letters"}
          for x in samples), "stats: samples every 5 s with events, lag, push lag, queue and dead letters", s)
check(sum(x["events"] for x in samples) >= 8 and any(x["lag_avg_ms"] is not None for x in samples),
      "stats: the samples counted this test's events and their lag", samples[-5:])
check(cur_.get("sessions_created_total", 0) >= 20 and cur_.get("sessions_expected_total", 0) >= 20,
      "stats: sessions created and expected", cur_)

# ---- metrics ----
st, h, m = request("GET", "/metrics")
m = m.decode()


def value(name):
    found = re.search(r"^%s (\S+)$" % re.escape(name), m, re.M)
    return float(found.group(1)) if found else None


check((value("kc_push_lag_seconds_count") or 0) >= 8 and "# TYPE kc_push_lag_seconds histogram" in m,
      "metrics: kc_push_lag_seconds, a histogram, counted the pushes")
check((value("kc_sessions_expected_total") or 0) >= 20 and (value("kc_sessions_created_total") or 0) >= 20,
      "metrics: kc_sessions_expected_total and kc_sessions_created_total count this test's 20 sessions")
check(value("kc_cache_invalidation_errors_total") == 0, "metrics: kc_cache_invalidation_errors_total, 0 with Redis up")
check(re.search(r'kc_http_requests_total\{route="admin_search",code="400"\} \d+', m) is not None and
      re.search(r'kc_http_requests_total\{route="admin_payment",code="200"\} \d+', m) is not None,
      "metrics: the admin routes are counted under their labels")
print("# admin: %d passed, %d failed" % (passed, failed))
