-- pgTAP: a payment's status changes write new rows only.  Confirming (the platform's
-- UPDATE of kc_flow.payments, or kc_flow.confirm_payment), failing and refunding a
-- payment insert its outcome and update or delete no row of any payments table, so
-- under a held xmin horizon they leave no dead version behind (docs/extension.md,
-- "Payments: a status change inserts a row").  The contract of 0.1.0's table stays: RETURNING, frozen terms,
-- metadata of a settled payment, and constraints that refuse a second settlement or a
-- refund without a success even when the view is bypassed.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(17);

INSERT INTO kc_flow.students (id, display_name) VALUES ('00000000-0000-0000-0000-00000000b301', 'Insert only');
INSERT INTO kc_flow.courses (id, title, is_published) VALUES ('00000000-0000-0000-0000-00000000b302', 'Outcomes', true);
INSERT INTO kc_flow.payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents)
SELECT ('00000000-0000-0000-0000-00000000b31' || n)::uuid, '00000000-0000-0000-0000-00000000b301',
       '00000000-0000-0000-0000-00000000b302', 10,
       jsonb_build_object('weekdays', jsonb_build_array(n), 'start', '10:00', 'timezone', 'UTC',
                          'starts_on', '2031-01-01'), 100
  FROM generate_series(1, 3) n;

-- rows of the payments' tables (0.1.0's payments, or orders and outcomes) updated or
-- deleted in this transaction
CREATE TEMP VIEW payment_rewrites AS
SELECT coalesce(sum(n_tup_upd + n_tup_hot_upd + n_tup_del), 0)::int AS n
  FROM pg_stat_xact_user_tables
 WHERE schemaname = 'kc_flow' AND relname IN ('payments', 'payment_orders', 'payment_outcomes');

WITH u AS (UPDATE kc_flow.payments SET status = 'succeeded' WHERE id = '00000000-0000-0000-0000-00000000b311'
           RETURNING status, succeeded_at IS NOT NULL AS stamped)
SELECT is((SELECT array_agg(status || ' ' || stamped) FROM u), ARRAY['succeeded true'],
          'UPDATE ... RETURNING shows the new status and its success time');
SELECT is((SELECT n FROM payment_rewrites), 0, 'the confirmation by UPDATE rewrote no row');
SELECT isnt(kc_flow.confirm_payment('00000000-0000-0000-0000-00000000b312'), NULL,
            'confirm_payment confirms and returns the event');
SELECT is((SELECT n FROM payment_rewrites), 0, 'the confirmation by confirm_payment rewrote no row');
SELECT is(kc_flow.confirm_payment('00000000-0000-0000-0000-00000000b312'), NULL, 'a second confirm_payment is a no-op');
-- an UPDATE to the status the payment already has writes nothing and reports the row
WITH u AS (UPDATE kc_flow.payments SET status = 'succeeded' WHERE id = '00000000-0000-0000-0000-00000000b312'
           RETURNING status, succeeded_at IS NOT NULL AS stamped)
SELECT is((SELECT array_agg(status || ' ' || stamped) FROM u), ARRAY['succeeded true'],
          'a second confirmation by UPDATE reports the payment succeeded');
SELECT is((SELECT count(*)::int FROM kc_flow.payment_outcomes WHERE payment_id = '00000000-0000-0000-0000-00000000b312'),
          1, 'a second confirmation by UPDATE inserts no outcome');
UPDATE kc_flow.payments SET status = 'refunded' WHERE id = '00000000-0000-0000-0000-00000000b311';
SELECT is((SELECT n FROM payment_rewrites), 0, 'the refund rewrote no row');
UPDATE kc_flow.payments SET status = 'failed' WHERE id = '00000000-0000-0000-0000-00000000b313';
SELECT is((SELECT n FROM payment_rewrites), 0, 'the failure rewrote no row');

SELECT is((SELECT array_agg(p.status || ' ' || (p.succeeded_at IS NOT NULL) ORDER BY p.id) FROM kc_flow.payments p
            WHERE p.student_id = '00000000-0000-0000-0000-00000000b301'),
          ARRAY['refunded true', 'succeeded true', 'failed false'], 'the view shows each status and success time');
SELECT is((SELECT array_agg(e.event_type::text ORDER BY e.id) FROM kc_flow.events e
            WHERE e.student_id = '00000000-0000-0000-0000-00000000b301'),
          ARRAY['PURCHASE_CONFIRMED', 'PURCHASE_CONFIRMED', 'PURCHASE_REFUNDED'], 'each change emitted its event once');

-- the constraints hold without the view's trigger
SELECT throws_ok($$INSERT INTO kc_flow.payment_outcomes (payment_id, outcome)
                   VALUES ('00000000-0000-0000-0000-00000000b312', 'failed')$$,
                 '23505', NULL, 'a settled payment cannot be settled again');
SELECT throws_ok($$INSERT INTO kc_flow.payment_outcomes (payment_id, outcome)
                   VALUES ('00000000-0000-0000-0000-00000000b313', 'refunded')$$,
                 '23503', NULL, 'a refund needs a success');

-- the terms of a settled payment are frozen, its metadata is not (as with 0.1.0's table)
SELECT throws_ok($$UPDATE kc_flow.payments SET amount_cents = 5 WHERE id = '00000000-0000-0000-0000-00000000b312'$$,
                 '23514', 'payment 00000000-0000-0000-0000-00000000b312 is succeeded, its terms can no longer change',
                 'the terms of a settled payment are frozen');
WITH u AS (UPDATE kc_flow.payments SET metadata = '{"note": "kept"}'
            WHERE id = '00000000-0000-0000-0000-00000000b312' RETURNING metadata)
SELECT is((SELECT metadata FROM u), '{"note": "kept"}'::jsonb, 'the metadata of a settled payment may change');
SELECT is((SELECT status FROM kc_flow.payments WHERE id = '00000000-0000-0000-0000-00000000b312'), 'succeeded',
          'changing the metadata keeps the status');
SELECT throws_ok($$UPDATE kc_flow.payments SET status = 'pending' WHERE id = '00000000-0000-0000-0000-00000000b312'$$,
                 '23514', 'payment 00000000-0000-0000-0000-00000000b312 cannot go from succeeded to pending',
                 'a payment cannot go back to pending');

SELECT * FROM finish();
ROLLBACK;
