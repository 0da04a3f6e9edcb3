-- pgTAP: one table of event types (extension/event_types.c) that the log, the queue and the stages agree on.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(11);
SET LOCAL kc_flow.retry_base_ms = 60000;   -- a failed attempt waits, so run_pending meets each event once

SELECT is((SELECT count(DISTINCT event_type) FROM kc_flow.event_types()),
          (SELECT count(*) FROM kc_flow.event_types()), 'each event type has one row');
SELECT is((SELECT count(*) FROM kc_flow.event_types() WHERE event_type !~ '^[A-Z]+(_[A-Z]+)*$'), 0::bigint,
          'type names are upper snake case (they go unescaped into the NOTIFY payload)');
SELECT ok((SELECT bool_and(kc_flow.is_event_type(event_type)) FROM kc_flow.event_types()),
          'is_event_type accepts every type of the table');
SELECT ok(NOT kc_flow.is_event_type('NOT_AN_EVENT') AND NOT kc_flow.is_event_type('purchase_confirmed'),
          'is_event_type refuses any other name, case included');
SELECT matches((SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'events_type_known' AND conrelid = 'kc_flow.events'::regclass),
               'is_event_type\(event_type\)', 'the log checks its types against the table');
SELECT throws_ok($$INSERT INTO kc_flow.events (id, event_type, correlation_id, student_id, version)
                   VALUES (-1, 'NOT_AN_EVENT', gen_random_uuid(), gen_random_uuid(), 1)$$, '23514', NULL,
                 'the log refuses a type the table does not have');
SELECT throws_ok($$SELECT kc_flow.emit_event('NOT_AN_EVENT', gen_random_uuid(), gen_random_uuid())$$, '22023', NULL,
                 'emit_event refuses a type the table does not have');

-- one event of every type, for a student nobody knows: the stages that consume them can only fail
CREATE TEMP TABLE emitted AS
SELECT t.event_type, t.consumer,
       kc_flow.emit_event(t.event_type, gen_random_uuid(), '00000000-0000-0000-0000-0000000e7e01') AS id
  FROM kc_flow.event_types() t;
SELECT is((SELECT count(*) FROM emitted), (SELECT count(*) FROM kc_flow.event_types()),
          'emit_event accepts every type of the table');
SELECT results_eq($$SELECT e.event_type, q.consumer FROM emitted e
                      LEFT JOIN kc_flow.event_queue q ON q.event_id = e.id ORDER BY e.id$$,
                  $$SELECT event_type, consumer FROM emitted ORDER BY id$$,
                  'each event is queued for its type''s stage, and only a type with a stage is queued');
SELECT is(kc_flow.run_pending(100), (SELECT count(*)::int FROM emitted WHERE consumer IS NOT NULL),
          'run_pending takes every queued event to a stage once');
SELECT is((SELECT count(*) FROM (SELECT q.last_error FROM kc_flow.event_queue q JOIN emitted e ON e.id = q.event_id
                                   UNION ALL
                                   SELECT d.error_message FROM kc_flow.dead_letters d JOIN emitted e ON e.id = d.event_id) f (error)
            WHERE f.error LIKE '%has no stage named%'), 0::bigint,
          'every consumer the table names is a stage of the dispatcher');

SELECT * FROM finish();
ROLLBACK;
