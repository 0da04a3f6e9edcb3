-- The operator console's reads (extension/schema/60_admin.sql): a payment's story,
-- the search, the queue figures; any text searched is taken literally and changes nothing.
SET search_path = kc_flow, public;
\set SHOW_CONTEXT never
\set VERBOSITY default
SET kc_flow.retry_base_ms = 0;
SET client_min_messages = error;

-- a student of its own (ids that no other test uses), a course, one trainer free all week
INSERT INTO students (id, display_name, timezone) VALUES
    ('ad0000aa-0000-4000-8000-000000000001', 'Zoë Consoletest', 'Europe/Berlin'),
    ('ad0000aa-0000-4000-8000-000000000002', 'Zoran 100%_Consoletest', 'UTC');
INSERT INTO courses (id, title, is_published) VALUES ('ad0000cc-0000-4000-8000-000000000001', 'Console Course', true);
INSERT INTO trainers (id, display_name, timezone) VALUES ('ad0000dd-0000-4000-8000-000000000001', 'Conny', 'UTC');
INSERT INTO trainer_courses VALUES ('ad0000dd-0000-4000-8000-000000000001', 'ad0000cc-0000-4000-8000-000000000001');
INSERT INTO trainer_availability (trainer_id, weekday, start_time, end_time)
SELECT 'ad0000dd-0000-4000-8000-000000000001', d, '00:00', '23:59' FROM generate_series(1, 7) d;
-- payment 1 becomes a purchase with 10 sessions; payment 2 (same course) is dead-lettered
INSERT INTO payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status) VALUES
    ('ad00e000-0000-4000-8000-000000000001', 'ad0000aa-0000-4000-8000-000000000001', 'ad0000cc-0000-4000-8000-000000000001',
     10, '{"weekdays":[1],"start":"10:00","timezone":"UTC","starts_on":"2031-01-06"}', 1000, 'succeeded');
SELECT run_pending(50) > 0 AS ran;
INSERT INTO payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status) VALUES
    ('ad00e000-0000-4000-8000-000000000002', 'ad0000aa-0000-4000-8000-000000000001', 'ad0000cc-0000-4000-8000-000000000001',
     20, '{"weekdays":[3],"start":"10:00","timezone":"UTC","starts_on":"2031-01-06"}', 2000, 'succeeded');
SELECT run_pending(50) > 0 AS ran;
-- payment 3 is pending: no event yet
SELECT create_payment('ad0000aa-0000-4000-8000-000000000002', 'ad0000cc-0000-4000-8000-000000000001', 30,
                      '{"weekdays":[5],"start":"10:00","timezone":"UTC"}') IS NOT NULL AS pending_created;

-- the story of payment 1: each event, the stage that consumes it and the one that handled it
SELECT s->'payment'->>'status' AS status, s->'payment'->>'student_name' AS student,
       s->'payment'->>'course_title' AS course, s->'purchase'->>'is_active' AS active,
       s->'allocation'->>'status' AS allocation, s->'allocation'->>'trainer_name' AS trainer,
       s->'sessions'->>'created' AS created, s->'sessions'->>'expected' AS expected,
       jsonb_array_length(s->'sessions'->'list') AS listed, jsonb_array_length(s->'dead_letters') AS dead
  FROM payment_story('ad00e000-0000-4000-8000-000000000001') s;
SELECT e->>'type' AS type, e->>'stage' AS stage,
       (SELECT string_agg(p->>'consumer', ',') FROM jsonb_array_elements(e->'processed_by') p) AS handled_by,
       e->'queued' AS queued, e->'dead_letters' AS dead_letters, (e->>'version')::bigint > 0 AS versioned
  FROM jsonb_array_elements(payment_story('ad00e000-0000-4000-8000-000000000001')->'events') e
 ORDER BY (e->>'id')::bigint;
SELECT (SELECT array_agg((x->>'seq')::int ORDER BY (x->>'seq')::int)
          FROM jsonb_array_elements(payment_story('ad00e000-0000-4000-8000-000000000001')->'sessions'->'list') x) AS seqs;

-- the story of payment 2: dead-lettered at its first attempt, with the reason
SELECT s->'purchase' AS purchase, s->'allocation' AS allocation, s->'sessions'->>'created' AS created
  FROM payment_story('ad00e000-0000-4000-8000-000000000002') s;
SELECT d->>'event_type' AS event_type, d->>'consumer' AS consumer, d->>'attempts' AS attempts,
       d->>'sqlstate' AS sqlstate, d->>'error' AS error, d->>'resolved' AS resolved
  FROM jsonb_array_elements(payment_story('ad00e000-0000-4000-8000-000000000002')->'dead_letters') d;
SELECT e->>'type' AS type, jsonb_array_length(e->'dead_letters') AS dead_letters,
       jsonb_array_length(e->'processed_by') AS handled
  FROM jsonb_array_elements(payment_story('ad00e000-0000-4000-8000-000000000002')->'events') e
 ORDER BY (e->>'id')::bigint;
-- a pending payment has a story without events; an unknown one none
SELECT s->'payment'->>'status' AS status, s->'events' AS events, s->'purchase' AS purchase
  FROM payment_story((SELECT id FROM payments WHERE student_id = 'ad0000aa-0000-4000-8000-000000000002')) s;
SELECT payment_story('ad00e000-0000-4000-8000-0000000000ff') IS NULL AS unknown_is_null,
       payment_story(NULL) IS NULL AS null_is_null;

-- search: a payment id, its first characters (any case, dashes or not), an event id
SELECT p->>'id' AS id, p->>'match' AS match, p->>'student_name' AS student
  FROM jsonb_array_elements(admin_search('ad00e000-0000-4000-8000-000000000002')->'payments') p;
SELECT p->>'id' AS id, p->>'match' AS match
  FROM jsonb_array_elements(admin_search('AD00E000')->'payments') p;
SELECT count(*) AS by_prefix_without_dashes
  FROM jsonb_array_elements(admin_search('ad00e0000000')->'payments') p;
SELECT p->>'id' AS id, p->>'match' ~ '^event [0-9]+$' AS by_event
  FROM jsonb_array_elements(admin_search((SELECT min(id)::text FROM events
                                           WHERE correlation_id = 'ad00e000-0000-4000-8000-000000000001'))->'payments') p
 WHERE p->>'id' LIKE 'ad00e000%';
-- students: by id prefix and by part of the name (case-insensitive, accents kept), with their payments
SELECT s->>'display_name' AS name, s->>'match' AS match, s->>'payment_count' AS payments,
       (SELECT string_agg(x->>'status', ',') FROM jsonb_array_elements(s->'payments') x) AS statuses
  FROM jsonb_array_elements(admin_search('ad0000aa')->'students') s;
SELECT s->>'display_name' AS name, s->>'match' AS match
  FROM jsonb_array_elements(admin_search('  zoë  ')->'students') s;
SELECT s->>'display_name' AS name FROM jsonb_array_elements(admin_search('consoletest')->'students') s;
-- LIKE wildcards are text like any other: % and _ match only themselves
SELECT s->>'display_name' AS name FROM jsonb_array_elements(admin_search('100%_c')->'students') s;
SELECT jsonb_array_length(admin_search('%')->'students') AS percent, jsonb_array_length(admin_search('_')->'students') AS underscore;
-- limits: at most max_results of each kind, truncated said
SELECT jsonb_array_length(r->'students') AS students, r->>'truncated' AS truncated, r->>'message' AS message
  FROM admin_search('consoletest', 1) r;

-- anything else: found nothing, said clearly, nothing changed
CREATE TEMP TABLE before AS
SELECT (SELECT count(*) FROM payments) AS payments, (SELECT count(*) FROM events) AS events,
       (SELECT count(*) FROM students) AS students;
SELECT r->>'query' AS query, jsonb_array_length(r->'payments') + jsonb_array_length(r->'students') AS found,
       r->>'message' AS message
  FROM unnest(ARRAY['''; DROP TABLE kc_flow.payments; --', 'ad00e000-0000-4000-8000-0000000000ff', 'not a uuid',
                    '99999999999999999999', '\', '', '   ', NULL]) AS q,
       admin_search(q) AS r;
SELECT admin_search(repeat('x', 200))->>'message' LIKE 'nothing matches%' AS at_200_fine;
SELECT admin_search(repeat('x', 201));
SELECT admin_search(repeat('é', 5000));
SELECT admin_search('a', 0);
SELECT admin_search('a', 101);
SELECT admin_search('a', NULL);
SELECT (SELECT count(*) FROM payments) = b.payments AND (SELECT count(*) FROM events) = b.events
       AND (SELECT count(*) FROM students) = b.students AS nothing_changed
  FROM before b;

-- the queue figures
SELECT (c->>'queue_depth')::int >= 0 AS depth, (c->>'dead_letters')::int >= 1 AS dead_letters,
       c ?& ARRAY['queue_depth', 'queue_due', 'queue_retrying', 'dead_letters', 'at'] AS complete
  FROM admin_queue_counts() c;

-- they are security definers with a fixed search path, read-only, commented, and not for PUBLIC
SELECT p.proname, p.prosecdef AS definer, p.provolatile AS volatility, p.proconfig AS config,
       obj_description(p.oid, 'pg_proc') IS NOT NULL AS commented,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public_may_execute
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'kc_flow' AND p.proname IN ('payment_story', 'admin_search', 'admin_queue_counts')
 ORDER BY 1;
RESET client_min_messages;
RESET kc_flow.retry_base_ms;
