-- pgTAP: which failures are retried.  An error that cannot succeed on retry
-- (classes 22 and 23, no_data_found) is dead-lettered at its first attempt with
-- its SQLSTATE and message; a transient one, or one we know nothing about, waits
-- for its retry with backoff (docs/extension.md, "Failures").
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(17);
SET LOCAL kc_flow.retry_base_ms = 60000;   -- a retried event is not due again in this test
SET LOCAL kc_flow.max_attempts = 3;
SET LOCAL client_min_messages = error;

-- one student per SQLSTATE; the purchase stage fails with that SQLSTATE on their payment
CREATE TABLE public.kc_test_failures (student uuid PRIMARY KEY, sqlstate text NOT NULL, permanent boolean NOT NULL);
INSERT INTO public.kc_test_failures
SELECT ('00000000-0000-0000-0000-0000000fa' || lpad(row_number() OVER ()::text, 3, '0'))::uuid, s, p
  FROM (VALUES ('22023', true), ('22P02', true), ('23502', true), ('23503', true), ('23505', true),
               ('23514', true), ('P0002', true),
               ('40001', false), ('40P01', false), ('55P03', false), ('08006', false), ('53200', false),
               ('57P03', false), ('XX000', false), ('P0001', false), ('42P01', false)) v(s, p);
CREATE FUNCTION public.kc_test_fail() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    code text := (SELECT sqlstate FROM public.kc_test_failures WHERE student = NEW.student_id);
BEGIN
    IF code IS NOT NULL THEN
        RAISE EXCEPTION 'injected %', code USING ERRCODE = code;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER kc_test_fail BEFORE INSERT ON kc_flow.student_course_purchases FOR EACH ROW
    EXECUTE FUNCTION public.kc_test_fail();

INSERT INTO kc_flow.courses (id, title, is_published) VALUES ('00000000-0000-0000-0000-0000000fac01', 'Faults', true);
INSERT INTO kc_flow.students (id, display_name) SELECT student, 'Student ' || sqlstate FROM public.kc_test_failures;
INSERT INTO kc_flow.payments (student_id, course_id, purchase_tier, time_slot, amount_cents, status)
SELECT student, '00000000-0000-0000-0000-0000000fac01', 10,
       '{"weekdays":[1],"start":"10:00","timezone":"UTC","starts_on":"2031-01-01"}', 100, 'succeeded'
  FROM public.kc_test_failures;

SELECT is(kc_flow.run_pending(100), 16, 'each failing event is attempted once');

SELECT ok(CASE WHEN f.permanent
               THEN q.event_id IS NULL AND d.attempts = 1 AND d.sqlstate = f.sqlstate
                    AND d.error_message = 'injected ' || f.sqlstate
               ELSE d.id IS NULL AND q.attempts = 1 AND q.last_sqlstate = f.sqlstate
                    AND q.run_after > clock_timestamp() + interval '50 s' END,
          format('%s: %s', f.sqlstate, CASE WHEN f.permanent THEN 'dead-lettered at the first attempt, with the reason'
                                            ELSE 'queued for a retry with backoff' END))
  FROM public.kc_test_failures f
  JOIN kc_flow.events e ON e.student_id = f.student AND e.event_type = 'PURCHASE_CONFIRMED'
  LEFT JOIN kc_flow.event_queue q ON q.event_id = e.id
  LEFT JOIN kc_flow.dead_letters d ON d.event_id = e.id
 ORDER BY f.permanent DESC, f.sqlstate;

SELECT * FROM finish();
ROLLBACK;
