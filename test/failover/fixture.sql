-- test/failover/fixture.sql: the course and three trainers of the failover and Redis-outage
-- suites, ids of their own (fa110000-…), so that their purchases never take a slot another
-- suite's trainers need in the shared database. Safe to load again.
SET client_min_messages = warning;
INSERT INTO kc_flow.courses (id, title, session_minutes, is_published)
VALUES ('fa110000-0000-4000-8000-0000000000c1', 'Failover Course', 45, true)
ON CONFLICT (id) DO NOTHING;
CREATE TEMP TABLE fo_trainer AS
    SELECT ('fa110000-0000-4000-8000-0000000000a' || n)::uuid AS id, 'Failover trainer ' || n AS name
      FROM generate_series(1, 3) AS n;
INSERT INTO kc_flow.trainers (id, display_name, timezone, max_active_students)
SELECT id, name, 'UTC', 1000 FROM fo_trainer ON CONFLICT (id) DO NOTHING;
INSERT INTO kc_flow.trainer_courses (trainer_id, course_id)
SELECT id, 'fa110000-0000-4000-8000-0000000000c1' FROM fo_trainer ON CONFLICT DO NOTHING;
INSERT INTO kc_flow.trainer_availability (trainer_id, weekday, start_time, end_time)
SELECT t.id, d, '00:00', '23:59' FROM fo_trainer AS t, generate_series(1, 7) AS d
 WHERE NOT EXISTS (SELECT 1 FROM kc_flow.trainer_availability a WHERE a.trainer_id = t.id AND a.weekday = d);
