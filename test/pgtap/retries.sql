-- pgTAP: an event failing with a transient error is retried with exponential backoff, then dead-lettered.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(8);
SET LOCAL kc_flow.retry_base_ms = 1000;
SET LOCAL kc_flow.max_attempts = 3;

INSERT INTO kc_flow.students (id, display_name) VALUES ('00000000-0000-0000-0000-0000000bad01', 'Twice');
INSERT INTO kc_flow.courses (id, title, is_published) VALUES ('00000000-0000-0000-0000-0000000bad02', 'Once', true);
-- the purchase stage meets a transient error (serialization_failure) on this student's payment
CREATE FUNCTION public.kc_test_serialization_failure() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'injected serialization failure' USING ERRCODE = 'serialization_failure';
END $$;
CREATE TRIGGER kc_test_fail BEFORE INSERT ON kc_flow.student_course_purchases FOR EACH ROW
    WHEN (NEW.student_id = '00000000-0000-0000-0000-0000000bad01')
    EXECUTE FUNCTION public.kc_test_serialization_failure();
INSERT INTO kc_flow.payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status) VALUES
  ('00000000-0000-0000-0000-0000000bad04', '00000000-0000-0000-0000-0000000bad01', '00000000-0000-0000-0000-0000000bad02',
   10, '{"weekdays":[2],"start":"10:00","timezone":"UTC","starts_on":"2031-01-01"}', 100, 'succeeded');

CREATE TEMP VIEW q AS
SELECT q.attempts, q.last_sqlstate, extract(epoch FROM q.run_after - clock_timestamp()) AS wait_s
  FROM kc_flow.event_queue q JOIN kc_flow.events e ON e.id = q.event_id
 WHERE e.correlation_id = '00000000-0000-0000-0000-0000000bad04';

SELECT is(kc_flow.run_pending(10), 1, 'the failing event is attempted once');
SELECT is((SELECT attempts FROM q), 1, 'one attempt recorded');
SELECT ok((SELECT wait_s BETWEEN 0.8 AND 1.0 FROM q), 'first retry waits retry_base_ms (1 s)');
SELECT is((SELECT last_sqlstate FROM q), '40001', 'with the SQLSTATE of the failure');
SELECT is(kc_flow.run_pending(10), 0, 'not retried before it is due');

UPDATE kc_flow.event_queue SET run_after = clock_timestamp()
 WHERE event_id IN (SELECT id FROM kc_flow.events WHERE correlation_id = '00000000-0000-0000-0000-0000000bad04');
SELECT kc_flow.run_pending(10);
SELECT ok((SELECT wait_s BETWEEN 1.8 AND 2.0 FROM q), 'the second retry waits twice as long');

UPDATE kc_flow.event_queue SET run_after = clock_timestamp()
 WHERE event_id IN (SELECT id FROM kc_flow.events WHERE correlation_id = '00000000-0000-0000-0000-0000000bad04');
SELECT kc_flow.run_pending(10);
SELECT is((SELECT count(*) FROM q), 0::bigint, 'after the third attempt it leaves the queue');
SELECT is((SELECT attempts FROM kc_flow.dead_letters d JOIN kc_flow.events e ON e.id = d.event_id
            WHERE e.correlation_id = '00000000-0000-0000-0000-0000000bad04'), 3, 'and is dead-lettered after 3 attempts');

SELECT * FROM finish();
ROLLBACK;
