-- The log's floor: a trim records the highest position it removed, and events_since
-- refuses a cursor below it (KC410) instead of answering a page with a hole.
SET search_path = kc_flow, public;
\set SHOW_CONTEXT never
SELECT settled_event_id() >= coalesce((sequence_log()).last_pos, 0) AS sequenced;
-- no trim yet: the floor is 0 and every cursor works
SELECT log_floor() AS floor_before, count(*) FILTER (WHERE floor_pos > 0) AS floors FROM log_rotations;
SELECT count(*) > 0 AS from_zero FROM events_since(0, NULL, 10000);
-- the default retention (a week) removes nothing here, and leaves the floor alone
SELECT trim_event_log() AS floor_unchanged;
CREATE TEMP TABLE before AS SELECT l.pos, l.event_id FROM event_log l;
-- a short retention removes the handled events (dead-lettered payments keep theirs)
SELECT pg_sleep(1.1);
SELECT trim_event_log(1) AS floor \gset
SELECT :floor > 0 AS raised,
       :floor = (SELECT max(b.pos) FROM before b WHERE NOT EXISTS (SELECT 1 FROM event_log l WHERE l.pos = b.pos))
         AS highest_removed,
       NOT EXISTS (SELECT 1 FROM before b WHERE b.pos > :floor
                      AND NOT EXISTS (SELECT 1 FROM event_log l WHERE l.pos = b.pos)) AS all_above_kept,
       EXISTS (SELECT 1 FROM before b WHERE b.pos < :floor
                  AND EXISTS (SELECT 1 FROM event_log l WHERE l.pos = b.pos)) AS dead_lettered_kept,
       log_floor() = :floor AS floor_is_recorded,
       (SELECT count(DISTINCT floor_pos) FILTER (WHERE floor_pos > 0) FROM log_rotations) AS floors;
-- below the floor: KC410, with the floor in the detail and what to do in the hint
DO $$
DECLARE
    state text; msg text; detail text; hint text;
BEGIN
    PERFORM * FROM kc_flow.events_since(kc_flow.log_floor() - 1);
    RAISE NOTICE 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                            hint = PG_EXCEPTION_HINT;
    RAISE NOTICE '% | % | % | %', state, regexp_replace(msg, '\d+', 'N'),
                 replace(detail, kc_flow.log_floor()::text, 'FLOOR'), hint;
END;
$$;
\set VERBOSITY terse
SELECT count(*) AS refused_for_a_student FROM events_since(0, '00000000-0000-0000-0000-00000000a002', 10);
\set VERBOSITY default
-- at the floor and above, as before: every position still in the log above it
SELECT count(*) = (SELECT count(*) FROM event_log l WHERE l.pos > log_floor()) AS at_floor
  FROM events_since(log_floor(), NULL, 10000);
SELECT count(*) AS at_head FROM events_since(settled_event_id(), NULL, 10);
-- a trim that removes nothing more keeps the floor
SELECT trim_event_log(1) = :floor AS floor_kept,
       (SELECT count(DISTINCT floor_pos) FILTER (WHERE floor_pos > 0) FROM log_rotations) AS floors;
-- new events get positions above the floor and are read from it
SELECT emit_event('ALLOCATION_PENDING', gen_random_uuid(), '00000000-0000-0000-0000-00000000a002') > 0 AS emitted;
SELECT last_pos > :floor AS above_floor FROM sequence_log();
SELECT event_type FROM events_since(:floor, '00000000-0000-0000-0000-00000000a002', 10) ORDER BY pos DESC LIMIT 1;
SELECT trim_event_log(0);
