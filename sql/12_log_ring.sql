-- The event log is a ring of three tables (extension/log_ring.c): events, event_log,
-- processed_events and log_rounds are partitioned by slot. Once the current slot has been
-- current for half of kc_flow.event_retention, a rotation (worker 0, run_pending(),
-- rotate_log()) copies what must stay from the oldest slot into the current one (queued
-- events, every event of a payment with an unresolved dead letter, with their positions and
-- processed marks), truncates the oldest and records the floor: events_since refuses a
-- cursor below it with SQLSTATE KC410.
SET search_path = kc_flow, public;
\set SHOW_CONTEXT never
SET kc_flow.retry_base_ms = 0;
SET client_min_messages = error;
SELECT last_value AS g0 FROM log_generation \gset
SELECT log_floor() AS f0 \gset

-- students of their own, a course and a trainer free every day
INSERT INTO students (id, display_name, timezone)
SELECT ('eb1000aa-0000-4000-8000-00000000000' || i)::uuid, 'Log ' || i, 'UTC' FROM generate_series(1, 4) i;
INSERT INTO courses (id, title, session_minutes, is_published) VALUES ('eb1000cc-0000-4000-8000-000000000001', 'Log Course', 30, true);
INSERT INTO trainers (id, display_name, timezone, max_active_students) VALUES ('eb1000dd-0000-4000-8000-000000000001', 'Logan', 'UTC', 10);
INSERT INTO trainer_courses VALUES ('eb1000dd-0000-4000-8000-000000000001', 'eb1000cc-0000-4000-8000-000000000001');
INSERT INTO trainer_availability (trainer_id, weekday, start_time, end_time)
SELECT 'eb1000dd-0000-4000-8000-000000000001', d, '06:00', '22:00' FROM generate_series(1, 7) d;
CREATE TEMP VIEW mine AS
    SELECT e.id, right(e.correlation_id::text, 1) AS payment, e.event_type, l.pos,
           (SELECT count(*) FROM processed_events p WHERE p.event_id = e.id) AS processed,
           (SELECT count(*) FROM event_queue q WHERE q.event_id = e.id) AS queued
      FROM events e LEFT JOIN event_log l ON l.event_id = e.id
     WHERE e.student_id::text LIKE 'eb1000aa-%';
-- what events_since answers for a cursor: the rows, or the error with its parts checked
CREATE FUNCTION pg_temp.since(after bigint) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    msg text; detail text; hint text; n int;
BEGIN
    SELECT count(*) INTO n FROM kc_flow.events_since(after, NULL, 10000);
    RETURN format('%s rows', n);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    RETURN format('%s; message names the cursor: %s; detail gives the floor and retention: %s; hint: %s',
                  SQLSTATE, msg = format('log position %s is no longer in the event log', after),
                  detail LIKE format('%%above %s:%%kc_flow.event_retention is 2s%%', kc_flow.log_floor()), hint);
END;
$$;

-- three payments: the first waits for a retry in the queue, the other two run to their sessions
INSERT INTO payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status)
SELECT ('eb1000ee-0000-4000-8000-00000000000' || i)::uuid, ('eb1000aa-0000-4000-8000-00000000000' || i)::uuid,
       'eb1000cc-0000-4000-8000-000000000001', 10,
       jsonb_build_object('weekdays', jsonb_build_array(i), 'start', '09:00', 'timezone', 'UTC', 'starts_on', '2031-01-06'),
       100, 'succeeded'
  FROM generate_series(1, 3) i;
UPDATE event_queue q SET attempts = 1, run_after = now() + interval '1 hour'
  FROM events e WHERE e.id = q.event_id AND e.correlation_id = 'eb1000ee-0000-4000-8000-000000000001';
SELECT run_pending(100) AS handled;
-- the second payment's last stage is dead-lettered, unresolved, as the dispatcher leaves it
INSERT INTO dead_letters (event_id, consumer, attempts, sqlstate, error_message)
SELECT id, 'sessions', 1, 'XX000', 'left for the operator' FROM events
 WHERE correlation_id = 'eb1000ee-0000-4000-8000-000000000002' AND event_type = 'TRAINER_ALLOCATED';
CREATE TEMP TABLE before AS SELECT * FROM mine;
SELECT payment, event_type, pos IS NOT NULL AS in_log, processed, queued FROM before ORDER BY id;

-- not due while the current tables are younger than half the retention
SET kc_flow.event_retention = '1h';
SELECT rotate_log();
-- due: the oldest slot (empty) is truncated and becomes current; nothing is removed
SET kc_flow.event_retention = '2s';
SELECT pg_sleep(1.1);
SELECT rotate_log();
SELECT last_value - :g0 AS generations FROM log_generation;
SELECT count(*) AS mine_left FROM mine;
-- and again: the slot after it was empty too
SELECT pg_sleep(1.1);
SELECT rotate_log();
SELECT count(*) AS mine_left, log_floor() = :f0 AS floor_unchanged FROM mine;
-- the third rotation empties the slot that holds the three payments: the queued payment and
-- the dead-lettered one stay, with the same positions and processed marks; the third goes
SELECT log_head() AS head_before \gset
SELECT pg_sleep(1.1);
SELECT rotate_log();
SELECT last_value - :g0 AS generations FROM log_generation;
SELECT payment, count(*) AS events, bool_and(m.pos IS NOT DISTINCT FROM b.pos) AS same_positions,
       sum(m.processed) = sum(b.processed) AS same_marks, sum(m.queued) AS queued
  FROM before b LEFT JOIN mine m USING (id, payment) WHERE m.id IS NOT NULL GROUP BY payment ORDER BY payment;
SELECT payment, count(*) AS removed FROM before b WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.id = b.id)
 GROUP BY payment ORDER BY payment;
SELECT count(*) AS dead_letters_kept FROM dead_letters d JOIN before b ON b.id = d.event_id WHERE NOT d.resolved;
-- the floor is the highest position the emptied tables held: the head, here
SELECT log_floor() = :head_before AS floor_is_the_old_head, log_floor() > :f0 AS floor_raised;
SELECT r.floor_pos = log_floor() AS recorded, r.kept_events >= 5 AS kept_events, r.kept_positions >= 5 AS kept_positions
  FROM log_rotations r ORDER BY r.generation DESC LIMIT 1;
SELECT (health()->'log_ring'->>'floor')::bigint = log_floor() AS health_shows_the_floor,
       (health()->'log_ring'->>'generation')::bigint - :g0 AS health_generation;
-- below the floor: KC410; at the floor: the log above it
SELECT pg_temp.since(log_floor() - 1);
SELECT pg_temp.since(0);
SELECT pg_temp.since(log_floor());
-- the head round was kept: the sequencer continues the positions above the floor
INSERT INTO payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status)
VALUES ('eb1000ee-0000-4000-8000-000000000004', 'eb1000aa-0000-4000-8000-000000000004',
        'eb1000cc-0000-4000-8000-000000000001', 10,
        '{"weekdays":[4],"start":"09:00","timezone":"UTC","starts_on":"2031-01-06"}', 100, 'succeeded');
UPDATE event_queue SET run_after = now() WHERE run_after > now();
SELECT run_pending(100) AS handled;
SELECT min(pos) = log_floor() + 1 AS positions_go_on, count(*) AS new_events
  FROM events_since(log_floor(), NULL, 10000) WHERE student_id::text LIKE 'eb1000aa-%';
SELECT pg_temp.since(log_floor());

-- a fourth rotation: every payment ends with its sessions, each stage ran once per event
SELECT pg_sleep(1.1);
SELECT rotate_log();
SELECT e.event_type, count(*) AS events, count(p.event_id) AS processed, count(DISTINCT p.event_id) AS distinct_processed
  FROM events e LEFT JOIN processed_events p ON p.event_id = e.id
 WHERE e.student_id::text LIKE 'eb1000aa-%' AND e.event_type IN ('PURCHASE_CONFIRMED', 'PURCHASE_CREATED', 'TRAINER_ALLOCATED')
 GROUP BY 1 ORDER BY 1;
SELECT p.id, count(s.id) AS sessions FROM payments p
  JOIN student_course_purchases pu ON pu.payment_id = p.id
  JOIN tutoring_sessions s ON s.allocation_id = (SELECT a.id FROM trainer_allocations a WHERE a.purchase_id = pu.id)
 WHERE p.id::text LIKE 'eb1000ee-%' GROUP BY 1 ORDER BY 1;

-- in REPEATABLE READ a rotation would copy with a snapshot older than its lock: refused
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT rotate_log();
ROLLBACK;
RESET kc_flow.event_retention;
