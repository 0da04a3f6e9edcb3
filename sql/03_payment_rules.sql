-- Bad input gets a clear error and changes nothing; the status machine holds.
SET search_path = kc_flow, public;
\set slot '{"weekdays":[1,3,5],"start":"18:00","timezone":"Asia/Kolkata","starts_on":"2026-12-07"}'
\set VERBOSITY default
\set SHOW_CONTEXT never

-- unknown student, unknown course, unpublished course, bad tier
SELECT create_payment('00000000-0000-0000-0000-00000000ffff', '00000000-0000-0000-0000-00000000c001', 10, :'slot');
SELECT create_payment('00000000-0000-0000-0000-00000000a001', '00000000-0000-0000-0000-00000000ffff', 10, :'slot');
SELECT create_payment('00000000-0000-0000-0000-00000000a001', '00000000-0000-0000-0000-00000000c003', 10, :'slot');
SELECT create_payment('00000000-0000-0000-0000-00000000a001', '00000000-0000-0000-0000-00000000c001', 15, :'slot');
SELECT create_payment('00000000-0000-0000-0000-00000000a001', '00000000-0000-0000-0000-00000000c001', 10, :'slot', -5);
SELECT create_payment('00000000-0000-0000-0000-00000000a001', '00000000-0000-0000-0000-00000000c001', 10, :'slot', 100, 'rupees');
SELECT create_payment('00000000-0000-0000-0000-00000000a001', '00000000-0000-0000-0000-00000000c001', 10, :'slot', 100, 'R$1');

-- malformed time slots
SELECT create_payment('00000000-0000-0000-0000-00000000a001', '00000000-0000-0000-0000-00000000c001', 10, s::jsonb)
  FROM (VALUES ('[1,2]')) v(s);
SELECT create_payment('00000000-0000-0000-0000-00000000a001', '00000000-0000-0000-0000-00000000c001', 10,
       '{"weekdays":[],"start":"18:00","timezone":"Asia/Kolkata"}');
SELECT create_payment('00000000-0000-0000-0000-00000000a001', '00000000-0000-0000-0000-00000000c001', 10,
       '{"weekdays":[0,8],"start":"18:00","timezone":"Asia/Kolkata"}');
SELECT create_payment('00000000-0000-0000-0000-00000000a001', '00000000-0000-0000-0000-00000000c001', 10,
       '{"weekdays":[1,1],"start":"18:00","timezone":"Asia/Kolkata"}');
SELECT create_payment('00000000-0000-0000-0000-00000000a001', '00000000-0000-0000-0000-00000000c001', 10,
       '{"weekdays":[1],"start":"6pm","timezone":"Asia/Kolkata"}');
SELECT create_payment('00000000-0000-0000-0000-00000000a001', '00000000-0000-0000-0000-00000000c001', 10,
       '{"weekdays":[1],"start":"24:00","timezone":"Asia/Kolkata"}');
SELECT create_payment('00000000-0000-0000-0000-00000000a001', '00000000-0000-0000-0000-00000000c001', 10,
       '{"weekdays":[1],"start":"18:00","timezone":"Mars/Olympus"}');
SELECT create_payment('00000000-0000-0000-0000-00000000a001', '00000000-0000-0000-0000-00000000c001', 10,
       '{"weekdays":[1],"start":"18:00","timezone":"UTC+5"}');
SELECT create_payment('00000000-0000-0000-0000-00000000a001', '00000000-0000-0000-0000-00000000c001', 10,
       '{"weekdays":[1],"start":"18:00","timezone":"UTC","starts_on":"2026-02-30"}');
SELECT create_payment('00000000-0000-0000-0000-00000000a001', '00000000-0000-0000-0000-00000000c001', 10,
       '{"weekdays":[1],"start":"18:00","timezone":"UTC","weekday":[2]}');
-- nothing was written
SELECT count(*) AS payments, (SELECT count(*) FROM events) AS events FROM payments;

-- a good payment, then the status machine
INSERT INTO payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents)
VALUES ('00000000-0000-0000-0000-0000000be001', '00000000-0000-0000-0000-00000000a001',
        '00000000-0000-0000-0000-00000000c001', 10, :'slot', 49900);
UPDATE payments SET status = 'refunded' WHERE id = '00000000-0000-0000-0000-0000000be001';
UPDATE payments SET purchase_tier = 20 WHERE id = '00000000-0000-0000-0000-0000000be001';
SELECT status, purchase_tier FROM payments WHERE id = '00000000-0000-0000-0000-0000000be001';
UPDATE payments SET status = 'failed' WHERE id = '00000000-0000-0000-0000-0000000be001';
UPDATE payments SET status = 'succeeded' WHERE id = '00000000-0000-0000-0000-0000000be001';
UPDATE payments SET status = 'pending' WHERE id = '00000000-0000-0000-0000-0000000be001';
SELECT confirm_payment('00000000-0000-0000-0000-0000000be001');
SELECT count(*) AS events FROM events;
SELECT confirm_payment('00000000-0000-0000-0000-00000000ffff');

-- a confirmed payment: one event, however often it is confirmed
INSERT INTO payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents)
VALUES ('00000000-0000-0000-0000-0000000be002', '00000000-0000-0000-0000-00000000a001',
        '00000000-0000-0000-0000-00000000c001', 10, :'slot', 49900);
SELECT confirm_payment('00000000-0000-0000-0000-0000000be002') IS NOT NULL AS first_confirm_emits;
SELECT confirm_payment('00000000-0000-0000-0000-0000000be002') AS second_confirm;
UPDATE payments SET status = 'succeeded' WHERE id = '00000000-0000-0000-0000-0000000be002';
SELECT event_type, count(*) FROM events WHERE correlation_id = '00000000-0000-0000-0000-0000000be002' GROUP BY 1;
UPDATE payments SET purchase_tier = 30 WHERE id = '00000000-0000-0000-0000-0000000be002';

-- leave a clean slate for the next tests
SELECT run_pending(100) >= 0 AS ran;
UPDATE payments SET status = 'refunded' WHERE id = '00000000-0000-0000-0000-0000000be002';
SELECT run_pending(100) >= 0 AS ran;
SELECT is_active FROM student_course_purchases WHERE payment_id = '00000000-0000-0000-0000-0000000be002';
