-- pgTAP: the pipeline's invariants after a mixed batch of payments, driven by run_pending().
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(15);
SET LOCAL kc_flow.retry_base_ms = 0;

INSERT INTO kc_flow.courses (id, title, session_minutes, is_published)
VALUES ('00000000-0000-0000-0000-0000000c0001', 'Chess', 45, true);
INSERT INTO kc_flow.trainers (id, display_name, timezone, max_active_students)
SELECT ('00000000-0000-0000-0000-0000000d00' || lpad(i::text, 2, '0'))::uuid, 'Trainer ' || i, 'Europe/Berlin', 3
  FROM generate_series(1, 4) i;
INSERT INTO kc_flow.trainer_courses SELECT id, '00000000-0000-0000-0000-0000000c0001' FROM kc_flow.trainers;
INSERT INTO kc_flow.trainer_availability (trainer_id, weekday, start_time, end_time)
SELECT t.id, d, '08:00', '20:00' FROM kc_flow.trainers t, generate_series(1, 7) d;
INSERT INTO kc_flow.students (id, display_name, timezone)
SELECT ('00000000-0000-0000-0000-0000000a00' || lpad(i::text, 2, '0'))::uuid, 'Student ' || i, 'Europe/Berlin'
  FROM generate_series(1, 14) i;
-- 14 students, all the same slot, tiers 10/20/30; the trainers have 4 x 3 = 12 places
INSERT INTO kc_flow.payments (student_id, course_id, purchase_tier, time_slot, amount_cents, status)
SELECT s.id, '00000000-0000-0000-0000-0000000c0001', (ARRAY[10, 20, 30])[1 + (row_number() OVER (ORDER BY s.id))::int % 3],
       '{"weekdays":[2,4],"start":"10:00","timezone":"Europe/Berlin","starts_on":"2031-01-01"}', 100, 'succeeded'
  FROM kc_flow.students s WHERE s.display_name LIKE 'Student %';

SELECT is(kc_flow.run_pending(1000), 14 + 14 + 4, 'run_pending handled 14 purchases, 14 allocations, 4 session generations');
SELECT is((SELECT count(*) FROM kc_flow.student_course_purchases pu JOIN kc_flow.payments p ON p.id = pu.payment_id
            WHERE p.course_id = '00000000-0000-0000-0000-0000000c0001'), 14::bigint, 'one purchase per payment');
SELECT is((SELECT count(*) FROM kc_flow.trainer_allocations WHERE course_id = '00000000-0000-0000-0000-0000000c0001'
            AND status = 'approved'), 4::bigint, 'same slot: one student per trainer, so four approved');
SELECT is((SELECT count(*) FROM kc_flow.trainer_allocations WHERE course_id = '00000000-0000-0000-0000-0000000c0001'
            AND status = 'pending'), 10::bigint, 'the rest wait, pending');
SELECT is((SELECT count(DISTINCT trainer_id) FROM kc_flow.trainer_allocations
            WHERE course_id = '00000000-0000-0000-0000-0000000c0001' AND status = 'approved'), 4::bigint,
          'least loaded first spreads them over every trainer');
SELECT is((SELECT count(*) FROM kc_flow.tutoring_sessions s JOIN kc_flow.trainer_allocations a ON a.id = s.allocation_id
            JOIN kc_flow.student_course_purchases pu ON pu.id = a.purchase_id
            WHERE a.course_id = '00000000-0000-0000-0000-0000000c0001'
            GROUP BY a.id HAVING count(*) <> max(pu.purchase_tier) LIMIT 1), NULL,
          'every approved allocation has exactly its tier of sessions');
SELECT is((SELECT count(*) FROM kc_flow.tutoring_sessions a JOIN kc_flow.tutoring_sessions b
            ON a.trainer_id = b.trainer_id AND a.id < b.id
           AND tstzrange(a.starts_at, a.ends_at) && tstzrange(b.starts_at, b.ends_at)), 0::bigint, 'no trainer overlap');
SELECT is((SELECT count(*) FROM kc_flow.trainer_allocations a
             LEFT JOIN kc_flow.trainer_bookings b ON b.allocation_id = a.id AND b.trainer_id = a.trainer_id
            WHERE a.course_id = '00000000-0000-0000-0000-0000000c0001' AND a.status = 'approved'
              AND b.during IS DISTINCT FROM (SELECT range_agg(tstzrange(pl.starts_at, pl.ends_at))
                                               FROM kc_flow.purchase_plan(a.purchase_id) pl)), 0::bigint,
          'every approved allocation has one booking holding exactly its plan');
SELECT is((SELECT count(*) FROM kc_flow.trainer_bookings b
            WHERE b.during IS DISTINCT FROM (SELECT range_agg(tstzrange(s.starts_at, s.ends_at))
                                               FROM kc_flow.tutoring_sessions s WHERE s.allocation_id = b.allocation_id)),
          0::bigint, 'each booking is its sessions'' times, no more, no less');
SELECT throws_ok($$
    INSERT INTO kc_flow.trainer_bookings (allocation_id, trainer_id, during)
    SELECT p.id, b.trainer_id, tstzmultirange(tstzrange(upper(b.during) - interval '1 minute', upper(b.during)))
      FROM kc_flow.trainer_bookings b, kc_flow.trainer_allocations p
     WHERE p.status = 'pending' AND p.course_id = '00000000-0000-0000-0000-0000000c0001' LIMIT 1$$,
    '23P01', NULL, 'a booking overlapping another allocation''s last minute on the same trainer is refused');
SELECT is((SELECT count(*) FROM kc_flow.dead_letters WHERE NOT resolved), 0::bigint, 'no dead letters');
SELECT is((SELECT count(*) FROM kc_flow.processed_events GROUP BY event_id, consumer HAVING count(*) > 1 LIMIT 1), NULL,
          'no event handled twice by a stage');

-- a different slot frees nobody, but another time does: the pending ones move when a trainer is added
INSERT INTO kc_flow.trainers (id, display_name, timezone, max_active_students)
VALUES ('00000000-0000-0000-0000-0000000d0099', 'Late hire', 'Europe/Berlin', 20);
INSERT INTO kc_flow.trainer_courses VALUES ('00000000-0000-0000-0000-0000000d0099', '00000000-0000-0000-0000-0000000c0001');
INSERT INTO kc_flow.trainer_availability (trainer_id, weekday, start_time, end_time)
SELECT '00000000-0000-0000-0000-0000000d0099', d, '09:00', '12:00' FROM generate_series(1, 7) d;
SELECT cmp_ok(kc_flow.run_pending(1000), '>=', 1, 'the new trainer triggers the deferred allocations');
SELECT is((SELECT count(*) FROM kc_flow.trainer_allocations WHERE course_id = '00000000-0000-0000-0000-0000000c0001'
            AND status = 'approved'), 5::bigint, 'one more approved (the same slot still cannot be shared)');
SELECT is((SELECT count(*) FROM kc_flow.trainer_allocations WHERE trainer_id = '00000000-0000-0000-0000-0000000d0099'),
          1::bigint, 'the late hire took one');

SELECT * FROM finish();
ROLLBACK;
