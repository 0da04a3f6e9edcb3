-- test/ws/fixture.sql: a course and three trainers of the WebSocket and browser tests, with
-- ids of their own so that they do not depend on (or disturb) what other suites left in the
-- shared database. Safe to load again.
SET client_min_messages = warning;
INSERT INTO kc_flow.courses (id, title, session_minutes, is_published)
VALUES ('eeeeeeee-0000-4000-8000-0000000000c1', 'Realtime Demo Course', 45, true)
ON CONFLICT (id) DO NOTHING;
INSERT INTO kc_flow.trainers (id, display_name, timezone, max_active_students)
VALUES ('eeeeeeee-0000-4000-8000-0000000000a1', 'Ada Realtime', 'UTC', 1000),
       ('eeeeeeee-0000-4000-8000-0000000000a2', 'Bo Realtime', 'UTC', 1000),
       ('eeeeeeee-0000-4000-8000-0000000000a3', 'Cy Realtime', 'UTC', 1000)
ON CONFLICT (id) DO NOTHING;
INSERT INTO kc_flow.trainer_courses (trainer_id, course_id)
SELECT t, 'eeeeeeee-0000-4000-8000-0000000000c1'
  FROM unnest(ARRAY['eeeeeeee-0000-4000-8000-0000000000a1', 'eeeeeeee-0000-4000-8000-0000000000a2',
                    'eeeeeeee-0000-4000-8000-0000000000a3']::uuid[]) AS t
ON CONFLICT DO NOTHING;
INSERT INTO kc_flow.trainer_availability (trainer_id, weekday, start_time, end_time)
SELECT t, d, '00:00', '23:59'
  FROM unnest(ARRAY['eeeeeeee-0000-4000-8000-0000000000a1', 'eeeeeeee-0000-4000-8000-0000000000a2',
                    'eeeeeeee-0000-4000-8000-0000000000a3']::uuid[]) AS t,
       generate_series(1, 7) AS d
 WHERE NOT EXISTS (SELECT 1 FROM kc_flow.trainer_availability a WHERE a.trainer_id = t AND a.weekday = d);
