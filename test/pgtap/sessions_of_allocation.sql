-- pgTAP: the foreign key sessions_of_allocation, its insert check made once per statement
-- (extension/schema/12_sessions_of_allocation.sql, extension/session_allocation_check.c).  The
-- per-row insert check is disabled and the statement trigger checks instead, failing exactly as
-- PostgreSQL's check fails (compared here with that check switched back on), for any caller
-- and with the owner's rights; the rest of the constraint is PostgreSQL's and still holds:
-- ON DELETE CASCADE, NO ACTION on the allocation's key, no TRUNCATE of the allocations alone,
-- the check of a session's key columns when updated.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(15);
SET LOCAL kc_flow.retry_base_ms = 0;

INSERT INTO kc_flow.courses (id, title, session_minutes, is_published)
VALUES ('00000000-0000-0000-0000-0000000c5a01', 'Keyed', 60, true);
INSERT INTO kc_flow.trainers (id, display_name, timezone, max_active_students)
VALUES ('00000000-0000-0000-0000-0000000d5a01', 'Keyed trainer', 'UTC', 5);
INSERT INTO kc_flow.trainer_courses VALUES ('00000000-0000-0000-0000-0000000d5a01', '00000000-0000-0000-0000-0000000c5a01');
INSERT INTO kc_flow.trainer_availability (trainer_id, weekday, start_time, end_time)
SELECT '00000000-0000-0000-0000-0000000d5a01', d, '00:00', '24:00' FROM generate_series(1, 7) d;
INSERT INTO kc_flow.students (id, display_name, timezone)
VALUES ('00000000-0000-0000-0000-0000000a5a01', 'Keyed student', 'UTC');
INSERT INTO kc_flow.payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status)
VALUES ('00000000-0000-0000-0000-0000000b5a01', '00000000-0000-0000-0000-0000000a5a01', '00000000-0000-0000-0000-0000000c5a01', 10,
        '{"weekdays":[1],"start":"10:00","timezone":"UTC","starts_on":"2031-01-01"}', 100, 'succeeded');
SELECT is(kc_flow.run_pending(1000), 3, 'the purchase, its allocation and its sessions handled');
SELECT is((SELECT count(*) FROM kc_flow.tutoring_sessions WHERE course_id = '00000000-0000-0000-0000-0000000c5a01'),
          10::bigint, 'the allocation has its 10 sessions, through the statement trigger');

SELECT is((SELECT string_agg(t.tgfoid::regproc::text || ' ' || t.tgenabled::text, ', ' ORDER BY t.tgfoid::regproc::text)
             FROM pg_trigger t JOIN pg_constraint c ON c.oid = t.tgconstraint
            WHERE t.tgrelid = 'kc_flow.tutoring_sessions'::regclass AND c.conname = 'sessions_of_allocation'),
          '"RI_FKey_check_ins" D, "RI_FKey_check_upd" O',
          'the per-row insert check is disabled, the update check is not');
SELECT is((SELECT tgenabled::text FROM pg_trigger WHERE tgrelid = 'kc_flow.tutoring_sessions'::regclass
              AND tgname = 'sessions_have_their_allocation'), 'O', 'the statement trigger checks instead');

-- the error a statement raises, every field a client sees
CREATE FUNCTION pg_temp.error_of(statement text) RETURNS text
    LANGUAGE plpgsql AS $$
DECLARE
    state text; msg text; detail text; hint text; cons text; tab text; sch text; col text;
BEGIN
    EXECUTE statement;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                            hint = PG_EXCEPTION_HINT, cons = CONSTRAINT_NAME, tab = TABLE_NAME,
                            sch = SCHEMA_NAME, col = COLUMN_NAME;
    RETURN concat_ws(' | ', state, msg, nullif(detail, ''), nullif(hint, ''), nullif(cons, ''), nullif(tab, ''),
                     nullif(sch, ''), nullif(col, ''));
END $$;
CREATE FUNCTION pg_temp.s_alloc() RETURNS uuid LANGUAGE sql SECURITY DEFINER AS $$
    SELECT allocation_id FROM kc_flow.tutoring_sessions WHERE course_id = '00000000-0000-0000-0000-0000000c5a01' LIMIT 1
$$;
-- three sessions in one statement: one of the allocation, then two of unknown allocations
CREATE FUNCTION pg_temp.bad_insert() RETURNS text LANGUAGE sql AS $$
    SELECT pg_temp.error_of($q$
    INSERT INTO kc_flow.tutoring_sessions (allocation_id, student_id, course_id, trainer_id, seq,
                                           scheduled_date, scheduled_time, starts_at, ends_at, status)
    SELECT v.a, s.student_id, s.course_id, s.trainer_id, 20 + v.n, s.scheduled_date + 100 * v.n, s.scheduled_time,
           s.starts_at, s.ends_at, 'cancelled'
      FROM kc_flow.tutoring_sessions s,
           (VALUES (1, pg_temp.s_alloc()), (2, '00000000-0000-0000-0000-0000000e5a02'::uuid),
                   (3, '00000000-0000-0000-0000-0000000e5a03'::uuid)) v(n, a)
     WHERE s.course_id = '00000000-0000-0000-0000-0000000c5a01' AND s.seq = 1
     ORDER BY v.n $q$)
$$;
CREATE TABLE pg_temp.errors (checker text PRIMARY KEY, error text);
-- an unprivileged caller: may insert sessions and read some of their columns, not allocation_id
CREATE ROLE kc_test_sessions_writer;
GRANT USAGE ON SCHEMA kc_flow TO kc_test_sessions_writer;
GRANT INSERT ON kc_flow.tutoring_sessions TO kc_test_sessions_writer;
GRANT SELECT (student_id, course_id, trainer_id, seq, scheduled_date, scheduled_time, starts_at, ends_at)
    ON kc_flow.tutoring_sessions TO kc_test_sessions_writer;

INSERT INTO pg_temp.errors VALUES ('statement', pg_temp.bad_insert());
SET LOCAL ROLE kc_test_sessions_writer;
SELECT pg_temp.bad_insert() AS e \gset
RESET ROLE;
INSERT INTO pg_temp.errors VALUES ('statement, unprivileged', :'e');
-- PostgreSQL's own check, for comparison
ALTER TABLE kc_flow.tutoring_sessions ENABLE TRIGGER ALL;
ALTER TABLE kc_flow.tutoring_sessions DISABLE TRIGGER sessions_have_their_allocation;
INSERT INTO pg_temp.errors VALUES ('ri_triggers.c', pg_temp.bad_insert());
SET LOCAL ROLE kc_test_sessions_writer;
SELECT pg_temp.bad_insert() AS e \gset
RESET ROLE;
INSERT INTO pg_temp.errors VALUES ('ri_triggers.c, unprivileged', :'e');
ALTER TABLE kc_flow.tutoring_sessions ENABLE TRIGGER sessions_have_their_allocation;
DO $$
BEGIN
    EXECUTE format('ALTER TABLE kc_flow.tutoring_sessions DISABLE TRIGGER %I',
                   (SELECT tgname FROM pg_trigger WHERE tgrelid = 'kc_flow.tutoring_sessions'::regclass
                       AND tgfoid = '"RI_FKey_check_ins"'::regproc));
END $$;

SELECT is((SELECT error FROM pg_temp.errors WHERE checker = 'statement'),
          '23503 | insert or update on table "tutoring_sessions" violates foreign key constraint "sessions_of_allocation" | '
          'Key (allocation_id, student_id, course_id, trainer_id)=(00000000-0000-0000-0000-0000000e5a02, '
          '00000000-0000-0000-0000-0000000a5a01, 00000000-0000-0000-0000-0000000c5a01, 00000000-0000-0000-0000-0000000d5a01) '
          'is not present in table "trainer_allocations". | sessions_of_allocation | tutoring_sessions | kc_flow',
          'a session of an unknown allocation: 23503, the first inserted row with a missing key in the detail');
SELECT is((SELECT error FROM pg_temp.errors WHERE checker = 'statement'),
          (SELECT error FROM pg_temp.errors WHERE checker = 'ri_triggers.c'),
          'the same error, every field, as PostgreSQL''s own check');
SELECT is((SELECT error FROM pg_temp.errors WHERE checker = 'statement, unprivileged'),
          '23503 | insert or update on table "tutoring_sessions" violates foreign key constraint "sessions_of_allocation" | '
          'Key is not present in table "trainer_allocations". | sessions_of_allocation | tutoring_sessions | kc_flow',
          'a caller who may not read allocation_id is not shown the key''s values');
SELECT is((SELECT error FROM pg_temp.errors WHERE checker = 'statement, unprivileged'),
          (SELECT error FROM pg_temp.errors WHERE checker = 'ri_triggers.c, unprivileged'),
          'the same error as PostgreSQL''s own check for that caller');

-- the owner's rights: a caller who reads the sessions and locks the bookings (the booking
-- check runs as the caller) but may not read the allocations, inserts a valid session
CREATE ROLE kc_test_sessions_planner;
GRANT USAGE ON SCHEMA kc_flow TO kc_test_sessions_planner;
GRANT SELECT, INSERT ON kc_flow.tutoring_sessions TO kc_test_sessions_planner;
GRANT SELECT, UPDATE ON kc_flow.trainer_bookings TO kc_test_sessions_planner;
SET LOCAL ROLE kc_test_sessions_planner;
SELECT is(pg_temp.error_of($q$
    INSERT INTO kc_flow.tutoring_sessions (allocation_id, student_id, course_id, trainer_id, seq,
                                           scheduled_date, scheduled_time, starts_at, ends_at, status)
    SELECT s.allocation_id, s.student_id, s.course_id, s.trainer_id, 25, s.scheduled_date + 1, s.scheduled_time,
           s.starts_at, s.ends_at, 'cancelled'
      FROM kc_flow.tutoring_sessions s WHERE s.course_id = '00000000-0000-0000-0000-0000000c5a01' AND s.seq = 1 $q$),
          'no error', 'the check runs with the owner''s rights, not the caller''s');
RESET ROLE;
SELECT is(pg_temp.error_of($q$
    INSERT INTO kc_flow.tutoring_sessions (allocation_id, student_id, course_id, trainer_id, seq,
                                           scheduled_date, scheduled_time, starts_at, ends_at, status)
    SELECT s.allocation_id, s.course_id, s.course_id, s.trainer_id, 26, s.scheduled_date + 2, s.scheduled_time,
           s.starts_at, s.ends_at, 'cancelled'
      FROM kc_flow.tutoring_sessions s WHERE s.course_id = '00000000-0000-0000-0000-0000000c5a01' AND s.seq = 1 $q$),
          '23503 | insert or update on table "tutoring_sessions" violates foreign key constraint "sessions_of_allocation" | '
          'Key (allocation_id, student_id, course_id, trainer_id)=(' || pg_temp.s_alloc() || ', '
          '00000000-0000-0000-0000-0000000c5a01, 00000000-0000-0000-0000-0000000c5a01, 00000000-0000-0000-0000-0000000d5a01) '
          'is not present in table "trainer_allocations". | sessions_of_allocation | tutoring_sessions | kc_flow',
          'the allocation''s parties are checked with it: another student is refused');

-- the rest of the constraint is PostgreSQL's own
SELECT is(pg_temp.error_of($q$ UPDATE kc_flow.tutoring_sessions SET student_id = course_id
                                 WHERE course_id = '00000000-0000-0000-0000-0000000c5a01' AND seq = 2 $q$),
          '23503 | insert or update on table "tutoring_sessions" violates foreign key constraint "sessions_of_allocation" | '
          'Key (allocation_id, student_id, course_id, trainer_id)=(' || pg_temp.s_alloc() || ', '
          '00000000-0000-0000-0000-0000000c5a01, 00000000-0000-0000-0000-0000000c5a01, 00000000-0000-0000-0000-0000000d5a01) '
          'is not present in table "trainer_allocations". | sessions_of_allocation | tutoring_sessions | kc_flow',
          'a session''s key columns updated are checked (per row, by PostgreSQL)');
SELECT is(split_part(pg_temp.error_of($q$ UPDATE kc_flow.trainer_allocations SET student_id = course_id
                                 WHERE course_id = '00000000-0000-0000-0000-0000000c5a01' $q$), ' | ', 1),
          '23503', 'an allocation''s key is not updated under its sessions (NO ACTION)');
SELECT is(pg_temp.error_of('TRUNCATE kc_flow.trainer_allocations, kc_flow.trainer_bookings'),
          '0A000 | cannot truncate a table referenced in a foreign key constraint | '
          'Table "tutoring_sessions" references "trainer_allocations". | '
          'Truncate table "tutoring_sessions" at the same time, or use TRUNCATE ... CASCADE.',
          'the allocations are not truncated without their sessions');
SET LOCAL client_min_messages = warning;
DELETE FROM kc_flow.tutoring_sessions WHERE course_id = '00000000-0000-0000-0000-0000000c5a01' AND status = 'cancelled';
UPDATE kc_flow.tutoring_sessions SET status = 'completed' WHERE course_id = '00000000-0000-0000-0000-0000000c5a01';
SELECT is(pg_temp.error_of($q$ DELETE FROM kc_flow.trainer_allocations
                                WHERE course_id = '00000000-0000-0000-0000-0000000c5a01' $q$),
          'no error', 'an allocation deleted ...');
SELECT is((SELECT count(*) FROM kc_flow.tutoring_sessions WHERE course_id = '00000000-0000-0000-0000-0000000c5a01'),
          0::bigint, '... takes its sessions with it (ON DELETE CASCADE)');

SELECT * FROM finish();
ROLLBACK;
