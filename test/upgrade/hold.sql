-- test/upgrade/hold.sql - stops chosen payments part-way through the pipeline, so that
-- the upgrade test (test/suites/27_upgrade.sh) can run ALTER EXTENSION while they are
-- mid-pipeline.  A row (stage, student) in kc_upgrade_hold.held makes that student's
-- next allocation ('allocation') or sessions ('sessions') fail with SQLSTATE 40001, a
-- serialization failure: the stage is rolled back and its event stays queued with one
-- more attempt and a run_after in the future (kc_flow.retry_base_ms), exactly as after a
-- real conflict.  Deleting the row lets the retry through.  Everything lives in the
-- schema kc_upgrade_hold; DROP SCHEMA kc_upgrade_hold CASCADE removes it and the triggers.
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS kc_upgrade_hold CASCADE;
CREATE SCHEMA kc_upgrade_hold;
CREATE TABLE kc_upgrade_hold.held (
    stage      text NOT NULL CHECK (stage IN ('allocation', 'sessions')),
    student_id uuid NOT NULL,
    PRIMARY KEY (stage, student_id)
);
CREATE FUNCTION kc_upgrade_hold.fail_if_held() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM kc_upgrade_hold.held h
                WHERE h.stage = TG_ARGV[0] AND h.student_id = NEW.student_id) THEN
        RAISE EXCEPTION 'the % of student % is held by the upgrade test', TG_ARGV[0], NEW.student_id
            USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER kc_upgrade_hold BEFORE INSERT ON kc_flow.trainer_allocations
    FOR EACH ROW EXECUTE FUNCTION kc_upgrade_hold.fail_if_held('allocation');
CREATE TRIGGER kc_upgrade_hold BEFORE INSERT ON kc_flow.tutoring_sessions
    FOR EACH ROW EXECUTE FUNCTION kc_upgrade_hold.fail_if_held('sessions');
