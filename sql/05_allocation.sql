-- Trainer allocation: qualified, active, capacity, availability, no overlap,
-- least loaded first, ties by id; pending when nobody is free.
SET search_path = kc_flow, public;
\set SHOW_CONTEXT never
CREATE FUNCTION pay(pid uuid, student uuid, course uuid, tier int, slot jsonb) RETURNS void
LANGUAGE sql AS $$
  INSERT INTO kc_flow.payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status)
  VALUES (pid, student, course, tier, slot, 100, 'succeeded')
$$;
CREATE FUNCTION trainer_of(pid uuid) RETURNS text LANGUAGE sql AS $$
  SELECT coalesce(t.display_name, a.status)
    FROM kc_flow.student_course_purchases pu
    JOIN kc_flow.trainer_allocations a ON a.purchase_id = pu.id
    LEFT JOIN kc_flow.trainers t ON t.id = a.trainer_id
   WHERE pu.payment_id = pid
$$;

-- loads now: Rao 1 (from the pipeline test), Iyer 0 -> Iyer is least loaded
SELECT pay('00000000-0000-0000-0000-0000000be201', '00000000-0000-0000-0000-00000000a003',
           '00000000-0000-0000-0000-00000000c001', 10,
           '{"weekdays":[2],"start":"19:00","timezone":"Asia/Kolkata","starts_on":"2026-12-01"}');
SELECT run_pending(10) > 0 AS ran, trainer_of('00000000-0000-0000-0000-0000000be201');

-- Physics: only Stone (New York, weekdays 16-21 local). Asha wants 06:00 Kolkata on Tuesdays,
-- which is Monday 19:30 in New York in winter: available.
SELECT pay('00000000-0000-0000-0000-0000000be202', '00000000-0000-0000-0000-00000000a001',
           '00000000-0000-0000-0000-00000000c002', 10,
           '{"weekdays":[2],"start":"06:00","timezone":"Asia/Kolkata","starts_on":"2026-12-01"}');
SELECT run_pending(10) > 0 AS ran, trainer_of('00000000-0000-0000-0000-0000000be202');

-- Stone is full now (capacity 1): Ben's Physics purchase waits, pending, with an event saying so
SELECT pay('00000000-0000-0000-0000-0000000be203', '00000000-0000-0000-0000-00000000a002',
           '00000000-0000-0000-0000-00000000c002', 10,
           '{"weekdays":[3],"start":"17:00","timezone":"America/New_York","starts_on":"2026-12-01"}');
SELECT run_pending(10) > 0 AS ran, trainer_of('00000000-0000-0000-0000-0000000be203');
SELECT event_type FROM events WHERE correlation_id = '00000000-0000-0000-0000-0000000be203' ORDER BY id;
SELECT consumer, deferrals, attempts, run_after > now() AS waits FROM event_queue;

-- a second Physics trainer who is not available at that time does not help
INSERT INTO trainers (id, display_name, timezone, max_active_students)
VALUES ('00000000-0000-0000-0000-00000000d004', 'Ms. Early', 'America/New_York', 5);
INSERT INTO trainer_courses VALUES ('00000000-0000-0000-0000-00000000d004', '00000000-0000-0000-0000-00000000c002');
INSERT INTO trainer_availability (trainer_id, weekday, start_time, end_time)
VALUES ('00000000-0000-0000-0000-00000000d004', 3, '08:00', '12:00');
SELECT run_pending(10) AS handled, trainer_of('00000000-0000-0000-0000-0000000be203');
-- once she is available on Wednesday evenings, auto_assign picks her
INSERT INTO trainer_availability (trainer_id, weekday, start_time, end_time)
VALUES ('00000000-0000-0000-0000-00000000d004', 3, '16:00', '20:00');
SELECT t.display_name FROM trainers t
 WHERE t.id = auto_assign((SELECT id FROM student_course_purchases WHERE payment_id = '00000000-0000-0000-0000-0000000be203'));
SELECT count(*) AS queued_allocations FROM event_queue WHERE consumer = 'allocation';
SELECT run_pending(10) AS handled, trainer_of('00000000-0000-0000-0000-0000000be203');
SELECT count(*) AS sessions FROM tutoring_sessions s JOIN student_course_purchases pu ON pu.student_id = s.student_id AND pu.course_id = s.course_id
 WHERE pu.payment_id = '00000000-0000-0000-0000-0000000be203';
SELECT auto_assign('00000000-0000-0000-0000-00000000ffff');

-- inactive trainers are never chosen; an overlapping booking is impossible even by hand
UPDATE trainers SET is_active = false WHERE id = '00000000-0000-0000-0000-00000000d002';
SELECT pay('00000000-0000-0000-0000-0000000be204', '00000000-0000-0000-0000-00000000a001',
           '00000000-0000-0000-0000-00000000c001', 10,
           '{"weekdays":[4],"start":"20:00","timezone":"Asia/Kolkata","starts_on":"2026-12-01"}');
SELECT run_pending(10) > 0 AS ran, trainer_of('00000000-0000-0000-0000-0000000be204');
UPDATE trainers SET is_active = true WHERE id = '00000000-0000-0000-0000-00000000d002';
\set VERBOSITY terse
UPDATE trainer_bookings SET during = '{}' WHERE allocation_id = (SELECT allocation_id FROM trainer_bookings LIMIT 1);
UPDATE trainer_bookings b SET during = b.during + x.during
  FROM trainer_bookings x WHERE x.trainer_id = b.trainer_id AND x.allocation_id <> b.allocation_id;
\set VERBOSITY default

-- no trainer anywhere is double-booked, in bookings or sessions
SELECT count(*) AS overlaps FROM tutoring_sessions a JOIN tutoring_sessions b
    ON a.trainer_id = b.trainer_id AND a.id < b.id AND tstzrange(a.starts_at, a.ends_at) && tstzrange(b.starts_at, b.ends_at)
 WHERE a.status = 'scheduled' AND b.status = 'scheduled';
DROP FUNCTION pay(uuid, uuid, uuid, int, jsonb);
DROP FUNCTION trainer_of(uuid);
