-- bench/notify/confirm.sql: the platform's checkout transaction with kc_flow's
-- trigger: record the payment, confirm it (the trigger writes PURCHASE_CONFIRMED).
BEGIN;
INSERT INTO kc_flow.payments (student_id, course_id, purchase_tier, time_slot, amount_cents)
VALUES (('00000000-0000-4000-8000-' || lpad(:client_id::text, 12, '0'))::uuid,
        '00000000-0000-4000-8000-00000000c001', 10,
        '{"weekdays":[1,3,5],"start":"18:00","timezone":"Asia/Kolkata"}', 99900)
RETURNING quote_literal(id) AS pid \gset
UPDATE kc_flow.payments SET status = 'succeeded' WHERE id = :pid;
COMMIT;
