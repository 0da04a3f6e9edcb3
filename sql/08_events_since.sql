-- events_since(): the log in id order, per student or for all, with bounds checked.
-- (Ids committing out of order are covered by the isolation spec.)
SET search_path = kc_flow, public;
\set SHOW_CONTEXT never
SELECT count(*) = (SELECT count(*) FROM events) AS all_events,
       bool_and(id > 0) AS ids_positive
  FROM events_since(0, NULL, 10000);
SELECT array_agg(event_type ORDER BY id) = (SELECT array_agg(event_type ORDER BY id) FROM events
                                             WHERE student_id = '00000000-0000-0000-0000-00000000a002')
       AS same_as_log
  FROM events_since(0, '00000000-0000-0000-0000-00000000a002', 10000);
SELECT count(*) AS limited FROM events_since(0, NULL, 3);
SELECT count(*) AS after_last FROM events_since((SELECT max(id) FROM events), NULL, 100);
SELECT count(*) AS unknown_student FROM events_since(0, '00000000-0000-0000-0000-00000000ffff', 100);
SELECT * FROM events_since(-1, NULL, 10);
SELECT * FROM events_since(0, NULL, 0);
SELECT * FROM events_since(0, NULL, 100000);
SELECT * FROM events_since(NULL, NULL, 10);
-- versions only grow along a student's events
SELECT bool_and(version > prev) AS versions_increase FROM (
  SELECT version, lag(version, 1, 0::bigint) OVER (ORDER BY id) AS prev
    FROM events WHERE student_id = '00000000-0000-0000-0000-00000000a002') v;
-- not in repeatable read: the snapshot would predate the horizon
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT count(*) FROM events_since(0, NULL, 10);
ROLLBACK;
-- PREPARE TRANSACTION of a transaction that emitted events is refused
BEGIN;
INSERT INTO payments (student_id, course_id, purchase_tier, time_slot, amount_cents, status)
VALUES ('00000000-0000-0000-0000-00000000a003', '00000000-0000-0000-0000-00000000c002', 10,
        '{"weekdays":[3],"start":"17:00","timezone":"America/New_York"}', 100, 'succeeded');
PREPARE TRANSACTION 'kc';
