-- pgTAP: a trainer's load is counted from its allocations, not kept in its row
-- (extension/trainer_load.c): allocations update no trainer, the ranking is least
-- loaded first (ties by id) also after a subtransaction that had booked is rolled
-- back, and the capacity holds.  Driven by run_pending(), in one transaction.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(10);
SET LOCAL kc_flow.retry_base_ms = 0;

INSERT INTO kc_flow.courses (id, title, session_minutes, is_published)
VALUES ('00000000-0000-0000-0000-0000000c10a0', 'Load', 60, true);
INSERT INTO kc_flow.trainers (id, display_name, timezone, max_active_students)
SELECT ('00000000-0000-0000-0000-0000000d10a' || i)::uuid, 'Trainer ' || i, 'UTC', 2
  FROM generate_series(1, 2) i;
INSERT INTO kc_flow.trainer_courses
SELECT id, '00000000-0000-0000-0000-0000000c10a0' FROM kc_flow.trainers WHERE id::text LIKE '%d10a_';
INSERT INTO kc_flow.trainer_availability (trainer_id, weekday, start_time, end_time)
SELECT t.id, d, '00:00', '24:00' FROM kc_flow.trainers t, generate_series(1, 7) d WHERE t.id::text LIKE '%d10a_';
INSERT INTO kc_flow.students (id, display_name, timezone)
SELECT ('00000000-0000-0000-0000-0000000a10a' || i)::uuid, 'Student ' || i, 'UTC' FROM generate_series(1, 5) i;

-- student i pays for weekday i, so that no two plans overlap
CREATE FUNCTION pg_temp.pay(i int) RETURNS void LANGUAGE sql AS $$
    INSERT INTO kc_flow.payments (student_id, course_id, purchase_tier, time_slot, amount_cents, status)
    VALUES (('00000000-0000-0000-0000-0000000a10a' || i)::uuid, '00000000-0000-0000-0000-0000000c10a0', 10,
            jsonb_build_object('weekdays', jsonb_build_array(i), 'start', '10:00', 'timezone', 'UTC',
                               'starts_on', '2031-01-01'), 100, 'succeeded')
$$;
CREATE FUNCTION pg_temp.trainer_of(i int) RETURNS text LANGUAGE sql AS $$
    SELECT coalesce(right(a.trainer_id::text, 1), a.status) FROM kc_flow.trainer_allocations a
     WHERE a.student_id = ('00000000-0000-0000-0000-0000000a10a' || i)::uuid
$$;
CREATE FUNCTION pg_temp.trainers_updated() RETURNS bigint LANGUAGE sql AS $$
    SELECT n_tup_upd FROM pg_stat_xact_user_tables WHERE relid = 'kc_flow.trainers'::regclass
$$;

SELECT pg_temp.pay(1);
SAVEPOINT booked;
SELECT kc_flow.run_pending(1000);
SELECT is(pg_temp.trainer_of(1), '1', 'the first allocation goes to trainer 1 (both free, ties by id)');
ROLLBACK TO SAVEPOINT booked;
SELECT is(kc_flow.trainer_load('00000000-0000-0000-0000-0000000d10a1'), 0,
          'a rolled back subtransaction''s allocation no longer counts');
SELECT kc_flow.run_pending(1000);
SELECT is(pg_temp.trainer_of(1), '1', 'after the rollback trainer 1 is again among the least loaded');

SELECT pg_temp.pay(2);
SELECT kc_flow.run_pending(1000);
SELECT is(pg_temp.trainer_of(2), '2', 'the next goes to the least loaded, trainer 2');
SELECT pg_temp.pay(3);
SELECT kc_flow.run_pending(1000);
SELECT is(pg_temp.trainer_of(3), '1', 'one each: the tie goes to trainer 1');
SELECT pg_temp.pay(4);
SELECT kc_flow.run_pending(1000);
SELECT is(pg_temp.trainer_of(4), '2', 'trainer 1 is full (2 of 2): trainer 2');
SELECT pg_temp.pay(5);
SELECT kc_flow.run_pending(1000);
SELECT is(pg_temp.trainer_of(5), 'pending', 'both full: the allocation waits');

SELECT is(ARRAY[kc_flow.trainer_load('00000000-0000-0000-0000-0000000d10a1'),
                kc_flow.trainer_load('00000000-0000-0000-0000-0000000d10a2')], ARRAY[2, 2],
          'trainer_load() counts the approved allocations');
SELECT is(pg_temp.trainers_updated(), 0::bigint, 'five allocations and a rollback updated no trainer row');

UPDATE kc_flow.trainer_allocations SET status = 'cancelled'
 WHERE student_id = '00000000-0000-0000-0000-0000000a10a3';
SELECT is(kc_flow.trainer_load('00000000-0000-0000-0000-0000000d10a1'), 1, 'a cancelled allocation frees its place');

SELECT * FROM finish();
ROLLBACK;
