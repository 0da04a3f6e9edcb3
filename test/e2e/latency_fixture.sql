-- test/e2e/latency_fixture.sql: the courses and trainers of the commit -> browser measurement
-- (test/e2e/latency_test.js): 20 courses, 10 trainers teaching all of them at any hour, with
-- ids of their own so that neither other suites' data nor the other browser test's bookings
-- get in the way. Safe to load again.
SET client_min_messages = warning;
INSERT INTO kc_flow.courses (id, title, session_minutes, is_published)
SELECT ('eeeeeeee-0000-4000-8000-0000000001' || lpad(g::text, 2, '0'))::uuid,
       'Latency Course ' || lpad(g::text, 2, '0'), 45, true
  FROM generate_series(0, 19) g
ON CONFLICT (id) DO NOTHING;
INSERT INTO kc_flow.trainers (id, display_name, timezone, max_active_students)
SELECT ('eeeeeeee-0000-4000-8000-0000000002' || lpad(g::text, 2, '0'))::uuid,
       'Latency Trainer ' || g, 'UTC', 1000
  FROM generate_series(0, 9) g
ON CONFLICT (id) DO NOTHING;
INSERT INTO kc_flow.trainer_courses (trainer_id, course_id)
SELECT ('eeeeeeee-0000-4000-8000-0000000002' || lpad(t::text, 2, '0'))::uuid,
       ('eeeeeeee-0000-4000-8000-0000000001' || lpad(c::text, 2, '0'))::uuid
  FROM generate_series(0, 9) t, generate_series(0, 19) c
ON CONFLICT DO NOTHING;
INSERT INTO kc_flow.trainer_availability (trainer_id, weekday, start_time, end_time)
SELECT ('eeeeeeee-0000-4000-8000-0000000002' || lpad(t::text, 2, '0'))::uuid, d, '00:00', '23:59'
  FROM generate_series(0, 9) t, generate_series(1, 7) d
 WHERE NOT EXISTS (SELECT 1 FROM kc_flow.trainer_availability a
                    WHERE a.trainer_id = ('eeeeeeee-0000-4000-8000-0000000002' || lpad(t::text, 2, '0'))::uuid
                      AND a.weekday = d);
