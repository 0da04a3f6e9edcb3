-- Session generation: local wall-clock times across daylight-saving changes,
-- and rolling mode that keeps a window of upcoming sessions.
SET search_path = kc_flow, public;
\set SHOW_CONTEXT never
INSERT INTO courses (id, title, session_minutes, is_published)
VALUES ('00000000-0000-0000-0000-00000000c010', 'Clock reading', 30, true);
INSERT INTO trainers (id, display_name, timezone, max_active_students)
VALUES ('00000000-0000-0000-0000-00000000d010', 'Ms. Clock', 'America/New_York', 5),
       ('00000000-0000-0000-0000-00000000d011', 'Herr Uhr', 'Europe/Berlin', 5);
INSERT INTO trainer_courses VALUES ('00000000-0000-0000-0000-00000000d010', '00000000-0000-0000-0000-00000000c010'),
                                   ('00000000-0000-0000-0000-00000000d011', '00000000-0000-0000-0000-00000000c010');
INSERT INTO trainer_availability (trainer_id, weekday, start_time, end_time)
SELECT '00000000-0000-0000-0000-00000000d010', d, '00:00', '24:00' FROM generate_series(1, 7) d;
INSERT INTO trainer_availability (trainer_id, weekday, start_time, end_time)
SELECT '00000000-0000-0000-0000-00000000d011', d, '00:00', '24:00' FROM generate_series(1, 7) d;

-- New York falls back on 2026-11-01: 10:00 local stays 10:00, the UTC instant moves an hour
SELECT seq, scheduled_date, scheduled_time, starts_at AT TIME ZONE 'UTC' AS starts_utc, ends_at - starts_at AS length
  FROM plan_sessions('{"weekdays":[7],"start":"10:00","timezone":"America/New_York","starts_on":"2026-10-20"}', 4, 30, now())
       AS p(seq, scheduled_date, scheduled_time, starts_at, ends_at);
-- Berlin springs forward on 2027-03-28 at 02:00: a 02:30 slot that day does not exist on the clock;
-- Postgres reads such a time as standard time, so the session starts at 03:30 summer time
SELECT seq, scheduled_date, starts_at AT TIME ZONE 'Europe/Berlin' AS local_start, starts_at AT TIME ZONE 'UTC' AS starts_utc
  FROM plan_sessions('{"weekdays":[7],"start":"02:30","timezone":"Europe/Berlin","starts_on":"2027-03-21"}', 3, 30, now())
       AS p(seq, scheduled_date, scheduled_time, starts_at, ends_at);
-- without starts_on, sessions start the day after the reference instant, in the slot's zone
SELECT scheduled_date FROM plan_sessions('{"weekdays":[1,2,3,4,5,6,7],"start":"09:00","timezone":"Asia/Tokyo"}',
                                         1, 30, '2026-12-31 20:00+00') AS p(seq, scheduled_date, scheduled_time, starts_at, ends_at);

-- a purchase across the change: stored sessions keep the local time
INSERT INTO payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status)
VALUES ('00000000-0000-0000-0000-0000000be301', '00000000-0000-0000-0000-00000000a002',
        '00000000-0000-0000-0000-00000000c010', 10,
        '{"weekdays":[7],"start":"10:00","timezone":"America/New_York","starts_on":"2026-10-20"}', 100, 'succeeded');
SELECT run_pending(10) > 0 AS ran;
SELECT count(*) AS sessions, count(DISTINCT scheduled_time) AS local_times,
       count(DISTINCT (starts_at AT TIME ZONE 'UTC')::time) AS utc_times
  FROM tutoring_sessions WHERE course_id = '00000000-0000-0000-0000-00000000c010';

-- rolling mode: only the window is scheduled; completing sessions tops it up
SET kc_flow.session_generation = 'rolling';
SET kc_flow.rolling_window = 3;
INSERT INTO payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status)
VALUES ('00000000-0000-0000-0000-0000000be302', '00000000-0000-0000-0000-00000000a003',
        '00000000-0000-0000-0000-00000000c010', 10,
        '{"weekdays":[1,4],"start":"07:00","timezone":"Europe/Berlin","starts_on":"2030-01-07"}', 100, 'succeeded');
SELECT run_pending(10) > 0 AS ran;
SELECT a.session_mode, count(s.*) AS sessions, (SELECT count(*) FROM trainer_bookings b, unnest(b.during) WHERE b.allocation_id = a.id) AS booked
  FROM trainer_allocations a LEFT JOIN tutoring_sessions s ON s.allocation_id = a.id
 WHERE a.student_id = '00000000-0000-0000-0000-00000000a003' AND a.course_id = '00000000-0000-0000-0000-00000000c010'
 GROUP BY a.id;
UPDATE tutoring_sessions SET status = 'completed'
 WHERE student_id = '00000000-0000-0000-0000-00000000a003' AND course_id = '00000000-0000-0000-0000-00000000c010' AND seq <= 2;
SELECT run_pending(10) AS grown;
SELECT array_agg(seq ORDER BY seq) AS seqs, array_agg(status ORDER BY seq) AS statuses
  FROM tutoring_sessions WHERE student_id = '00000000-0000-0000-0000-00000000a003' AND course_id = '00000000-0000-0000-0000-00000000c010';
SELECT event_type, payload->>'count' AS count, payload->>'first_seq' AS first, payload->>'last_seq' AS last
  FROM events WHERE correlation_id = '00000000-0000-0000-0000-0000000be302' AND event_type = 'SESSIONS_GENERATED' ORDER BY id;
SELECT run_pending(10) AS nothing_more;
RESET kc_flow.session_generation;
RESET kc_flow.rolling_window;
