-- 12_sessions_of_allocation.sql: the foreign key sessions_of_allocation, checked once per insert.
--
-- PostgreSQL checks a foreign key on insert with one query per inserted row (ri_triggers.c's
-- RI_FKey_check_ins: executor start-up, an index probe and a row lock each); the sessions stage
-- inserts 10-30 rows per purchase, a batch's from a few dozen allocations in one statement.
-- The constraint stays PostgreSQL's own: ON DELETE CASCADE, the NO ACTION check of updates of
-- trainer_allocations' key (with REPEATABLE READ's cross-check), the refusal to TRUNCATE
-- trainer_allocations alone, the check of a session's key columns when they are updated
-- (RI_FKey_check_upd), pg_constraint and whatever reads it.  Only the per-row insert check is
-- disabled, and the statement trigger below makes it once per distinct key of the statement
-- with the same lookup (FOR KEY SHARE from ONLY trainer_allocations, as the table's owner with
-- row security not forced, in the snapshot PostgreSQL's check takes) and fails as it does
-- (extension/session_allocation_check.c).  Its name sorts before
-- sessions_inside_booking_on_insert (AFTER triggers fire by name): an insert for a missing
-- allocation still fails with 23503 before its booking is looked for.  pg_dump leaves internal
-- triggers out: a restore runs this script again (CREATE EXTENSION), while pg_upgrade, which
-- recreates the extension's members one by one, gets the per-row check back enabled beside
-- this one (both check, nothing is lost).

CREATE FUNCTION kc_flow.check_sessions_of_allocation() RETURNS trigger
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'kcf_check_sessions_of_allocation';
COMMENT ON FUNCTION kc_flow.check_sessions_of_allocation() IS
    'trigger of tutoring_sessions: the foreign key sessions_of_allocation''s insert check, once per statement for its distinct keys (extension/session_allocation_check.c)';

CREATE TRIGGER sessions_have_their_allocation AFTER INSERT ON kc_flow.tutoring_sessions
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION kc_flow.check_sessions_of_allocation();

-- the per-row insert check the trigger above replaces (its name holds an oid: found by its function)
DO $$
BEGIN
    EXECUTE format('ALTER TABLE kc_flow.tutoring_sessions DISABLE TRIGGER %I',
                   (SELECT t.tgname FROM pg_catalog.pg_trigger t
                      JOIN pg_catalog.pg_constraint c ON c.oid = t.tgconstraint
                     WHERE t.tgrelid = 'kc_flow.tutoring_sessions'::regclass AND c.conname = 'sessions_of_allocation'
                       AND t.tgfoid = 'pg_catalog."RI_FKey_check_ins"'::regproc));
END;
$$;
