-- A 30-session purchase goes through every stage: purchase, allocation, sessions.
-- run_pending() drives it by hand (the workers run in another database).
SET search_path = kc_flow, public;
\set SHOW_CONTEXT never
INSERT INTO payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents)
VALUES ('00000000-0000-0000-0000-0000000be101', '00000000-0000-0000-0000-00000000a002',
        '00000000-0000-0000-0000-00000000c001', 30,
        '{"weekdays":[1,3,5],"start":"18:30","timezone":"Asia/Kolkata","starts_on":"2026-12-07"}', 99900);
SELECT confirm_payment('00000000-0000-0000-0000-0000000be101') IS NOT NULL AS confirmed;
SELECT run_pending(10) AS events_handled;

-- exactly one purchase, one approved allocation, thirty scheduled sessions
SELECT purchase_tier, is_active FROM student_course_purchases WHERE payment_id = '00000000-0000-0000-0000-0000000be101';
SELECT a.status, t.display_name AS trainer, a.session_mode
  FROM trainer_allocations a JOIN trainers t ON t.id = a.trainer_id
  JOIN student_course_purchases pu ON pu.id = a.purchase_id
 WHERE pu.payment_id = '00000000-0000-0000-0000-0000000be101';
SELECT count(*) AS sessions, min(seq), max(seq), count(DISTINCT starts_at) AS distinct_times,
       min(scheduled_date) AS first_day, max(scheduled_date) AS last_day,
       bool_and(scheduled_time = '18:30') AS all_at_1830_local,
       bool_and(extract(isodow FROM scheduled_date) IN (1, 3, 5)) AS on_mon_wed_fri,
       bool_and(ends_at - starts_at = interval '60 minutes') AS all_60_minutes
  FROM tutoring_sessions s JOIN trainer_allocations a ON a.id = s.allocation_id
  JOIN student_course_purchases pu ON pu.id = a.purchase_id
 WHERE pu.payment_id = '00000000-0000-0000-0000-0000000be101' AND s.status = 'scheduled';
SELECT starts_at AT TIME ZONE 'Asia/Kolkata' AS first_local_start
  FROM tutoring_sessions WHERE seq = 1 AND student_id = '00000000-0000-0000-0000-00000000a002';

-- the four events, in order, each handled once by its stage
SELECT e.event_type, array_agg(p.consumer ORDER BY p.consumer) FILTER (WHERE p.consumer IS NOT NULL) AS handled_by
  FROM events e LEFT JOIN processed_events p ON p.event_id = e.id
 WHERE e.correlation_id = '00000000-0000-0000-0000-0000000be101'
 GROUP BY e.id, e.event_type ORDER BY e.id;
SELECT count(*) AS queued FROM event_queue;
SELECT version > 0 AS cache_version_bumped FROM cache_versions WHERE student_id = '00000000-0000-0000-0000-00000000a002';

-- flow_status tells the same story
SELECT s->'payment'->>'status' AS status, jsonb_array_length(s->'events') AS events,
       s->>'purchases' AS purchases, s->'allocation'->>'status' AS allocation, s->>'sessions' AS sessions,
       jsonb_array_length(s->'dead_letters') AS dead_letters,
       (SELECT array_agg(e->>'type' ORDER BY (e->>'id')::bigint) FROM jsonb_array_elements(s->'events') e) AS types
  FROM flow_status('00000000-0000-0000-0000-0000000be101') s;
SELECT flow_status('00000000-0000-0000-0000-00000000ffff') AS unknown_payment;

-- running again changes nothing: effects are applied exactly once
SELECT run_pending(10) AS events_handled;
SELECT count(*) AS sessions FROM tutoring_sessions WHERE student_id = '00000000-0000-0000-0000-00000000a002';
SELECT run_pending(0);

-- the sequencer reads the log head after taking its lock: a transaction snapshot is refused
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT run_pending(10);
ROLLBACK;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT * FROM sequence_log();
ROLLBACK;
