"""test/upgrade/across.py - a kc-gateway and a WebSocket client across ALTER EXTENSION
kc_flow UPDATE, with the real workers (part of test/suites/27_upgrade.sh; test/upgrade/live.sh
starts it with the database at 0.1.0, its workers running, and a gateway with Redis on
KC_UPGRADE_GATEWAY).

Before the update: student fa003 holds a course, has a WebSocket open with after= (a client
that has seen everything so far) and a payment for a second course held mid-pipeline
(purchase made, allocation failed once, retry due later: test/upgrade/hold.sql); student
fa001 holds a course and had a second payment of it refused (live.sh); both homes are
cached (X-Cache: HIT); a burst of other students' payments is confirmed just as the update
starts. After it: every payment completes exactly once; fa003's socket receives every event
of fa003 once, in the order of the polling feed (/events/recent), across the update, and
their home is fresh after every push; fa001, who has no event after the update, is not
served the home cached under 0.1.0, since the update changed what the home shows.

The checks are written against behaviour (what the socket and the HTTP routes answer, what
the pipeline produced), not against the event log's internal columns.
Each check prints "ok - upgrade: ..." or "not ok - upgrade: ...".
"""
import json
import os
import socket
import struct
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../ws"))
from wslib import FrameReader, db, frame, handshake, token  # noqa: E402

GATEWAY = os.environ["KC_UPGRADE_GATEWAY"]
SECRET = os.environ["KC_JWT_SECRET"]
STUDENT = "00000000-0000-0000-0000-0000000fa003"		# the WebSocket's student
NOTICED = "00000000-0000-0000-0000-0000000fa001"		# live.sh: a course, a refused second payment
REFUSED = "00000000-0000-0000-0000-0000000fe002"		# that payment
COURSE1 = "00000000-0000-0000-0000-0000000fc001"		# live.sh: Upgrade, taught by Wendy
COURSE2 = "00000000-0000-0000-0000-0000000fc002"
BURST_COURSE = "00000000-0000-0000-0000-0000000fc003"
BURST = 12


def report(ok, name, detail=""):
    print(("ok" if ok else "not ok") + " - upgrade: " + name, flush=True)
    if not ok and detail != "":
        for line in str(detail).splitlines()[:15]:
            print("#   " + line, flush=True)


def get(path, headers=None, student=STUDENT):
    auth = {"Authorization": "Bearer " + token(student, secret=SECRET)}
    req = urllib.request.Request("http://%s%s" % (GATEWAY, path), headers={**auth, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def home(headers=None, student=STUDENT):
    return get("/api/v1/students/%s/home" % student, headers, student)


def polled_ids(after):
    """The ids the polling feed lists for the student after `after`, in its order."""
    return [e["id"] for e in json.loads(get("/api/v1/events/recent?limit=1000&after=%d" % after)[2])["events"]]


def wait_until(pred, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def one(conn, query, *args):
    with conn.cursor() as cur:
        cur.execute(query, args)
        return cur.fetchone()[0]


def logged_ids(conn):
    """The ids of the student's events in the event log."""
    with conn.cursor() as cur:
        cur.execute("SELECT id FROM kc_flow.events WHERE student_id = %s", (STUDENT,))
        return {r[0] for r in cur.fetchall()}


class Stream(threading.Thread):
    """The student's WebSocket as a careful client keeps it: it records every event with the
    time it arrived, answers pings, and should the server close the socket, reconnects with
    after=<the last id received>, counting its connections."""

    def __init__(self, after):
        super().__init__(daemon=True)
        self.after = after
        self.events = []
        self.hellos = []
        self.closes = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.sock = None

    def connect(self):
        path = "/api/v1/ws?after=%d&access_token=%s" % (self.after, token(STUDENT, secret=SECRET))
        status, _, self.sock, rest = handshake(int(GATEWAY.rsplit(":", 1)[1]), path)
        if status != 101:
            raise RuntimeError("handshake answered %d" % status)
        self.sock.settimeout(0.2)
        return FrameReader(self.sock, rest)

    def run(self):
        reader = self.connect()
        while not self.stopping.is_set():
            try:
                op, payload = reader.next()
            except socket.timeout:
                continue
            except (EOFError, OSError):
                op, payload = 8, b""
            if op == 1:
                m = json.loads(payload.decode())
                with self.lock:
                    if m.get("type") == "hello":
                        self.hellos.append(m)
                    elif m.get("type") == "event":
                        self.events.append((time.time(), m))
                        self.after = m["id"]
            elif op == 9:
                self.sock.sendall(frame(10, payload))
            elif op == 8:
                with self.lock:
                    self.closes.append((time.time(), struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None))
                self.sock.close()
                if not self.stopping.is_set():
                    reader = self.connect()

    def received(self):
        with self.lock:
            return list(self.events)

    def stop(self):
        self.stopping.set()
        self.join(5)
        self.sock.close()


class Poller(threading.Thread):
    """A client reading the student's home (cached) and sessions (read from Postgres each
    time) every 20 ms meanwhile; keeps the status of each answer."""

    def __init__(self):
        super().__init__(daemon=True)
        self.statuses = []
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            self.statuses.append(home()[0])
            self.statuses.append(get("/api/v1/students/%s/sessions?limit=1" % STUDENT)[0])
            time.sleep(0.02)

    def stop(self):
        self.stopping.set()
        self.join(15)
        return self.statuses


def setup(conn):
    """Courses, trainers and students of this part; the student's first course to its sessions."""
    with conn.cursor() as cur:
        cur.execute(open(os.environ["KC_UPGRADE_HOLD_SQL"]).read())
        cur.execute("""
            INSERT INTO kc_flow.courses (id, title, is_published) VALUES
              (%(c2)s, 'Upgrade, part 2', true), (%(cb)s, 'Upgrade, the burst', true);
            INSERT INTO kc_flow.trainers (id, display_name, max_active_students) VALUES
              ('00000000-0000-0000-0000-0000000fd002', 'Xavier', 10),
              ('00000000-0000-0000-0000-0000000fd003', 'Yolanda', 30);
            INSERT INTO kc_flow.trainer_courses VALUES
              ('00000000-0000-0000-0000-0000000fd002', %(c2)s), ('00000000-0000-0000-0000-0000000fd003', %(cb)s);
            INSERT INTO kc_flow.trainer_availability (trainer_id, weekday, start_time, end_time)
            SELECT t::uuid, d, '00:00', '24:00'
              FROM unnest(ARRAY['00000000-0000-0000-0000-0000000fd002', '00000000-0000-0000-0000-0000000fd003']) t,
                   generate_series(1, 7) d;
            INSERT INTO kc_flow.students (id, display_name)
            SELECT format('00000000-0000-0000-0000-0000000fa1%%s', lpad(i::text, 2, '0'))::uuid, 'Burst ' || i
              FROM generate_series(1, %(n)s) i;
            INSERT INTO kc_flow.students (id, display_name) VALUES (%(s)s, 'Student 3');
            INSERT INTO kc_flow.payments (student_id, course_id, purchase_tier, time_slot, amount_cents, status)
            VALUES (%(s)s, %(c1)s, 10,
                    '{"weekdays":[5],"start":"10:00","timezone":"UTC","starts_on":"2031-01-01"}', 100, 'succeeded');
            """, {"c1": COURSE1, "c2": COURSE2, "cb": BURST_COURSE, "n": BURST, "s": STUDENT})
    return wait_until(lambda: one(conn, """SELECT count(*) FROM kc_flow.events
                                            WHERE student_id = %s AND event_type = 'SESSIONS_GENERATED'""",
                                  STUDENT) == 1, 30)


def pay_held(conn):
    """The student's payment for the second course, held after its purchase; its id."""
    with conn.cursor() as cur:
        cur.execute("INSERT INTO kc_upgrade_hold.held VALUES ('allocation', %s)", (STUDENT,))
        cur.execute("SELECT kc_flow.create_payment(%s, %s, 10, %s::jsonb, 100)",
                    (STUDENT, COURSE2, json.dumps({"weekdays": [4], "start": "10:00", "timezone": "UTC",
                                                   "starts_on": "2031-01-01"})))
        payment = cur.fetchone()[0]
        cur.execute("SELECT kc_flow.confirm_payment(%s)", (payment,))
    return payment


def pay_burst(conn):
    """Confirms BURST payments of other students in one transaction (distinct weekly slots)."""
    with conn.cursor() as cur:
        cur.execute("""
            INSERT INTO kc_flow.payments (student_id, course_id, purchase_tier, time_slot, amount_cents, status)
            SELECT format('00000000-0000-0000-0000-0000000fa1%%s', lpad(i::text, 2, '0'))::uuid, %s, 10,
                   jsonb_build_object('weekdays', jsonb_build_array(1 + i %% 7),
                                      'start', to_char(time '06:00' + (i / 7) * interval '2 hours', 'HH24:MI'),
                                      'timezone', 'UTC', 'starts_on', '2031-01-01'), 100, 'succeeded'
              FROM generate_series(1, %s) i""", (BURST_COURSE, BURST))


def completed(conn):
    """Per course (the student's second one, the burst's): payments by their purchases, allocation,
    sessions and bookings."""
    return one(conn, """
        SELECT string_agg(format('%%s: %%s x %%s', course, n, outcome), ', ' ORDER BY course)
          FROM (SELECT course, count(*) AS n, outcome
                  FROM (SELECT right(p.course_id::text, 5) AS course,
                               format('%%s purchase, %%s, %%s sessions, %%s bookings',
                                      (SELECT count(*) FROM kc_flow.student_course_purchases x WHERE x.payment_id = p.id),
                                      coalesce(a.status, 'no allocation'),
                                      (SELECT count(*) FROM kc_flow.tutoring_sessions s WHERE s.allocation_id = a.id),
                                      (SELECT count(*) FROM kc_flow.trainer_bookings b, unnest(b.during::tstzmultirange) WHERE b.allocation_id = a.id))
                                   AS outcome
                          FROM kc_flow.payments p
                          LEFT JOIN kc_flow.student_course_purchases pu ON pu.payment_id = p.id
                          LEFT JOIN kc_flow.trainer_allocations a ON a.purchase_id = pu.id
                         WHERE p.course_id IN (%s, %s)) per_payment
                 GROUP BY course, outcome) g""", COURSE2, BURST_COURSE)


def main():
    conn = db()
    first_course = setup(conn)

    # a client that has seen every event of the student so far opens its socket
    before = logged_ids(conn)
    after = json.loads(get("/api/v1/events/recent?limit=1000&after=0")[2])["next_after"]
    stream = Stream(after)
    stream.start()

    poller = Poller()
    poller.start()
    payment = pay_held(conn)
    held = wait_until(lambda: one(conn, """
        SELECT count(*) FROM kc_flow.event_queue q JOIN kc_flow.events e ON e.id = q.event_id
         WHERE e.correlation_id = %s AND q.consumer = 'allocation' AND q.attempts >= 1""", payment) == 1, 20)
    pushed_before = wait_until(lambda: len(stream.received()) >= 2, 10)
    cached = {}
    for student in (STUDENT, NOTICED):
        home(student=student)
        cached[student] = home(student=student)
    report(first_course and held and pushed_before and len(stream.hellos) == 1 and
           [c[1].get("X-Cache") for c in cached.values()] == ["HIT", "HIT"],
           "before the update: a payment held mid-pipeline, its first events pushed, two homes cached (HIT)",
           "first course done %s, held %s, events pushed %d, hellos %d, X-Cache %s" % (
               first_course, held, len(stream.received()), len(stream.hellos),
               [c[1].get("X-Cache") for c in cached.values()]))

    # the burst commits, and the update runs at once, while the workers handle it
    pay_burst(conn)
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("""
            SELECT format('purchase %%s allocation %%s attempts %%s due %%s',
                          (SELECT count(*) FROM kc_flow.student_course_purchases WHERE payment_id = %s),
                          (SELECT count(*) FROM kc_flow.trainer_allocations a
                             JOIN kc_flow.student_course_purchases pu ON pu.id = a.purchase_id WHERE pu.payment_id = %s),
                          q.attempts, CASE WHEN q.run_after > clock_timestamp() THEN 'later' ELSE 'now' END)
              FROM kc_flow.event_queue q JOIN kc_flow.events e ON e.id = q.event_id
             WHERE e.correlation_id = %s AND q.consumer = 'allocation'""", (payment, payment, payment))
        at_update = (cur.fetchone() or ["not queued"])[0]
        cur.execute("""SELECT count(*) FROM kc_flow.payments p
                        WHERE p.course_id = %s
                          AND NOT EXISTS (SELECT 1 FROM kc_flow.events e
                                           WHERE e.correlation_id = p.id AND e.event_type = 'SESSIONS_GENERATED')""",
                    (BURST_COURSE,))
        burst_unfinished = cur.fetchone()[0]
        cur.execute("ALTER EXTENSION kc_flow UPDATE")
        cur.execute("COMMIT")
    updated_at = time.time()
    print("# the update ran with %d of the %d burst payments not yet at their sessions" % (burst_unfinished, BURST))
    report(at_update == "purchase 1 allocation 0 attempts 1 due later",
           "the student's payment is mid-pipeline as the update runs: purchase made, allocation failed once, retry due later",
           at_update)
    report(one(conn, "SELECT extversion FROM pg_extension WHERE extname = 'kc_flow'") == "0.2.0",
           "ALTER EXTENSION kc_flow UPDATE, with the gateway and the socket connected, goes to 0.2.0")

    # the held payment goes on; after each push, the home fetched is never older than the event
    with conn.cursor() as cur:
        cur.execute("DELETE FROM kc_upgrade_hold.held")
    stale, seen = [], 0
    deadline = time.time() + 30
    while time.time() < deadline:
        events = stream.received()
        for _, ev in events[seen:]:
            status, h, body = home()
            version = json.loads(body)["version"] if status == 200 else -1
            if version < ev["version"]:
                stale.append((ev["event_type"], ev["version"], version, h.get("X-Cache")))
        seen = len(events)
        if any(ev["event_type"] == "SESSIONS_GENERATED" and ev["correlation_id"] == payment for _, ev in events):
            break
        time.sleep(0.05)
    status, h, body = home()
    view = json.loads(body) if status == 200 else {}
    shown = sum(1 for s in view.get("upcoming_sessions", []) if s.get("course_id") == COURSE2)
    report(seen > 2 and not stale and shown == 10 and "payment_notices" in view,
           "after the update every push is followed by a fresh home: the new course's 10 sessions appear, never a stale view",
           "events pushed %d, stale %s, sessions of the new course shown %d, X-Cache %s" % (seen, stale, shown,
                                                                                          h.get("X-Cache")))

    # The update changed what the home shows (payment_notices), and no event of fa001
    # follows it: within the milliseconds an invalidation takes (5 s allowed here, against
    # the cache's 300 s TTL), fa001's home must be the 0.2.0 view, for a plain and for a
    # conditional request alike.
    def notices_shown():
        status, h, body = home(student=NOTICED)
        answers.append((status, h.get("X-Cache"), body == cached[NOTICED][2]))
        return status == 200 and [n.get("payment_id") for n in json.loads(body).get("payment_notices", [])] == [REFUSED]
    answers = []
    report(wait_until(notices_shown, 5),
           "after the update a home cached under 0.1.0 is not served: it lists the payment refused before the update",
           "last answer: status %d, X-Cache %s, the body cached before the update: %s" % answers[-1])
    etag = cached[NOTICED][1].get("ETag")
    answers = []
    report(wait_until(lambda: answers.append(home({"If-None-Match": etag}, NOTICED)[:2]) or answers[-1][0] == 200, 5),
           "after the update a client holding the 0.1.0 view's ETag gets the new view, not 304",
           "ETag %s before the update, last answer %d with ETag %s" % (etag, answers[-1][0], answers[-1][1].get("ETag")))

    # every payment completes exactly once
    want = ("fc002: 1 x 1 purchase, approved, 10 sessions, 10 bookings, "
            "fc003: %d x 1 purchase, approved, 10 sessions, 10 bookings" % BURST)
    wait_until(lambda: completed(conn) == want, 30)
    report(completed(conn) == want,
           "the held payment and the burst complete once each: one purchase, one allocation, 10 sessions, 10 bookings",
           completed(conn))

    # the socket: every event of the student once, in order, across the update
    time.sleep(1)		# a late duplicate would arrive by now
    stream.stop()
    got = [ev["id"] for _, ev in stream.received()]
    log = sorted(logged_ids(conn) - before)
    polled = polled_ids(after)
    across = {t < updated_at for t, _ in stream.received()}
    report(got == polled and sorted(got) == log and len(set(got)) == len(got) and across == {True, False},
           "the WebSocket gets every event of the student once, in the feed's order, before and after the update",
           "socket %s\npolled %s\nlog    %s" % (got, polled, log))
    report(len(stream.hellos) == 1 and not stream.closes,
           "the WebSocket stays open across the update: one connection, no close, no reconnect",
           "hellos %d, closes %s" % (len(stream.hellos), stream.closes))

    statuses = poller.stop()
    report(len(statuses) > 100 and set(statuses) == {200},
           "a client reading home and sessions all along gets every answer, before, during and after the update",
           "%d answers, statuses %s" % (len(statuses), sorted(set(statuses))))
    status, _, body = get("/readyz")
    ready = json.loads(body) if body.startswith("{") else {}
    reconnects = [line.split()[1] for line in get("/metrics")[2].splitlines()
                  if line.startswith("kc_listen_reconnects_total ")]
    report(status == 200 and ready.get("cache_synced") is True and reconnects == ["0"],
           "the gateway stays ready through the update: its LISTEN connection never dropped, the cache synced",
           "readyz %d %s, kc_listen_reconnects_total %s" % (status, body, reconnects))


if __name__ == "__main__":
    main()
