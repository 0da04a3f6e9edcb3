-- pgTAP: create_payment refuses a course the student actively holds (23505, the
-- active purchase in the detail, a hint), and changes nothing when it does.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(7);

INSERT INTO kc_flow.students (id, display_name) VALUES ('00000000-0000-0000-0000-0000000aa001', 'Holder');
INSERT INTO kc_flow.courses (id, title, is_published) VALUES
  ('00000000-0000-0000-0000-0000000aac01', 'Held', true), ('00000000-0000-0000-0000-0000000aac02', 'Other', true);
INSERT INTO kc_flow.payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status) VALUES
  ('00000000-0000-0000-0000-0000000aa0e1', '00000000-0000-0000-0000-0000000aa001', '00000000-0000-0000-0000-0000000aac01',
   10, '{"weekdays":[1],"start":"10:00","timezone":"UTC","starts_on":"2031-01-01"}', 100, 'succeeded');
SELECT kc_flow.run_pending(100);

CREATE TEMP TABLE refusal (sqlstate text, message text, detail text, hint text, constraint_name text);
DO $$
DECLARE
    r refusal;
BEGIN
    PERFORM kc_flow.create_payment('00000000-0000-0000-0000-0000000aa001', '00000000-0000-0000-0000-0000000aac01', 20,
                                   '{"weekdays":[2],"start":"10:00","timezone":"UTC"}');
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS r.sqlstate = RETURNED_SQLSTATE, r.message = MESSAGE_TEXT, r.detail = PG_EXCEPTION_DETAIL,
                            r.hint = PG_EXCEPTION_HINT, r.constraint_name = CONSTRAINT_NAME;
    INSERT INTO refusal SELECT r.*;
END $$;

SELECT is((SELECT sqlstate FROM refusal), '23505', 'a second payment for a held course is refused with 23505');
SELECT is((SELECT message FROM refusal),
          'student 00000000-0000-0000-0000-0000000aa001 already holds course 00000000-0000-0000-0000-0000000aac01',
          'the message names student and course');
SELECT is((SELECT detail FROM refusal),
          (SELECT format('Active purchase %s (payment %s) covers this course.', id, payment_id)
             FROM kc_flow.student_course_purchases WHERE payment_id = '00000000-0000-0000-0000-0000000aa0e1'),
          'the detail names the active purchase');
SELECT isnt((SELECT hint FROM refusal), NULL, 'with a hint');
SELECT is((SELECT count(*) FROM kc_flow.payments WHERE student_id = '00000000-0000-0000-0000-0000000aa001'), 1::bigint,
          'nothing was written');
SELECT lives_ok($$SELECT kc_flow.create_payment('00000000-0000-0000-0000-0000000aa001', '00000000-0000-0000-0000-0000000aac02', 10,
                                                '{"weekdays":[2],"start":"10:00","timezone":"UTC"}')$$,
                'another course is sold as before');
UPDATE kc_flow.payments SET status = 'refunded' WHERE id = '00000000-0000-0000-0000-0000000aa0e1';
SELECT kc_flow.run_pending(100);
SELECT lives_ok($$SELECT kc_flow.create_payment('00000000-0000-0000-0000-0000000aa001', '00000000-0000-0000-0000-0000000aac01', 10,
                                                '{"weekdays":[2],"start":"10:00","timezone":"UTC"}')$$,
                'after a refund ended the purchase, the course can be bought again');

SELECT * FROM finish();
ROLLBACK;
