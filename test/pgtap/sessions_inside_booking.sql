-- pgTAP: every scheduled session lies inside its own allocation's booking
-- (extension/schema/15_session_bookings.sql), so a trainer's sessions cannot overlap: bookings
-- cannot.  A session outside its booking is refused however it gets there (inserted, moved, set
-- back to scheduled), so is a booking deleted or shrunk under a scheduled session, and the
-- refund, which cancels the future sessions and gives up their times in one statement, works.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(21);
SET LOCAL kc_flow.retry_base_ms = 0;

-- one trainer, two students on different weekdays: both allocations book the same trainer
INSERT INTO kc_flow.courses (id, title, session_minutes, is_published)
VALUES ('00000000-0000-0000-0000-0000000c1b01', 'Booked', 60, true);
INSERT INTO kc_flow.trainers (id, display_name, timezone, max_active_students)
VALUES ('00000000-0000-0000-0000-0000000d1b01', 'Only trainer', 'UTC', 5);
INSERT INTO kc_flow.trainer_courses VALUES ('00000000-0000-0000-0000-0000000d1b01', '00000000-0000-0000-0000-0000000c1b01');
INSERT INTO kc_flow.trainer_availability (trainer_id, weekday, start_time, end_time)
SELECT '00000000-0000-0000-0000-0000000d1b01', d, '00:00', '24:00' FROM generate_series(1, 7) d;
INSERT INTO kc_flow.students (id, display_name, timezone)
SELECT ('00000000-0000-0000-0000-0000000a1b0' || i)::uuid, 'Booked student ' || i, 'UTC' FROM generate_series(1, 3) i;
-- students 1 and 2 from 2031 on Mondays and Tuesdays; student 3 every day from two weeks ago
INSERT INTO kc_flow.payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status)
VALUES ('00000000-0000-0000-0000-0000000b1b01', '00000000-0000-0000-0000-0000000a1b01', '00000000-0000-0000-0000-0000000c1b01', 10,
        '{"weekdays":[1],"start":"10:00","timezone":"UTC","starts_on":"2031-01-01"}', 100, 'succeeded'),
       ('00000000-0000-0000-0000-0000000b1b02', '00000000-0000-0000-0000-0000000a1b02', '00000000-0000-0000-0000-0000000c1b01', 10,
        '{"weekdays":[2],"start":"10:00","timezone":"UTC","starts_on":"2031-01-01"}', 100, 'succeeded'),
       ('00000000-0000-0000-0000-0000000b1b03', '00000000-0000-0000-0000-0000000a1b03', '00000000-0000-0000-0000-0000000c1b01', 30,
        jsonb_build_object('weekdays', '[1,2,3,4,5,6,7]'::jsonb, 'start', '03:00', 'timezone', 'UTC',
                           'starts_on', current_date - 14), 100, 'succeeded');
SELECT is(kc_flow.run_pending(1000), 9, 'three purchases, their allocations and sessions handled');
SELECT is((SELECT count(*) FROM kc_flow.tutoring_sessions WHERE course_id = '00000000-0000-0000-0000-0000000c1b01'),
          50::bigint, 'the three allocations on the one trainer have their 10, 10 and 30 sessions');

-- the error a statement raises: sqlstate, constraint, and whether message, detail and hint are set
CREATE FUNCTION pg_temp.error_of(statement text) RETURNS text
    LANGUAGE plpgsql AS $$
DECLARE
    state text; cons text; msg text; detail text; hint text;
BEGIN
    EXECUTE statement;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, cons = CONSTRAINT_NAME, msg = MESSAGE_TEXT,
                            detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    RETURN concat_ws(' ', state, cons, msg <> '', detail <> '', hint <> '');
END $$;
CREATE VIEW pg_temp.s1 AS SELECT * FROM kc_flow.tutoring_sessions WHERE student_id = '00000000-0000-0000-0000-0000000a1b01';
CREATE VIEW pg_temp.s2 AS SELECT * FROM kc_flow.tutoring_sessions WHERE student_id = '00000000-0000-0000-0000-0000000a1b02';

-- double booking through the sessions: student 2's allocation given a session at student 1's time
SELECT is(pg_temp.error_of($$
    INSERT INTO kc_flow.tutoring_sessions (allocation_id, student_id, course_id, trainer_id, seq,
                                           scheduled_date, scheduled_time, starts_at, ends_at)
    SELECT b.allocation_id, b.student_id, b.course_id, b.trainer_id, 11, a.scheduled_date, a.scheduled_time,
           a.starts_at, a.ends_at
      FROM pg_temp.s1 a, pg_temp.s2 b WHERE a.seq = 1 AND b.seq = 1 $$),
          '23514 sessions_inside_booking t t t', 'a session inserted outside its booking is refused');
SELECT is(pg_temp.error_of($$
    UPDATE kc_flow.trainer_bookings b SET during = b.during + tstzmultirange(tstzrange(a.starts_at, a.ends_at))
      FROM pg_temp.s1 a, pg_temp.s2 x WHERE a.seq = 1 AND x.seq = 1 AND b.allocation_id = x.allocation_id $$),
          '23P01 bookings_no_trainer_double_booking t t f', 'and its booking cannot take that time: it is booked');
SELECT is(pg_temp.error_of($$
    UPDATE kc_flow.tutoring_sessions s SET starts_at = a.starts_at, ends_at = a.ends_at
      FROM pg_temp.s1 a WHERE a.seq = 1 AND s.id = (SELECT id FROM pg_temp.s2 WHERE seq = 2) $$),
          '23514 sessions_inside_booking t t t', 'a session moved onto another allocation''s time is refused');
SELECT is(pg_temp.error_of($$
    UPDATE kc_flow.tutoring_sessions SET starts_at = starts_at + interval '30 minutes', ends_at = ends_at + interval '30 minutes'
     WHERE id = (SELECT id FROM pg_temp.s2 WHERE seq = 3) $$),
          '23514 sessions_inside_booking t t t', 'a session moved half out of its booking is refused');
-- within its own booking, a session cannot overlap another of its allocation either
SELECT is(pg_temp.error_of($$
    INSERT INTO kc_flow.tutoring_sessions (allocation_id, student_id, course_id, trainer_id, seq,
                                           scheduled_date, scheduled_time, starts_at, ends_at)
    SELECT allocation_id, student_id, course_id, trainer_id, 11, scheduled_date, '10:30', starts_at + interval '30 minutes', ends_at
      FROM pg_temp.s2 WHERE seq = 4 $$),
          '23P01 sessions_inside_booking t t t', 'two sessions of one allocation cannot overlap');

-- a booking cannot go, or shrink, from under a scheduled session
SELECT is(pg_temp.error_of($$
    DELETE FROM kc_flow.trainer_bookings WHERE allocation_id = (SELECT allocation_id FROM pg_temp.s2 LIMIT 1) $$),
          '23514 sessions_inside_booking t t t', 'a booking with scheduled sessions cannot be deleted');
SELECT is(pg_temp.error_of($$
    UPDATE kc_flow.trainer_bookings b SET during = b.during - tstzmultirange(tstzrange(s.starts_at, s.ends_at))
      FROM pg_temp.s2 s WHERE s.seq = 5 AND b.allocation_id = s.allocation_id $$),
          '23514 sessions_inside_booking t t t', 'a booking cannot give up a scheduled session''s time');
SELECT is(pg_temp.error_of($$
    UPDATE kc_flow.tutoring_sessions SET status = 'cancelled' WHERE student_id = '00000000-0000-0000-0000-0000000a1b02';
    DELETE FROM kc_flow.trainer_bookings WHERE allocation_id = (SELECT allocation_id FROM pg_temp.s2 LIMIT 1);
    UPDATE kc_flow.tutoring_sessions SET status = 'scheduled' WHERE id = (SELECT id FROM pg_temp.s2 WHERE seq = 6) $$),
          '23514 sessions_inside_booking t t t', 'a cancelled session cannot be scheduled again once its booking went');
-- in one transaction, the order of the two writes is free once the check is deferred
SET CONSTRAINTS kc_flow.bookings_hold_their_sessions DEFERRED;
DELETE FROM kc_flow.trainer_bookings WHERE allocation_id = (SELECT allocation_id FROM pg_temp.s2 LIMIT 1);
UPDATE kc_flow.tutoring_sessions SET status = 'cancelled' WHERE student_id = '00000000-0000-0000-0000-0000000a1b02';
SELECT lives_ok('SET CONSTRAINTS ALL IMMEDIATE', 'deferred, a booking deleted before its sessions are cancelled is accepted');
SET CONSTRAINTS kc_flow.bookings_hold_their_sessions DEFERRED;
SELECT is(pg_temp.error_of($$
    DELETE FROM kc_flow.trainer_bookings WHERE allocation_id = (SELECT allocation_id FROM pg_temp.s1 LIMIT 1);
    SET CONSTRAINTS ALL IMMEDIATE $$),
          '23514 sessions_inside_booking t t t', 'deferred, the check still refuses it at the end');
SET CONSTRAINTS ALL IMMEDIATE;

-- the refund: future sessions cancelled, the started ones stay scheduled with their times booked
UPDATE kc_flow.payments SET status = 'refunded' WHERE id = '00000000-0000-0000-0000-0000000b1b03';
SELECT is(kc_flow.run_pending(1000), 1, 'the refund of a course under way is handled');
SELECT is((SELECT status FROM kc_flow.trainer_allocations a JOIN kc_flow.student_course_purchases p ON p.id = a.purchase_id
            WHERE p.payment_id = '00000000-0000-0000-0000-0000000b1b03'), 'cancelled', 'the refund cancelled the allocation');
SELECT is((SELECT count(*) FROM kc_flow.tutoring_sessions
            WHERE student_id = '00000000-0000-0000-0000-0000000a1b03' AND status = 'cancelled'),
          (SELECT count(*) FROM kc_flow.tutoring_sessions
            WHERE student_id = '00000000-0000-0000-0000-0000000a1b03' AND starts_at > now()),
          'and its sessions yet to start');
SELECT is((SELECT b.during FROM kc_flow.trainer_bookings b
             JOIN kc_flow.tutoring_sessions s ON s.allocation_id = b.allocation_id
            WHERE s.student_id = '00000000-0000-0000-0000-0000000a1b03' LIMIT 1),
          (SELECT range_agg(tstzrange(starts_at, ends_at)) FROM kc_flow.tutoring_sessions
            WHERE student_id = '00000000-0000-0000-0000-0000000a1b03' AND status = 'scheduled'),
          'its booking keeps the times of the sessions that started, and only those');
SELECT cmp_ok((SELECT count(*) FROM kc_flow.tutoring_sessions
                WHERE student_id = '00000000-0000-0000-0000-0000000a1b03' AND status = 'scheduled'), '>=', 14::bigint,
              'which stay scheduled');
UPDATE kc_flow.payments SET status = 'refunded' WHERE id = '00000000-0000-0000-0000-0000000b1b01';
SELECT is(kc_flow.run_pending(1000), 1, 'the refund of a course not yet begun is handled');
SELECT is((SELECT count(*) FROM kc_flow.trainer_bookings b JOIN pg_temp.s1 s ON s.allocation_id = b.allocation_id),
          0::bigint, 'a refund before the first session gives up the whole booking');
SELECT is((SELECT count(*) FROM pg_temp.s1 WHERE status = 'scheduled'), 0::bigint, 'and cancels every session');
-- an allocation deleted takes its booking and sessions with it
SELECT lives_ok($$DELETE FROM kc_flow.trainer_allocations
                   WHERE id = (SELECT allocation_id FROM kc_flow.tutoring_sessions
                                WHERE student_id = '00000000-0000-0000-0000-0000000a1b03' LIMIT 1)$$,
                'an allocation with scheduled sessions and its booking can be deleted');

SELECT * FROM finish();
ROLLBACK;
