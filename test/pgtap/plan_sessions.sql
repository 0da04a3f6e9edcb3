-- pgTAP: kc_flow.plan_sessions() computes each weekday's dates (extension/schema/30_planning.sql);
-- it must give exactly the sessions that walking the calendar day by day gave (its definition
-- before, kept here as the reference): the same dates, times, instants across daylight saving
-- changes, for duplicate or invalid weekdays, with and without starts_on.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(3);

CREATE FUNCTION pg_temp.walk_calendar(slot jsonb, sessions int, session_minutes int, reference timestamptz)
    RETURNS TABLE (seq int, local_date date, local_time time, starts_at timestamptz, ends_at timestamptz)
    LANGUAGE sql STABLE
AS $$
    WITH s AS (
        SELECT (slot->>'start')::time AS t,
               slot->>'timezone' AS tz,
               coalesce((slot->>'starts_on')::date,
                        (reference AT TIME ZONE (slot->>'timezone'))::date + 1) AS first_day,
               ARRAY(SELECT jsonb_array_elements_text(slot->'weekdays')::int) AS days)
    SELECT (row_number() OVER (ORDER BY d))::int, d::date, s.t,
           (d::date + s.t) AT TIME ZONE s.tz,
           ((d::date + s.t) AT TIME ZONE s.tz) + make_interval(mins => session_minutes)
      FROM s, pg_catalog.generate_series(s.first_day, s.first_day + 7 * sessions + 6, interval '1 day') AS d
     WHERE extract(isodow FROM d)::int = ANY (s.days)
     ORDER BY d
     LIMIT sessions
$$;

SELECT setseed(0.42);
CREATE TEMP TABLE cases AS
SELECT jsonb_build_object('weekdays', (SELECT jsonb_agg((random() * 8)::int) FROM generate_series(1, 1 + (random() * 4)::int) WHERE g > 0),
                          'start', make_time((random() * 23)::int, (random() * 59)::int, 0)::text,
                          'timezone', (ARRAY['Europe/Berlin', 'UTC', 'America/New_York', 'Asia/Kolkata',
                                             'Australia/Lord_Howe', 'Pacific/Chatham'])[1 + (random() * 5)::int])
       || CASE WHEN random() < 0.5 THEN jsonb_build_object('starts_on', (date '2026-01-01' + (random() * 900)::int)::text)
               ELSE '{}' END AS slot,
       (ARRAY[1, 5, 10, 20, 30])[1 + (random() * 4)::int] AS n,
       (ARRAY[30, 45, 60, 90])[1 + (random() * 3)::int] AS mins,
       timestamptz '2026-01-01' + random() * interval '900 days' AS ref
  FROM generate_series(1, 3000) g;
-- across the spring and autumn changes of Berlin and New York, a session in the skipped hour
INSERT INTO cases VALUES
    ('{"weekdays":[7],"start":"02:30","timezone":"Europe/Berlin","starts_on":"2031-03-20"}', 5, 45, now()),
    ('{"weekdays":[1,7,7],"start":"01:30","timezone":"America/New_York","starts_on":"2031-10-27"}', 10, 60, now()),
    ('{"weekdays":[],"start":"10:00","timezone":"UTC"}', 10, 45, now());

SELECT is((SELECT count(*) FROM cases c
            WHERE (SELECT coalesce(array_agg(p ORDER BY p.seq)::text, '') FROM kc_flow.plan_sessions(c.slot, c.n, c.mins, c.ref) p)
                  IS DISTINCT FROM
                  (SELECT coalesce(array_agg(p ORDER BY p.seq)::text, '') FROM pg_temp.walk_calendar(c.slot, c.n, c.mins, c.ref) p)),
          0::bigint, '3,003 slots: the same sessions as walking the calendar');
SELECT is((SELECT count(*) FROM cases c
            WHERE (SELECT count(*) FROM kc_flow.plan_sessions(c.slot, c.n, c.mins, c.ref))
                  = c.n AND c.slot->'weekdays' @> '[1]'), (SELECT count(*) FROM cases c WHERE c.slot->'weekdays' @> '[1]'),
          'a slot with a valid weekday gets all its sessions');
SELECT is((SELECT count(*) FROM kc_flow.plan_sessions('{"weekdays":[],"start":"10:00","timezone":"UTC"}', 10, 45, now())),
          0::bigint, 'a slot without weekdays gets none');

SELECT * FROM finish();
ROLLBACK;
