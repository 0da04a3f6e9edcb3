-- kc_flow--0.1.0--0.2.0.sql: ALTER EXTENSION kc_flow UPDATE from 0.1.0 to 0.2.0.
--
-- Every schema change of 0.2.0, so that an upgraded database equals a fresh
-- 0.2.0 install (test/suites/27_upgrade.sh compares their pg_dump).  Install
-- the 0.2.0 library first: it runs the 0.1.0 objects unchanged until this
-- script has run (README.md, "Upgrading").  The new event type
-- PURCHASE_ALREADY_ACTIVE needs nothing here: the events_type_known check
-- asks the library's table of event types.

\echo Use "ALTER EXTENSION kc_flow UPDATE TO '0.2.0'" to load this file. \quit

-- dead letters also come from errors that cannot succeed on retry, at the first attempt
COMMENT ON TABLE kc_flow.dead_letters IS
    'events a stage could not handle, with the last error: refused by the stage or failed with an error that cannot succeed on retry (first attempt), or failed kc_flow.max_attempts times; kc_flow.retry_dead_letter(id) puts one back in the queue';

-- create_payment refuses a course the student actively holds (23505)
CREATE OR REPLACE FUNCTION kc_flow.create_payment(student uuid, course uuid, purchase_tier int, time_slot jsonb,
                                                  amount_cents bigint DEFAULT 0, currency text DEFAULT 'USD',
                                                  metadata jsonb DEFAULT '{}')
    RETURNS uuid
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, kc_flow
AS $$
DECLARE
    active  kc_flow.student_course_purchases;
    payment uuid;
BEGIN
    INSERT INTO kc_flow.payments (student_id, course_id, purchase_tier, time_slot, amount_cents, currency, metadata)
    VALUES (student, course, purchase_tier, time_slot, amount_cents, upper(currency), coalesce(metadata, '{}'))
    RETURNING id INTO payment;
    -- checked after the payment's own rules, so bad input is reported first; a
    -- concurrent sale that slips past this check ends as PURCHASE_ALREADY_ACTIVE
    SELECT * INTO active FROM kc_flow.student_course_purchases p
     WHERE p.student_id = student AND p.course_id = course AND p.is_active;
    IF FOUND THEN
        RAISE EXCEPTION 'student % already holds course %', student, course
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'purchases_one_active_per_course',
                  DETAIL = format('Active purchase %s (payment %s) covers this course.', active.id, active.payment_id),
                  HINT = 'Refund or end the active purchase before selling the course again.';
    END IF;
    RETURN payment;
END;
$$;
COMMENT ON FUNCTION kc_flow.create_payment(uuid, uuid, int, jsonb, bigint, text, jsonb) IS
    'records a pending payment after checking student, course, tier and time slot; returns its id; 23505 when the student already holds the course (an active purchase)';

-- student_home shows payments refused because the course is active already (payment_notices)
CREATE OR REPLACE FUNCTION kc_flow.student_home(student uuid) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
AS $$
DECLARE
    result jsonb;
BEGIN
    PERFORM kc_flow.require_student(student);
    WITH upcoming AS (
        SELECT d FROM kc_flow.session_details d
         WHERE d.student_id = student AND d.status = 'scheduled' AND d.ends_at > now()
         ORDER BY d.starts_at, d.id
         LIMIT 20
    ), purchases AS (
        SELECT p.id, p.course_id, p.purchase_tier, p.created_at, p.is_active, c.title,
               a.status AS allocation_status, t.display_name AS trainer_name,
               (SELECT count(*) FROM kc_flow.tutoring_sessions s
                 WHERE s.allocation_id = a.id AND s.status = 'completed') AS completed
          FROM kc_flow.student_course_purchases p
          JOIN kc_flow.courses c ON c.id = p.course_id
          LEFT JOIN kc_flow.trainer_allocations a ON a.purchase_id = p.id
          LEFT JOIN kc_flow.trainers t ON t.id = a.trainer_id
         WHERE p.student_id = student
         ORDER BY p.created_at DESC, p.id
         LIMIT 5
    ), notices AS (
        -- payments the purchase stage refused because the course is active already,
        -- as long as they are neither refunded nor turned into a purchase since
        SELECT DISTINCT ON (e.correlation_id) e.id, e.created_at, e.payload, p.id AS payment_id,
               p.course_id, c.title
          FROM kc_flow.events e
          JOIN kc_flow.payments p ON p.id = e.correlation_id
          JOIN kc_flow.courses c ON c.id = p.course_id
         WHERE e.student_id = student AND e.event_type = 'PURCHASE_ALREADY_ACTIVE'
           AND p.status = 'succeeded'
           AND NOT EXISTS (SELECT 1 FROM kc_flow.student_course_purchases x WHERE x.payment_id = p.id)
         ORDER BY e.correlation_id, e.id DESC
    )
    SELECT jsonb_build_object(
        'student_id', student,
        'version', coalesce((SELECT v.version FROM kc_flow.cache_versions v WHERE v.student_id = student), 0),
        'overview', jsonb_build_object(
            'active_courses', (SELECT count(*) FROM kc_flow.student_course_purchases p
                                WHERE p.student_id = student AND p.is_active),
            'upcoming_sessions', (SELECT count(*) FROM kc_flow.tutoring_sessions s
                                   WHERE s.student_id = student AND s.status = 'scheduled'
                                     AND s.ends_at > now()),
            'completed_sessions', (SELECT count(*) FROM kc_flow.tutoring_sessions s
                                    WHERE s.student_id = student AND s.status = 'completed'),
            'pending_allocations', (SELECT count(*) FROM kc_flow.trainer_allocations a
                                     WHERE a.student_id = student AND a.status = 'pending'),
            'next_session', (SELECT kc_flow.session_json(u.d) FROM upcoming u
                              ORDER BY (u.d).starts_at, (u.d).id LIMIT 1)),
        'upcoming_sessions', coalesce((SELECT jsonb_agg(kc_flow.session_json(u.d)
                                                        ORDER BY (u.d).starts_at, (u.d).id)
                                         FROM upcoming u), '[]'),
        'recent_courses', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                        'course_id', p.course_id, 'title', p.title,
                                        'purchased_at', p.created_at, 'purchase_tier', p.purchase_tier,
                                        'is_active', p.is_active, 'trainer_name', p.trainer_name,
                                        'allocation_status', p.allocation_status,
                                        'progress', jsonb_build_object('completed', p.completed,
                                                                       'total', p.purchase_tier))
                                        ORDER BY p.created_at DESC, p.id)
                                      FROM purchases p), '[]'),
        'payment_notices', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                         'type', 'PURCHASE_ALREADY_ACTIVE',
                                         'message', 'payment received, course already active',
                                         'event_id', n.id, 'payment_id', n.payment_id,
                                         'course_id', n.course_id, 'title', n.title,
                                         'active_purchase_id', n.payload->'active_purchase_id',
                                         'at', n.created_at) ORDER BY n.id)
                                       FROM notices n), '[]'),
        'trending_courses', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                          'course_id', tr.course_id, 'title', tr.title,
                                          'purchases_7d', tr.purchases_7d) ORDER BY tr.rank)
                                        FROM (SELECT * FROM kc_flow.course_trending ORDER BY rank LIMIT 5) tr),
                                     '[]'),
        'generated_at', now())
      INTO result;
    RETURN result;
END;
$$;
COMMENT ON FUNCTION kc_flow.student_home(uuid) IS
    'the home screen of a student as JSON: version, overview, the next 20 upcoming sessions, the 5 latest purchases with progress, payment notices (payment received, course already active), trending courses; P0002 for an unknown student';

-- 0.2.0's event log: positions given after commit by a sequencer (docs/extension.md,
-- "Gap-free event log").  The writers of events are waited for first (ADD COLUMN
-- takes an ACCESS EXCLUSIVE lock), so every event is decided when the log is
-- started: each keeps its id as its position, which is what a cursor of 0.1.0
-- (an id, gap-free under the event horizon) means, and new positions continue
-- above the largest.  The first round's snapshot is taken after that, so an
-- event of a transaction still waiting for the lock is new to the next round.
LOCK TABLE kc_flow.events IN ACCESS EXCLUSIVE MODE;
ALTER TABLE kc_flow.events ADD COLUMN txid xid8;
ALTER TABLE kc_flow.events ALTER COLUMN txid SET DEFAULT pg_current_xact_id();
CREATE INDEX events_by_txid ON kc_flow.events (txid);
COMMENT ON TABLE kc_flow.events IS
    'outbox; written only by kc_flow.emit_event (ids from events_id_seq), in the log (event_log) once committed, read in log order with kc_flow.events_since';
COMMENT ON COLUMN kc_flow.events.txid IS
    'the transaction that wrote the event (NULL: written before 0.2.0, in the log from the update on); the sequencer finds committed events by it';
COMMENT ON SEQUENCE kc_flow.events_id_seq IS
    'event ids, taken inside the writing transaction; they may commit in any order: the order of the log is event_log.pos, given after commit';

CREATE TABLE kc_flow.event_log (
    pos        bigint PRIMARY KEY,
    event_id   bigint NOT NULL CONSTRAINT event_log_once_per_event UNIQUE,
    student_id uuid NOT NULL,
    logged_at  timestamptz NOT NULL
);
CREATE INDEX event_log_by_student ON kc_flow.event_log (student_id, pos);
COMMENT ON TABLE kc_flow.event_log IS
    'the event log in commit order: a dense position per committed event, given after its commit by a sequencer round (worker or run_pending); insert-only; a reader that sees a position sees every smaller one';
COMMENT ON COLUMN kc_flow.event_log.pos IS
    'the public cursor (after= of events_since, the gateway and its clients); events written before 0.2.0 kept their id as position';
COMMENT ON COLUMN kc_flow.event_log.logged_at IS
    'when the round gave the position, just before that round committed: the event is readable in the log from about then';

CREATE TABLE kc_flow.log_rounds (
    last_pos     bigint PRIMARY KEY,
    first_pos    bigint NOT NULL,
    snapshot     pg_snapshot NOT NULL,
    xid          xid8 NOT NULL,
    announced    boolean NOT NULL,
    sequenced_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE kc_flow.log_rounds IS
    'one row per sequencer round that gave positions (first_pos..last_pos): the snapshot it read with and its transaction, which tell the next round what is new; announced: a NOTIFY covered it; the newest row is the log head';
INSERT INTO kc_flow.event_log (pos, event_id, student_id, logged_at)
SELECT e.id, e.id, e.student_id, e.created_at FROM kc_flow.events e;
INSERT INTO kc_flow.log_rounds (last_pos, first_pos, snapshot, xid, announced)
SELECT coalesce(max(e.id), 0), coalesce(min(e.id), 1), pg_current_snapshot(), pg_current_xact_id(), true
  FROM kc_flow.events e;

-- no NOTIFY in the writer's transaction any more; the horizon is gone
COMMENT ON FUNCTION kc_flow.emit_event(text, uuid, uuid, jsonb) IS
    'appends an event to the outbox in the current transaction: bumps the student''s cache version, queues the event for its stage and wakes the workers at commit, which give it its log position and announce it; returns the event id';
DROP FUNCTION kc_flow.event_horizon();

CREATE FUNCTION kc_flow.sequence_log(OUT first_pos bigint, OUT last_pos bigint) RETURNS record
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'kcf_sequence_sql';
COMMENT ON FUNCTION kc_flow.sequence_log() IS
    'one sequencer round in the calling transaction, as the workers and run_pending() do: log positions for every event committed since the last round (and those this transaction wrote), one NOTIFY kc_flow_events "first-last"; holds the log head until the transaction ends';

CREATE FUNCTION kc_flow.log_backlog(OUT unsequenced bigint, OUT oldest_created_at timestamptz) RETURNS record
    LANGUAGE c STABLE SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
    AS 'MODULE_PATHNAME', 'kcf_log_backlog';
COMMENT ON FUNCTION kc_flow.log_backlog() IS
    'committed events that have no log position yet, and when the oldest of them was written';

CREATE FUNCTION kc_flow.log_covers(snapshot pg_snapshot) RETURNS boolean
    LANGUAGE c STABLE STRICT SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
    AS 'MODULE_PATHNAME', 'kcf_log_covers';
COMMENT ON FUNCTION kc_flow.log_covers(pg_snapshot) IS
    'true when every event visible in the snapshot (pg_current_snapshot() of an earlier moment) has a log position: reading the log to its end then sees all that had committed';

CREATE FUNCTION kc_flow.oldest_event_writer() RETURNS timestamptz
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
    AS 'MODULE_PATHNAME', 'kcf_oldest_event_writer';
COMMENT ON FUNCTION kc_flow.oldest_event_writer() IS
    'the start of the oldest open transaction that has emitted events (the only events still to come), NULL when none';

-- events_since returns the position beside the event
DROP FUNCTION kc_flow.events_since(bigint, uuid, int);
CREATE FUNCTION kc_flow.events_since(after bigint, student uuid DEFAULT NULL, max int DEFAULT 100)
    RETURNS TABLE (pos bigint, id bigint, event_type text, correlation_id uuid, student_id uuid,
                   payload jsonb, version bigint, created_at timestamptz, logged_at timestamptz)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
AS $$
BEGIN
    IF after IS NULL OR after < 0 THEN
        RAISE EXCEPTION 'after must be a log position >= 0' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF max IS NULL OR max < 1 OR max > 10000 THEN
        RAISE EXCEPTION 'max must be between 1 and 10000' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('Got %s.', coalesce(max::text, 'NULL'));
    END IF;
    -- positions commit in order, a round at a time: any snapshot sees a prefix of the log
    IF student IS NULL THEN
        RETURN QUERY SELECT l.pos, e.id, e.event_type, e.correlation_id, e.student_id, e.payload, e.version,
                            e.created_at, l.logged_at
                       FROM kc_flow.event_log l JOIN kc_flow.events e ON e.id = l.event_id
                      WHERE l.pos > after
                      ORDER BY l.pos LIMIT max;
    ELSE
        RETURN QUERY SELECT l.pos, e.id, e.event_type, e.correlation_id, e.student_id, e.payload, e.version,
                            e.created_at, l.logged_at
                       FROM kc_flow.event_log l JOIN kc_flow.events e ON e.id = l.event_id
                      WHERE l.student_id = student AND l.pos > after
                      ORDER BY l.pos LIMIT max;
    END IF;
END;
$$;
COMMENT ON FUNCTION kc_flow.events_since(bigint, uuid, int) IS
    'events after a log position, in log (commit) order, of one student or (NULL) all; pos is the cursor to pass back as "after"; a position is never given below one already visible, so a reader that follows "after" misses nothing';

CREATE FUNCTION kc_flow.health(reader_position bigint DEFAULT NULL) RETURNS jsonb
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
AS $$
    WITH head AS (
        SELECT r.last_pos, r.sequenced_at FROM kc_flow.log_rounds r ORDER BY r.last_pos DESC LIMIT 1
    ), backlog AS (
        SELECT * FROM kc_flow.log_backlog()
    ), writer AS (
        SELECT kc_flow.oldest_event_writer() AS since
    )
    SELECT jsonb_build_object(
        'queue_depth', (SELECT count(*) FROM kc_flow.event_queue),
        'dead_letters', (SELECT count(*) FROM kc_flow.dead_letters d WHERE NOT d.resolved),
        'oldest_xact_holding_events_seconds',
            coalesce(extract(epoch FROM clock_timestamp() - (SELECT w.since FROM writer w)), 0)::float8,
        'log_unsequenced', (SELECT b.unsequenced FROM backlog b),
        'log_oldest_unsequenced_seconds',
            coalesce(extract(epoch FROM clock_timestamp() - (SELECT b.oldest_created_at FROM backlog b)), 0)::float8,
        'log_unannounced', h.last_pos - coalesce((SELECT r.last_pos FROM kc_flow.log_rounds r WHERE r.announced
                                                   ORDER BY r.last_pos DESC LIMIT 1), 0),
        'notification_queue_usage', pg_notification_queue_usage(),
        'newest_position', h.last_pos,
        'newest_committed_at', h.sequenced_at,
        'reader_position', reader_position,
        'reader_lag_seconds',
            CASE WHEN reader_position IS NOT NULL THEN
                coalesce(extract(epoch FROM clock_timestamp() -
                                 (SELECT l.logged_at FROM kc_flow.event_log l WHERE l.pos > reader_position
                                   ORDER BY l.pos LIMIT 1)), 0)::float8
            END)
      FROM head h
$$;
COMMENT ON FUNCTION kc_flow.health(bigint) IS
    'the pipeline and its log at a glance: queue depth, unresolved dead letters, age of the oldest open transaction whose events are still to come, committed events without a position (unsequenced) or not announced, NOTIFY queue usage, the newest position and when it was given; with a reader''s position, how long the oldest event it has not read has been in the log (0: none)';

REVOKE ALL ON FUNCTION kc_flow.sequence_log() FROM PUBLIC;

-- the newest position, not the horizon
CREATE OR REPLACE FUNCTION kc_flow.settled_event_id() RETURNS bigint
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
AS $$
    SELECT coalesce((SELECT r.last_pos FROM kc_flow.log_rounds r ORDER BY r.last_pos DESC LIMIT 1), 0)
$$;
COMMENT ON FUNCTION kc_flow.settled_event_id() IS
    'the newest log position (every position up to it is readable); a reader with no position starts events_since from it';
