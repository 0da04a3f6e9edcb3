-- pgTAP: the plan the allocation stage books and hands to the sessions stage, computed in C
-- (extension/session_plan.c), is kc_flow.purchase_plan(), the rule in SQL: on 400 random
-- slots (zones with odd daylight saving rules, sessions across the changes, with and without
-- starts_on, tiers 10/20/30, session lengths 30-90 minutes) each purchase goes through
-- run_pending() (purchase, allocation, sessions) in a subtransaction, and its booking and
-- sessions are compared with purchase_plan(); the subtransaction is then rolled back.  Then
-- the same in rolling mode, whose later sessions the stage plans again from the allocation.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(4);
SET LOCAL kc_flow.retry_base_ms = 0;
SET LOCAL client_min_messages = warning;

-- three trainers 8 hours apart, in zones without daylight saving: a plan's sessions (at most
-- 90 minutes, their UTC times within an hour of each other) cross midnight in one zone at most
INSERT INTO kc_flow.courses (id, title, session_minutes, is_published)
SELECT ('00000000-0000-0000-0000-00000000c0' || m)::uuid, 'Plan ' || m, m, true FROM unnest(ARRAY[30, 45, 60, 90]) m;
INSERT INTO kc_flow.trainers (id, display_name, timezone, max_active_students)
SELECT ('00000000-0000-0000-0000-00000000f00' || i)::uuid, 'Trainer ' || i, z, 1000
  FROM unnest(ARRAY['UTC', 'Asia/Shanghai', 'Etc/GMT+8']) WITH ORDINALITY AS u(z, i);
INSERT INTO kc_flow.trainer_courses SELECT t.id, c.id FROM kc_flow.trainers t, kc_flow.courses c;
INSERT INTO kc_flow.trainer_availability (trainer_id, weekday, start_time, end_time)
SELECT t.id, d, '00:00', '24:00' FROM kc_flow.trainers t, generate_series(1, 7) d;

SELECT setseed(0.17);
CREATE TEMP TABLE cases AS
SELECT g,
       jsonb_build_object('weekdays', (SELECT jsonb_agg(d) FROM (SELECT DISTINCT 1 + (random() * 6 + 0 * g)::int AS d
                                                                 FROM generate_series(1, 1 + (random() * 3)::int)) w),
                          'start', to_char(make_time((random() * 23)::int, (random() * 59)::int, 0), 'HH24:MI'),
                          'timezone', (ARRAY['Europe/Berlin', 'UTC', 'America/New_York', 'Asia/Kolkata',
                                             'Australia/Lord_Howe', 'Pacific/Chatham'])[1 + (random() * 5)::int])
       || CASE WHEN random() < 0.5
               THEN jsonb_build_object('starts_on', (date '2026-01-01' + (random() * 900)::int)::text)
               ELSE '{}' END AS slot,
       (ARRAY[10, 20, 30])[1 + (random() * 2)::int] AS tier,
       (ARRAY[30, 45, 60, 90])[1 + (random() * 3)::int] AS mins
  FROM generate_series(1, 400) g;
-- the nights Berlin and New York change their clocks, a session in the skipped or repeated hour
INSERT INTO cases VALUES
    (401, '{"weekdays":[7],"start":"02:30","timezone":"Europe/Berlin","starts_on":"2031-03-20"}', 10, 45),
    (402, '{"weekdays":[1,7],"start":"01:30","timezone":"America/New_York","starts_on":"2031-10-27"}', 20, 60),
    (403, '{"weekdays":[6,7],"start":"02:15","timezone":"Australia/Lord_Howe","starts_on":"2031-04-01"}', 30, 90);

-- the differences between what case g's purchase booked and was given and purchase_plan()
CREATE FUNCTION pg_temp.differences(g int) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    c cases;
    pay uuid := gen_random_uuid();
    student uuid := gen_random_uuid();
    diff text;
BEGIN
    SELECT * INTO c FROM cases WHERE cases.g = differences.g;
    INSERT INTO kc_flow.students (id, display_name) VALUES (student, 'S');
    INSERT INTO kc_flow.payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status)
    VALUES (pay, student, ('00000000-0000-0000-0000-00000000c0' || c.mins)::uuid, c.tier, c.slot, 100, 'succeeded');
    PERFORM kc_flow.run_pending(1000);
    SELECT CASE
             WHEN a.status IS DISTINCT FROM 'approved' THEN format('allocation %s', coalesce(a.status, 'missing'))
             WHEN b.during IS DISTINCT FROM (SELECT range_agg(tstzrange(pl.starts_at, pl.ends_at)) FROM kc_flow.purchase_plan(pu.id) pl)
               THEN format('booking %s', b.during)
             WHEN (SELECT array_agg(ROW(s.seq, s.scheduled_date, s.scheduled_time, s.starts_at, s.ends_at)::text ORDER BY s.seq)
                     FROM kc_flow.tutoring_sessions s WHERE s.allocation_id = a.id)
                  IS DISTINCT FROM
                  (SELECT array_agg(pl::text ORDER BY pl.seq) FROM kc_flow.purchase_plan(pu.id) pl)
               THEN 'sessions'
           END INTO diff
      FROM kc_flow.student_course_purchases pu
      LEFT JOIN kc_flow.trainer_allocations a ON a.purchase_id = pu.id
      LEFT JOIN kc_flow.trainer_bookings b ON b.allocation_id = a.id
     WHERE pu.payment_id = pay;
    RETURN coalesce(diff, CASE WHEN NOT FOUND THEN 'no purchase' END);
END;
$$;

-- each case in a subtransaction rolled back, so that no booking stands in the next one's way;
-- check_case names the function that returns a case's differences (NULL when none)
CREATE FUNCTION pg_temp.compare(check_case text, first int, last int) RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE
    found text[] := '{}';
    d text;
BEGIN
    FOR i IN first..last LOOP
        BEGIN
            EXECUTE format('SELECT pg_temp.%I($1)', check_case) INTO d USING i;
            RAISE EXCEPTION USING ERRCODE = 'P0004', MESSAGE = coalesce(d, '');
        EXCEPTION WHEN assert_failure THEN
            IF SQLERRM <> '' THEN
                found := found || format('case %s: %s', i, SQLERRM);
            END IF;
        END;
    END LOOP;
    RETURN found;
END;
$$;

SELECT is(pg_temp.compare('differences', 1, 403), '{}'::text[], '403 slots: the booking and the sessions are purchase_plan()''s');

SET LOCAL kc_flow.session_generation = 'rolling';
SET LOCAL kc_flow.rolling_window = 2;
-- rolling: the first two sessions now, the rest planned again from the allocation as they complete
CREATE FUNCTION pg_temp.rolling(g int) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    c cases;
    pay uuid := gen_random_uuid();
    student uuid := gen_random_uuid();
    alloc uuid;
BEGIN
    SELECT * INTO c FROM cases WHERE cases.g = rolling.g;
    INSERT INTO kc_flow.students (id, display_name) VALUES (student, 'S');
    INSERT INTO kc_flow.payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status)
    VALUES (pay, student, ('00000000-0000-0000-0000-00000000c0' || c.mins)::uuid, c.tier, c.slot, 100, 'succeeded');
    PERFORM kc_flow.run_pending(1000);
    SELECT a.id INTO alloc FROM kc_flow.trainer_allocations a
      JOIN kc_flow.student_course_purchases pu ON pu.id = a.purchase_id WHERE pu.payment_id = pay;
    FOR k IN 1..c.tier LOOP
        UPDATE kc_flow.tutoring_sessions SET status = 'completed' WHERE allocation_id = alloc AND status = 'scheduled';
        EXIT WHEN NOT FOUND;
        PERFORM kc_flow.run_pending(1000);
    END LOOP;
    RETURN CASE WHEN (SELECT array_agg(ROW(s.seq, s.scheduled_date, s.scheduled_time, s.starts_at, s.ends_at)::text ORDER BY s.seq)
                        FROM kc_flow.tutoring_sessions s WHERE s.allocation_id = alloc)
                     IS DISTINCT FROM
                     (SELECT array_agg(pl::text ORDER BY pl.seq) FROM kc_flow.purchase_plan(
                         (SELECT id FROM kc_flow.student_course_purchases WHERE payment_id = pay)) pl)
                THEN 'rolling sessions' END;
END;
$$;
SELECT is(pg_temp.compare('rolling', 1, 40), '{}'::text[], '40 slots in rolling mode: every session planned again is purchase_plan()''s');
SELECT is(pg_temp.compare('rolling', 401, 403), '{}'::text[], 'rolling across daylight saving changes: the same');

SELECT ok((SELECT count(DISTINCT slot->>'timezone') = 6 AND bool_or(slot ? 'starts_on') AND bool_or(NOT slot ? 'starts_on')
                  AND count(DISTINCT tier) = 3 AND count(DISTINCT mins) = 4 FROM cases),
          'the cases cover every zone, tier and length, with and without starts_on');

SELECT * FROM finish();
ROLLBACK;
