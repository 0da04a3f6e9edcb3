-- 30_planning.sql: when the sessions of a purchase take place.
-- The rule; the stages compute the same plan in C (extension/session_plan.c) for the
-- slots validate_time_slot() accepts and call purchase_plan() for any other.
-- Plain SQL functions without SET clauses, so that the planner inlines them
-- into the stages' prepared statements; every name in them is qualified.

CREATE FUNCTION kc_flow.plan_sessions(slot jsonb, sessions int, session_minutes int, reference timestamptz)
    RETURNS TABLE (seq int, local_date date, local_time time, starts_at timestamptz, ends_at timestamptz)
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    -- each weekday's first date from first_day on, then every 7 days: sessions dates per weekday
    -- at most, of which the first sessions in date order (the same dates as walking the
    -- calendar day by day, without the ~7 rows and the isodow per session that cost)
    WITH s AS (
        SELECT (slot->>'start')::time AS t,
               slot->>'timezone' AS tz,
               coalesce((slot->>'starts_on')::date,
                        (reference AT TIME ZONE (slot->>'timezone'))::date + 1) AS first_day)
    SELECT (row_number() OVER (ORDER BY x.d))::int,
           x.d,
           s.t,
           (x.d + s.t) AT TIME ZONE s.tz,
           ((x.d + s.t) AT TIME ZONE s.tz) + make_interval(mins => session_minutes)
      FROM s,
           LATERAL (SELECT DISTINCT w.w::int AS w FROM jsonb_array_elements_text(slot->'weekdays') AS w(w)
                     WHERE w.w::int BETWEEN 1 AND 7) wd,
           LATERAL (SELECT s.first_day + (wd.w - extract(isodow FROM s.first_day)::int + 7) % 7 + 7 * k AS d
                      FROM pg_catalog.generate_series(0, sessions - 1) AS k) x
     ORDER BY x.d
     LIMIT sessions
$$;
COMMENT ON FUNCTION kc_flow.plan_sessions(jsonb, int, int, timestamptz) IS
    'the session times of a slot: on its weekdays at its local start time (daylight saving follows the zone), from starts_on or the day after reference';

CREATE FUNCTION kc_flow.purchase_plan(purchase uuid)
    RETURNS TABLE (seq int, local_date date, local_time time, starts_at timestamptz, ends_at timestamptz)
    LANGUAGE sql STABLE
AS $$
    SELECT pl.*
      FROM kc_flow.student_course_purchases pu
      JOIN kc_flow.payments p ON p.id = pu.payment_id
      JOIN kc_flow.courses c ON c.id = pu.course_id
     CROSS JOIN LATERAL kc_flow.plan_sessions(p.time_slot, pu.purchase_tier, c.session_minutes,
                                              coalesce(p.succeeded_at, p.created_at)) pl
     WHERE pu.id = purchase
$$;
COMMENT ON FUNCTION kc_flow.purchase_plan(uuid) IS
    'the planned sessions of a purchase; stable for the purchase''s lifetime since it is anchored at the payment''s success time';

-- The allocation search keeps each course's roster (its active trainers, their capacity and
-- zone) between purchases; any change of trainers or of their courses makes it read again.
CREATE FUNCTION kc_flow.note_roster_change() RETURNS trigger
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'kcf_note_roster_change';
COMMENT ON FUNCTION kc_flow.note_roster_change() IS
    'statement trigger on trainers and trainer_courses: the allocation search reads the courses'' trainers again';
CREATE TRIGGER trainers_roster_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON kc_flow.trainers
    FOR EACH STATEMENT EXECUTE FUNCTION kc_flow.note_roster_change();
CREATE TRIGGER trainer_courses_roster_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON kc_flow.trainer_courses
    FOR EACH STATEMENT EXECUTE FUNCTION kc_flow.note_roster_change();
