-- events_since(): the log in position (commit) order, per student or for all, with bounds checked.
-- (Events committing out of order, and concurrent sequencers, are covered by the isolation spec.)
SET search_path = kc_flow, public;
\set SHOW_CONTEXT never
-- no workers here: a round of the sequencer gives positions to what committed
SELECT (sequence_log()).last_pos = settled_event_id() AS sequenced;
SELECT count(*) = (SELECT count(*) FROM events) AS all_events,
       bool_and(pos = rn) AS positions_dense
  FROM (SELECT pos, row_number() OVER (ORDER BY pos) AS rn FROM events_since(0, NULL, 10000)) l;
SELECT array_agg(event_type ORDER BY pos) = (SELECT array_agg(e.event_type ORDER BY l.pos) FROM events e
                                               JOIN event_log l ON l.event_id = e.id
                                              WHERE e.student_id = '00000000-0000-0000-0000-00000000a002')
       AS same_as_log
  FROM events_since(0, '00000000-0000-0000-0000-00000000a002', 10000);
SELECT count(*) AS limited FROM events_since(0, NULL, 3);
SELECT count(*) AS after_last FROM events_since(settled_event_id(), NULL, 100);
SELECT count(*) AS unknown_student FROM events_since(0, '00000000-0000-0000-0000-00000000ffff', 100);
SELECT bool_and(logged_at IS NOT NULL AND logged_at >= created_at) AS logged_after_written
  FROM events_since(0, NULL, 10000);
SELECT * FROM events_since(-1, NULL, 10);
SELECT * FROM events_since(0, NULL, 0);
SELECT * FROM events_since(0, NULL, 100000);
SELECT * FROM events_since(NULL, NULL, 10);
-- versions only grow along a student's events
SELECT bool_and(version > prev) AS versions_increase FROM (
  SELECT version, lag(version, 1, 0::bigint) OVER (ORDER BY pos) AS prev
    FROM events_since(0, '00000000-0000-0000-0000-00000000a002', 10000)) v;
-- a committed event is readable once a round gave it a position, not before
SELECT emit_event('ALLOCATION_PENDING', gen_random_uuid(), '00000000-0000-0000-0000-00000000a002') > 0 AS emitted;
SELECT count(*) AS before_round FROM events_since(settled_event_id(), NULL, 100);
SELECT health()->'log_unsequenced' AS unsequenced, health()->'log_unannounced' AS unannounced;
SELECT last_pos - first_pos AS one_position FROM sequence_log();
SELECT event_type, pos = settled_event_id() AS newest FROM events_since(settled_event_id() - 1, NULL, 100);
SELECT health()->'log_unsequenced' AS unsequenced, (health(0)->>'reader_lag_seconds')::float8 > 0 AS reader_behind,
       (health(settled_event_id())->>'reader_lag_seconds')::float8 AS reader_lag;
SELECT sequence_log();
-- any snapshot sees a prefix of the log: repeatable read is fine
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT count(*) = (SELECT count(*) FROM event_log l JOIN events e ON e.id = l.event_id) AS whole_log
  FROM events_since(0, NULL, 10000);
ROLLBACK;
-- the health of the pipeline, one jsonb
SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(health()) k;
SELECT (health()->>'oldest_xact_holding_events_seconds')::float8 AS no_open_writer;
BEGIN;
SELECT emit_event('ALLOCATION_PENDING', gen_random_uuid(), '00000000-0000-0000-0000-00000000a002') > 0 AS emitted;
SELECT pg_sleep(0.05);
SELECT (health()->>'oldest_xact_holding_events_seconds')::float8 >= 0.05 AS open_writer_seen;
ROLLBACK;
-- PREPARE TRANSACTION of a transaction that emitted events is refused
BEGIN;
INSERT INTO payments (student_id, course_id, purchase_tier, time_slot, amount_cents, status)
VALUES ('00000000-0000-0000-0000-00000000a003', '00000000-0000-0000-0000-00000000c002', 10,
        '{"weekdays":[3],"start":"17:00","timezone":"America/New_York"}', 100, 'succeeded');
PREPARE TRANSACTION 'kc';
