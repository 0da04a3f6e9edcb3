-- pgTAP: a batch writes its purchase set's PURCHASE_CREATED and its allocation stage's events
-- (TRAINER_ALLOCATED, ALLOCATION_PENDING) with its SESSIONS_GENERATED in one statement
-- (extension/emit.c, deferred events), so that each student's cache version is bumped once per
-- batch (one new row of the versions' ring, no update: extension/version_ring.c), while every
-- event keeps its id, its version in the order of the ids, and the order of its payment's events
-- (before the deferred events: 9 updates of cache_versions rows; before the ring: 3 updates).
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(17);
SET LOCAL kc_flow.retry_base_ms = 60000;   -- a retried event is not due again in this test

INSERT INTO kc_flow.courses (id, title, session_minutes, is_published)
SELECT ('00000000-0000-0000-0000-0000000c7e7' || i)::uuid, 'Course ' || i, 45, true FROM generate_series(1, 3) i;
INSERT INTO kc_flow.trainers (id, display_name, timezone, max_active_students)
SELECT ('00000000-0000-0000-0000-0000000d7e0' || i)::uuid, 'Trainer ' || i, 'Europe/Berlin', 5
  FROM generate_series(1, 2) i;
-- courses 1 and 2 have trainers, course 3 none: its purchase stays pending
INSERT INTO kc_flow.trainer_courses
SELECT t.id, c.id FROM kc_flow.trainers t, kc_flow.courses c
 WHERE t.display_name LIKE 'Trainer %' AND c.id IN ('00000000-0000-0000-0000-0000000c7e71', '00000000-0000-0000-0000-0000000c7e72');
INSERT INTO kc_flow.trainer_availability (trainer_id, weekday, start_time, end_time)
SELECT t.id, d, '08:00', '20:00' FROM kc_flow.trainers t, generate_series(1, 7) d WHERE t.display_name LIKE 'Trainer %';
INSERT INTO kc_flow.students (id, display_name, timezone)
SELECT ('00000000-0000-0000-0000-0000000a7e0' || i)::uuid, 'Student ' || i, 'Europe/Berlin' FROM generate_series(1, 3) i;

-- student 1 buys courses 1 and 2, student 2 course 1, student 3 course 3 (pending)
INSERT INTO kc_flow.payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status)
SELECT ('00000000-0000-0000-0000-0000000b7e0' || p.n)::uuid, ('00000000-0000-0000-0000-0000000a7e0' || p.s)::uuid,
       ('00000000-0000-0000-0000-0000000c7e7' || p.c)::uuid, 10,
       jsonb_build_object('weekdays', jsonb_build_array(p.n), 'start', '10:00', 'timezone', 'Europe/Berlin',
                          'starts_on', '2031-01-01'), 100, 'succeeded'
  FROM (VALUES (1, 1, 1), (2, 1, 2), (3, 2, 1), (4, 3, 3)) p(n, s, c);

-- the version tables' writes in this transaction: 0.1.0's table cache_versions, or the ring's
CREATE TEMP VIEW version_writes AS
SELECT coalesce(sum(n_tup_ins), 0)::bigint AS ins, coalesce(sum(n_tup_upd + n_tup_hot_upd), 0)::bigint AS upd
  FROM pg_stat_xact_user_tables WHERE schemaname = 'kc_flow' AND relname ~ '^(cache_versions|student_versions)';
CREATE TEMP TABLE writes_before AS SELECT * FROM version_writes;
SELECT is(kc_flow.run_pending(1000), 11, 'one batch: 4 purchases, 4 allocations (one pending), 3 session generations');

SELECT is((SELECT ARRAY[w.ins - b.ins, w.upd - b.upd] FROM version_writes w, writes_before b),
          ARRAY[3, 0]::bigint[], 'cache versions: one new row per student for all its events of the batch, no update');

SELECT is((SELECT array_agg(e.event_type || ' ' || e.version ORDER BY e.id) FROM kc_flow.events e
            WHERE e.student_id = '00000000-0000-0000-0000-0000000a7e01'),
          ARRAY['PURCHASE_CONFIRMED 1', 'PURCHASE_CONFIRMED 2', 'PURCHASE_CREATED 3', 'PURCHASE_CREATED 4',
                'TRAINER_ALLOCATED 5', 'TRAINER_ALLOCATED 6', 'SESSIONS_GENERATED 7', 'SESSIONS_GENERATED 8'],
          'the student with two purchases: its events in the order of their ids, versions 1 to 8');
SELECT is((SELECT array_agg(e.event_type || ' ' || e.version ORDER BY e.id) FROM kc_flow.events e
            WHERE e.student_id = '00000000-0000-0000-0000-0000000a7e02'),
          ARRAY['PURCHASE_CONFIRMED 1', 'PURCHASE_CREATED 2', 'TRAINER_ALLOCATED 3', 'SESSIONS_GENERATED 4'],
          'student 2: the same');
SELECT is((SELECT array_agg(e.event_type || ' ' || e.version ORDER BY e.id) FROM kc_flow.events e
            WHERE e.student_id = '00000000-0000-0000-0000-0000000a7e03'),
          ARRAY['PURCHASE_CONFIRMED 1', 'PURCHASE_CREATED 2', 'ALLOCATION_PENDING 3'],
          'student 3, pending: the same');
SELECT is((SELECT array_agg(p.ok ORDER BY p.correlation_id) FROM (
             SELECT e.correlation_id, array_agg(e.event_type ORDER BY e.id) = CASE
                      WHEN e.correlation_id = '00000000-0000-0000-0000-0000000b7e04'
                      THEN ARRAY['PURCHASE_CONFIRMED', 'PURCHASE_CREATED', 'ALLOCATION_PENDING']
                      ELSE ARRAY['PURCHASE_CONFIRMED', 'PURCHASE_CREATED', 'TRAINER_ALLOCATED', 'SESSIONS_GENERATED']
                    END AS ok
               FROM kc_flow.events e WHERE e.correlation_id::text LIKE '00000000-0000-0000-0000-0000000b7e0%'
              GROUP BY e.correlation_id) p),
          ARRAY[true, true, true, true], 'each payment''s events in their order');
SELECT is((SELECT array_agg(s.student_id::text || ' ' || s.v ORDER BY s.student_id)
             FROM (SELECT c.student_id, c.version = max(e.version) AS v FROM kc_flow.cache_versions c
                     JOIN kc_flow.events e ON e.student_id = c.student_id
                    WHERE c.student_id::text LIKE '00000000-0000-0000-0000-0000000a7e0%'
                    GROUP BY c.student_id, c.version) s),
          ARRAY['00000000-0000-0000-0000-0000000a7e01 true', '00000000-0000-0000-0000-0000000a7e02 true',
                '00000000-0000-0000-0000-0000000a7e03 true'],
          'each cache version is its student''s last event''s');
SELECT is((SELECT count(*) FROM kc_flow.event_queue q JOIN kc_flow.events e ON e.id = q.event_id
            WHERE e.student_id::text LIKE '00000000-0000-0000-0000-0000000a7e0%' AND e.event_type <> 'PURCHASE_CREATED'),
          0::bigint, 'no queue row is left for an event its consumer handled in the batch');
SELECT is((SELECT count(*) FROM kc_flow.processed_events p JOIN kc_flow.events e ON e.id = p.event_id
            WHERE p.consumer = 'sessions' AND e.student_id::text LIKE '00000000-0000-0000-0000-0000000a7e0%'),
          3::bigint, 'the three TRAINER_ALLOCATED are marked handled by the sessions stage');

SELECT is((SELECT array_agg(e.student_id::text || ' ' || e.event_type ORDER BY e.id) FROM kc_flow.processed_events p
             JOIN kc_flow.events e ON e.id = p.event_id
            WHERE p.consumer = 'allocation' AND e.student_id::text LIKE '00000000-0000-0000-0000-0000000a7e0%'),
          ARRAY['00000000-0000-0000-0000-0000000a7e01 PURCHASE_CREATED', '00000000-0000-0000-0000-0000000a7e01 PURCHASE_CREATED',
                '00000000-0000-0000-0000-0000000a7e02 PURCHASE_CREATED'],
          'the allocation stage''s marks, written with the events: the pending one has none (it is queued again)');
SELECT is((SELECT array_agg(q.deferrals || ' ' || q.attempts) FROM kc_flow.event_queue q JOIN kc_flow.events e ON e.id = q.event_id
            WHERE e.student_id = '00000000-0000-0000-0000-0000000a7e03' AND e.event_type = 'PURCHASE_CREATED'),
          ARRAY['1 0'], 'the pending purchase''s PURCHASE_CREATED has one queue row, its deferral''s');

-- a batch in which one allocation fails (transient): its deferred PURCHASE_CREATED is written
-- with its queue row, which records the failure; the other student's purchase goes through
INSERT INTO kc_flow.students (id, display_name, timezone)
SELECT ('00000000-0000-0000-0000-0000000a7e0' || i)::uuid, 'Student ' || i, 'Europe/Berlin' FROM generate_series(4, 5) i;
CREATE FUNCTION pg_temp.refuse_student_4() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.student_id = '00000000-0000-0000-0000-0000000a7e04' THEN
        RAISE EXCEPTION 'no allocation for student 4' USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_student_4 BEFORE INSERT ON kc_flow.trainer_allocations
    FOR EACH ROW EXECUTE FUNCTION pg_temp.refuse_student_4();
INSERT INTO kc_flow.payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status)
SELECT ('00000000-0000-0000-0000-0000000b7e1' || i)::uuid, ('00000000-0000-0000-0000-0000000a7e0' || i)::uuid,
       '00000000-0000-0000-0000-0000000c7e72', 10,
       jsonb_build_object('weekdays', jsonb_build_array(i), 'start', '14:00', 'timezone', 'Europe/Berlin',
                          'starts_on', '2031-01-01'), 100, 'succeeded'
  FROM generate_series(4, 5) i;
SELECT is(kc_flow.run_pending(1000), 5, 'two purchases, two allocations (one failing), one session generation');
SELECT is((SELECT q.attempts || ' ' || q.last_sqlstate FROM kc_flow.event_queue q JOIN kc_flow.events e ON e.id = q.event_id
            WHERE e.student_id = '00000000-0000-0000-0000-0000000a7e04' AND e.event_type = 'PURCHASE_CREATED'),
          '1 40001', 'the failed allocation''s PURCHASE_CREATED waits for its retry on its queue row');
SELECT is((SELECT array_agg(e.event_type || ' ' || e.version ORDER BY e.id) FROM kc_flow.events e
            WHERE e.student_id = '00000000-0000-0000-0000-0000000a7e04'),
          ARRAY['PURCHASE_CONFIRMED 1', 'PURCHASE_CREATED 2'], 'its events are written, versions in id order');
SELECT is((SELECT array_agg(e.event_type || ' ' || e.version ORDER BY e.id) FROM kc_flow.events e
            WHERE e.student_id = '00000000-0000-0000-0000-0000000a7e05'),
          ARRAY['PURCHASE_CONFIRMED 1', 'PURCHASE_CREATED 2', 'TRAINER_ALLOCATED 3', 'SESSIONS_GENERATED 4'],
          'the other student''s purchase goes through');
SELECT is((SELECT count(*) FROM kc_flow.event_queue q JOIN kc_flow.events e ON e.id = q.event_id
            WHERE e.student_id = '00000000-0000-0000-0000-0000000a7e05'),
          0::bigint, 'and leaves no queue row');
SELECT is((SELECT array_agg(e.student_id::text ORDER BY e.id) FROM kc_flow.processed_events p
             JOIN kc_flow.events e ON e.id = p.event_id
            WHERE p.consumer = 'allocation' AND e.student_id IN ('00000000-0000-0000-0000-0000000a7e04', '00000000-0000-0000-0000-0000000a7e05')),
          ARRAY['00000000-0000-0000-0000-0000000a7e05'], 'only the allocation that was done is marked');

SELECT * FROM finish();
ROLLBACK;
