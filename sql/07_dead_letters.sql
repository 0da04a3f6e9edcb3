-- A payment for a course the student already holds is refused at its first attempt:
-- dead-lettered with SQLSTATE and message, told to the student's home as
-- PURCHASE_ALREADY_ACTIVE; one bad event never blocks the others;
-- retry_dead_letter() puts one back.  (Retries with backoff: test/pgtap/retries.sql.)
SET search_path = kc_flow, public;
\set SHOW_CONTEXT never
SET kc_flow.retry_base_ms = 0;
SET client_min_messages = error;

-- Asha already has an active Physics purchase (payment be202): a second one cannot become a purchase
INSERT INTO payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status)
VALUES ('00000000-0000-0000-0000-0000000be401', '00000000-0000-0000-0000-00000000a001',
        '00000000-0000-0000-0000-00000000c002', 20,
        '{"weekdays":[3],"start":"05:00","timezone":"Asia/Kolkata","starts_on":"2026-12-01"}', 100, 'succeeded');
-- and a good payment of another student in the same batch
INSERT INTO students (id, display_name, timezone) VALUES ('00000000-0000-0000-0000-00000000a004', 'Dev', 'Asia/Kolkata');
INSERT INTO payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status)
VALUES ('00000000-0000-0000-0000-0000000be402', '00000000-0000-0000-0000-00000000a004',
        '00000000-0000-0000-0000-00000000c001', 10,
        '{"weekdays":[6],"start":"18:00","timezone":"Asia/Kolkata","starts_on":"2026-12-01"}', 100, 'succeeded');
SELECT run_pending(20) > 0 AS ran;
SELECT payment_id = '00000000-0000-0000-0000-0000000be402' AS good_one FROM student_course_purchases
 WHERE payment_id IN ('00000000-0000-0000-0000-0000000be401', '00000000-0000-0000-0000-0000000be402');
-- not queued for a retry: 23505 cannot succeed on one
SELECT count(*) AS queued FROM event_queue;
SELECT run_pending(20) AS not_retried;
SELECT consumer, attempts, sqlstate, error_message,
       regexp_replace(error_detail, 'active purchase \S+', 'active purchase <id>') AS error_detail, resolved
  FROM dead_letters;
-- the payment is recorded, nothing else was created for it
SELECT status FROM payments WHERE id = '00000000-0000-0000-0000-0000000be401';
SELECT f->>'purchases' AS purchases, jsonb_array_length(f->'dead_letters') AS dead_letters,
       f->'dead_letters'->0->>'sqlstate' AS sqlstate,
       (SELECT string_agg(e->>'type', ', ' ORDER BY (e->>'id')::bigint) FROM jsonb_array_elements(f->'events') e) AS events
  FROM flow_status('00000000-0000-0000-0000-0000000be401') f;
SELECT payload - 'active_purchase_id' AS payload,
       (payload->>'active_purchase_id')::uuid = (SELECT id FROM student_course_purchases
                                                  WHERE payment_id = '00000000-0000-0000-0000-0000000be202') AS names_active
  FROM events WHERE event_type = 'PURCHASE_ALREADY_ACTIVE';
-- the student's home says so
SELECT n->>'message' AS message, n->>'payment_id' AS payment_id, n->>'title' AS title
  FROM jsonb_array_elements(student_home('00000000-0000-0000-0000-00000000a001')->'payment_notices') n;

-- after the first Physics payment is refunded, the dead letter can be retried and succeeds
UPDATE payments SET status = 'refunded' WHERE id = '00000000-0000-0000-0000-0000000be202';
SELECT run_pending(20) > 0 AS ran;
SELECT retry_dead_letter(id) FROM dead_letters;
SELECT retry_dead_letter(id) AS again FROM dead_letters;
SELECT run_pending(20) > 0 AS ran;
SELECT is_active, purchase_tier FROM student_course_purchases WHERE payment_id = '00000000-0000-0000-0000-0000000be401';
SELECT a.status, t.display_name FROM trainer_allocations a JOIN trainers t ON t.id = a.trainer_id
  JOIN student_course_purchases pu ON pu.id = a.purchase_id WHERE pu.payment_id = '00000000-0000-0000-0000-0000000be401';
SELECT count(*) AS open_dead_letters FROM dead_letters WHERE NOT resolved;
-- a payment that became a purchase is no longer a notice
SELECT jsonb_array_length(student_home('00000000-0000-0000-0000-00000000a001')->'payment_notices') AS notices;
SELECT retry_dead_letter(424242);
RESET client_min_messages;
RESET kc_flow.retry_base_ms;
