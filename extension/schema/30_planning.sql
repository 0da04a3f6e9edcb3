-- 30_planning.sql: when the sessions of a purchase take place.
-- Used by the allocation stage (to check and book a trainer) and nowhere else.
-- Plain SQL functions without SET clauses, so that the planner inlines them
-- into the stages' prepared statements; every name in them is qualified.

CREATE FUNCTION kc_flow.plan_sessions(slot jsonb, sessions int, session_minutes int, reference timestamptz)
    RETURNS TABLE (seq int, local_date date, local_time time, starts_at timestamptz, ends_at timestamptz)
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    WITH s AS (
        SELECT (slot->>'start')::time AS t,
               slot->>'timezone' AS tz,
               coalesce((slot->>'starts_on')::date,
                        (reference AT TIME ZONE (slot->>'timezone'))::date + 1) AS first_day,
               ARRAY(SELECT jsonb_array_elements_text(slot->'weekdays')::int) AS days)
    SELECT (row_number() OVER (ORDER BY d))::int,
           d::date,
           s.t,
           (d::date + s.t) AT TIME ZONE s.tz,
           ((d::date + s.t) AT TIME ZONE s.tz) + make_interval(mins => session_minutes)
      FROM s, pg_catalog.generate_series(s.first_day, s.first_day + 7 * sessions + 6, interval '1 day') AS d
     WHERE extract(isodow FROM d)::int = ANY (s.days)
     ORDER BY d
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
