-- Malformed input at every SQL door: a clear error, and nothing changes.
SET search_path = kc_flow, public;
\set SHOW_CONTEXT never
\set VERBOSITY default
CREATE TEMP TABLE before AS
SELECT (SELECT count(*) FROM payments) AS payments, (SELECT count(*) FROM events) AS events,
       (SELECT count(*) FROM student_course_purchases) AS purchases;

-- NULLs
SELECT create_payment(NULL, '00000000-0000-0000-0000-00000000c001', 10, '{"weekdays":[1],"start":"10:00","timezone":"UTC"}');
SELECT create_payment('00000000-0000-0000-0000-00000000a001', NULL, 10, '{"weekdays":[1],"start":"10:00","timezone":"UTC"}');
SELECT create_payment('00000000-0000-0000-0000-00000000a001', '00000000-0000-0000-0000-00000000c001', NULL,
                      '{"weekdays":[1],"start":"10:00","timezone":"UTC"}');
SELECT create_payment('00000000-0000-0000-0000-00000000a001', '00000000-0000-0000-0000-00000000c001', 10, NULL);
SELECT create_payment('00000000-0000-0000-0000-00000000a001', '00000000-0000-0000-0000-00000000c001', 10,
                      '{"weekdays":[1],"start":"10:00","timezone":"UTC"}', NULL);
SELECT confirm_payment(NULL);
SELECT flow_status(NULL) IS NULL AS null_status;
SELECT auto_assign(NULL) IS NULL AS null_assign;
SELECT run_pending(NULL) IS NULL AS null_run;
SELECT emit_event(NULL, gen_random_uuid(), gen_random_uuid(), '{}');

-- wrong types and bad JSON
SELECT confirm_payment('not-a-uuid');
SELECT create_payment('00000000-0000-0000-0000-00000000a001', '00000000-0000-0000-0000-00000000c001', 10, '{"weekdays":');
SELECT create_payment('00000000-0000-0000-0000-00000000a001', '00000000-0000-0000-0000-00000000c001', 10,
                      '{"weekdays":"1,3","start":"10:00","timezone":"UTC"}');
SELECT create_payment('00000000-0000-0000-0000-00000000a001', '00000000-0000-0000-0000-00000000c001', 10,
                      '{"weekdays":[1.5],"start":"10:00","timezone":"UTC"}');
SELECT create_payment('00000000-0000-0000-0000-00000000a001', '00000000-0000-0000-0000-00000000c001', 10,
                      '{"weekdays":[1],"start":1000,"timezone":"UTC"}');
SELECT create_payment('00000000-0000-0000-0000-00000000a001', '00000000-0000-0000-0000-00000000c001', 10,
                      '{"weekdays":[1],"start":"10:00","timezone":null}');
SELECT create_payment('00000000-0000-0000-0000-00000000a001', '00000000-0000-0000-0000-00000000c001', 10, '"a string"');
SELECT emit_event('NOT_AN_EVENT', gen_random_uuid(), gen_random_uuid(), '{}');

-- injection strings are data, never code
SELECT create_payment('00000000-0000-0000-0000-00000000a001', '00000000-0000-0000-0000-00000000c001', 10,
                      '{"weekdays":[1],"start":"10:00","timezone":"UTC''; DROP TABLE kc_flow.payments; --"}');
SELECT create_payment('00000000-0000-0000-0000-00000000a001', '00000000-0000-0000-0000-00000000c001', 10,
                      '{"weekdays":[1],"start":"10:00","timezone":"../../../../etc/passwd"}');
SELECT kc_flow.is_iana_timezone(E'Europe/Berlin\n'), kc_flow.is_iana_timezone('Europe/Berlin; SELECT 1');
INSERT INTO students (display_name, timezone) VALUES ('Robert''); DROP TABLE students;--', 'UTC')
RETURNING display_name;
DELETE FROM students WHERE display_name LIKE 'Robert%';

-- huge values
SELECT create_payment('00000000-0000-0000-0000-00000000a001', '00000000-0000-0000-0000-00000000c001', 2147483647,
                      '{"weekdays":[1],"start":"10:00","timezone":"UTC"}');
-- (a student who does not hold the course yet: a held course is refused, test/pgtap/already_active.sql)
INSERT INTO students (id, display_name) VALUES ('00000000-0000-0000-0000-00000000a005', 'Eve');
SELECT create_payment('00000000-0000-0000-0000-00000000a005', '00000000-0000-0000-0000-00000000c001', 10,
                      '{"weekdays":[1],"start":"10:00","timezone":"UTC"}', 9223372036854775807, 'USD',
                      jsonb_build_object('note', repeat('x', 100))) IS NOT NULL AS largest_amount_is_accepted;
DELETE FROM payments WHERE amount_cents = 9223372036854775807;
SELECT create_payment('00000000-0000-0000-0000-00000000a001', '00000000-0000-0000-0000-00000000c001', 10,
                      jsonb_build_object('weekdays', jsonb_build_array(1), 'start', '10:00', 'timezone', repeat('A', 64)));
SELECT create_payment('00000000-0000-0000-0000-00000000a001', '00000000-0000-0000-0000-00000000c001', 10,
                      '{"weekdays":[1],"start":"10:00","timezone":"UTC","starts_on":"99999-01-01"}');
\set VERBOSITY terse
SELECT count(*) FROM events_since(9223372036854775807, NULL, 10);
\set VERBOSITY default
SELECT run_pending(-5);
SELECT retry_dead_letter(-1);

-- nothing changed
SELECT (SELECT count(*) FROM payments) = b.payments AS payments_same,
       (SELECT count(*) FROM events) = b.events AS events_same,
       (SELECT count(*) FROM student_course_purchases) = b.purchases AS purchases_same,
       (SELECT count(*) FROM pg_views WHERE schemaname = 'kc_flow' AND viewname = 'payments') AS payments_table
  FROM before b;
