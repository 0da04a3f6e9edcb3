-- pgTAP: the platform's checkout (a payment's INSERT into kc_flow.payments, then its
-- confirmation by UPDATE or by confirm_payment()) and a refund run no PL/pgSQL function: the
-- view's trigger takes its C paths (payments_write.c), confirm_payment() is C
-- (payments_confirm.c), the outcome's event is appended by payments_emit.c with
-- 0.1.0's payload, and the rings' slot defaults of the event's rows are C (ring_slot.c),
-- reading their generation as `SELECT last_value % 3` does, with its privilege check
-- (docs/extension.md, "Payments: a status change inserts a row").
-- pg_stat_xact_user_functions counts this transaction's calls.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SET LOCAL track_functions = 'pl';
SELECT plan(15);

INSERT INTO kc_flow.students (id, display_name) VALUES ('00000000-0000-0000-0000-00000000c501', 'Checkout calls');
INSERT INTO kc_flow.courses (id, title, is_published) VALUES ('00000000-0000-0000-0000-00000000c502', 'Calls', true);

CREATE TEMP VIEW pl_calls AS
SELECT coalesce(sum(s.calls), 0)::int AS n, coalesce(string_agg(s.funcname, ', '), '') AS names
  FROM pg_stat_xact_user_functions s
  JOIN pg_proc p ON p.oid = s.funcid
  JOIN pg_language l ON l.oid = p.prolang
 WHERE l.lanname = 'plpgsql';
CREATE TEMP TABLE seen AS SELECT n FROM pl_calls;

INSERT INTO kc_flow.payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, currency)
VALUES ('00000000-0000-0000-0000-00000000c511', '00000000-0000-0000-0000-00000000c501',
        '00000000-0000-0000-0000-00000000c502', 20,
        '{"weekdays":[1,3,5],"start":"18:00","timezone":"Asia/Kolkata"}', 99900, 'INR');
UPDATE kc_flow.payments SET status = 'succeeded' WHERE id = '00000000-0000-0000-0000-00000000c511';
SELECT is((SELECT n - (SELECT n FROM seen) FROM pl_calls), 0,
          'a checkout (INSERT, then UPDATE to succeeded) calls no PL/pgSQL function');
SELECT is((SELECT e.payload FROM kc_flow.events e
            WHERE e.correlation_id = '00000000-0000-0000-0000-00000000c511' AND e.event_type = 'PURCHASE_CONFIRMED'),
          (SELECT jsonb_build_object('payment_id', o.id, 'course_id', o.course_id, 'purchase_tier', o.purchase_tier,
                                     'amount_cents', o.amount_cents, 'currency', o.currency)
             FROM kc_flow.payment_orders o WHERE o.id = '00000000-0000-0000-0000-00000000c511'),
          'PURCHASE_CONFIRMED carries 0.1.0''s payload');
SELECT is((SELECT row(e.student_id, e.version, e.slot, q.slot)::text
             FROM kc_flow.events e JOIN kc_flow.event_queue q ON q.event_id = e.id
            WHERE e.correlation_id = '00000000-0000-0000-0000-00000000c511'),
          row('00000000-0000-0000-0000-00000000c501'::uuid, kc_flow.student_version('00000000-0000-0000-0000-00000000c501'),
              (SELECT (last_value % 3)::smallint FROM kc_flow.log_generation),
              (SELECT (last_value % 3)::smallint FROM kc_flow.event_queue_generation))::text,
          'the event is the student''s, with its new version, in the current slots of the log and the queue');

UPDATE seen SET n = (SELECT n FROM pl_calls);
UPDATE kc_flow.payments SET status = 'refunded' WHERE id = '00000000-0000-0000-0000-00000000c511';
SELECT is((SELECT n - (SELECT n FROM seen) FROM pl_calls), 0, 'a refund by UPDATE calls no PL/pgSQL function');
SELECT is((SELECT e.payload FROM kc_flow.events e
            WHERE e.correlation_id = '00000000-0000-0000-0000-00000000c511' AND e.event_type = 'PURCHASE_REFUNDED'),
          jsonb_build_object('payment_id', '00000000-0000-0000-0000-00000000c511'::uuid,
                             'course_id', '00000000-0000-0000-0000-00000000c502'::uuid),
          'PURCHASE_REFUNDED carries 0.1.0''s payload');

-- the API's confirmation
INSERT INTO kc_flow.payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents)
VALUES ('00000000-0000-0000-0000-00000000c512', '00000000-0000-0000-0000-00000000c501',
        '00000000-0000-0000-0000-00000000c502', 10, '{"weekdays":[2],"start":"07:15","timezone":"UTC"}', 100),
       ('00000000-0000-0000-0000-00000000c513', '00000000-0000-0000-0000-00000000c501',
        '00000000-0000-0000-0000-00000000c502', 10, '{"weekdays":[4],"start":"07:15","timezone":"UTC"}', 100);
UPDATE seen SET n = (SELECT n FROM pl_calls);
CREATE TEMP TABLE confirmed AS SELECT kc_flow.confirm_payment('00000000-0000-0000-0000-00000000c512') AS event_id;
SELECT is((SELECT n - (SELECT n FROM seen) FROM pl_calls), 0, 'confirm_payment() of a pending payment calls no PL/pgSQL function');
SELECT is((SELECT event_id FROM confirmed),
          (SELECT e.id FROM kc_flow.events e
            WHERE e.correlation_id = '00000000-0000-0000-0000-00000000c512' AND e.event_type = 'PURCHASE_CONFIRMED'),
          'it returns the id of the PURCHASE_CONFIRMED it emitted');
SELECT is(kc_flow.confirm_payment('00000000-0000-0000-0000-00000000c512'), NULL,
          'confirming it again returns NULL');
SELECT is((SELECT count(*)::int FROM kc_flow.events
            WHERE correlation_id = '00000000-0000-0000-0000-00000000c512' AND event_type = 'PURCHASE_CONFIRMED'),
          1, 'and emits nothing');
UPDATE kc_flow.payments SET status = 'failed' WHERE id = '00000000-0000-0000-0000-00000000c513';
SELECT throws_ok($$SELECT kc_flow.confirm_payment('00000000-0000-0000-0000-00000000c513')$$, '23514',
                 'payment 00000000-0000-0000-0000-00000000c513 cannot go from failed to succeeded',
                 'confirming a failed payment gets record_outcome()''s error');

-- a payment inserted as succeeded: its event's order is read, not handed over
INSERT INTO kc_flow.payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, currency, status)
VALUES ('00000000-0000-0000-0000-00000000c514', '00000000-0000-0000-0000-00000000c501',
        '00000000-0000-0000-0000-00000000c502', 30, '{"weekdays":[6],"start":"12:00","timezone":"UTC"}', 0, 'EUR',
        'succeeded');
SELECT is((SELECT e.payload FROM kc_flow.events e
            WHERE e.correlation_id = '00000000-0000-0000-0000-00000000c514' AND e.event_type = 'PURCHASE_CONFIRMED'),
          '{"payment_id": "00000000-0000-0000-0000-00000000c514", "course_id": "00000000-0000-0000-0000-00000000c502",
            "purchase_tier": 30, "amount_cents": 0, "currency": "EUR"}'::jsonb,
          'a payment inserted as succeeded: PURCHASE_CONFIRMED with its own order''s payload');

-- the slot functions read what `SELECT last_value % 3` reads, whether nextval was called or not
SELECT is(row(kc_flow.log_slot(), kc_flow.event_queue_slot(), kc_flow.version_slot())::text,
          row((SELECT (last_value % 3)::smallint FROM kc_flow.log_generation),
              (SELECT (last_value % 3)::smallint FROM kc_flow.event_queue_generation),
              (SELECT (last_value % 3)::smallint FROM kc_flow.version_generation))::text,
          'each slot function is its generation modulo 3');
SELECT is((SELECT array_agg(l.lanname::text ORDER BY p.proname) FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
            WHERE p.pronamespace = 'kc_flow'::regnamespace AND p.proname IN ('log_slot', 'event_queue_slot', 'version_slot')),
          ARRAY['c', 'c', 'c'], 'the slot functions are C');

-- and they need the privilege that SELECT needs
CREATE ROLE kc_checkout_calls_reader;
GRANT USAGE ON SCHEMA kc_flow TO kc_checkout_calls_reader;
SET LOCAL ROLE kc_checkout_calls_reader;
SELECT throws_ok('SELECT kc_flow.log_slot()', '42501', NULL,
                 'log_slot() without SELECT on kc_flow.log_generation: permission denied, as for the SELECT');
RESET ROLE;
GRANT SELECT ON SEQUENCE kc_flow.log_generation TO kc_checkout_calls_reader;
SET LOCAL ROLE kc_checkout_calls_reader;
SELECT is(kc_flow.log_slot(), (SELECT (last_value % 3)::smallint FROM kc_flow.log_generation),
          'with SELECT on it, the slot');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
