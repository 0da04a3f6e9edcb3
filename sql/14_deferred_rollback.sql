-- A batch defers its stages' events and writes them together (extension/emit.c). One that fails
-- outside its jobs, under a savepoint, takes what it deferred with it: the transaction still
-- commits, and the next batch writes each event once, versions in the order of the ids.
SET search_path = kc_flow, public;
\set SHOW_CONTEXT never
SET client_min_messages = error;
SET kc_flow.retry_base_ms = 0;

INSERT INTO students (id, display_name, timezone) VALUES ('ed0000aa-0000-4000-8000-000000000001', 'Deferred', 'UTC');
INSERT INTO courses (id, title, session_minutes, is_published) VALUES ('ed0000cc-0000-4000-8000-000000000001', 'Deferred Course', 30, true);
INSERT INTO trainers (id, display_name, timezone, max_active_students) VALUES ('ed0000dd-0000-4000-8000-000000000001', 'Deferra', 'UTC', 10);
INSERT INTO trainer_courses VALUES ('ed0000dd-0000-4000-8000-000000000001', 'ed0000cc-0000-4000-8000-000000000001');
INSERT INTO trainer_availability (trainer_id, weekday, start_time, end_time)
SELECT 'ed0000dd-0000-4000-8000-000000000001', d, '06:00', '22:00' FROM generate_series(1, 7) d;
INSERT INTO payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status)
VALUES ('ed0000ee-0000-4000-8000-000000000001', 'ed0000aa-0000-4000-8000-000000000001',
        'ed0000cc-0000-4000-8000-000000000001', 10,
        '{"weekdays":[2],"start":"09:00","timezone":"UTC","starts_on":"2031-01-06"}', 100, 'succeeded');

-- the student's later events cannot be written: the set fails, then writing them on their own
CREATE FUNCTION pg_temp.refuse_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.student_id = 'ed0000aa-0000-4000-8000-000000000001' AND NEW.event_type <> 'PURCHASE_CONFIRMED' THEN
        RAISE EXCEPTION 'no events for this student' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_events BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION pg_temp.refuse_events();

BEGIN;
SAVEPOINT before_batch;
SELECT run_pending(100);
ROLLBACK TO SAVEPOINT before_batch;
COMMIT;

DROP TRIGGER refuse_events ON events;
SELECT run_pending(100) > 0 AS handled;
SELECT event_type, version FROM events WHERE student_id = 'ed0000aa-0000-4000-8000-000000000001' ORDER BY id;
