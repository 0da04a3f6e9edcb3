-- 15_session_bookings.sql: every scheduled session lies inside its own allocation's booking.
--
-- A trainer's bookings never overlap (bookings_no_trainer_double_booking), and the scheduled
-- sessions of one allocation never overlap each other, so two scheduled sessions of one trainer
-- cannot overlap: what 0.1.0's GiST exclusion constraint sessions_no_trainer_overlap enforced at
-- the cost of an index insert and an exclusion probe per session.  The triggers below refuse
-- every write that would break the rule: sessions inserted (one check per statement), a session
-- moved, given another trainer or set back to scheduled, and a booking changed or deleted while
-- a scheduled session of its allocation needs it.  A check locks the bookings it reads (FOR NO
-- KEY UPDATE), so two transactions cannot each miss the other's write: a booking deleted beside
-- new sessions, or two sessions of one allocation written at once.  The row triggers are
-- constraint triggers, DEFERRABLE INITIALLY IMMEDIATE: a transaction that moves a booking and its
-- sessions in separate statements may SET CONSTRAINTS ... DEFERRED (new sessions need their
-- booking first: a statement trigger cannot be deferred).  A single statement (the refund
-- stage's) is checked at its end, with all its parts done.

CREATE FUNCTION kc_flow.refuse_sessions_outside_bookings(candidates kc_flow.tutoring_sessions[])
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, kc_flow
AS $$
DECLARE
    bad    kc_flow.tutoring_sessions;
    clash  record;
BEGIN
    -- the bookings first: a concurrent change of one waits for this transaction, and one
    -- committed meanwhile is what the checks below read (each statement takes a new snapshot)
    PERFORM 1 FROM kc_flow.trainer_bookings b
      WHERE b.allocation_id = ANY (ARRAY(SELECT c.allocation_id FROM unnest(candidates) AS c
                                          WHERE c.status = 'scheduled'))
      ORDER BY b.allocation_id
        FOR NO KEY UPDATE;
    -- each allocation's sessions against its one booking, read once by its key (the test in
    -- the select list, so that no plan searches the trainer's bookings in
    -- bookings_no_trainer_double_booking's GiST index); the session to blame only if one is
    PERFORM 1
      FROM (SELECT c.allocation_id, c.trainer_id, range_agg(tstzrange(c.starts_at, c.ends_at)) AS times
              FROM unnest(candidates) AS c WHERE c.status = 'scheduled'
             GROUP BY c.allocation_id, c.trainer_id) g
     WHERE (SELECT b.trainer_id = g.trainer_id AND b.during @> g.times
              FROM kc_flow.trainer_bookings b WHERE b.allocation_id = g.allocation_id) IS NOT TRUE
     LIMIT 1;
    IF FOUND THEN
        SELECT s.* INTO STRICT bad
          FROM unnest(candidates) AS s
         WHERE s.status = 'scheduled'
           AND (SELECT b.trainer_id = s.trainer_id AND b.during @> tstzrange(s.starts_at, s.ends_at)
                  FROM kc_flow.trainer_bookings b WHERE b.allocation_id = s.allocation_id) IS NOT TRUE
         LIMIT 1;
        RAISE EXCEPTION 'a scheduled session of allocation % is outside its booking', bad.allocation_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'sessions_inside_booking', TABLE = 'tutoring_sessions',
                  SCHEMA = 'kc_flow',
                  DETAIL = format('Session %s (trainer %s, %s to %s) is not within the times trainer_bookings holds for its allocation on that trainer.',
                                  bad.id, bad.trainer_id, bad.starts_at, bad.ends_at),
                  HINT = 'Book the time for the allocation first (kc_flow.trainer_bookings.during), or cancel the session.';
    END IF;
    -- sorted by start, an overlap shows between neighbours
    SELECT x.* INTO clash
      FROM (SELECT DISTINCT c.allocation_id FROM unnest(candidates) AS c WHERE c.status = 'scheduled') a
     CROSS JOIN LATERAL (
            SELECT s.id, s.allocation_id, s.trainer_id, s.starts_at, s.ends_at,
                   lag(s.id) OVER w AS prev_id, lag(s.starts_at) OVER w AS prev_starts_at,
                   lag(s.ends_at) OVER w AS prev_ends_at
              FROM kc_flow.tutoring_sessions s
             WHERE s.allocation_id = a.allocation_id AND s.status = 'scheduled'
            WINDOW w AS (ORDER BY s.starts_at, s.id)) x
     WHERE x.prev_ends_at > x.starts_at
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'two scheduled sessions of allocation % overlap', clash.allocation_id
            USING ERRCODE = 'exclusion_violation', CONSTRAINT = 'sessions_inside_booking', TABLE = 'tutoring_sessions',
                  SCHEMA = 'kc_flow',
                  DETAIL = format('Session %s runs from %s to %s, session %s from %s to %s, both with trainer %s.',
                                  clash.prev_id, clash.prev_starts_at, clash.prev_ends_at, clash.id, clash.starts_at,
                                  clash.ends_at, clash.trainer_id),
                  HINT = 'A trainer teaches one session at a time: move or cancel one of them.';
    END IF;
END;
$$;
COMMENT ON FUNCTION kc_flow.refuse_sessions_outside_bookings(kc_flow.tutoring_sessions[]) IS
    'raises check_violation if a scheduled session among candidates is not inside its allocation''s booking (same trainer, booking.during @> its range), exclusion_violation if two scheduled sessions of such an allocation overlap';

CREATE FUNCTION kc_flow.check_sessions_inside_bookings() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, kc_flow
AS $$
BEGIN
    IF TG_LEVEL = 'STATEMENT' THEN
        PERFORM kc_flow.refuse_sessions_outside_bookings(ARRAY(SELECT n::kc_flow.tutoring_sessions FROM added n));
    ELSE
        -- the row as it is now: a deferred check sees the end of the transaction
        PERFORM kc_flow.refuse_sessions_outside_bookings(
            ARRAY(SELECT s FROM kc_flow.tutoring_sessions s WHERE s.id = NEW.id));
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION kc_flow.check_sessions_inside_bookings() IS
    'trigger of tutoring_sessions: the sessions a statement inserted, or a session updated, must lie inside their allocation''s booking';

CREATE FUNCTION kc_flow.check_booking_holds_sessions() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, kc_flow
AS $$
BEGIN
    PERFORM kc_flow.refuse_sessions_outside_bookings(
        ARRAY(SELECT s FROM kc_flow.tutoring_sessions s
               WHERE s.allocation_id = OLD.allocation_id AND s.status = 'scheduled'));
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION kc_flow.check_booking_holds_sessions() IS
    'trigger of trainer_bookings: a booking changed or deleted must still hold every scheduled session of its allocation';

CREATE TRIGGER sessions_inside_booking_on_insert AFTER INSERT ON kc_flow.tutoring_sessions
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION kc_flow.check_sessions_inside_bookings();
CREATE CONSTRAINT TRIGGER sessions_inside_booking_on_update
    AFTER UPDATE OF status, allocation_id, trainer_id, starts_at, ends_at ON kc_flow.tutoring_sessions
    DEFERRABLE INITIALLY IMMEDIATE
    FOR EACH ROW WHEN (NEW.status = 'scheduled')
    EXECUTE FUNCTION kc_flow.check_sessions_inside_bookings();
CREATE CONSTRAINT TRIGGER bookings_hold_their_sessions
    AFTER UPDATE OF allocation_id, trainer_id, during OR DELETE ON kc_flow.trainer_bookings
    DEFERRABLE INITIALLY IMMEDIATE
    FOR EACH ROW EXECUTE FUNCTION kc_flow.check_booking_holds_sessions();
