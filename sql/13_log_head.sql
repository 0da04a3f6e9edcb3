-- The log's head: a cursor above it was given by a log that has since been rewound (a
-- failover that lost commits, a restored backup), so events_since refuses it with KC410,
-- as below the floor, instead of answering nothing until the log grows past it.
SET search_path = kc_flow, public;
\set SHOW_CONTEXT never
CREATE FUNCTION pg_temp.answer(after bigint, student uuid DEFAULT NULL) RETURNS text
    LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    SELECT count(*) INTO n FROM kc_flow.events_since(after, student, 10);
    RETURN n || ' rows';
EXCEPTION WHEN OTHERS THEN
    RETURN 'SQLSTATE ' || SQLSTATE;
END;
$$;
SELECT pg_temp.answer(log_head()) AS at_head,
       pg_temp.answer(log_head() - 1) AS below_head,
       pg_temp.answer(log_head() + 1) AS above_head,
       pg_temp.answer(log_head() + 5, '00000000-0000-0000-0000-00000000a002') AS above_for_a_student;
-- the message: where the log ends, and what to do
DO $$
DECLARE
    state text; msg text; detail text; hint text;
BEGIN
    PERFORM * FROM kc_flow.events_since(kc_flow.log_head() + 1);
    RAISE NOTICE 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                            hint = PG_EXCEPTION_HINT;
    RAISE NOTICE '% | % | % | %', state, replace(msg, (kc_flow.log_head() + 1)::text, 'HEAD+1'),
                 replace(detail, kc_flow.log_head()::text, 'HEAD'), hint;
END;
$$;
-- a rewound log: the last round's positions lost (as by a failover that lost its commit);
-- a cursor that read them is refused, one at the new head reads on
BEGIN;
CREATE TEMP TABLE lost AS SELECT r.first_pos, r.last_pos FROM log_rounds r ORDER BY r.last_pos DESC LIMIT 1;
DELETE FROM event_log l USING lost WHERE l.pos BETWEEN lost.first_pos AND lost.last_pos;
DELETE FROM log_rounds r USING lost WHERE r.last_pos = lost.last_pos;
SELECT log_head() < last_pos AS head_lowered,
       pg_temp.answer(last_pos) AS lost_cursor,
       pg_temp.answer(log_head()) AS new_head
  FROM lost;
ROLLBACK;
