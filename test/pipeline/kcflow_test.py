"""kcflow_test: shared pieces of the pipeline tests (TAP output, fixtures,
waiting for the workers, and the invariant checker run after every scenario).

Connection settings come from the libpq environment (PGHOST, PGPORT, ...)."""
import json
import os
import select
import sys
import time
import uuid

import psycopg2
import psycopg2.extensions

_failures = 0


def ok(cond, name, diag=None):
    """Prints one TAP line; returns cond."""
    global _failures
    print(("ok - " if cond else "not ok - ") + name, flush=True)
    if not cond:
        _failures += 1
        if diag is not None:
            for line in str(diag).splitlines():
                print("# " + line, flush=True)
    return cond


def failures():
    return _failures


def connect(dbname=None, autocommit=True, **kw):
    conn = psycopg2.connect(dbname=dbname or os.environ.get("PGDATABASE", "kc_test"), **kw)
    conn.autocommit = autocommit
    return conn


def run(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)


def one(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        row = cur.fetchone()
        return row[0] if row and len(row) == 1 else row


def rows(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


class World:
    """A course with trainers and students of its own, so that scenarios can
    share a database without seeing each other's data."""

    def __init__(self, conn, trainers, students, capacity=10, session_minutes=45, zone="Europe/Berlin"):
        self.conn = conn
        self.course = str(uuid.uuid4())
        self.zone = zone
        self.trainers = [str(uuid.uuid4()) for _ in range(trainers)]
        self.students = [str(uuid.uuid4()) for _ in range(students)]
        with conn.cursor() as cur:
            cur.execute("INSERT INTO kc_flow.courses (id, title, session_minutes, is_published)"
                        " VALUES (%s, %s, %s, true)", (self.course, "course " + self.course[:8], session_minutes))
            cur.execute("INSERT INTO kc_flow.trainers (id, display_name, timezone, max_active_students)"
                        " SELECT t, 'trainer ' || left(t::text, 8), %s, %s FROM unnest(%s::uuid[]) t",
                        (zone, capacity, self.trainers))
            cur.execute("INSERT INTO kc_flow.trainer_courses SELECT t, %s FROM unnest(%s::uuid[]) t",
                        (self.course, self.trainers))
            cur.execute("INSERT INTO kc_flow.trainer_availability (trainer_id, weekday, start_time, end_time)"
                        " SELECT t, d, '07:00', '22:00' FROM unnest(%s::uuid[]) t, generate_series(1, 7) d",
                        (self.trainers,))
            cur.execute("INSERT INTO kc_flow.students (id, display_name, timezone)"
                        " SELECT s, 'student ' || left(s::text, 8), %s FROM unnest(%s::uuid[]) s",
                        (zone, self.students))

    def slot(self, i, starts_on="2031-01-06"):
        """A weekly slot for student i: 7 weekdays x 14 start hours, then repeats."""
        day = 1 + i % 7
        hour = 7 + (i // 7) % 14
        return json.dumps({"weekdays": [day], "start": "%02d:00" % hour,
                           "timezone": self.zone, "starts_on": starts_on})

    def payments(self, tiers=(10, 20, 30)):
        """One pending payment per student; returns their ids, in student order."""
        ids = []
        with self.conn.cursor() as cur:
            for i, s in enumerate(self.students):
                cur.execute("SELECT kc_flow.create_payment(%s, %s, %s, %s, 1000)",
                            (s, self.course, tiers[i % len(tiers)], self.slot(i)))
                ids.append(cur.fetchone()[0])
        return ids


def wait_workers(conn, timeout=30.0):
    """Waits until every configured worker is attached (they start before the
    test database exists and retry every few seconds); returns True if so."""
    start = time.time()
    while time.time() - start < timeout:
        if one(conn, "SELECT count(*) = count(*) FILTER (WHERE pid <> 0) AND count(*) > 0"
                     " FROM kc_flow.worker_status()"):
            return True
        time.sleep(0.1)
    return False


def wait_quiet(conn, course, expected_done, timeout=60.0):
    """Waits until `expected_done` allocations of the course are approved with
    their sessions and nothing is left in the queue for it; returns seconds."""
    start = time.time()
    while time.time() - start < timeout:
        done = one(conn, """
            SELECT count(*) FROM kc_flow.trainer_allocations a
             WHERE a.course_id = %s AND a.status = 'approved'
               AND (SELECT count(*) FROM kc_flow.tutoring_sessions s WHERE s.allocation_id = a.id)
                   = (SELECT pu.purchase_tier FROM kc_flow.student_course_purchases pu WHERE pu.id = a.purchase_id)""",
                   (course,))
        queued = one(conn, """
            SELECT count(*) FROM kc_flow.event_queue q JOIN kc_flow.events e ON e.id = q.event_id
              JOIN kc_flow.payments p ON p.id = e.correlation_id WHERE p.course_id = %s""", (course,))
        if done >= expected_done and queued == 0:
            return time.time() - start
        time.sleep(0.05)
    return None


def check_invariants(conn, course, label):
    """The invariants of the flow for one course; prints one TAP line each."""
    bad = rows(conn, """
        SELECT p.id, count(DISTINCT pu.id) AS purchases, count(DISTINCT a.id) AS allocations,
               max(a.status) AS status, count(s.id) AS sessions, p.purchase_tier
          FROM kc_flow.payments p
          LEFT JOIN kc_flow.student_course_purchases pu ON pu.payment_id = p.id
          LEFT JOIN kc_flow.trainer_allocations a ON a.purchase_id = pu.id
          LEFT JOIN kc_flow.tutoring_sessions s ON s.allocation_id = a.id AND s.status = 'scheduled'
         WHERE p.course_id = %s AND p.status = 'succeeded'
         GROUP BY p.id, p.purchase_tier
        HAVING count(DISTINCT pu.id) <> 1 OR count(DISTINCT a.id) <> 1
            OR NOT (max(a.status) = 'pending' AND count(s.id) = 0
                    OR max(a.status) = 'approved' AND count(s.id) = p.purchase_tier)""", (course,))
    ok(not bad, label + ": every succeeded payment has one purchase, one allocation and its sessions",
       "\n".join(map(str, bad[:5])))
    overlaps = one(conn, """
        SELECT count(*) FROM kc_flow.tutoring_sessions a JOIN kc_flow.tutoring_sessions b
            ON a.trainer_id = b.trainer_id AND a.id < b.id
           AND tstzrange(a.starts_at, a.ends_at) && tstzrange(b.starts_at, b.ends_at)
         WHERE a.status = 'scheduled' AND b.status = 'scheduled' AND a.course_id = %s""", (course,))
    ok(overlaps == 0, label + ": no trainer is double-booked", "%s overlapping pairs" % overlaps)
    over = one(conn, """
        SELECT count(*) FROM kc_flow.trainers t
         WHERE (SELECT count(*) FROM kc_flow.trainer_allocations a
                 WHERE a.trainer_id = t.id AND a.status IN ('approved', 'active')) > t.max_active_students""")
    ok(over == 0, label + ": no trainer is over capacity", "%s trainers over" % over)
    dup_events = one(conn, """
        SELECT count(*) FROM (SELECT e.correlation_id, e.event_type FROM kc_flow.events e
                                JOIN kc_flow.payments p ON p.id = e.correlation_id
                               WHERE p.course_id = %s AND e.event_type IN
                                     ('PURCHASE_CONFIRMED', 'PURCHASE_CREATED', 'TRAINER_ALLOCATED')
                               GROUP BY 1, 2 HAVING count(*) > 1) d""", (course,))
    ok(dup_events == 0, label + ": each stage event exists once per payment (none applied twice)",
       "%s duplicated" % dup_events)
    unprocessed = one(conn, """
        SELECT count(*) FROM kc_flow.events e JOIN kc_flow.payments p ON p.id = e.correlation_id
         WHERE p.course_id = %s AND e.event_type IN ('PURCHASE_CONFIRMED', 'PURCHASE_CREATED', 'TRAINER_ALLOCATED')
           AND NOT EXISTS (SELECT 1 FROM kc_flow.processed_events pe WHERE pe.event_id = e.id)
           AND NOT EXISTS (SELECT 1 FROM kc_flow.event_queue q WHERE q.event_id = e.id)""", (course,))
    ok(unprocessed == 0, label + ": no event lost (each is processed or still queued)", "%s lost" % unprocessed)
    dead = one(conn, """
        SELECT count(*) FROM kc_flow.dead_letters d JOIN kc_flow.events e ON e.id = d.event_id
          JOIN kc_flow.payments p ON p.id = e.correlation_id WHERE p.course_id = %s AND NOT d.resolved""", (course,))
    ok(dead == 0, label + ": no dead letters", "%s dead letters" % dead)


class Listener:
    """LISTEN kc_flow_events on its own connection.  A notification names a range of
    log positions, "first-last" (docs/design.md §6); the listener reads those events
    on the same connection and collects (time of the notification, event) with the
    keys of the 0.1.0 payloads: id (the position), type, student_id, correlation_id,
    version."""

    def __init__(self, **kw):
        self.conn = connect(**kw)
        with self.conn.cursor() as cur:
            cur.execute("LISTEN kc_flow_events")
        self.events = []
        self.ranges = []

    def poll(self, timeout=0.05):
        # a notification that came in while _read ran was taken off the socket with the
        # query's result and waits in conn.notifies: the socket stays quiet, so look first
        if not self.conn.notifies and select.select([self.conn], [], [], timeout) == ([], [], []):
            return
        at = time.time()
        self.conn.poll()
        ranges = []
        while self.conn.notifies:
            n = self.conn.notifies.pop(0)
            ranges.append(tuple(int(x) for x in n.payload.split("-")))
        if ranges:
            self.ranges += ranges
            # one read for everything announced since the last poll
            self._read(at, min(a for a, _ in ranges), max(b for _, b in ranges))

    def _read(self, at, first, last):
        with self.conn.cursor() as cur:
            cur.execute("SELECT pos, event_type, student_id::text, correlation_id::text, version"
                        "  FROM kc_flow.events_since(%s, NULL, %s)", (first - 1, min(last - first + 1, 10000)))
            for pos, typ, student, corr, version in cur.fetchall():
                self.events.append((at, {"id": pos, "type": typ, "student_id": student,
                                         "correlation_id": corr, "version": version}))

    def close(self):
        self.conn.close()


def finish():
    sys.exit(0)
