-- Shared fixtures for the tests that follow: students, trainers, courses.
SET search_path = kc_flow, public;
INSERT INTO students (id, display_name, timezone) VALUES
  ('00000000-0000-0000-0000-00000000a001', 'Asha', 'Asia/Kolkata'),
  ('00000000-0000-0000-0000-00000000a002', 'Ben', 'America/New_York'),
  ('00000000-0000-0000-0000-00000000a003', 'Chloe', 'Europe/Berlin');
INSERT INTO courses (id, title, session_minutes, is_published) VALUES
  ('00000000-0000-0000-0000-00000000c001', 'Algebra', 60, true),
  ('00000000-0000-0000-0000-00000000c002', 'Physics', 45, true),
  ('00000000-0000-0000-0000-00000000c003', 'Secret draft', 60, false);
INSERT INTO trainers (id, display_name, timezone, max_active_students) VALUES
  ('00000000-0000-0000-0000-00000000d001', 'Dr. Rao', 'Asia/Kolkata', 2),
  ('00000000-0000-0000-0000-00000000d002', 'Ms. Iyer', 'Asia/Kolkata', 2),
  ('00000000-0000-0000-0000-00000000d003', 'Mr. Stone', 'America/New_York', 1);
INSERT INTO trainer_courses VALUES
  ('00000000-0000-0000-0000-00000000d001', '00000000-0000-0000-0000-00000000c001'),
  ('00000000-0000-0000-0000-00000000d002', '00000000-0000-0000-0000-00000000c001'),
  ('00000000-0000-0000-0000-00000000d003', '00000000-0000-0000-0000-00000000c002');
-- Rao and Iyer: every evening 17:00-22:00 in Kolkata; Stone: weekday evenings in New York
INSERT INTO trainer_availability (trainer_id, weekday, start_time, end_time)
SELECT t, d, '17:00', '22:00'
  FROM unnest(ARRAY['00000000-0000-0000-0000-00000000d001', '00000000-0000-0000-0000-00000000d002']::uuid[]) t,
       generate_series(1, 7) d;
INSERT INTO trainer_availability (trainer_id, weekday, start_time, end_time)
SELECT '00000000-0000-0000-0000-00000000d003', d, '16:00', '21:00' FROM generate_series(1, 5) d;
SELECT count(*) AS students FROM students;
