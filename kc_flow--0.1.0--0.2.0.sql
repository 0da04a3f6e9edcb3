-- kc_flow--0.1.0--0.2.0.sql: ALTER EXTENSION kc_flow UPDATE from 0.1.0 to 0.2.0.
--
-- Every schema change of 0.2.0, so that an upgraded database equals a fresh
-- 0.2.0 install (test/suites/27_upgrade.sh compares their pg_dump).  Install
-- the 0.2.0 library first: it runs the 0.1.0 objects unchanged until this
-- script has run (README.md, "Upgrading").  kc_flow--0.1.0.sql is the 0.1.0
-- install script as it was released, unchanged.

\echo Use "ALTER EXTENSION kc_flow UPDATE TO '0.2.0'" to load this file. \quit

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
