-- pgTAP: the payments view's trigger takes its short paths in C for the checkout's
-- INSERT of a payment that passes every check and its status-only UPDATE, and hands
-- every other write to payments_write_rules() (whose errors sql/03_payment_rules
-- checks), and both
-- paths and the view's derived columns (payment_status(), payment_updated_at(),
-- payment_succeeded_at()) show a payment as 0.1.0's table did (docs/extension.md,
-- "Payments: a status change inserts a row").  pg_stat_xact_user_functions counts the
-- calls of the rules' PL/pgSQL function in this transaction.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SET LOCAL track_functions = 'pl';
SELECT plan(30);

INSERT INTO kc_flow.students (id, display_name) VALUES ('00000000-0000-0000-0000-00000000b401', 'Write path');
INSERT INTO kc_flow.courses (id, title, is_published) VALUES ('00000000-0000-0000-0000-00000000b402', 'Paths', true);
INSERT INTO kc_flow.payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents)
SELECT ('00000000-0000-0000-0000-00000000b41' || n)::uuid, '00000000-0000-0000-0000-00000000b401',
       '00000000-0000-0000-0000-00000000b402', 10,
       jsonb_build_object('weekdays', jsonb_build_array(n), 'start', '10:00', 'timezone', 'UTC'), 100
  FROM generate_series(1, 3) n;

CREATE TEMP VIEW rules_calls AS
SELECT coalesce(sum(calls), 0)::int AS n FROM pg_stat_xact_user_functions
 WHERE schemaname = 'kc_flow' AND funcname = 'payments_write_rules';
CREATE TEMP TABLE seen AS SELECT (SELECT n FROM rules_calls) AS calls;

SELECT is((SELECT calls FROM seen), 0, 'an INSERT that passes every check does not call the rules');
SELECT is((SELECT count(*)::int FROM kc_flow.payment_orders WHERE student_id = '00000000-0000-0000-0000-00000000b401'),
          3, 'it wrote the orders');
INSERT INTO kc_flow.payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status)
VALUES ('00000000-0000-0000-0000-00000000b414', '00000000-0000-0000-0000-00000000b401',
        '00000000-0000-0000-0000-00000000b402', 20,
        '{"weekdays":[2],"start":"09:30","timezone":"UTC","starts_on":"2031-02-03"}', 100, 'failed');
SELECT is((SELECT n FROM rules_calls), 1, 'an INSERT with a starts_on goes through the rules');
CREATE TEMP TABLE inserted AS
WITH i AS (INSERT INTO kc_flow.payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status)
           VALUES ('00000000-0000-0000-0000-00000000b415', '00000000-0000-0000-0000-00000000b401',
                   '00000000-0000-0000-0000-00000000b402', 30,
                   '{"weekdays":[6,7],"start":"23:59","timezone":"Europe/Berlin"}', 0, 'succeeded')
           RETURNING *)
SELECT * FROM i;
SELECT is((SELECT row(i.*)::text FROM inserted i),
          (SELECT row(p.*)::text FROM kc_flow.payments p WHERE p.id = '00000000-0000-0000-0000-00000000b415'),
          'a payment inserted as succeeded: RETURNING shows the row the view then shows');
SELECT is((SELECT array_agg(event_type::text) FROM kc_flow.events WHERE correlation_id = '00000000-0000-0000-0000-00000000b415'),
          ARRAY['PURCHASE_CONFIRMED'], 'and it emitted its event, without the rules');
SELECT is((SELECT row(status, succeeded_at, updated_at)::text FROM kc_flow.payments
            WHERE id = '00000000-0000-0000-0000-00000000b414'),
          row('failed', NULL::timestamptz, now())::text, 'a payment inserted as failed shows it');
SELECT is((SELECT row(status, succeeded_at, updated_at)::text FROM kc_flow.payments
            WHERE id = '00000000-0000-0000-0000-00000000b411'),
          row('pending', NULL::timestamptz, now())::text,
          'a pending payment: no outcome, no success time, updated when inserted');

CREATE TEMP TABLE confirmed AS
WITH u AS (UPDATE kc_flow.payments SET status = 'succeeded' WHERE id = '00000000-0000-0000-0000-00000000b411'
           RETURNING *)
SELECT * FROM u;
SELECT is((SELECT n FROM rules_calls), 1, 'a confirmation by UPDATE does not call the rules');
SELECT is((SELECT count(*)::int FROM kc_flow.payment_outcomes WHERE payment_id = '00000000-0000-0000-0000-00000000b411'),
          1, 'it inserted the outcome');
SELECT is((SELECT c::text FROM confirmed c), (SELECT p::text FROM kc_flow.payments p WHERE p.id = '00000000-0000-0000-0000-00000000b411'),
          'its RETURNING row is the row the view then shows');
SELECT is((SELECT row(status, succeeded_at, updated_at)::text FROM confirmed),
          row('succeeded', now(), now())::text, 'succeeded, with the success time and the update time now()');
SELECT is((SELECT count(*)::int FROM kc_flow.events WHERE correlation_id = '00000000-0000-0000-0000-00000000b411'
             AND event_type = 'PURCHASE_CONFIRMED'), 1, 'the confirmation emitted its event in the same transaction');

WITH u AS (UPDATE kc_flow.payments SET status = status WHERE id = '00000000-0000-0000-0000-00000000b411' RETURNING status)
SELECT is((SELECT status FROM u), 'succeeded', 'an UPDATE that keeps the status reports it');
SELECT is((SELECT count(*)::int FROM kc_flow.payment_outcomes WHERE payment_id = '00000000-0000-0000-0000-00000000b411'),
          1, 'and inserts no outcome');

UPDATE kc_flow.payments SET status = 'failed' WHERE id = '00000000-0000-0000-0000-00000000b412';
SELECT is((SELECT row(status, succeeded_at)::text FROM kc_flow.payments WHERE id = '00000000-0000-0000-0000-00000000b412'),
          row('failed', NULL::timestamptz)::text, 'a failure by UPDATE: failed, no success time');

SELECT throws_ok($$UPDATE kc_flow.payments SET status = 'refunded' WHERE id = '00000000-0000-0000-0000-00000000b413'$$,
                 '23514', 'payment 00000000-0000-0000-0000-00000000b413 cannot go from pending to refunded',
                 'a status change the rules refuse gets their error');
-- (a call that raised is not counted by pg_stat_xact_user_functions)
UPDATE seen SET calls = (SELECT n FROM rules_calls);
UPDATE kc_flow.payments SET metadata = '{"via": "rules"}' WHERE id = '00000000-0000-0000-0000-00000000b413';
SELECT is((SELECT n FROM rules_calls) - (SELECT calls FROM seen), 1, 'a change of metadata goes through the rules');

-- the C path takes a slot only when validate_time_slot() would: each of these near misses
-- is refused with the rules' SQLSTATE
SELECT throws_ok(format($$INSERT INTO kc_flow.payments (student_id, course_id, purchase_tier, time_slot, amount_cents)
                           VALUES ('00000000-0000-0000-0000-00000000b401', '00000000-0000-0000-0000-00000000b402',
                                   10, %L, 100)$$, slot), '22023', NULL, 'refused: ' || slot)
  FROM unnest(ARRAY['{"weekdays":[1.0],"start":"18:00","timezone":"UTC"}',
                    '{"weekdays":[1,1],"start":"18:00","timezone":"UTC"}',
                    '{"weekdays":[],"start":"18:00","timezone":"UTC"}',
                    '{"weekdays":[0],"start":"18:00","timezone":"UTC"}',
                    '{"weekdays":["1"],"start":"18:00","timezone":"UTC"}',
                    '{"weekdays":1,"start":"18:00","timezone":"UTC"}',
                    '{"weekdays":[1],"start":"24:00","timezone":"UTC"}',
                    '{"weekdays":[1],"start":"7:00","timezone":"UTC"}',
                    '{"weekdays":[1],"start":"18:60","timezone":"UTC"}',
                    '{"weekdays":[1],"start":"18:00","timezone":"XYZ+3"}',
                    '{"weekdays":[1],"start":"18:00"}',
                    '{"weekdays":[1],"start":"18:00","timezone":"UTC","at":1}']) slot;
UPDATE seen SET calls = (SELECT n FROM rules_calls);
INSERT INTO kc_flow.payments (student_id, course_id, purchase_tier, time_slot, amount_cents)
VALUES ('00000000-0000-0000-0000-00000000b401', '00000000-0000-0000-0000-00000000b402', 10,
        '{"timezone":"Pacific/Chatham","weekdays":[7,1],"start":"00:00"}', 0);
SELECT is((SELECT n FROM rules_calls) - (SELECT calls FROM seen), 0,
          'a well-formed slot in any key order takes the C path');

SELECT * FROM finish();
ROLLBACK;
