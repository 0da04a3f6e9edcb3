-- pgTAP: the purchase stage runs for the PURCHASE_CONFIRMED events a batch claimed at once when
-- each is the plain case; one that is not (a second payment for a course already active) sends
-- the set back to be handled one event at a time, so that only that one is refused and the
-- others become purchases (extension/dispatch.c, run_purchase_set).
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(10);

INSERT INTO kc_flow.courses (id, title, session_minutes, is_published)
VALUES ('00000000-0000-0000-0000-0000000c9a70', 'Shogi', 45, true);
INSERT INTO kc_flow.trainers (id, display_name, timezone, max_active_students)
VALUES ('00000000-0000-0000-0000-0000000d9a01', 'Trainer P', 'Europe/Berlin', 5);
INSERT INTO kc_flow.trainer_courses VALUES ('00000000-0000-0000-0000-0000000d9a01', '00000000-0000-0000-0000-0000000c9a70');
INSERT INTO kc_flow.trainer_availability (trainer_id, weekday, start_time, end_time)
SELECT '00000000-0000-0000-0000-0000000d9a01', d, '08:00', '20:00' FROM generate_series(1, 7) d;
INSERT INTO kc_flow.students (id, display_name, timezone)
SELECT ('00000000-0000-0000-0000-0000000a9a0' || i)::uuid, 'Student ' || i, 'Europe/Berlin' FROM generate_series(1, 3) i;

-- all plain: three students, one payment each, confirmed together
INSERT INTO kc_flow.payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status)
SELECT ('00000000-0000-0000-0000-0000000b9a0' || i)::uuid, ('00000000-0000-0000-0000-0000000a9a0' || i)::uuid,
       '00000000-0000-0000-0000-0000000c9a70', 10,
       jsonb_build_object('weekdays', jsonb_build_array(i), 'start', '10:00', 'timezone', 'Europe/Berlin',
                          'starts_on', '2031-01-01'), 100, 'succeeded'
  FROM generate_series(1, 3) i;
SELECT is(kc_flow.run_pending(1000), 9, 'three purchases, allocations and session generations');
SELECT is((SELECT count(*) FROM kc_flow.student_course_purchases WHERE course_id = '00000000-0000-0000-0000-0000000c9a70'),
          3::bigint, 'one purchase per payment');

-- not all plain: student 1 pays again for the course it holds, students 2 and 3 for a new course
INSERT INTO kc_flow.courses (id, title, session_minutes, is_published)
VALUES ('00000000-0000-0000-0000-0000000c9a71', 'Xiangqi', 45, true);
INSERT INTO kc_flow.trainer_courses VALUES ('00000000-0000-0000-0000-0000000d9a01', '00000000-0000-0000-0000-0000000c9a71');
INSERT INTO kc_flow.payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status)
SELECT ('00000000-0000-0000-0000-0000000b9a1' || i)::uuid, ('00000000-0000-0000-0000-0000000a9a0' || i)::uuid,
       CASE i WHEN 1 THEN '00000000-0000-0000-0000-0000000c9a70' ELSE '00000000-0000-0000-0000-0000000c9a71' END::uuid, 10,
       jsonb_build_object('weekdays', jsonb_build_array(i + 3), 'start', '12:00', 'timezone', 'Europe/Berlin',
                          'starts_on', '2031-01-01'), 100, 'succeeded'
  FROM generate_series(1, 3) i;
SELECT is(kc_flow.run_pending(1000), 7, 'three confirmations, two allocations and two session generations');
SELECT is((SELECT count(*) FROM kc_flow.student_course_purchases WHERE course_id = '00000000-0000-0000-0000-0000000c9a71'),
          2::bigint, 'the two plain payments became purchases');
SELECT is((SELECT count(*) FROM kc_flow.student_course_purchases WHERE payment_id = '00000000-0000-0000-0000-0000000b9a11'),
          0::bigint, 'the second payment for an active course did not');
SELECT is((SELECT d.consumer || ' ' || d.sqlstate FROM kc_flow.dead_letters d JOIN kc_flow.events e ON e.id = d.event_id
            WHERE e.correlation_id = '00000000-0000-0000-0000-0000000b9a11'),
          'purchase 23505', 'its PURCHASE_CONFIRMED alone is dead-lettered, refused');
SELECT is((SELECT count(*) FROM kc_flow.events WHERE event_type = 'PURCHASE_ALREADY_ACTIVE'
            AND correlation_id = '00000000-0000-0000-0000-0000000b9a11'), 1::bigint, 'and the student is told');
-- two PURCHASE_CONFIRMED events of one payment in one batch (the trigger's and one emitted by
-- hand): one purchase, and one PURCHASE_CREATED, as when they are handled one at a time
INSERT INTO kc_flow.courses (id, title, session_minutes, is_published)
VALUES ('00000000-0000-0000-0000-0000000c9a72', 'Janggi', 45, true);
INSERT INTO kc_flow.trainer_courses VALUES ('00000000-0000-0000-0000-0000000d9a01', '00000000-0000-0000-0000-0000000c9a72');
INSERT INTO kc_flow.payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status)
VALUES ('00000000-0000-0000-0000-0000000b9a21', '00000000-0000-0000-0000-0000000a9a03',
        '00000000-0000-0000-0000-0000000c9a72', 10,
        jsonb_build_object('weekdays', jsonb_build_array(7), 'start', '16:00', 'timezone', 'Europe/Berlin',
                           'starts_on', '2031-01-01'), 100, 'succeeded');
SELECT kc_flow.emit_event('PURCHASE_CONFIRMED', '00000000-0000-0000-0000-0000000b9a21',
                          '00000000-0000-0000-0000-0000000a9a03');
SELECT kc_flow.run_pending(1000);
SELECT is((SELECT count(*) FROM kc_flow.student_course_purchases WHERE payment_id = '00000000-0000-0000-0000-0000000b9a21'),
          1::bigint, 'two confirmations of one payment make one purchase');
SELECT is((SELECT count(*) FROM kc_flow.events WHERE event_type = 'PURCHASE_CREATED'
            AND correlation_id = '00000000-0000-0000-0000-0000000b9a21'), 1::bigint, 'and one PURCHASE_CREATED');
SELECT is((SELECT count(*) FROM kc_flow.processed_events GROUP BY event_id, consumer HAVING count(*) > 1 LIMIT 1), NULL,
          'no event handled twice by a stage');

SELECT * FROM finish();
ROLLBACK;
