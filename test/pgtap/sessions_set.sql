-- pgTAP: the sessions stage runs for all the allocations of a batch at once; when one of them
-- fails, the set is rolled back and each runs on its own, so only the failing event is
-- dead-lettered and the others keep their sessions (extension/dispatch.c, run_sessions_set).
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(10);
SET LOCAL kc_flow.retry_base_ms = 0;

INSERT INTO kc_flow.courses (id, title, session_minutes, is_published)
VALUES ('00000000-0000-0000-0000-0000000c5e70', 'Go', 45, true);
INSERT INTO kc_flow.trainers (id, display_name, timezone, max_active_students)
SELECT ('00000000-0000-0000-0000-0000000d5e0' || i)::uuid, 'Trainer ' || i, 'Europe/Berlin', 5
  FROM generate_series(1, 3) i;
INSERT INTO kc_flow.trainer_courses
SELECT id, '00000000-0000-0000-0000-0000000c5e70' FROM kc_flow.trainers WHERE display_name LIKE 'Trainer %';
INSERT INTO kc_flow.trainer_availability (trainer_id, weekday, start_time, end_time)
SELECT t.id, d, '08:00', '20:00' FROM kc_flow.trainers t, generate_series(1, 7) d WHERE t.display_name LIKE 'Trainer %';
INSERT INTO kc_flow.students (id, display_name, timezone)
SELECT ('00000000-0000-0000-0000-0000000a5e0' || i)::uuid, 'Student ' || i, 'Europe/Berlin'
  FROM generate_series(1, 3) i;

-- student 2's sessions cannot be inserted (a check of the kind a rule raises, class 23: permanent)
CREATE FUNCTION pg_temp.refuse_student_2() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.student_id = '00000000-0000-0000-0000-0000000a5e02' THEN
        RAISE EXCEPTION 'no sessions for student 2' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_student_2 BEFORE INSERT ON kc_flow.tutoring_sessions
    FOR EACH ROW EXECUTE FUNCTION pg_temp.refuse_student_2();

INSERT INTO kc_flow.payments (student_id, course_id, purchase_tier, time_slot, amount_cents, status)
-- student 3 buys 20 sessions: the set's allocations differ in their plans' lengths
SELECT s.id, '00000000-0000-0000-0000-0000000c5e70', CASE right(s.id::text, 1) WHEN '3' THEN 20 ELSE 10 END,
       jsonb_build_object('weekdays', jsonb_build_array(right(s.id::text, 1)::int), 'start', '10:00',
                          'timezone', 'Europe/Berlin', 'starts_on', '2031-01-01'), 100, 'succeeded'
  FROM kc_flow.students s WHERE s.display_name LIKE 'Student %';

SELECT is(kc_flow.run_pending(1000), 9, 'one batch handled 3 purchases, 3 allocations, 3 session generations');
SELECT is((SELECT count(*) FROM kc_flow.trainer_allocations
            WHERE course_id = '00000000-0000-0000-0000-0000000c5e70' AND status = 'approved'), 3::bigint,
          'the three allocations are approved');
SELECT is((SELECT array_agg(s.student_id::text || ':' || s.n ORDER BY s.student_id)
             FROM (SELECT student_id, count(*) AS n FROM kc_flow.tutoring_sessions
                    WHERE course_id = '00000000-0000-0000-0000-0000000c5e70' GROUP BY student_id) s),
          ARRAY['00000000-0000-0000-0000-0000000a5e01:10', '00000000-0000-0000-0000-0000000a5e03:20'],
          'the two other students have their ten and twenty sessions');
SELECT is((SELECT array_agg(e.student_id::text ORDER BY e.student_id) FROM kc_flow.events e
            WHERE e.event_type = 'SESSIONS_GENERATED'
              AND e.student_id::text LIKE '00000000-0000-0000-0000-0000000a5e0%'),
          ARRAY['00000000-0000-0000-0000-0000000a5e01', '00000000-0000-0000-0000-0000000a5e03'],
          'SESSIONS_GENERATED for those two only');
SELECT is((SELECT array_agg(format('%s %s %s-%s of %s', e.student_id = a.student_id AND e.payload->>'purchase_id' = a.purchase_id::text,
                                   e.payload->>'count', e.payload->>'first_seq', e.payload->>'last_seq',
                                   e.payload->>'total') ORDER BY e.student_id)
             FROM kc_flow.events e JOIN kc_flow.trainer_allocations a ON a.id = (e.payload->>'allocation_id')::uuid
            WHERE e.event_type = 'SESSIONS_GENERATED'
              AND e.student_id::text LIKE '00000000-0000-0000-0000-0000000a5e0%'),
          ARRAY['t 10 1-10 of 10', 't 20 1-20 of 20'],
          'each SESSIONS_GENERATED of the set says its own allocation''s sessions and its plan''s length');
SELECT is((SELECT d.consumer || ' ' || d.sqlstate || ' ' || d.attempts FROM kc_flow.dead_letters d
             JOIN kc_flow.events e ON e.id = d.event_id
            WHERE e.student_id = '00000000-0000-0000-0000-0000000a5e02' AND NOT d.resolved),
          'sessions 23514 1', 'student 2''s TRAINER_ALLOCATED is dead-lettered alone, at its first attempt');
SELECT is((SELECT count(*) FROM kc_flow.processed_events p JOIN kc_flow.events e ON e.id = p.event_id
            WHERE p.consumer = 'sessions' AND e.student_id::text LIKE '00000000-0000-0000-0000-0000000a5e0%'),
          2::bigint, 'the two handled events are marked, the dead-lettered one is not');

DROP TRIGGER refuse_student_2 ON kc_flow.tutoring_sessions;
SELECT ok(kc_flow.retry_dead_letter((SELECT d.id FROM kc_flow.dead_letters d JOIN kc_flow.events e ON e.id = d.event_id
                                      WHERE e.student_id = '00000000-0000-0000-0000-0000000a5e02')),
          'the dead letter goes back to the queue');
SELECT is(kc_flow.run_pending(1000), 1, 'its retry is handled');
SELECT is((SELECT count(*) FROM kc_flow.tutoring_sessions WHERE student_id = '00000000-0000-0000-0000-0000000a5e02'),
          10::bigint, 'on its own, from the plan computed again, it gets its ten sessions');

SELECT * FROM finish();
ROLLBACK;
