-- kc_flow--0.1.0--0.2.0.sql: ALTER EXTENSION kc_flow UPDATE from 0.1.0 to 0.2.0.
--
-- Every schema change of 0.2.0, so that an upgraded database equals a fresh
-- 0.2.0 install (test/suites/27_upgrade.sh compares their pg_dump).  Install
-- the 0.2.0 library first: it runs the 0.1.0 objects unchanged until this
-- script has run (README.md, "Upgrading").  kc_flow--0.1.0.sql is the 0.1.0
-- install script as it was released, unchanged.

\echo Use "ALTER EXTENSION kc_flow UPDATE TO '0.2.0'" to load this file. \quit

-- storage (issue 9): the queue is rebuilt at the end of this script; its lock comes first,
-- before events', in the order the workers take them (claim: queue, then events), so that
-- the update waits for the workers' batches instead of deadlocking with one
LOCK TABLE kc_flow.event_queue IN ACCESS EXCLUSIVE MODE;

-- one table of event types, in the library: the events_type_known check asks it
-- instead of a list of its own (so PURCHASE_ALREADY_ACTIVE and VIEWS_REFRESHED are known)
CREATE FUNCTION kc_flow.event_types(OUT event_type text, OUT consumer text, OUT emitted_by text, OUT meaning text)
    RETURNS SETOF record
    LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'kcf_event_types';
COMMENT ON FUNCTION kc_flow.event_types() IS
    'the event types of the log, one row each: the stage that consumes it (NULL: only readers of the log act on it), who emits it and what it means';

CREATE FUNCTION kc_flow.is_event_type(name text) RETURNS boolean
    LANGUAGE c STABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'kcf_is_event_type';
COMMENT ON FUNCTION kc_flow.is_event_type(text) IS
    'true when kc_flow.event_types() has a type of that name; the events_type_known constraint of kc_flow.events';

ALTER TABLE kc_flow.events DROP CONSTRAINT events_type_known,
    ADD CONSTRAINT events_type_known CHECK (kc_flow.is_event_type(event_type));
COMMENT ON COLUMN kc_flow.events.event_type IS
    'one of the types of kc_flow.event_types(), the table in extension/event_types.c';

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
        'version', kc_flow.student_version(student),
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

-- the operator console's reads (extension/schema/60_admin.sql, the same definitions)
CREATE FUNCTION kc_flow.payment_story(payment uuid) RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
AS $$
    WITH pay AS (
        SELECT p.*, s.display_name AS student_name, c.title AS course_title
          FROM kc_flow.payments p
          JOIN kc_flow.students s ON s.id = p.student_id
          JOIN kc_flow.courses c ON c.id = p.course_id
         WHERE p.id = payment),
    pur AS (
        SELECT pu.* FROM kc_flow.student_course_purchases pu WHERE pu.payment_id = payment),
    alloc AS (
        SELECT a.*, t.display_name AS trainer_name
          FROM kc_flow.trainer_allocations a
          JOIN pur ON pur.id = a.purchase_id
          LEFT JOIN kc_flow.trainers t ON t.id = a.trainer_id),
    sess AS (
        SELECT s.*, t.display_name AS trainer_name
          FROM kc_flow.tutoring_sessions s
          JOIN alloc ON alloc.id = s.allocation_id
          JOIN kc_flow.trainers t ON t.id = s.trainer_id),
    ev AS (
        SELECT e.*, ty.consumer AS stage
          FROM kc_flow.events e
          LEFT JOIN kc_flow.event_types() ty ON ty.event_type = e.event_type
         WHERE e.correlation_id = payment)
    SELECT jsonb_build_object(
        'payment', (SELECT jsonb_build_object(
                               'id', pay.id, 'status', pay.status,
                               'student_id', pay.student_id, 'student_name', pay.student_name,
                               'course_id', pay.course_id, 'course_title', pay.course_title,
                               'purchase_tier', pay.purchase_tier, 'amount_cents', pay.amount_cents,
                               'currency', pay.currency, 'time_slot', pay.time_slot, 'metadata', pay.metadata,
                               'created_at', pay.created_at, 'updated_at', pay.updated_at,
                               'succeeded_at', pay.succeeded_at)
                      FROM pay),
        'events', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                       'id', ev.id, 'type', ev.event_type, 'created_at', ev.created_at,
                       'pos', (SELECT l.pos FROM kc_flow.event_log l WHERE l.event_id = ev.id),
                       'version', ev.version, 'student_id', ev.student_id, 'payload', ev.payload,
                       'stage', ev.stage,
                       'processed_by', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                                   'consumer', pe.consumer, 'at', pe.processed_at,
                                                   'after_ms', round((extract(epoch FROM pe.processed_at - ev.created_at)
                                                                      * 1000)::numeric, 3))
                                               ORDER BY pe.processed_at), '[]')
                                          FROM kc_flow.processed_events pe WHERE pe.event_id = ev.id),
                       'queued', (SELECT jsonb_build_object(
                                             'consumer', q.consumer, 'attempts', q.attempts,
                                             'deferrals', q.deferrals, 'run_after', q.run_after,
                                             'last_sqlstate', q.last_sqlstate, 'last_error', q.last_error)
                                    FROM kc_flow.event_queue q WHERE q.event_id = ev.id),
                       'dead_letters', (SELECT coalesce(jsonb_agg(d.id ORDER BY d.id), '[]')
                                          FROM kc_flow.dead_letters d WHERE d.event_id = ev.id))
                   ORDER BY ev.id)
              FROM ev), '[]'),
        'dead_letters', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                       'id', d.id, 'event_id', d.event_id, 'event_type', ev.event_type,
                       'consumer', d.consumer, 'attempts', d.attempts, 'sqlstate', d.sqlstate,
                       'error', d.error_message, 'detail', d.error_detail,
                       'first_failed_at', d.first_failed_at, 'last_failed_at', d.last_failed_at,
                       'resolved', d.resolved, 'resolved_at', d.resolved_at)
                   ORDER BY d.id)
              FROM kc_flow.dead_letters d JOIN ev ON ev.id = d.event_id), '[]'),
        'purchase', (SELECT jsonb_build_object(
                                'id', pur.id, 'purchase_tier', pur.purchase_tier, 'is_active', pur.is_active,
                                'created_at', pur.created_at, 'ended_at', pur.ended_at)
                       FROM pur),
        'allocation', (SELECT jsonb_build_object(
                                  'id', alloc.id, 'status', alloc.status, 'session_mode', alloc.session_mode,
                                  'trainer_id', alloc.trainer_id, 'trainer_name', alloc.trainer_name,
                                  'created_at', alloc.created_at, 'allocated_at', alloc.allocated_at)
                         FROM alloc),
        'sessions', jsonb_build_object(
            'expected', (SELECT pur.purchase_tier FROM pur),
            'created', (SELECT count(*) FROM sess),
            'scheduled', (SELECT count(*) FROM sess WHERE sess.status = 'scheduled'),
            'completed', (SELECT count(*) FROM sess WHERE sess.status = 'completed'),
            'cancelled', (SELECT count(*) FROM sess WHERE sess.status = 'cancelled'),
            'missed', (SELECT count(*) FROM sess WHERE sess.status = 'missed'),
            'list', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                          'id', sess.id, 'seq', sess.seq, 'starts_at', sess.starts_at,
                                          'ends_at', sess.ends_at, 'status', sess.status,
                                          'trainer_name', sess.trainer_name, 'created_at', sess.created_at)
                                      ORDER BY sess.seq)
                                FROM sess), '[]')),
        'generated_at', now())
      FROM pay
$$;
COMMENT ON FUNCTION kc_flow.payment_story(uuid) IS
    'the operator console''s story of one payment: the payment with student and course, each event with the stage that consumes it, when each stage handled it, its queue state (attempts, last error) and dead letters, the dead letters with their reason, the purchase, the allocation and the sessions created against those expected; NULL for an unknown payment';

CREATE FUNCTION kc_flow.admin_search(query text, max_results int DEFAULT 20) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
AS $$
DECLARE
    q        text := btrim(coalesce(query, ''), E' \t\r\n');
    hex      text;
    lo       uuid;
    hi       uuid;
    event_no bigint;
    pattern  text;
    payments jsonb;
    students jsonb;
    more     boolean;
    message  text;
BEGIN
    IF max_results IS NULL OR max_results < 1 OR max_results > 100 THEN
        RAISE EXCEPTION 'max_results must be between 1 and 100, not %', max_results
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF length(q) > 200 THEN
        RAISE EXCEPTION 'search text is longer than 200 characters (%)', length(q)
            USING ERRCODE = 'string_data_right_truncation',
                  HINT = 'Search for a payment or student id, its first characters, an event id or part of a name.';
    END IF;
    IF q = '' THEN
        RETURN jsonb_build_object('query', q, 'payments', '[]'::jsonb, 'students', '[]'::jsonb,
                                  'truncated', false,
                                  'message', 'type a payment or student id (or its first 4 characters or more), an event id, or part of a student''s name');
    END IF;

    -- an id or its first characters: a range of the primary key (dashes anywhere, any case)
    IF q ~ '^[0-9A-Fa-f-]+$' THEN
        hex := lower(replace(q, '-', ''));
        IF length(hex) BETWEEN 4 AND 32 THEN
            lo := rpad(hex, 32, '0')::uuid;
            hi := rpad(hex, 32, 'f')::uuid;
        END IF;
    END IF;
    -- an event id: the payment it belongs to
    IF q ~ '^[0-9]{1,18}$' THEN
        event_no := q::bigint;
    END IF;
    -- any text: part of a student's name, taken literally
    pattern := '%' || replace(replace(replace(q, '\', '\\'), '%', '\%'), '_', '\_') || '%';

    WITH found AS (
        SELECT p.id, 1 AS rank, CASE WHEN lo = hi THEN 'payment id' ELSE 'payment id prefix' END AS how
          FROM kc_flow.payments p WHERE lo IS NOT NULL AND p.id BETWEEN lo AND hi
        UNION ALL
        SELECT e.correlation_id, 1, 'event ' || e.id
          FROM kc_flow.events e WHERE event_no IS NOT NULL AND e.id = event_no
    ), best AS (
        SELECT DISTINCT ON (f.id) f.id, f.rank, f.how FROM found f ORDER BY f.id, f.rank
    ), hits AS (
        SELECT b.how, b.rank, p.*, s.display_name AS student_name, c.title AS course_title
          FROM best b
          JOIN kc_flow.payments p ON p.id = b.id
          JOIN kc_flow.students s ON s.id = p.student_id
          JOIN kc_flow.courses c ON c.id = p.course_id
         ORDER BY b.rank, p.created_at DESC, p.id
         LIMIT max_results + 1
    )
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'id', h.id, 'status', h.status, 'student_id', h.student_id, 'student_name', h.student_name,
               'course_id', h.course_id, 'course_title', h.course_title, 'purchase_tier', h.purchase_tier,
               'amount_cents', h.amount_cents, 'currency', h.currency, 'created_at', h.created_at,
               'succeeded_at', h.succeeded_at, 'match', h.how)
               ORDER BY h.rank, h.created_at DESC, h.id), '[]')
      INTO payments
      FROM hits h;
    more := jsonb_array_length(payments) > max_results;
    IF more THEN
        payments := payments - max_results;
    END IF;

    WITH found AS (
        SELECT s.id, 1 AS rank, CASE WHEN lo = hi THEN 'student id' ELSE 'student id prefix' END AS how
          FROM kc_flow.students s WHERE lo IS NOT NULL AND s.id BETWEEN lo AND hi
        UNION ALL
        SELECT s.id, 2, 'student name'
          FROM kc_flow.students s WHERE s.display_name ILIKE pattern
    ), best AS (
        SELECT DISTINCT ON (f.id) f.id, f.rank, f.how FROM found f ORDER BY f.id, f.rank
    ), hits AS (
        SELECT b.how, b.rank, s.*
          FROM best b JOIN kc_flow.students s ON s.id = b.id
         ORDER BY b.rank, s.display_name, s.id
         LIMIT max_results + 1
    )
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'id', h.id, 'display_name', h.display_name, 'timezone', h.timezone, 'created_at', h.created_at,
               'match', h.how,
               'payment_count', (SELECT count(*) FROM kc_flow.payments p WHERE p.student_id = h.id),
               'payments', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                                'id', x.id, 'status', x.status, 'course_title', x.title,
                                                'purchase_tier', x.purchase_tier, 'created_at', x.created_at)
                                            ORDER BY x.created_at DESC, x.id), '[]')
                              FROM (SELECT p.*, c.title
                                      FROM kc_flow.payments p JOIN kc_flow.courses c ON c.id = p.course_id
                                     WHERE p.student_id = h.id
                                     ORDER BY p.created_at DESC, p.id LIMIT 10) x))
               ORDER BY h.rank, h.display_name, h.id), '[]')
      INTO students
      FROM hits h;
    IF jsonb_array_length(students) > max_results THEN
        students := students - max_results;
        more := true;
    END IF;

    IF jsonb_array_length(payments) + jsonb_array_length(students) = 0 THEN
        message := format('nothing matches %s: search for a payment or student id (or its first 4 characters or more), an event id, or part of a student''s name',
                          to_json(q)::text);
    ELSIF more THEN
        message := format('more than %s found: showing the first %s of each kind; type more of the id or name', max_results, max_results);
    END IF;
    RETURN jsonb_build_object('query', q, 'payments', payments, 'students', students,
                              'truncated', more, 'message', message);
END;
$$;
COMMENT ON FUNCTION kc_flow.admin_search(text, int) IS
    'the operator console''s search: payments whose id (or event id) matches and students whose id or name matches the text, at most max_results (1..100) of each, each student with their latest payments; any text is taken literally; 22001 above 200 characters';

CREATE FUNCTION kc_flow.admin_queue_counts() RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
AS $$
    SELECT jsonb_build_object(
        'queue_depth', (SELECT count(*) FROM kc_flow.event_queue),
        'queue_due', (SELECT count(*) FROM kc_flow.event_queue WHERE run_after <= now()),
        'queue_retrying', (SELECT count(*) FROM kc_flow.event_queue WHERE attempts > 0),
        'dead_letters', (SELECT count(*) FROM kc_flow.dead_letters WHERE NOT resolved),
        'at', now())
$$;
COMMENT ON FUNCTION kc_flow.admin_queue_counts() IS
    'the operator console''s queue figures: events queued (all, due now, failed at least once) and unresolved dead letters';

REVOKE ALL ON FUNCTION kc_flow.payment_story(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION kc_flow.admin_search(text, int) FROM PUBLIC;
REVOKE ALL ON FUNCTION kc_flow.admin_queue_counts() FROM PUBLIC;

-- ---- allocation (issue 10): one booking row per allocation --------------------------
-- trainer_bookings held a row per planned session; 0.2.0 keeps one per allocation with its
-- whole plan as a tstzmultirange under the same exclusion constraint.  The 0.1.0 rows are
-- merged per allocation (the times of one allocation never overlap: the constraint held).
ALTER TABLE kc_flow.trainer_bookings RENAME TO trainer_bookings_0_1_0;
ALTER INDEX kc_flow.trainer_bookings_pkey RENAME TO trainer_bookings_0_1_0_pkey;
ALTER INDEX kc_flow.bookings_no_trainer_double_booking RENAME TO trainer_bookings_0_1_0_excl;
ALTER TABLE kc_flow.trainer_bookings_0_1_0
    RENAME CONSTRAINT trainer_bookings_allocation_id_fkey TO trainer_bookings_0_1_0_allocation_fkey;
ALTER TABLE kc_flow.trainer_bookings_0_1_0
    RENAME CONSTRAINT trainer_bookings_trainer_id_fkey TO trainer_bookings_0_1_0_trainer_fkey;
CREATE TABLE kc_flow.trainer_bookings (
    allocation_id uuid PRIMARY KEY REFERENCES kc_flow.trainer_allocations ON DELETE CASCADE,
    trainer_id    uuid NOT NULL REFERENCES kc_flow.trainers,
    during        tstzmultirange NOT NULL CONSTRAINT bookings_not_empty CHECK (NOT isempty(during)),
    CONSTRAINT bookings_no_trainer_double_booking EXCLUDE USING gist (trainer_id WITH =, during WITH &&)
);
COMMENT ON TABLE kc_flow.trainer_bookings IS
    'the session times an allocation reserves on its trainer, one row per allocation holding its whole plan (kc_flow.purchase_plan), generated or not yet (rolling mode); the exclusion constraint makes double booking impossible';
INSERT INTO kc_flow.trainer_bookings (allocation_id, trainer_id, during)
SELECT allocation_id, trainer_id, range_agg(during)
  FROM kc_flow.trainer_bookings_0_1_0 GROUP BY allocation_id, trainer_id;
DROP TABLE kc_flow.trainer_bookings_0_1_0;
-- a session's four references (allocation, student, course, trainer: four checks per
-- session row) become one to its allocation with the allocation's parties
ALTER TABLE kc_flow.trainer_allocations
    ADD CONSTRAINT allocations_parties UNIQUE (id, student_id, course_id, trainer_id);
ALTER TABLE kc_flow.tutoring_sessions
    DROP CONSTRAINT tutoring_sessions_allocation_id_fkey,
    DROP CONSTRAINT tutoring_sessions_student_id_fkey,
    DROP CONSTRAINT tutoring_sessions_course_id_fkey,
    DROP CONSTRAINT tutoring_sessions_trainer_id_fkey,
    ADD CONSTRAINT sessions_of_allocation FOREIGN KEY (allocation_id, student_id, course_id, trainer_id)
        REFERENCES kc_flow.trainer_allocations (id, student_id, course_id, trainer_id) ON DELETE CASCADE;
-- the sessions of an allocation are found through sessions_one_per_seq (allocation_id, seq):
-- a second index on (allocation_id, status) only cost every session insert its maintenance
DROP INDEX kc_flow.sessions_by_allocation;
-- ---- end of allocation (issue 10) ----------------------------------------------------

-- ---- sessions (issue 10): a scheduled session lies inside its allocation's booking ----
-- The GiST exclusion constraint sessions_no_trainer_overlap cost an index insert and a probe
-- per session; the rule of 15_session_bookings.sql makes it redundant (bookings never overlap).
-- 0.1.0's refund deleted the booking of sessions that had started and stay scheduled: they get
-- their booking back, unless another booking of their trainer took those times meanwhile.
INSERT INTO kc_flow.trainer_bookings (allocation_id, trainer_id, during)
SELECT o.allocation_id, o.trainer_id, o.during
  FROM (SELECT s.allocation_id, s.trainer_id, range_agg(tstzrange(s.starts_at, s.ends_at)) AS during
          FROM kc_flow.tutoring_sessions s
         WHERE s.status = 'scheduled'
           AND NOT EXISTS (SELECT 1 FROM kc_flow.trainer_bookings b WHERE b.allocation_id = s.allocation_id)
         GROUP BY s.allocation_id, s.trainer_id) o
 WHERE NOT EXISTS (SELECT 1 FROM kc_flow.trainer_bookings b
                    WHERE b.trainer_id = o.trainer_id AND b.during && o.during);
ALTER TABLE kc_flow.tutoring_sessions DROP CONSTRAINT sessions_no_trainer_overlap;
CREATE FUNCTION kc_flow.refuse_sessions_outside_bookings(candidates kc_flow.tutoring_sessions[])
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, kc_flow
AS $$
DECLARE
    bad    kc_flow.tutoring_sessions;
    clash  record;
BEGIN
    -- the bookings first: a concurrent change of one waits for this transaction, and one
    -- committed meanwhile is what the checks below read (each statement takes a new snapshot)
    PERFORM 1 FROM kc_flow.trainer_bookings b
      WHERE b.allocation_id = ANY (ARRAY(SELECT c.allocation_id FROM unnest(candidates) AS c
                                          WHERE c.status = 'scheduled'))
      ORDER BY b.allocation_id
        FOR NO KEY UPDATE;
    -- each allocation's sessions against its one booking, read once by its key (the test in
    -- the select list, so that no plan searches the trainer's bookings in
    -- bookings_no_trainer_double_booking's GiST index); the session to blame only if one is
    PERFORM 1
      FROM (SELECT c.allocation_id, c.trainer_id, range_agg(tstzrange(c.starts_at, c.ends_at)) AS times
              FROM unnest(candidates) AS c WHERE c.status = 'scheduled'
             GROUP BY c.allocation_id, c.trainer_id) g
     WHERE (SELECT b.trainer_id = g.trainer_id AND b.during @> g.times
              FROM kc_flow.trainer_bookings b WHERE b.allocation_id = g.allocation_id) IS NOT TRUE
     LIMIT 1;
    IF FOUND THEN
        SELECT s.* INTO STRICT bad
          FROM unnest(candidates) AS s
         WHERE s.status = 'scheduled'
           AND (SELECT b.trainer_id = s.trainer_id AND b.during @> tstzrange(s.starts_at, s.ends_at)
                  FROM kc_flow.trainer_bookings b WHERE b.allocation_id = s.allocation_id) IS NOT TRUE
         LIMIT 1;
        RAISE EXCEPTION 'a scheduled session of allocation % is outside its booking', bad.allocation_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'sessions_inside_booking', TABLE = 'tutoring_sessions',
                  SCHEMA = 'kc_flow',
                  DETAIL = format('Session %s (trainer %s, %s to %s) is not within the times trainer_bookings holds for its allocation on that trainer.',
                                  bad.id, bad.trainer_id, bad.starts_at, bad.ends_at),
                  HINT = 'Book the time for the allocation first (kc_flow.trainer_bookings.during), or cancel the session.';
    END IF;
    -- sorted by start, an overlap shows between neighbours
    SELECT x.* INTO clash
      FROM (SELECT DISTINCT c.allocation_id FROM unnest(candidates) AS c WHERE c.status = 'scheduled') a
     CROSS JOIN LATERAL (
            SELECT s.id, s.allocation_id, s.trainer_id, s.starts_at, s.ends_at,
                   lag(s.id) OVER w AS prev_id, lag(s.starts_at) OVER w AS prev_starts_at,
                   lag(s.ends_at) OVER w AS prev_ends_at
              FROM kc_flow.tutoring_sessions s
             WHERE s.allocation_id = a.allocation_id AND s.status = 'scheduled'
            WINDOW w AS (ORDER BY s.starts_at, s.id)) x
     WHERE x.prev_ends_at > x.starts_at
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'two scheduled sessions of allocation % overlap', clash.allocation_id
            USING ERRCODE = 'exclusion_violation', CONSTRAINT = 'sessions_inside_booking', TABLE = 'tutoring_sessions',
                  SCHEMA = 'kc_flow',
                  DETAIL = format('Session %s runs from %s to %s, session %s from %s to %s, both with trainer %s.',
                                  clash.prev_id, clash.prev_starts_at, clash.prev_ends_at, clash.id, clash.starts_at,
                                  clash.ends_at, clash.trainer_id),
                  HINT = 'A trainer teaches one session at a time: move or cancel one of them.';
    END IF;
END;
$$;
COMMENT ON FUNCTION kc_flow.refuse_sessions_outside_bookings(kc_flow.tutoring_sessions[]) IS
    'raises check_violation if a scheduled session among candidates is not inside its allocation''s booking (same trainer, booking.during @> its range), exclusion_violation if two scheduled sessions of such an allocation overlap';

CREATE FUNCTION kc_flow.check_sessions_inside_bookings() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, kc_flow
AS $$
BEGIN
    IF TG_LEVEL = 'STATEMENT' THEN
        PERFORM kc_flow.refuse_sessions_outside_bookings(ARRAY(SELECT n::kc_flow.tutoring_sessions FROM added n));
    ELSE
        -- the row as it is now: a deferred check sees the end of the transaction
        PERFORM kc_flow.refuse_sessions_outside_bookings(
            ARRAY(SELECT s FROM kc_flow.tutoring_sessions s WHERE s.id = NEW.id));
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION kc_flow.check_sessions_inside_bookings() IS
    'trigger of tutoring_sessions: the sessions a statement inserted, or a session updated, must lie inside their allocation''s booking';

CREATE FUNCTION kc_flow.check_booking_holds_sessions() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, kc_flow
AS $$
BEGIN
    PERFORM kc_flow.refuse_sessions_outside_bookings(
        ARRAY(SELECT s FROM kc_flow.tutoring_sessions s
               WHERE s.allocation_id = OLD.allocation_id AND s.status = 'scheduled'));
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION kc_flow.check_booking_holds_sessions() IS
    'trigger of trainer_bookings: a booking changed or deleted must still hold every scheduled session of its allocation';

CREATE TRIGGER sessions_inside_booking_on_insert AFTER INSERT ON kc_flow.tutoring_sessions
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION kc_flow.check_sessions_inside_bookings();
CREATE CONSTRAINT TRIGGER sessions_inside_booking_on_update
    AFTER UPDATE OF status, allocation_id, trainer_id, starts_at, ends_at ON kc_flow.tutoring_sessions
    DEFERRABLE INITIALLY IMMEDIATE
    FOR EACH ROW WHEN (NEW.status = 'scheduled')
    EXECUTE FUNCTION kc_flow.check_sessions_inside_bookings();
CREATE CONSTRAINT TRIGGER bookings_hold_their_sessions
    AFTER UPDATE OF allocation_id, trainer_id, during OR DELETE ON kc_flow.trainer_bookings
    DEFERRABLE INITIALLY IMMEDIATE
    FOR EACH ROW EXECUTE FUNCTION kc_flow.check_booking_holds_sessions();
-- the upcoming sessions of student_home are read through sessions_by_student as fast: a
-- student's sessions are a few heap pages; the partial index only cost every session an insert
DROP INDEX kc_flow.sessions_scheduled_by_student;
-- sessions_of_allocation's insert check once per statement instead of once per session row
-- (12_sessions_of_allocation.sql): the constraint added above stays, its per-row insert
-- trigger is disabled
CREATE FUNCTION kc_flow.check_sessions_of_allocation() RETURNS trigger
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'kcf_check_sessions_of_allocation';
COMMENT ON FUNCTION kc_flow.check_sessions_of_allocation() IS
    'trigger of tutoring_sessions: the foreign key sessions_of_allocation''s insert check, once per statement for its distinct keys (extension/session_allocation_check.c)';

CREATE TRIGGER sessions_have_their_allocation AFTER INSERT ON kc_flow.tutoring_sessions
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION kc_flow.check_sessions_of_allocation();

-- the per-row insert check the trigger above replaces (its name holds an oid: found by its function)
DO $$
BEGIN
    EXECUTE format('ALTER TABLE kc_flow.tutoring_sessions DISABLE TRIGGER %I',
                   (SELECT t.tgname FROM pg_catalog.pg_trigger t
                      JOIN pg_catalog.pg_constraint c ON c.oid = t.tgconstraint
                     WHERE t.tgrelid = 'kc_flow.tutoring_sessions'::regclass AND c.conname = 'sessions_of_allocation'
                       AND t.tgfoid = 'pg_catalog."RI_FKey_check_ins"'::regproc));
END;
$$;
-- ---- end of sessions (issue 10) ------------------------------------------------------

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

CREATE SEQUENCE kc_flow.log_generation AS bigint MINVALUE 0 START 0 CACHE 1;
COMMENT ON SEQUENCE kc_flow.log_generation IS
    'the generation of the event log''s ring (events, event_log, processed_events, log_rounds): new rows go to slot last_value % 3; each rotation truncates the next slot and advances it (extension/log_ring.c)';

-- The ring slot functions (this one, event_queue_slot(), version_slot()) are C
-- (extension/ring_slot.c): a column default evaluated for each row inserted, a dozen rows
-- per purchase; they read the sequence's last_value % 3 as a SELECT does, without running one.
CREATE FUNCTION kc_flow.log_slot() RETURNS smallint
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'kcf_log_slot';
COMMENT ON FUNCTION kc_flow.log_slot() IS
    'the slot of the event log''s ring that new rows go to (the default of the slot column of events, event_log, processed_events and log_rounds)';

CREATE TABLE kc_flow.event_log (
    pos        bigint NOT NULL,
    event_id   bigint NOT NULL,
    student_id uuid NOT NULL,
    logged_at  timestamptz NOT NULL,
    slot       smallint NOT NULL DEFAULT kc_flow.log_slot()
) PARTITION BY LIST (slot);
CREATE TABLE kc_flow.event_log_0 PARTITION OF kc_flow.event_log (
    CONSTRAINT event_log_0_pkey PRIMARY KEY (pos),
    CONSTRAINT event_log_0_once_per_event UNIQUE (event_id)) FOR VALUES IN (0);
CREATE TABLE kc_flow.event_log_1 PARTITION OF kc_flow.event_log (
    CONSTRAINT event_log_1_pkey PRIMARY KEY (pos),
    CONSTRAINT event_log_1_once_per_event UNIQUE (event_id)) FOR VALUES IN (1);
CREATE TABLE kc_flow.event_log_2 PARTITION OF kc_flow.event_log (
    CONSTRAINT event_log_2_pkey PRIMARY KEY (pos),
    CONSTRAINT event_log_2_once_per_event UNIQUE (event_id)) FOR VALUES IN (2);
CREATE INDEX event_log_by_student ON kc_flow.event_log (student_id, pos);
COMMENT ON TABLE kc_flow.event_log_0 IS 'slot 0 of the event log''s ring: positions (kc_flow.event_log)';
COMMENT ON TABLE kc_flow.event_log_1 IS 'slot 1 of the event log''s ring: positions (kc_flow.event_log)';
COMMENT ON TABLE kc_flow.event_log_2 IS 'slot 2 of the event log''s ring: positions (kc_flow.event_log)';
COMMENT ON TABLE kc_flow.event_log IS
    'the event log in commit order: a dense position per committed event, given after its commit by a sequencer round (worker or run_pending); insert-only; a reader that sees a position sees every smaller one down to kc_flow.log_floor(); a ring of three tables (slot) rotated with events; positions and event ids are unique per table, and across tables because one sequencer at a time gives them (docs/extension.md)';
COMMENT ON COLUMN kc_flow.event_log.pos IS
    'the public cursor (after= of events_since, the gateway and its clients); events written before 0.2.0 kept their id as position';
COMMENT ON COLUMN kc_flow.event_log.logged_at IS
    'when the round gave the position, just before that round committed: the event is readable in the log from about then';
COMMENT ON COLUMN kc_flow.event_log.slot IS
    'the table of the log''s ring the row is in; rotation copies the positions of the events that stay';

CREATE TABLE kc_flow.log_rounds (
    last_pos     bigint NOT NULL,
    first_pos    bigint NOT NULL,
    snapshot     pg_snapshot NOT NULL,
    xid          xid8 NOT NULL,
    announced    boolean NOT NULL,
    sequenced_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    slot         smallint NOT NULL DEFAULT kc_flow.log_slot()
) PARTITION BY LIST (slot);
CREATE TABLE kc_flow.log_rounds_0 PARTITION OF kc_flow.log_rounds (CONSTRAINT log_rounds_0_pkey PRIMARY KEY (last_pos)) FOR VALUES IN (0);
CREATE TABLE kc_flow.log_rounds_1 PARTITION OF kc_flow.log_rounds (CONSTRAINT log_rounds_1_pkey PRIMARY KEY (last_pos)) FOR VALUES IN (1);
CREATE TABLE kc_flow.log_rounds_2 PARTITION OF kc_flow.log_rounds (CONSTRAINT log_rounds_2_pkey PRIMARY KEY (last_pos)) FOR VALUES IN (2);
COMMENT ON TABLE kc_flow.log_rounds_0 IS 'slot 0 of the event log''s ring: rounds (kc_flow.log_rounds)';
COMMENT ON TABLE kc_flow.log_rounds_1 IS 'slot 1 of the event log''s ring: rounds (kc_flow.log_rounds)';
COMMENT ON TABLE kc_flow.log_rounds_2 IS 'slot 2 of the event log''s ring: rounds (kc_flow.log_rounds)';
COMMENT ON TABLE kc_flow.log_rounds IS
    'one row per sequencer round that gave positions (first_pos..last_pos): the snapshot it read with and its transaction, which tell the next round what is new; announced: a NOTIFY covered it; the newest row is the log head; a ring of three tables (slot) rotated with events, which keeps the head and the newest announced round';
CREATE SEQUENCE kc_flow.log_floor_position AS bigint MINVALUE 0 START 0 CACHE 1;
COMMENT ON SEQUENCE kc_flow.log_floor_position IS
    'kc_flow.log_floor(): the highest position a rotation of the log''s ring removed; a sequence so that a reader reads it without a snapshot (extension/log_ring.c)';

CREATE TABLE kc_flow.log_rotations (
    generation     bigint PRIMARY KEY,
    rotated_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    floor_pos      bigint NOT NULL,
    kept_events    bigint NOT NULL DEFAULT 0,
    kept_positions bigint NOT NULL DEFAULT 0,
    kept_marks     bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE kc_flow.log_rotations IS
    'one row per generation of the event log''s ring, written by the rotation that made it current: when, the log''s floor after it, and the events, positions and processed marks it copied forward; insert-only';
INSERT INTO kc_flow.log_rotations (generation, floor_pos) VALUES (0, 0);

CREATE FUNCTION kc_flow.log_floor() RETURNS bigint
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
AS $$ SELECT last_value FROM kc_flow.log_floor_position $$;
COMMENT ON FUNCTION kc_flow.log_floor() IS
    'the highest log position a rotation of the log''s ring may have removed (0: none yet); every position above it that was ever given is still readable, and events_since refuses a cursor below it (SQLSTATE KC410); read without a snapshot, so it is the newest floor even in an old snapshot';

CREATE FUNCTION kc_flow.log_head() RETURNS bigint
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
AS $$ SELECT coalesce((SELECT r.last_pos FROM kc_flow.log_rounds r ORDER BY r.last_pos DESC LIMIT 1), 0) $$;
COMMENT ON FUNCTION kc_flow.log_head() IS
    'the newest log position (every position from kc_flow.log_floor() up to it is readable): where a reader that reloaded its state reads on from';

INSERT INTO kc_flow.event_log (pos, event_id, student_id, logged_at)
SELECT e.id, e.id, e.student_id, e.created_at FROM kc_flow.events e;
-- new positions start above every id 0.1.0 gave out, trimmed events' included: a 0.1.0
-- cursor may name an id the log no longer holds
INSERT INTO kc_flow.log_rounds (last_pos, first_pos, snapshot, xid, announced)
SELECT greatest(coalesce(max(e.id), 0), (SELECT CASE WHEN s.is_called THEN s.last_value ELSE 0 END
                                           FROM kc_flow.events_id_seq s)),
       coalesce(min(e.id), 1), pg_current_snapshot(), pg_current_xact_id(), true
  FROM kc_flow.events e;

-- the log's floor (issue 9): a cursor below it gets KC410 from events_since, a refetch.
-- 0.1.0 trimmed the log without a trace, and its cursors (event ids) are the positions
-- now.  Every event bumped its student's version by one and a rollback undid both, so a
-- version missing from a student's events is a trimmed event, whose id is below that of
-- the student's next event left (or, if none is left, at most the head): the floor is
-- the highest such bound, and a 0.1.0 cursor that a trim could have skipped gets a
-- refetch instead of a page with a hole.
WITH kept AS (
    SELECT e.student_id, e.version,
           lag(e.version, 1, 0::bigint) OVER w AS prev_version,
           min(e.id) OVER (PARTITION BY e.student_id ORDER BY e.version DESC
                           ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS first_id_from_here
      FROM kc_flow.events e
    WINDOW w AS (PARTITION BY e.student_id ORDER BY e.version)
), bound AS (
    SELECT k.first_id_from_here - 1 AS pos FROM kept k WHERE k.version > k.prev_version + 1
    UNION ALL
    SELECT (SELECT max(e.id) FROM kc_flow.events e) FROM kc_flow.cache_versions c
     WHERE c.version > coalesce((SELECT max(e.version) FROM kc_flow.events e WHERE e.student_id = c.student_id), 0)
)
SELECT setval('kc_flow.log_floor_position', max(b.pos)) FROM bound b HAVING max(b.pos) > 0;
UPDATE kc_flow.log_rotations SET floor_pos = (SELECT last_value FROM kc_flow.log_floor_position)
 WHERE generation = 0;

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
DECLARE
    floor_pos bigint;
    head_pos bigint;
    got_rows boolean;
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
    got_rows := FOUND;
    -- after the rows: a rotation that emptied a table this snapshot still saw full has set the
    -- floor by now (read without a snapshot), so a page with a hole is never returned
    floor_pos := kc_flow.log_floor();
    IF after < floor_pos THEN
        RAISE EXCEPTION 'log position % is no longer in the event log', after USING ERRCODE = 'KC410',
            DETAIL = format('The log keeps positions above %s: older ones were removed by the rotation of the log''s ring (kc_flow.event_retention is %s).',
                            floor_pos, coalesce(current_setting('kc_flow.event_retention', true), '7d, its default')),
            HINT = 'Reload the state (student_home, flow_status), then read on from kc_flow.log_head().';
    END IF;
    -- above the head: the position was given by a log that has since been rewound (a failover
    -- that lost commits, a restored backup), and names another event or none now. Asked of an
    -- empty page only; the head is at least the floor, for a snapshot older than a rotation
    -- that copied the newest round forward does not see it
    IF NOT got_rows THEN
        head_pos := greatest(kc_flow.log_head(), floor_pos);
        IF after > head_pos THEN
            RAISE EXCEPTION 'log position % is past the end of the event log', after USING ERRCODE = 'KC410',
                DETAIL = format('The log ends at position %s: it was rewound (a failover that lost commits, or a restored backup) since the position was read.',
                                head_pos),
                HINT = 'Reload the state (student_home, flow_status), then read on from kc_flow.log_head().';
        END IF;
    END IF;
END;
$$;
COMMENT ON FUNCTION kc_flow.events_since(bigint, uuid, int) IS
    'events after a log position, in log (commit) order, of one student or (NULL) all; pos is the cursor to pass back as "after"; a position is never given below one already visible, so a reader that follows "after" misses nothing; a position below kc_flow.log_floor(), or above kc_flow.log_head() (the log was rewound since), is refused with SQLSTATE KC410 (reload the state, then read on from kc_flow.log_head())';

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
        'log_ring', (SELECT jsonb_build_object(
                         'generation', r.generation,
                         'current_seconds', extract(epoch FROM clock_timestamp() - r.rotated_at)::float8,
                         'floor', kc_flow.log_floor(),
                         'kept_events', r.kept_events, 'kept_positions', r.kept_positions,
                         'kept_marks', r.kept_marks)
                        FROM kc_flow.log_rotations r ORDER BY r.generation DESC LIMIT 1),
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
    'the pipeline and its log at a glance: queue depth, unresolved dead letters, age of the oldest open transaction whose events are still to come, committed events without a position (unsequenced) or not announced, NOTIFY queue usage, the newest position and when it was given, the log''s ring (its generation, how long its current tables have been current, the floor, and the events, positions and processed marks the last rotation copied forward); with a reader''s position, how long the oldest event it has not read has been in the log (0: none)';

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


CREATE FUNCTION kc_flow.trim_event_log(retention_s int DEFAULT NULL) RETURNS bigint
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'kcf_trim_event_log_sql';
COMMENT ON FUNCTION kc_flow.trim_event_log(int) IS
    'trims the event log now by rotating its ring by hand: each of its three tables whose events are all older than retention_s seconds (NULL: kc_flow.event_retention) is emptied in turn, the rows that stay copied forward as a rotation does (at most three rotations, each retried briefly while busy); returns kc_flow.log_floor(); call it in a short READ COMMITTED transaction of its own';
REVOKE ALL ON FUNCTION kc_flow.trim_event_log(int) FROM PUBLIC;

-- ==== storage (issue 9): the students' cache versions as insert-only rows in a ring ====
-- 0.1.0's table cache_versions (a row per student, updated by every bump) becomes the ring
-- kc_flow.student_versions (extension/version_ring.c) and a view of the same name. Its lock is
-- taken here, after the queue's and the events' (the order of a worker's batch: claim, then
-- emit). Each student's version becomes one row of the current table.
ALTER TABLE kc_flow.cache_versions RENAME TO cache_versions_010;
ALTER INDEX kc_flow.cache_versions_pkey RENAME TO cache_versions_010_pkey;

-- The students' cache versions (issue 9): insert-only rows in a ring of three tables emptied
-- by TRUNCATE (extension/version_ring.c, docs/extension.md "Cache versions"). 0.1.0 kept one
-- row per student in the table cache_versions and updated it with every bump, a dead version
-- per bump while something held the xmin horizon; cache_versions is now a view of the ring.
CREATE SEQUENCE kc_flow.version_generation AS bigint MINVALUE 0 START 0 CACHE 1;
COMMENT ON SEQUENCE kc_flow.version_generation IS
    'the generation of the cache versions'' ring (student_versions): new rows go to slot last_value % 3; each rotation truncates the next slot and advances it (extension/version_ring.c); read without a snapshot by student_version()';

CREATE FUNCTION kc_flow.version_slot() RETURNS smallint
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'kcf_version_slot';
COMMENT ON FUNCTION kc_flow.version_slot() IS
    'the slot of the cache versions'' ring that new rows go to (the default of student_versions.slot)';

CREATE TABLE kc_flow.student_versions (
    student_id uuid NOT NULL,
    version    bigint NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    slot       smallint NOT NULL DEFAULT kc_flow.version_slot()
) PARTITION BY LIST (slot);
CREATE TABLE kc_flow.student_versions_0 PARTITION OF kc_flow.student_versions (
    CONSTRAINT student_versions_0_pkey PRIMARY KEY (student_id, version)) FOR VALUES IN (0);
CREATE TABLE kc_flow.student_versions_1 PARTITION OF kc_flow.student_versions (
    CONSTRAINT student_versions_1_pkey PRIMARY KEY (student_id, version)) FOR VALUES IN (1);
CREATE TABLE kc_flow.student_versions_2 PARTITION OF kc_flow.student_versions (
    CONSTRAINT student_versions_2_pkey PRIMARY KEY (student_id, version)) FOR VALUES IN (2);
COMMENT ON TABLE kc_flow.student_versions_0 IS 'slot 0 of the cache versions'' ring (kc_flow.student_versions)';
COMMENT ON TABLE kc_flow.student_versions_1 IS 'slot 1 of the cache versions'' ring (kc_flow.student_versions)';
COMMENT ON TABLE kc_flow.student_versions_2 IS 'slot 2 of the cache versions'' ring (kc_flow.student_versions)';
COMMENT ON TABLE kc_flow.student_versions IS
    'a row per bump of a student''s cache version, in every transaction that changes what the student''s home or learning view shows (emit_event; a worker''s batch bumps once for all of a student''s events in it), under the student''s advisory lock; the version is the largest (kc_flow.student_version()); insert-only, a ring of three tables (slot), the oldest truncated once the current one has grown, each student''s largest version carried forward (extension/version_ring.c)';
COMMENT ON COLUMN kc_flow.student_versions.version IS
    'the student''s version after the bump: the previous one plus the number of the student''s events the bump''s statement wrote';
COMMENT ON COLUMN kc_flow.student_versions.slot IS
    'the table of the ring the row is in; rotation copies each student''s largest version left only in the oldest table into the current one before truncating it';

CREATE TABLE kc_flow.version_rotations (
    generation bigint PRIMARY KEY,
    rotated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    carried    bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE kc_flow.version_rotations IS
    'one row per generation of the cache versions'' ring, written by the rotation that made it current: when, and how many students'' versions it carried forward (the next rotation waits for twice as many rows); insert-only';
INSERT INTO kc_flow.version_rotations (generation) VALUES (0);

CREATE FUNCTION kc_flow.student_version(student uuid) RETURNS bigint
    LANGUAGE plpgsql STABLE
AS $$
BEGIN
    -- The ring's tables are locked (by the plan) before the generation is read. A snapshot
    -- older than the last rotation (its row is not in it, the sequence says it happened)
    -- sees the truncated table empty and the carried rows not yet written: the student's
    -- events of that snapshot carry the versions their bumps gave.
    RETURN greatest(
        (SELECT coalesce(max(v.version), 0) FROM kc_flow.student_versions v WHERE v.student_id = student),
        CASE WHEN (SELECT max(r.generation) FROM kc_flow.version_rotations r)
                  < (SELECT g.last_value FROM kc_flow.version_generation g)
             THEN (SELECT max(e.version) FROM kc_flow.events e WHERE e.student_id = student)
        END);
END
$$;
COMMENT ON FUNCTION kc_flow.student_version(uuid) IS
    'the student''s cache version in the calling snapshot (0 before its first event): the largest of the ring''s rows, and, in a snapshot older than the ring''s last rotation, of the student''s events; the read side''s "version"';

CREATE VIEW kc_flow.cache_versions AS
SELECT DISTINCT ON (v.student_id) v.student_id, v.version, v.at AS updated_at
  FROM kc_flow.student_versions v
 ORDER BY v.student_id, v.version DESC;
COMMENT ON VIEW kc_flow.cache_versions IS
    'per student, the cache version (the largest of kc_flow.student_versions) and when it was bumped; caches fence on it; a view since 0.2.0 (0.1.0 kept a row per student, updated by every bump)';

INSERT INTO kc_flow.student_versions (student_id, version, at)
SELECT student_id, version, updated_at FROM kc_flow.cache_versions_010 WHERE version > 0;
DROP TABLE kc_flow.cache_versions_010;

-- student_learning reads the version as student_home does (student_home: above)
CREATE OR REPLACE FUNCTION kc_flow.student_learning(student uuid) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
AS $$
DECLARE
    result jsonb;
BEGIN
    PERFORM kc_flow.require_student(student);
    SELECT jsonb_build_object(
        'student_id', student,
        'version', kc_flow.student_version(student),
        'courses', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                       'purchase_id', p.id, 'course_id', p.course_id, 'title', c.title,
                       'purchase_tier', p.purchase_tier, 'purchased_at', p.created_at,
                       'is_active', p.is_active,
                       'allocation', CASE WHEN a.id IS NULL THEN NULL ELSE jsonb_build_object(
                                         'id', a.id, 'status', a.status, 'trainer_id', a.trainer_id,
                                         'trainer_name', t.display_name, 'allocated_at', a.allocated_at) END,
                       'progress', jsonb_build_object(
                                       'completed', (SELECT count(*) FROM kc_flow.tutoring_sessions s
                                                      WHERE s.allocation_id = a.id AND s.status = 'completed'),
                                       'total', p.purchase_tier),
                       'next_session', (SELECT kc_flow.session_json(d) FROM kc_flow.session_details d
                                         WHERE d.allocation_id = a.id AND d.status = 'scheduled'
                                           AND d.ends_at > now()
                                         ORDER BY d.starts_at, d.id LIMIT 1),
                       'sessions', coalesce((SELECT jsonb_agg(kc_flow.session_json(d) ORDER BY d.seq)
                                               FROM kc_flow.session_details d
                                              WHERE d.allocation_id = a.id), '[]'))
                   ORDER BY p.is_active DESC, p.created_at DESC, p.id)
              FROM kc_flow.student_course_purchases p
              JOIN kc_flow.courses c ON c.id = p.course_id
              LEFT JOIN kc_flow.trainer_allocations a ON a.purchase_id = p.id
              LEFT JOIN kc_flow.trainers t ON t.id = a.trainer_id
             WHERE p.student_id = student), '[]'),
        'generated_at', now())
      INTO result;
    RETURN result;
END;
$$;

CREATE FUNCTION kc_flow.rotate_versions() RETURNS text
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'kcf_rotate_versions_sql';
COMMENT ON FUNCTION kc_flow.rotate_versions() IS
    'rotates the cache versions'' ring now if its current table holds at least kc_flow.version_rotation_rows rows and twice what the last rotation carried into it, as worker 0 and run_pending() do: ''rotated'', ''not due'' or ''busy'' (another rotation, or the oldest table''s lock not granted within 200 ms: a transaction that read the versions holds it until it ends); call it in a short transaction of its own';
REVOKE ALL ON FUNCTION kc_flow.rotate_versions() FROM PUBLIC;
-- ==== end of the cache versions (issue 9) ====

-- Payments that 0.1.0 dead-lettered because the student held the course already (23505)
-- get the PURCHASE_ALREADY_ACTIVE event 0.2.0 gives such a payment, so the student's home
-- shows them as it shows those refused after the update.
SELECT count(kc_flow.emit_event('PURCHASE_ALREADY_ACTIVE', p.id, p.student_id,
                                jsonb_build_object('payment_id', p.id, 'course_id', p.course_id,
                                                   'active_purchase_id', x.id)))
  FROM kc_flow.dead_letters d
  JOIN kc_flow.events e ON e.id = d.event_id AND e.event_type = 'PURCHASE_CONFIRMED'
  JOIN kc_flow.payments p ON p.id = e.correlation_id AND p.status = 'succeeded'
  JOIN kc_flow.student_course_purchases x
    ON x.student_id = p.student_id AND x.course_id = p.course_id AND x.is_active
 WHERE NOT d.resolved AND d.sqlstate = '23505'
   AND NOT EXISTS (SELECT 1 FROM kc_flow.student_course_purchases y WHERE y.payment_id = p.id)
   AND NOT EXISTS (SELECT 1 FROM kc_flow.events n
                    WHERE n.correlation_id = p.id AND n.event_type = 'PURCHASE_ALREADY_ACTIVE');

-- The read side changed shape (student_home gained payment_notices), so every view a
-- gateway caches or a screen shows was built by 0.1.0. One VIEWS_REFRESHED event per
-- student (correlated by the student's id) raises the student's cache version: gateways
-- invalidate the cached views, whose ETags change, through the log as for any event, and
-- each open screen is told to read again. It is one transaction with the rest of the update.
SELECT count(kc_flow.emit_event('VIEWS_REFRESHED', s.id, s.id,
                                jsonb_build_object('from_version', '0.1.0', 'to_version', '0.2.0')))
  FROM kc_flow.students s;

-- ==== storage (issue 9): the event queue as a ring of three tables ====
-- The 0.1.0 queue, one table emptied with DELETE, becomes kc_flow.event_queue partitioned
-- by slot (extension/queue_ring.c, docs/extension.md "Storage under a held horizon"). Its
-- rows are copied with their attempts and run_after; the workers wait for the lock the
-- DROP takes (the 0.2.0 library reads either queue: it rotates only when the ring exists).
ALTER TABLE kc_flow.event_queue RENAME TO event_queue_010;
ALTER INDEX kc_flow.event_queue_pkey RENAME TO event_queue_010_pkey;
ALTER INDEX kc_flow.event_queue_due RENAME TO event_queue_010_due;
ALTER TABLE kc_flow.event_queue_010 RENAME CONSTRAINT event_queue_event_id_fkey TO event_queue_010_event_id_fkey;

CREATE SEQUENCE kc_flow.event_queue_generation AS bigint MINVALUE 0 START 0 CACHE 1;
COMMENT ON SEQUENCE kc_flow.event_queue_generation IS
    'the generation of the event queue''s ring: new rows go to slot last_value % 3; each rotation truncates the next slot and advances it (extension/queue_ring.c)';

CREATE FUNCTION kc_flow.event_queue_slot() RETURNS smallint
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'kcf_event_queue_slot';
COMMENT ON FUNCTION kc_flow.event_queue_slot() IS
    'the slot of the event queue''s ring that new rows go to (the default of event_queue.slot)';

CREATE TABLE kc_flow.event_queue (
    event_id      bigint NOT NULL,
    consumer      text NOT NULL,
    attempts      int NOT NULL DEFAULT 0,
    deferrals     int NOT NULL DEFAULT 0,
    run_after     timestamptz NOT NULL DEFAULT now(),
    last_sqlstate text,
    last_error    text,
    slot          smallint NOT NULL DEFAULT kc_flow.event_queue_slot()
) PARTITION BY LIST (slot);
CREATE TABLE kc_flow.event_queue_0 PARTITION OF kc_flow.event_queue FOR VALUES IN (0);
CREATE TABLE kc_flow.event_queue_1 PARTITION OF kc_flow.event_queue FOR VALUES IN (1);
CREATE TABLE kc_flow.event_queue_2 PARTITION OF kc_flow.event_queue FOR VALUES IN (2);
CREATE INDEX event_queue_due ON kc_flow.event_queue (run_after, event_id);
CREATE INDEX event_queue_by_event ON kc_flow.event_queue (event_id);
COMMENT ON TABLE kc_flow.event_queue IS
    'work still to do: one row per event that a stage must handle, claimed with FOR UPDATE SKIP LOCKED, deleted when handled or dead-lettered; a ring of three tables (slot), the oldest truncated when the current one has grown (extension/queue_ring.c), so that dead rows do not pile up while something holds the xmin horizon';
COMMENT ON COLUMN kc_flow.event_queue.event_id IS
    'the event (kc_flow.events.id); no foreign key, since events is a ring of truncated tables: the log''s rotation keeps every queued event';
COMMENT ON COLUMN kc_flow.event_queue.slot IS
    'the table of the ring the row is in; rotation copies what is left in the oldest table into the current one before truncating it';
COMMENT ON TABLE kc_flow.event_queue_0 IS 'slot 0 of the event queue''s ring (kc_flow.event_queue)';
COMMENT ON TABLE kc_flow.event_queue_1 IS 'slot 1 of the event queue''s ring (kc_flow.event_queue)';
COMMENT ON TABLE kc_flow.event_queue_2 IS 'slot 2 of the event queue''s ring (kc_flow.event_queue)';

INSERT INTO kc_flow.event_queue (event_id, consumer, attempts, deferrals, run_after, last_sqlstate, last_error)
SELECT event_id, consumer, attempts, deferrals, run_after, last_sqlstate, last_error FROM kc_flow.event_queue_010;
DROP TABLE kc_flow.event_queue_010;

-- the ring has no unique index on event_id: a retried dead letter updates or inserts
CREATE OR REPLACE FUNCTION kc_flow.retry_dead_letter(dead_letter_id bigint) RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, kc_flow
AS $$
DECLARE
    d kc_flow.dead_letters;
BEGIN
    SELECT * INTO d FROM kc_flow.dead_letters WHERE id = dead_letter_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'dead letter % does not exist', dead_letter_id USING ERRCODE = 'no_data_found';
    END IF;
    IF d.resolved THEN
        RETURN false;
    END IF;
    UPDATE kc_flow.dead_letters SET resolved = true, resolved_at = now() WHERE id = dead_letter_id;
    -- the queue's ring has no unique index on event_id (its key includes the slot)
    UPDATE kc_flow.event_queue SET attempts = 0, run_after = now() WHERE event_id = d.event_id;
    IF NOT FOUND THEN
        INSERT INTO kc_flow.event_queue (event_id, consumer) VALUES (d.event_id, d.consumer);
    END IF;
    PERFORM kc_flow.wake_workers();
    RETURN true;
END;
$$;
COMMENT ON FUNCTION kc_flow.retry_dead_letter(bigint) IS
    'marks a dead letter resolved and queues its event again with a fresh set of attempts; false if it was already resolved';
CREATE FUNCTION kc_flow.rotate_queue() RETURNS text
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'kcf_rotate_queue_sql';
COMMENT ON FUNCTION kc_flow.rotate_queue() IS
    'rotates the event queue''s ring now if its current table is larger than kc_flow.queue_rotation_size, as worker 0 and run_pending() do: ''rotated'', ''not due'' or ''busy'' (another rotation, or the oldest table''s lock not granted within 200 ms); call it in a short transaction of its own';

-- run_pending() now sequences the log and rotates the queue's ring at its end
COMMENT ON FUNCTION kc_flow.run_pending(int) IS
    'runs due pipeline work in the calling transaction, as the background workers would: at most max_jobs events, then a round of the log sequencer and, when due, a rotation of the queue''s ring; returns how many were handled. The log head (and a rotated queue table) stay locked until the transaction ends: call it in a short READ COMMITTED transaction of its own';
REVOKE ALL ON FUNCTION kc_flow.rotate_queue() FROM PUBLIC;

-- ==== storage (issue 9): the event log as a ring of three tables ====
-- events and processed_events (0.1.0 tables, trimmed with DELETE) become rings partitioned by
-- slot like event_log and log_rounds above (extension/log_ring.c, docs/extension.md "Storage
-- under a held horizon"), with their rows. The foreign keys to events go: a TRUNCATEd table
-- cannot be referenced, and the rotation keeps every queued or dead-lettered event instead.
LOCK TABLE kc_flow.processed_events IN ACCESS EXCLUSIVE MODE;
ALTER TABLE kc_flow.dead_letters DROP CONSTRAINT dead_letters_event_id_fkey;
COMMENT ON COLUMN kc_flow.dead_letters.event_id IS
    'the event (kc_flow.events.id); no foreign key, since events is a ring of truncated tables: the log''s rotation keeps every event of a payment with an unresolved dead letter, and deletes the resolved dead letters whose event it removes';

ALTER TABLE kc_flow.events RENAME TO events_010;
ALTER INDEX kc_flow.events_pkey RENAME TO events_010_pkey;
ALTER INDEX kc_flow.events_by_student RENAME TO events_010_by_student;
ALTER INDEX kc_flow.events_by_correlation RENAME TO events_010_by_correlation;
ALTER INDEX kc_flow.events_by_txid RENAME TO events_010_by_txid;
CREATE TABLE kc_flow.events (
    id             bigint NOT NULL,
    event_type     text NOT NULL CONSTRAINT events_type_known CHECK (kc_flow.is_event_type(event_type)),
    correlation_id uuid NOT NULL,
    student_id     uuid NOT NULL,
    payload        jsonb NOT NULL DEFAULT '{}',
    version        bigint NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    txid           xid8 DEFAULT pg_current_xact_id(),
    slot           smallint NOT NULL DEFAULT kc_flow.log_slot()
) PARTITION BY LIST (slot);
CREATE TABLE kc_flow.events_0 PARTITION OF kc_flow.events (CONSTRAINT events_0_pkey PRIMARY KEY (id)) FOR VALUES IN (0);
CREATE TABLE kc_flow.events_1 PARTITION OF kc_flow.events (CONSTRAINT events_1_pkey PRIMARY KEY (id)) FOR VALUES IN (1);
CREATE TABLE kc_flow.events_2 PARTITION OF kc_flow.events (CONSTRAINT events_2_pkey PRIMARY KEY (id)) FOR VALUES IN (2);
CREATE INDEX events_by_student ON kc_flow.events (student_id, id);
CREATE INDEX events_by_correlation ON kc_flow.events (correlation_id, id);
CREATE INDEX events_by_txid ON kc_flow.events (txid);
COMMENT ON TABLE kc_flow.events_0 IS 'slot 0 of the event log''s ring: events (kc_flow.events)';
COMMENT ON TABLE kc_flow.events_1 IS 'slot 1 of the event log''s ring: events (kc_flow.events)';
COMMENT ON TABLE kc_flow.events_2 IS 'slot 2 of the event log''s ring: events (kc_flow.events)';
COMMENT ON TABLE kc_flow.events IS
    'outbox; written only by kc_flow.emit_event (ids from events_id_seq, unique: one sequence, and a primary key per table of the ring) and copied forward by the rotation, in the log (event_log) once committed, read in log order with kc_flow.events_since; a ring of three tables (slot), the oldest truncated by age (extension/log_ring.c)';
COMMENT ON COLUMN kc_flow.events.txid IS
    'the transaction that wrote the event (NULL: written before 0.2.0, in the log from the update on); the sequencer finds committed events by it';
COMMENT ON COLUMN kc_flow.events.event_type IS
    'one of the types of kc_flow.event_types(), the table in extension/event_types.c';
COMMENT ON COLUMN kc_flow.events.version IS 'the student''s cache_versions.version after this event''s transaction bumped it';
COMMENT ON COLUMN kc_flow.events.slot IS
    'the table of the log''s ring the row is in; rotation copies the events that must stay (queued, of a payment with an unresolved dead letter, not in the log yet) into the current table before truncating the oldest';

INSERT INTO kc_flow.events (id, event_type, correlation_id, student_id, payload, version, created_at, txid)
SELECT id, event_type, correlation_id, student_id, payload, version, created_at, txid FROM kc_flow.events_010;
DROP TABLE kc_flow.events_010;

ALTER TABLE kc_flow.processed_events RENAME TO processed_events_010;
ALTER INDEX kc_flow.processed_events_pkey RENAME TO processed_events_010_pkey;
CREATE TABLE kc_flow.processed_events (
    event_id     bigint NOT NULL,
    consumer     text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    slot         smallint NOT NULL DEFAULT kc_flow.log_slot()
) PARTITION BY LIST (slot);
CREATE TABLE kc_flow.processed_events_0 PARTITION OF kc_flow.processed_events (
    CONSTRAINT processed_events_0_pkey PRIMARY KEY (event_id, consumer)) FOR VALUES IN (0);
CREATE TABLE kc_flow.processed_events_1 PARTITION OF kc_flow.processed_events (
    CONSTRAINT processed_events_1_pkey PRIMARY KEY (event_id, consumer)) FOR VALUES IN (1);
CREATE TABLE kc_flow.processed_events_2 PARTITION OF kc_flow.processed_events (
    CONSTRAINT processed_events_2_pkey PRIMARY KEY (event_id, consumer)) FOR VALUES IN (2);
COMMENT ON TABLE kc_flow.processed_events_0 IS 'slot 0 of the event log''s ring: processed marks (kc_flow.processed_events)';
COMMENT ON TABLE kc_flow.processed_events_1 IS 'slot 1 of the event log''s ring: processed marks (kc_flow.processed_events)';
COMMENT ON TABLE kc_flow.processed_events_2 IS 'slot 2 of the event log''s ring: processed marks (kc_flow.processed_events)';
COMMENT ON TABLE kc_flow.processed_events IS
    'one row per stage that handled an event, written in the same transaction as the stage''s effect and the deletion of its claimed queue row (what makes a stage run once); unique per table of the log''s ring (slot), rotated with events';
COMMENT ON COLUMN kc_flow.processed_events.slot IS
    'the table of the log''s ring the row is in; rotation copies the marks of the events that stay';

INSERT INTO kc_flow.processed_events (event_id, consumer, processed_at)
SELECT event_id, consumer, processed_at FROM kc_flow.processed_events_010;
DROP TABLE kc_flow.processed_events_010;

CREATE FUNCTION kc_flow.rotate_log() RETURNS text
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'kcf_rotate_log_sql';
COMMENT ON FUNCTION kc_flow.rotate_log() IS
    'rotates the event log''s ring now if its current tables have been current for half of kc_flow.event_retention, as worker 0 and run_pending() do: ''rotated'', ''not due'' or ''busy'' (another rotation, the first oldest table''s lock not granted within 200 ms, or another one or the log head not free at once); call it in a short transaction of its own';
REVOKE ALL ON FUNCTION kc_flow.rotate_log() FROM PUBLIC;
-- ==== end of storage (issue 9) ====

-- ==== the plan: each weekday's dates computed, not the calendar walked (issue 10) ====
CREATE OR REPLACE FUNCTION kc_flow.plan_sessions(slot jsonb, sessions int, session_minutes int, reference timestamptz)
    RETURNS TABLE (seq int, local_date date, local_time time, starts_at timestamptz, ends_at timestamptz)
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    -- each weekday's first date from first_day on, then every 7 days: sessions dates per weekday
    -- at most, of which the first sessions in date order (the same dates as walking the
    -- calendar day by day, without the ~7 rows and the isodow per session that cost)
    WITH s AS (
        SELECT (slot->>'start')::time AS t,
               slot->>'timezone' AS tz,
               coalesce((slot->>'starts_on')::date,
                        (reference AT TIME ZONE (slot->>'timezone'))::date + 1) AS first_day)
    SELECT (row_number() OVER (ORDER BY x.d))::int,
           x.d,
           s.t,
           (x.d + s.t) AT TIME ZONE s.tz,
           ((x.d + s.t) AT TIME ZONE s.tz) + make_interval(mins => session_minutes)
      FROM s,
           LATERAL (SELECT DISTINCT w.w::int AS w FROM jsonb_array_elements_text(slot->'weekdays') AS w(w)
                     WHERE w.w::int BETWEEN 1 AND 7) wd,
           LATERAL (SELECT s.first_day + (wd.w - extract(isodow FROM s.first_day)::int + 7) % 7 + 7 * k AS d
                      FROM pg_catalog.generate_series(0, sessions - 1) AS k) x
     ORDER BY x.d
     LIMIT sessions
$$;
-- ==== end of the plan ====

-- ==== a trainer's load without updating its row (issue 9) ====
-- trainers.active_students was updated by every allocation that started or stopped holding a
-- place: under a held xmin horizon each update left a version of the trainer that could not go.
-- The load is now the count of the trainer's approved and active allocations, which the
-- allocation stage ranks by from a hint in shared memory and checks exactly under the trainer's
-- lock (extension/trainer_load.c, docs/extension.md "Allocation").
DROP TRIGGER allocations_count_load ON kc_flow.trainer_allocations;
DROP FUNCTION kc_flow.count_trainer_load();
ALTER TABLE kc_flow.trainers DROP COLUMN active_students;
COMMENT ON TABLE kc_flow.trainers IS
    'tutors; an allocation needs a free place: fewer than max_active_students approved and active allocations (kc_flow.trainer_load)';

CREATE FUNCTION kc_flow.trainer_load(trainer_id uuid) RETURNS int
    LANGUAGE c VOLATILE STRICT
    AS 'MODULE_PATHNAME', 'kcf_trainer_load_sql';
COMMENT ON FUNCTION kc_flow.trainer_load(uuid) IS
    'the trainer''s approved and active allocations (its load, below max_active_students while it has a free place): when kc_flow is preloaded the latest committed load from shared memory plus this transaction''s own changes, else counted';

CREATE FUNCTION kc_flow.trainer_loads(trainer_ids uuid[]) RETURNS int[]
    LANGUAGE c VOLATILE STRICT
    AS 'MODULE_PATHNAME', 'kcf_trainer_loads_sql';
COMMENT ON FUNCTION kc_flow.trainer_loads(uuid[]) IS
    'kc_flow.trainer_load() of each trainer of the array, in the same order, in one call: what the allocation search ranks by';

CREATE FUNCTION kc_flow.note_trainer_load() RETURNS trigger
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'kcf_note_trainer_load';
COMMENT ON FUNCTION kc_flow.note_trainer_load() IS
    'row trigger of trainer_allocations: notes each change of a trainer''s load, applied to kc_flow.trainer_load()''s shared memory once the transaction commits';

CREATE FUNCTION kc_flow.forget_trainer_loads() RETURNS trigger
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'kcf_forget_trainer_loads';
COMMENT ON FUNCTION kc_flow.forget_trainer_loads() IS
    'TRUNCATE trigger of trainer_allocations: the loads kept in shared memory are counted again once the transaction commits';

CREATE TRIGGER allocations_note_load AFTER INSERT OR UPDATE OF status, trainer_id OR DELETE ON kc_flow.trainer_allocations
    FOR EACH ROW EXECUTE FUNCTION kc_flow.note_trainer_load();
CREATE TRIGGER allocations_truncated AFTER TRUNCATE ON kc_flow.trainer_allocations
    FOR EACH STATEMENT EXECUTE FUNCTION kc_flow.forget_trainer_loads();

-- the allocation search keeps each course's roster until trainers or their courses change
CREATE FUNCTION kc_flow.note_roster_change() RETURNS trigger
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'kcf_note_roster_change';
COMMENT ON FUNCTION kc_flow.note_roster_change() IS
    'statement trigger on trainers and trainer_courses: the allocation search reads the courses'' trainers again';
CREATE TRIGGER trainers_roster_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON kc_flow.trainers
    FOR EACH STATEMENT EXECUTE FUNCTION kc_flow.note_roster_change();
CREATE TRIGGER trainer_courses_roster_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON kc_flow.trainer_courses
    FOR EACH STATEMENT EXECUTE FUNCTION kc_flow.note_roster_change();



-- ==== storage (issue 9): a payment's status changes insert rows, they rewrite none ====
-- 0.1.0's payments table becomes payment_orders (its terms; names of its constraints and
-- indexes kept, as its errors report them), its status becomes rows of payment_outcomes,
-- and kc_flow.payments a view of both with 0.1.0's columns, written through its INSTEAD
-- OF trigger (docs/extension.md, "Payments: a status change inserts a row").  The
-- outcomes are copied before the trigger that emits their events exists: they emitted
-- theirs under 0.1.0.
DROP TRIGGER payments_check ON kc_flow.payments;
DROP TRIGGER payments_emit ON kc_flow.payments;
DROP FUNCTION kc_flow.payments_check();
ALTER TABLE kc_flow.payments RENAME TO payment_orders;
COMMENT ON TABLE kc_flow.payment_orders IS
    'the terms of each payment (kc_flow.payments shows them with their status); updated in place only while the payment is pending (terms) or for its metadata, never by a change of status';
COMMENT ON COLUMN kc_flow.payment_orders.updated_at IS
    'when the terms or metadata last changed; kc_flow.payments.updated_at is the later of this and the last outcome';

CREATE TABLE kc_flow.payment_outcomes (
    payment_id  uuid NOT NULL
                CONSTRAINT payment_outcomes_payment_id_fkey REFERENCES kc_flow.payment_orders ON DELETE CASCADE,
    outcome     text NOT NULL
                CONSTRAINT payment_outcomes_outcome_known CHECK (outcome IN ('succeeded', 'failed', 'refunded')),
    occurred_at timestamptz NOT NULL DEFAULT now(),
    follows     text GENERATED ALWAYS AS (CASE WHEN outcome = 'refunded' THEN 'succeeded' END) STORED,
    CONSTRAINT payment_outcomes_pkey PRIMARY KEY (payment_id, outcome),
    CONSTRAINT payment_outcomes_refund_needs_success FOREIGN KEY (payment_id, follows)
        REFERENCES kc_flow.payment_outcomes (payment_id, outcome) ON DELETE CASCADE
);
-- the hard guarantee under concurrency: of two sessions settling one payment, the
-- second waits for the first and then finds its row here
CREATE UNIQUE INDEX payment_outcomes_settled_once ON kc_flow.payment_outcomes (payment_id)
    WHERE outcome IN ('succeeded', 'failed');
COMMENT ON TABLE kc_flow.payment_outcomes IS
    'the status changes of each payment, insert-only: no row is pending, succeeded or failed settles it (one of the two, once), refunded follows succeeded; a succeeded or refunded row emits its event';
COMMENT ON COLUMN kc_flow.payment_outcomes.follows IS
    'the outcome this one requires before it (succeeded for refunded), enforced by payment_outcomes_refund_needs_success';

INSERT INTO kc_flow.payment_outcomes (payment_id, outcome, occurred_at)
SELECT id, 'succeeded', coalesce(succeeded_at, updated_at) FROM kc_flow.payment_orders
 WHERE status IN ('succeeded', 'refunded');
INSERT INTO kc_flow.payment_outcomes (payment_id, outcome, occurred_at)
SELECT id, status, updated_at FROM kc_flow.payment_orders WHERE status IN ('failed', 'refunded');
ALTER TABLE kc_flow.payment_orders DROP COLUMN status, DROP COLUMN succeeded_at;

-- A payment as one row, as 0.1.0's table was: its order, and its status derived from
-- its outcomes.  Only the order is in FROM, so SELECT ... FOR UPDATE [SKIP LOCKED] on
-- the view locks the order's row, and a reader that does not ask for the status pays
-- nothing for it.  The status is the alphabetically first outcome: failed, refunded
-- (beside succeeded), succeeded.  The three derived columns are functions in C
-- (extension/payments_status.c), each one probe of payment_outcomes_pkey in the
-- statement's snapshot, as correlated subqueries were: a function call costs the
-- planner nothing, where the subqueries were most of the time an UPDATE of the view
-- (planned at every call with the simple protocol) spent in planning.
CREATE FUNCTION kc_flow.payment_status(payment uuid) RETURNS text
    LANGUAGE c STABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'kcf_payment_status';
COMMENT ON FUNCTION kc_flow.payment_status(uuid) IS
    'the payment''s status as kc_flow.payments shows it: its first outcome in order (failed, refunded, succeeded), pending when it has none';

CREATE FUNCTION kc_flow.payment_updated_at(payment uuid, order_updated_at timestamptz) RETURNS timestamptz
    LANGUAGE c STABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'kcf_payment_updated_at';
COMMENT ON FUNCTION kc_flow.payment_updated_at(uuid, timestamptz) IS
    'kc_flow.payments.updated_at: the later of the order''s updated_at and the payment''s last outcome';

CREATE FUNCTION kc_flow.payment_succeeded_at(payment uuid) RETURNS timestamptz
    LANGUAGE c STABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'kcf_payment_succeeded_at';
COMMENT ON FUNCTION kc_flow.payment_succeeded_at(uuid) IS
    'kc_flow.payments.succeeded_at: when the payment''s succeeded outcome was recorded, NULL without one';

CREATE VIEW kc_flow.payments AS
SELECT o.id, o.student_id, o.course_id, o.amount_cents, o.currency,
       kc_flow.payment_status(o.id) AS status,
       o.purchase_tier, o.time_slot, o.metadata, o.created_at,
       kc_flow.payment_updated_at(o.id, o.updated_at) AS updated_at,
       kc_flow.payment_succeeded_at(o.id) AS succeeded_at
  FROM kc_flow.payment_orders o;
ALTER VIEW kc_flow.payments ALTER COLUMN id SET DEFAULT gen_random_uuid();
ALTER VIEW kc_flow.payments ALTER COLUMN currency SET DEFAULT 'USD';
ALTER VIEW kc_flow.payments ALTER COLUMN status SET DEFAULT 'pending';
ALTER VIEW kc_flow.payments ALTER COLUMN metadata SET DEFAULT '{}';
ALTER VIEW kc_flow.payments ALTER COLUMN created_at SET DEFAULT now();
ALTER VIEW kc_flow.payments ALTER COLUMN updated_at SET DEFAULT now();
COMMENT ON VIEW kc_flow.payments IS
    'payments as reported by the payment provider; status moves pending->succeeded|failed, succeeded->refunded; becoming succeeded emits PURCHASE_CONFIRMED; written through its INSTEAD OF trigger into payment_orders and payment_outcomes';

-- Records a change of status after checking it against the payment's current
-- status; the caller holds the lock of the payment's order.
CREATE FUNCTION kc_flow.record_outcome(payment uuid, current text, target text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, kc_flow
AS $$
BEGIN
    IF NOT ((current = 'pending' AND target IN ('succeeded', 'failed'))
            OR (current = 'succeeded' AND target = 'refunded')) THEN
        RAISE EXCEPTION 'payment % cannot go from % to %', payment, current, target
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_status_transition',
                  DETAIL = 'Allowed: pending->succeeded, pending->failed, succeeded->refunded.';
    END IF;
    IF current_setting('transaction_isolation') = 'read committed' THEN
        INSERT INTO kc_flow.payment_outcomes (payment_id, outcome) VALUES (payment, target);
        RETURN;
    END IF;
    -- a transaction snapshot may miss an outcome committed while the lock was awaited:
    -- the indexes refuse it, reported as an UPDATE of a row changed meanwhile would be
    BEGIN
        INSERT INTO kc_flow.payment_outcomes (payment_id, outcome) VALUES (payment, target);
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'could not serialize access due to concurrent update'
            USING ERRCODE = 'serialization_failure',
                  DETAIL = format('Payment %s got an outcome after this transaction''s snapshot.', payment);
    END;
END;
$$;
COMMENT ON FUNCTION kc_flow.record_outcome(uuid, text, text) IS
    'inserts a payment''s next outcome if current->target is pending->succeeded|failed or succeeded->refunded (23514 otherwise); 40001 when a transaction snapshot missed a concurrent outcome';

-- Writes kc_flow.payments: the checks of 0.1.0's BEFORE trigger, with its errors, then
-- the order (insert, or update of terms and metadata) and an outcome per status change.
-- Called by the view's trigger payments_write() (extension/payments_write.c) for every
-- write but an INSERT that passes every check below and a status-only UPDATE the rules
-- allow in a READ COMMITTED transaction, which it writes itself.
CREATE FUNCTION kc_flow.payments_write_rules() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, kc_flow
AS $$
DECLARE
    ord     kc_flow.payment_orders;
    changed kc_flow.payment_orders;
    cur     record;
    settles boolean;
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM kc_flow.payment_orders WHERE id = OLD.id;
        RETURN CASE WHEN FOUND THEN OLD END;
    END IF;

    IF TG_OP = 'INSERT' THEN
        IF NEW.student_id IS NULL OR NEW.course_id IS NULL THEN
            RAISE EXCEPTION 'a payment needs a student and a course'
                USING ERRCODE = 'not_null_violation',
                      DETAIL = format('Got student %s, course %s.',
                                      coalesce(NEW.student_id::text, 'NULL'), coalesce(NEW.course_id::text, 'NULL'));
        END IF;
        IF NOT EXISTS (SELECT 1 FROM kc_flow.students WHERE id = NEW.student_id) THEN
            RAISE EXCEPTION 'student % does not exist', NEW.student_id
                USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'payments_student_id_fkey';
        END IF;
        IF NOT EXISTS (SELECT 1 FROM kc_flow.courses WHERE id = NEW.course_id) THEN
            RAISE EXCEPTION 'course % does not exist', NEW.course_id
                USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'payments_course_id_fkey';
        END IF;
        IF NOT (SELECT is_published FROM kc_flow.courses WHERE id = NEW.course_id) THEN
            RAISE EXCEPTION 'course % is not published', NEW.course_id
                USING ERRCODE = 'check_violation',
                      HINT = 'Only published courses can be paid for.';
        END IF;
        IF NEW.purchase_tier IS NULL OR NEW.purchase_tier NOT IN (10, 20, 30) THEN
            RAISE EXCEPTION 'purchase tier must be 10, 20 or 30 sessions'
                USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_tier_is_10_20_30',
                      DETAIL = format('Got %s.', coalesce(NEW.purchase_tier::text, 'NULL'));
        END IF;
        IF NEW.amount_cents IS NULL OR NEW.amount_cents < 0 THEN
            RAISE EXCEPTION 'amount_cents must be zero or more'
                USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_amount_not_negative',
                      DETAIL = format('Got %s.', coalesce(NEW.amount_cents::text, 'NULL'));
        END IF;
        IF NEW.currency IS NULL OR NEW.currency !~ '^[A-Z]{3}$' THEN
            RAISE EXCEPTION 'currency must be an ISO 4217 code of three capital letters'
                USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_currency_is_iso4217',
                      DETAIL = format('Got %s.', coalesce(NEW.currency, 'NULL'));
        END IF;
        IF NEW.status NOT IN ('pending', 'succeeded', 'failed') THEN
            RAISE EXCEPTION 'a new payment cannot be %', NEW.status
                USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_status_transition',
                      HINT = 'Insert it as pending, succeeded or failed.';
        END IF;
        PERFORM kc_flow.validate_time_slot(NEW.time_slot);
        IF NEW.status IS NULL THEN
            RAISE EXCEPTION 'null value in column "status" of relation "payments" violates not-null constraint'
                USING ERRCODE = 'not_null_violation', SCHEMA = 'kc_flow', TABLE = 'payments', COLUMN = 'status';
        END IF;
        IF NEW.succeeded_at IS NOT NULL AND NEW.status <> 'succeeded' THEN
            RAISE EXCEPTION 'column "succeeded_at" of kc_flow.payments can only be set by a status change'
                USING ERRCODE = 'generated_always',
                      DETAIL = 'It is the time the payment became succeeded.';
        END IF;
        INSERT INTO kc_flow.payment_orders (id, student_id, course_id, amount_cents, currency, purchase_tier,
                                            time_slot, metadata, created_at, updated_at)
        VALUES (NEW.id, NEW.student_id, NEW.course_id, NEW.amount_cents, NEW.currency, NEW.purchase_tier,
                NEW.time_slot, NEW.metadata, NEW.created_at, NEW.updated_at);
        IF NEW.status <> 'pending' THEN
            INSERT INTO kc_flow.payment_outcomes (payment_id, outcome) VALUES (NEW.id, NEW.status);
            NEW.updated_at := greatest(NEW.updated_at, now());
        END IF;
        NEW.succeeded_at := CASE WHEN NEW.status = 'succeeded' THEN now() END;
        RETURN NEW;
    END IF;

    -- UPDATE: the order's row lock stands for the lock an UPDATE of 0.1.0's row took (it
    -- writes no version); status and terms are read after it, so a session that waited
    -- for another's change sees that change, as an UPDATE that re-reads its row does
    SELECT * INTO ord FROM kc_flow.payment_orders WHERE id = OLD.id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT coalesce(min(x.outcome), 'pending') AS status,
           max(x.occurred_at) FILTER (WHERE x.outcome = 'succeeded') AS succeeded_at,
           max(x.occurred_at) AS changed_at
      INTO cur FROM kc_flow.payment_outcomes x WHERE x.payment_id = OLD.id;
    -- the common statement sets the status alone (a confirmation, a failure, a refund):
    -- the order keeps its terms and row, so the result is what the steps below would give
    -- for it, in one comparison and one assignment
    IF (NEW.id, NEW.student_id, NEW.course_id, NEW.amount_cents, NEW.currency, NEW.purchase_tier,
        NEW.time_slot, NEW.metadata, NEW.created_at, NEW.succeeded_at)
       IS NOT DISTINCT FROM
       (OLD.id, OLD.student_id, OLD.course_id, OLD.amount_cents, OLD.currency, OLD.purchase_tier,
        OLD.time_slot, OLD.metadata, OLD.created_at, OLD.succeeded_at)
    THEN
        settles := NEW.status IS DISTINCT FROM OLD.status AND NEW.status IS DISTINCT FROM cur.status;
        IF settles THEN
            PERFORM kc_flow.record_outcome(ord.id, cur.status, NEW.status);
        END IF;
        NEW := ROW(ord.id, ord.student_id, ord.course_id, ord.amount_cents, ord.currency,
                   CASE WHEN settles THEN NEW.status ELSE cur.status END,
                   ord.purchase_tier, ord.time_slot, ord.metadata, ord.created_at,
                   CASE WHEN settles THEN now() ELSE greatest(ord.updated_at, cur.changed_at) END,
                   CASE WHEN settles AND NEW.status = 'succeeded' THEN now() ELSE cur.succeeded_at END);
        RETURN NEW;
    END IF;

    IF NEW.succeeded_at IS DISTINCT FROM OLD.succeeded_at THEN
        RAISE EXCEPTION 'column "succeeded_at" of kc_flow.payments can only be set by a status change'
            USING ERRCODE = 'generated_always',
                  DETAIL = 'It is the time the payment became succeeded.';
    END IF;

    -- the columns this statement sets take its values, the others keep the current ones
    changed := ord;
    IF NEW.id IS DISTINCT FROM OLD.id THEN changed.id := NEW.id; END IF;
    IF NEW.student_id IS DISTINCT FROM OLD.student_id THEN changed.student_id := NEW.student_id; END IF;
    IF NEW.course_id IS DISTINCT FROM OLD.course_id THEN changed.course_id := NEW.course_id; END IF;
    IF NEW.amount_cents IS DISTINCT FROM OLD.amount_cents THEN changed.amount_cents := NEW.amount_cents; END IF;
    IF NEW.currency IS DISTINCT FROM OLD.currency THEN changed.currency := NEW.currency; END IF;
    IF NEW.purchase_tier IS DISTINCT FROM OLD.purchase_tier THEN changed.purchase_tier := NEW.purchase_tier; END IF;
    IF NEW.time_slot IS DISTINCT FROM OLD.time_slot THEN changed.time_slot := NEW.time_slot; END IF;
    IF NEW.metadata IS DISTINCT FROM OLD.metadata THEN changed.metadata := NEW.metadata; END IF;
    IF NEW.created_at IS DISTINCT FROM OLD.created_at THEN changed.created_at := NEW.created_at; END IF;

    IF (changed.student_id, changed.course_id, changed.purchase_tier, changed.time_slot, changed.amount_cents,
        changed.currency)
       IS DISTINCT FROM
       (ord.student_id, ord.course_id, ord.purchase_tier, ord.time_slot, ord.amount_cents, ord.currency)
    THEN
        IF cur.status <> 'pending' THEN
            RAISE EXCEPTION 'payment % is %, its terms can no longer change', OLD.id, cur.status
                USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_terms_frozen',
                      HINT = 'Only status and metadata of a settled payment may be updated.';
        END IF;
        PERFORM kc_flow.validate_time_slot(changed.time_slot);
    END IF;

    settles := NEW.status IS DISTINCT FROM OLD.status AND NEW.status IS DISTINCT FROM cur.status;
    IF changed IS DISTINCT FROM ord THEN
        changed.updated_at := now();
        UPDATE kc_flow.payment_orders
           SET id = changed.id, student_id = changed.student_id, course_id = changed.course_id,
               amount_cents = changed.amount_cents, currency = changed.currency,
               purchase_tier = changed.purchase_tier, time_slot = changed.time_slot,
               metadata = changed.metadata, created_at = changed.created_at, updated_at = changed.updated_at
         WHERE id = OLD.id;
    END IF;
    IF settles THEN
        PERFORM kc_flow.record_outcome(changed.id, cur.status, NEW.status);
    END IF;

    NEW.id := changed.id;
    NEW.student_id := changed.student_id;
    NEW.course_id := changed.course_id;
    NEW.amount_cents := changed.amount_cents;
    NEW.currency := changed.currency;
    NEW.purchase_tier := changed.purchase_tier;
    NEW.time_slot := changed.time_slot;
    NEW.metadata := changed.metadata;
    NEW.created_at := changed.created_at;
    NEW.status := CASE WHEN settles THEN NEW.status ELSE cur.status END;
    NEW.succeeded_at := CASE WHEN settles AND NEW.status = 'succeeded' THEN now() ELSE cur.succeeded_at END;
    NEW.updated_at := CASE WHEN settles THEN now() ELSE greatest(changed.updated_at, cur.changed_at) END;
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION kc_flow.payments_write_rules() IS
    'the payments view''s writes as rules, called by its trigger payments_write(): 0.1.0''s checks and errors (unknown or unpublished courses, bad slots, frozen terms, illegal status changes), then the order and one outcome per status change';

CREATE FUNCTION kc_flow.payments_write() RETURNS trigger
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'kcf_payments_write';
COMMENT ON FUNCTION kc_flow.payments_write() IS
    'INSTEAD OF trigger of the payments view: an INSERT that passes every check, and a status-only UPDATE the rules allow in READ COMMITTED (the order locked, the outcome inserted), written with plans kept per backend; every other write goes to payments_write_rules(), whose errors are the only ones raised';

CREATE TRIGGER payments_write INSTEAD OF INSERT OR UPDATE OR DELETE ON kc_flow.payments
    FOR EACH ROW EXECUTE FUNCTION kc_flow.payments_write();

-- Emits PURCHASE_CONFIRMED / PURCHASE_REFUNDED in the payment's own transaction: C
-- (extension/payments_emit.c), one statement prepared once per backend.
CREATE OR REPLACE FUNCTION kc_flow.payments_emit() RETURNS trigger
    LANGUAGE c SECURITY DEFINER
    AS 'MODULE_PATHNAME', 'kcf_payments_emit';
COMMENT ON FUNCTION kc_flow.payments_emit() IS
    'AFTER trigger of payment_outcomes: a payment becoming succeeded (or refunded) emits its event in the same transaction';

CREATE TRIGGER payments_emit AFTER INSERT ON kc_flow.payment_outcomes
    FOR EACH ROW WHEN (NEW.outcome IN ('succeeded', 'refunded')) EXECUTE FUNCTION kc_flow.payments_emit();

-- C (extension/payments_confirm.c): the order's row lock serializes a payment's confirmations,
-- the status is read after it, then the outcome; any status but pending, or any isolation
-- but READ COMMITTED, goes to record_outcome(), whose errors are the only ones raised.
CREATE OR REPLACE FUNCTION kc_flow.confirm_payment(payment uuid) RETURNS bigint
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'kcf_confirm_payment';
COMMENT ON FUNCTION kc_flow.confirm_payment(uuid) IS
    'marks a pending payment succeeded (an outcome row), which emits PURCHASE_CONFIRMED; returns that event id, or NULL when it was already succeeded';
