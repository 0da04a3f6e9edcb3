-- scripts/demo_data.sql: a small, fixed data set for `make run` and the gateway tests.
-- Ids are fixed so that URLs and tokens printed by scripts/run-demo.sh stay the same.
-- Students 1 and 2 have bought a course (student 1 twice); student 3 has bought nothing yet,
-- so a purchase made during the demo shows up on an empty home screen.

SET client_min_messages = warning;

INSERT INTO kc_flow.students (id, display_name, timezone) VALUES
    ('11111111-1111-4111-8111-111111111111', 'Asha Verma', 'Asia/Kolkata'),
    ('22222222-2222-4222-8222-222222222222', 'Ben Okafor', 'Europe/Berlin'),
    ('33333333-3333-4333-8333-333333333333', 'Chen Li', 'Asia/Kolkata');

INSERT INTO kc_flow.trainers (id, display_name, timezone, max_active_students) VALUES
    ('aaaaaaaa-0000-4000-8000-000000000001', 'Priya Nair', 'Asia/Kolkata', 20),
    ('aaaaaaaa-0000-4000-8000-000000000002', 'Daniel Weber', 'Europe/Berlin', 20),
    ('aaaaaaaa-0000-4000-8000-000000000003', 'Maya Iyer', 'Asia/Kolkata', 20);

INSERT INTO kc_flow.courses (id, title, session_minutes, is_published) VALUES
    ('cccccccc-0000-4000-8000-000000000001', 'Spoken English', 60, true),
    ('cccccccc-0000-4000-8000-000000000002', 'Algebra Foundations', 45, true),
    ('cccccccc-0000-4000-8000-000000000003', 'Python for Beginners', 60, true),
    ('cccccccc-0000-4000-8000-000000000004', 'Music Theory', 30, true);

-- every trainer teaches every course, all week from 07:00 to 23:00 in their own zone
-- (only the demo's own rows: the database may hold other data, as in the test suites)
INSERT INTO kc_flow.trainer_courses (trainer_id, course_id)
SELECT t.id, c.id FROM kc_flow.trainers t CROSS JOIN kc_flow.courses c
 WHERE t.id::text LIKE 'aaaaaaaa-0000-4000-8000-%' AND c.id::text LIKE 'cccccccc-0000-4000-8000-%';
INSERT INTO kc_flow.trainer_availability (trainer_id, weekday, start_time, end_time)
SELECT t.id, d, '07:00', '23:00' FROM kc_flow.trainers t CROSS JOIN generate_series(1, 7) AS d
 WHERE t.id::text LIKE 'aaaaaaaa-0000-4000-8000-%';

-- purchases: payments created pending, then confirmed (the trigger starts the pipeline)
SELECT kc_flow.confirm_payment(kc_flow.create_payment(
    '11111111-1111-4111-8111-111111111111', 'cccccccc-0000-4000-8000-000000000001', 10,
    '{"weekdays":[1,3,5],"start":"18:00","timezone":"Asia/Kolkata"}', 49900, 'INR'));
SELECT kc_flow.confirm_payment(kc_flow.create_payment(
    '11111111-1111-4111-8111-111111111111', 'cccccccc-0000-4000-8000-000000000003', 20,
    '{"weekdays":[2,4],"start":"19:30","timezone":"Asia/Kolkata"}', 89900, 'INR'));
SELECT kc_flow.confirm_payment(kc_flow.create_payment(
    '22222222-2222-4222-8222-222222222222', 'cccccccc-0000-4000-8000-000000000002', 10,
    '{"weekdays":[6],"start":"10:00","timezone":"Europe/Berlin"}', 12000, 'EUR'));
