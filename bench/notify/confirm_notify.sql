-- bench/notify/confirm_notify.sql: the control: confirm.sql plus one pg_notify of
-- the size kc_flow 0.1.0 sent from this transaction for the event.
BEGIN;
INSERT INTO kc_flow.payments (student_id, course_id, purchase_tier, time_slot, amount_cents)
VALUES (('00000000-0000-4000-8000-' || lpad(:client_id::text, 12, '0'))::uuid,
        '00000000-0000-4000-8000-00000000c001', 10,
        '{"weekdays":[1,3,5],"start":"18:00","timezone":"Asia/Kolkata"}', 99900)
RETURNING quote_literal(id) AS pid \gset
UPDATE kc_flow.payments SET status = 'succeeded' WHERE id = :pid;
SELECT pg_notify('kc_flow_events', json_build_object('id', 1, 'type', 'PURCHASE_CONFIRMED',
       'student_id', '00000000-0000-4000-8000-000000000000', 'correlation_id', :pid, 'version', 1)::text);
COMMIT;
