-- setup.sql: courses and trainers of the read-scale benchmark, and the table of student ids.
CREATE TABLE bench_ids (n int PRIMARY KEY, id uuid NOT NULL);
INSERT INTO kc_flow.courses (id, title, session_minutes, is_published)
SELECT md5('c' || i)::uuid, 'course ' || i, 45, true FROM generate_series(0, 49) i;
INSERT INTO kc_flow.trainers (id, display_name, timezone, max_active_students)
SELECT md5('t' || i)::uuid, 'trainer ' || i, 'Europe/Berlin', 1000 FROM generate_series(0, 1999) i;
SELECT kc_flow.refresh_trending();
