-- The event queue is a ring of three tables (extension/queue_ring.c): rows land in the
-- current one; once it is larger than kc_flow.queue_rotation_size, a rotation (worker 0,
-- run_pending(), rotate_queue()) copies what is left in the oldest table into the current
-- one, truncates the oldest and makes it current. Nothing is lost or handled twice.
SET search_path = kc_flow, public;
\set SHOW_CONTEXT never
SET kc_flow.retry_base_ms = 0;
SET client_min_messages = error;
SET kc_flow.queue_rotation_size = '8kB';
SELECT last_value AS g0 FROM event_queue_generation \gset

-- students of their own, a course and a trainer free every day
INSERT INTO students (id, display_name, timezone)
SELECT ('eb0000aa-0000-4000-8000-00000000000' || i)::uuid, 'Ring ' || i, 'UTC' FROM generate_series(1, 4) i;
INSERT INTO courses (id, title, session_minutes, is_published) VALUES ('eb0000cc-0000-4000-8000-000000000001', 'Ring Course', 30, true);
INSERT INTO trainers (id, display_name, timezone, max_active_students) VALUES ('eb0000dd-0000-4000-8000-000000000001', 'Ringo', 'UTC', 10);
INSERT INTO trainer_courses VALUES ('eb0000dd-0000-4000-8000-000000000001', 'eb0000cc-0000-4000-8000-000000000001');
INSERT INTO trainer_availability (trainer_id, weekday, start_time, end_time)
SELECT 'eb0000dd-0000-4000-8000-000000000001', d, '06:00', '22:00' FROM generate_series(1, 7) d;
CREATE TEMP VIEW ring AS
    SELECT e.event_type, q.attempts, (q.slot - :g0 + 3) % 3 AS slot_from_start, q.run_after > now() AS waiting
      FROM event_queue q JOIN events e ON e.id = q.event_id
     WHERE e.student_id::text LIKE 'eb0000aa-%' ORDER BY e.correlation_id;

-- three payments: their PURCHASE_CONFIRMED land in the current slot; the first waits for a retry
INSERT INTO payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status)
SELECT ('eb0000ee-0000-4000-8000-00000000000' || i)::uuid, ('eb0000aa-0000-4000-8000-00000000000' || i)::uuid,
       'eb0000cc-0000-4000-8000-000000000001', 10,
       jsonb_build_object('weekdays', jsonb_build_array(i), 'start', '09:00', 'timezone', 'UTC', 'starts_on', '2031-01-06'),
       100, 'succeeded'
  FROM generate_series(1, 3) i;
UPDATE event_queue q SET attempts = 1, run_after = now() + interval '1 hour'
  FROM events e WHERE e.id = q.event_id AND e.correlation_id = 'eb0000ee-0000-4000-8000-000000000001';
SELECT * FROM ring;

-- not due while the current table is smaller than queue_rotation_size
SET kc_flow.queue_rotation_size = '1MB';
SELECT rotate_queue();
SET kc_flow.queue_rotation_size = '8kB';
-- the oldest table is empty: truncated, it becomes current
SELECT rotate_queue();
SELECT last_value - :g0 AS generations FROM event_queue_generation;
-- the new current table has no rows yet: nothing to rotate
SELECT rotate_queue();

-- the due payments are handled; run_pending() rotates at its end, as worker 0 does, once the
-- current table has grown: a batch's follow-up events (PURCHASE_CREATED, TRAINER_ALLOCATED),
-- handled in that batch, get no queue rows (docs/extension.md, "The write path"), so the
-- table is grown here as busy workers grow it, with rows queued and then claimed away
INSERT INTO event_queue (event_id, consumer) SELECT -g, 'purchase' FROM generate_series(1, 4) g;
DELETE FROM event_queue WHERE event_id < 0;
SELECT run_pending(100) AS handled;
SELECT last_value - :g0 AS generations FROM event_queue_generation;
SELECT * FROM ring;

-- a fourth payment lands in the current table; rotating now empties the first one, which
-- still holds the waiting retry: it is copied into the current table with its attempts
INSERT INTO payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status)
VALUES ('eb0000ee-0000-4000-8000-000000000004', 'eb0000aa-0000-4000-8000-000000000004',
        'eb0000cc-0000-4000-8000-000000000001', 10,
        '{"weekdays":[4],"start":"09:00","timezone":"UTC","starts_on":"2031-01-06"}', 100, 'succeeded');
SELECT rotate_queue();
SELECT last_value - :g0 AS generations FROM event_queue_generation;
SELECT * FROM ring;
SELECT pg_relation_size(format('event_queue_%s', :g0 % 3)::regclass) AS truncated_table_bytes;

-- the retry comes due: every payment ends with its sessions, each stage ran once per event
UPDATE event_queue SET run_after = now() WHERE run_after > now();
SELECT run_pending(100) AS handled;
SELECT count(*) AS queued FROM ring;
SELECT e.event_type, count(*) AS events, count(p.event_id) AS processed, count(DISTINCT p.event_id) AS distinct_processed
  FROM events e LEFT JOIN processed_events p ON p.event_id = e.id
 WHERE e.student_id::text LIKE 'eb0000aa-%' AND e.event_type IN ('PURCHASE_CONFIRMED', 'PURCHASE_CREATED', 'TRAINER_ALLOCATED')
 GROUP BY 1 ORDER BY 1;
SELECT p.id, count(s.id) AS sessions FROM payments p
  JOIN student_course_purchases pu ON pu.payment_id = p.id
  JOIN tutoring_sessions s ON s.allocation_id = (SELECT a.id FROM trainer_allocations a WHERE a.purchase_id = pu.id)
 WHERE p.id::text LIKE 'eb0000ee-%' GROUP BY 1 ORDER BY 1;

-- a backlog in the oldest table (the workers far behind): not due, and no lock is asked for,
-- which would make the workers' claims wait behind it
BEGIN;
SELECT last_value % 3 AS cur, (last_value + 1) % 3 AS oldest FROM event_queue_generation \gset
INSERT INTO event_queue (event_id, consumer, run_after, slot)
SELECT -g, 'purchase', now() + interval '1 day', :oldest FROM generate_series(1, 20001) g;
INSERT INTO event_queue (event_id, consumer, run_after, slot)
SELECT -g, 'purchase', now() + interval '1 day', :cur FROM generate_series(20002, 20400) g;
SELECT rotate_queue() AS with_a_backlog;
SELECT count(*) AS exclusive_locks FROM pg_locks
 WHERE relation = format('event_queue_%s', :oldest)::regclass AND mode = 'AccessExclusiveLock';
ROLLBACK;

-- in REPEATABLE READ a rotation would copy with a snapshot older than its lock: refused
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT rotate_queue();
ROLLBACK;
RESET kc_flow.queue_rotation_size;
