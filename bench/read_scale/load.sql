-- load.sql: students :from..:to, each with one purchase, an approved allocation and three
-- scheduled sessions, written in bulk (triggers off) for the read-scale benchmark.
-- Trainer of student i: i % 2000; its sessions never overlap another student's.
SET session_replication_role = replica;
INSERT INTO kc_flow.students (id, display_name, timezone)
SELECT md5('s' || i)::uuid, 'student ' || i, 'Europe/Berlin' FROM generate_series(:from, :to) i;
INSERT INTO bench_ids SELECT i, md5('s' || i)::uuid FROM generate_series(:from, :to) i;
-- (the tables under kc_flow.payments: its INSTEAD OF trigger is off here too)
INSERT INTO kc_flow.payment_orders (id, student_id, course_id, amount_cents, purchase_tier, time_slot)
SELECT md5('p' || i)::uuid, md5('s' || i)::uuid, md5('c' || (i % 50))::uuid, 1000, 10,
       '{"weekdays":[1],"start":"10:00","timezone":"Europe/Berlin"}'
  FROM generate_series(:from, :to) i;
INSERT INTO kc_flow.payment_outcomes (payment_id, outcome, occurred_at)
SELECT md5('p' || i)::uuid, 'succeeded', now() - (i % 30) * interval '1 day' FROM generate_series(:from, :to) i;
INSERT INTO kc_flow.student_course_purchases (id, payment_id, student_id, course_id, purchase_tier, created_at)
SELECT md5('u' || i)::uuid, md5('p' || i)::uuid, md5('s' || i)::uuid, md5('c' || (i % 50))::uuid, 10,
       now() - (i % 30) * interval '1 day'
  FROM generate_series(:from, :to) i;
INSERT INTO kc_flow.trainer_allocations (id, purchase_id, student_id, course_id, trainer_id, status, allocated_at)
SELECT md5('a' || i)::uuid, md5('u' || i)::uuid, md5('s' || i)::uuid, md5('c' || (i % 50))::uuid,
       md5('t' || (i % 2000))::uuid, 'approved', now()
  FROM generate_series(:from, :to) i;
INSERT INTO kc_flow.tutoring_sessions (allocation_id, student_id, course_id, trainer_id, seq,
                                       scheduled_date, scheduled_time, starts_at, ends_at, status)
SELECT md5('a' || i)::uuid, md5('s' || i)::uuid, md5('c' || (i % 50))::uuid, md5('t' || (i % 2000))::uuid, k,
       (t0 AT TIME ZONE 'Europe/Berlin')::date, (t0 AT TIME ZONE 'Europe/Berlin')::time, t0, t0 + interval '45 minutes',
       CASE WHEN k = 1 THEN 'completed' ELSE 'scheduled' END
  FROM generate_series(:from, :to) i, generate_series(1, 3) k,
       LATERAL (SELECT timestamptz '2031-01-06 08:00+00' + ((i / 2000) * 3 + k) * interval '1 hour' AS t0) t;
INSERT INTO kc_flow.student_versions (student_id, version)
SELECT md5('s' || i)::uuid, 3 FROM generate_series(:from, :to) i;
SET session_replication_role = origin;
ANALYZE;
