-- 50_read_side.sql: the read side of docs/design.md §5, used by kc-gateway and by any other app.
--
-- Every read function is SECURITY DEFINER with a fixed search_path, so a role that may only
-- EXECUTE them can serve the gateway. The JSON views are STABLE: all their statements run in
-- the snapshot of the calling query, so the "version" they return is the student's
-- cache version (kc_flow.student_version()) as of exactly the data shown (a cache fenced on
-- that version is safe).
-- An unknown student raises no_data_found (SQLSTATE P0002).

-- One row per session with the names a screen shows; the base of every session list below.
CREATE VIEW kc_flow.session_details AS
SELECT s.id, s.student_id, s.course_id, c.title AS course_title, s.trainer_id,
       t.display_name AS trainer_name, s.allocation_id, s.seq, p.purchase_tier AS total,
       s.scheduled_date, s.scheduled_time, s.starts_at, s.ends_at, s.status
  FROM kc_flow.tutoring_sessions s
  JOIN kc_flow.courses c ON c.id = s.course_id
  JOIN kc_flow.trainers t ON t.id = s.trainer_id
  JOIN kc_flow.trainer_allocations a ON a.id = s.allocation_id
  JOIN kc_flow.student_course_purchases p ON p.id = a.purchase_id;
COMMENT ON VIEW kc_flow.session_details IS
    'tutoring sessions with course title, trainer name and the number of sessions bought (total)';

CREATE FUNCTION kc_flow.session_json(s kc_flow.session_details) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT jsonb_build_object('id', s.id, 'course_id', s.course_id, 'course_title', s.course_title,
                              'trainer_id', s.trainer_id, 'trainer_name', s.trainer_name,
                              'seq', s.seq, 'total', s.total, 'starts_at', s.starts_at,
                              'ends_at', s.ends_at, 'status', s.status)
$$;
COMMENT ON FUNCTION kc_flow.session_json(kc_flow.session_details) IS
    'the JSON form of one session in every read-side answer: id, course_id, course_title, trainer_id, trainer_name, seq, total, starts_at, ends_at, status';

-- Trending is computed from recent purchases; this keeps the refresh a range scan.
CREATE INDEX purchases_by_created_at ON kc_flow.student_course_purchases (created_at, course_id);

CREATE TABLE kc_flow.course_trending (
    rank          int PRIMARY KEY CONSTRAINT course_trending_rank_positive CHECK (rank > 0),
    course_id     uuid NOT NULL REFERENCES kc_flow.courses ON DELETE CASCADE,
    title         text NOT NULL,
    purchases_7d  int NOT NULL CONSTRAINT course_trending_count_not_negative CHECK (purchases_7d >= 0),
    refreshed_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE kc_flow.course_trending IS
    'the most bought published courses of the last 7 days, a small summary rebuilt by kc_flow.refresh_trending() so that home screens never aggregate purchases per request';

CREATE FUNCTION kc_flow.refresh_trending(top int DEFAULT 10) RETURNS int
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
AS $$
DECLARE
    n int;
BEGIN
    IF top IS NULL OR top < 1 OR top > 100 THEN
        RAISE EXCEPTION 'top must be between 1 and 100' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- readers keep seeing the old ranking until this transaction commits
    LOCK TABLE kc_flow.course_trending IN EXCLUSIVE MODE;
    DELETE FROM kc_flow.course_trending;
    INSERT INTO kc_flow.course_trending (rank, course_id, title, purchases_7d)
    SELECT row_number() OVER (ORDER BY count(*) DESC, c.title, c.id), c.id, c.title, count(*)
      FROM kc_flow.student_course_purchases p
      JOIN kc_flow.courses c ON c.id = p.course_id
     WHERE p.created_at >= now() - interval '7 days' AND c.is_published
     GROUP BY c.id, c.title
     ORDER BY count(*) DESC, c.title, c.id
     LIMIT top;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;
COMMENT ON FUNCTION kc_flow.refresh_trending(int) IS
    'rebuilds kc_flow.course_trending from the purchases of the last 7 days (top N, default 10); returns the number of rows; call it periodically (a worker, cron), not per request';

-- Raises no_data_found unless the student exists (shared by the read functions).
CREATE FUNCTION kc_flow.require_student(student uuid) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, kc_flow
AS $$
BEGIN
    IF student IS NULL OR NOT EXISTS (SELECT 1 FROM kc_flow.students s WHERE s.id = student) THEN
        RAISE EXCEPTION 'student % does not exist', student
            USING ERRCODE = 'no_data_found', HINT = 'Students are rows of kc_flow.students.';
    END IF;
END;
$$;
COMMENT ON FUNCTION kc_flow.require_student(uuid) IS
    'raises no_data_found (P0002) unless the student exists';

CREATE FUNCTION kc_flow.student_home(student uuid) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
AS $$
DECLARE
    result jsonb;
BEGIN
    PERFORM kc_flow.require_student(student);
    WITH upcoming AS (
        SELECT d FROM kc_flow.session_details d
         WHERE d.student_id = student AND d.status = 'scheduled' AND d.ends_at > now()
         ORDER BY d.starts_at, d.id
         LIMIT 20
    ), purchases AS (
        SELECT p.id, p.course_id, p.purchase_tier, p.created_at, p.is_active, c.title,
               a.status AS allocation_status, t.display_name AS trainer_name,
               (SELECT count(*) FROM kc_flow.tutoring_sessions s
                 WHERE s.allocation_id = a.id AND s.status = 'completed') AS completed
          FROM kc_flow.student_course_purchases p
          JOIN kc_flow.courses c ON c.id = p.course_id
          LEFT JOIN kc_flow.trainer_allocations a ON a.purchase_id = p.id
          LEFT JOIN kc_flow.trainers t ON t.id = a.trainer_id
         WHERE p.student_id = student
         ORDER BY p.created_at DESC, p.id
         LIMIT 5
    ), notices AS (
        -- payments the purchase stage refused because the course is active already,
        -- as long as they are neither refunded nor turned into a purchase since
        SELECT DISTINCT ON (e.correlation_id) e.id, e.created_at, e.payload, p.id AS payment_id,
               p.course_id, c.title
          FROM kc_flow.events e
          JOIN kc_flow.payments p ON p.id = e.correlation_id
          JOIN kc_flow.courses c ON c.id = p.course_id
         WHERE e.student_id = student AND e.event_type = 'PURCHASE_ALREADY_ACTIVE'
           AND p.status = 'succeeded'
           AND NOT EXISTS (SELECT 1 FROM kc_flow.student_course_purchases x WHERE x.payment_id = p.id)
         ORDER BY e.correlation_id, e.id DESC
    )
    SELECT jsonb_build_object(
        'student_id', student,
        'version', kc_flow.student_version(student),
        'overview', jsonb_build_object(
            'active_courses', (SELECT count(*) FROM kc_flow.student_course_purchases p
                                WHERE p.student_id = student AND p.is_active),
            'upcoming_sessions', (SELECT count(*) FROM kc_flow.tutoring_sessions s
                                   WHERE s.student_id = student AND s.status = 'scheduled'
                                     AND s.ends_at > now()),
            'completed_sessions', (SELECT count(*) FROM kc_flow.tutoring_sessions s
                                    WHERE s.student_id = student AND s.status = 'completed'),
            'pending_allocations', (SELECT count(*) FROM kc_flow.trainer_allocations a
                                     WHERE a.student_id = student AND a.status = 'pending'),
            'next_session', (SELECT kc_flow.session_json(u.d) FROM upcoming u
                              ORDER BY (u.d).starts_at, (u.d).id LIMIT 1)),
        'upcoming_sessions', coalesce((SELECT jsonb_agg(kc_flow.session_json(u.d)
                                                        ORDER BY (u.d).starts_at, (u.d).id)
                                         FROM upcoming u), '[]'),
        'recent_courses', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                        'course_id', p.course_id, 'title', p.title,
                                        'purchased_at', p.created_at, 'purchase_tier', p.purchase_tier,
                                        'is_active', p.is_active, 'trainer_name', p.trainer_name,
                                        'allocation_status', p.allocation_status,
                                        'progress', jsonb_build_object('completed', p.completed,
                                                                       'total', p.purchase_tier))
                                        ORDER BY p.created_at DESC, p.id)
                                      FROM purchases p), '[]'),
        'payment_notices', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                         'type', 'PURCHASE_ALREADY_ACTIVE',
                                         'message', 'payment received, course already active',
                                         'event_id', n.id, 'payment_id', n.payment_id,
                                         'course_id', n.course_id, 'title', n.title,
                                         'active_purchase_id', n.payload->'active_purchase_id',
                                         'at', n.created_at) ORDER BY n.id)
                                       FROM notices n), '[]'),
        'trending_courses', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                          'course_id', tr.course_id, 'title', tr.title,
                                          'purchases_7d', tr.purchases_7d) ORDER BY tr.rank)
                                        FROM (SELECT * FROM kc_flow.course_trending ORDER BY rank LIMIT 5) tr),
                                     '[]'),
        'generated_at', now())
      INTO result;
    RETURN result;
END;
$$;
COMMENT ON FUNCTION kc_flow.student_home(uuid) IS
    'the home screen of a student as JSON: version, overview, the next 20 upcoming sessions, the 5 latest purchases with progress, payment notices (payment received, course already active), trending courses; P0002 for an unknown student';

CREATE FUNCTION kc_flow.student_learning(student uuid) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
AS $$
DECLARE
    result jsonb;
BEGIN
    PERFORM kc_flow.require_student(student);
    SELECT jsonb_build_object(
        'student_id', student,
        'version', kc_flow.student_version(student),
        'courses', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                       'purchase_id', p.id, 'course_id', p.course_id, 'title', c.title,
                       'purchase_tier', p.purchase_tier, 'purchased_at', p.created_at,
                       'is_active', p.is_active,
                       'allocation', CASE WHEN a.id IS NULL THEN NULL ELSE jsonb_build_object(
                                         'id', a.id, 'status', a.status, 'trainer_id', a.trainer_id,
                                         'trainer_name', t.display_name, 'allocated_at', a.allocated_at) END,
                       'progress', jsonb_build_object(
                                       'completed', (SELECT count(*) FROM kc_flow.tutoring_sessions s
                                                      WHERE s.allocation_id = a.id AND s.status = 'completed'),
                                       'total', p.purchase_tier),
                       'next_session', (SELECT kc_flow.session_json(d) FROM kc_flow.session_details d
                                         WHERE d.allocation_id = a.id AND d.status = 'scheduled'
                                           AND d.ends_at > now()
                                         ORDER BY d.starts_at, d.id LIMIT 1),
                       'sessions', coalesce((SELECT jsonb_agg(kc_flow.session_json(d) ORDER BY d.seq)
                                               FROM kc_flow.session_details d
                                              WHERE d.allocation_id = a.id), '[]'))
                   ORDER BY p.is_active DESC, p.created_at DESC, p.id)
              FROM kc_flow.student_course_purchases p
              JOIN kc_flow.courses c ON c.id = p.course_id
              LEFT JOIN kc_flow.trainer_allocations a ON a.purchase_id = p.id
              LEFT JOIN kc_flow.trainers t ON t.id = a.trainer_id
             WHERE p.student_id = student), '[]'),
        'generated_at', now())
      INTO result;
    RETURN result;
END;
$$;
COMMENT ON FUNCTION kc_flow.student_learning(uuid) IS
    'every course a student bought, active first: allocation status and trainer, progress, next session and all sessions; P0002 for an unknown student';

-- Keyset cursors are opaque to clients: base64url of "<starts_at in epoch microseconds>:<session id>".
CREATE FUNCTION kc_flow.session_cursor(starts_at timestamptz, id bigint) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog
AS $$
    SELECT translate(encode(convert_to(
               ((extract(epoch FROM starts_at) * 1000000)::bigint)::text || ':' || id::text, 'UTF8'),
               'base64'), '+/=', '-_')
$$;
COMMENT ON FUNCTION kc_flow.session_cursor(timestamptz, bigint) IS
    'the opaque keyset cursor that student_sessions returns as next_after for the last session of a page';

CREATE FUNCTION kc_flow.student_sessions(student uuid, status text DEFAULT NULL,
                                         "from" timestamptz DEFAULT NULL, "to" timestamptz DEFAULT NULL,
                                         after text DEFAULT NULL, lim int DEFAULT 50)
    RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
AS $$
DECLARE
    decoded  text;
    after_at timestamptz;
    after_id bigint;
    result   jsonb;
BEGIN
    IF lim IS NULL OR lim < 1 OR lim > 200 THEN
        RAISE EXCEPTION 'lim must be between 1 and 200' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('Got %s.', coalesce(lim::text, 'NULL'));
    END IF;
    IF student_sessions.status IS NOT NULL
       AND student_sessions.status NOT IN ('scheduled', 'completed', 'cancelled', 'missed') THEN
        RAISE EXCEPTION 'unknown session status "%"', student_sessions.status USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use scheduled, completed, cancelled or missed.';
    END IF;
    IF after IS NOT NULL THEN
        BEGIN
            decoded := convert_from(decode(rpad(translate(after, '-_', '+/'),
                                                ((length(after) + 3) / 4) * 4, '='), 'base64'), 'UTF8');
        EXCEPTION WHEN OTHERS THEN
            decoded := NULL;
        END;
        IF decoded IS NULL OR decoded !~ '^-?[0-9]{1,18}:[0-9]{1,18}$' THEN
            RAISE EXCEPTION 'invalid cursor "%"', left(after, 64) USING ERRCODE = 'invalid_parameter_value',
                HINT = 'Pass back the next_after value of the previous page unchanged.';
        END IF;
        after_at := to_timestamp(split_part(decoded, ':', 1)::numeric / 1000000);
        after_id := split_part(decoded, ':', 2)::bigint;
    END IF;
    PERFORM kc_flow.require_student(student);

    WITH page AS (
        SELECT d AS s, row_number() OVER (ORDER BY d.starts_at, d.id) AS rn
          FROM kc_flow.session_details d
         WHERE d.student_id = student
           AND (student_sessions.status IS NULL OR d.status = student_sessions.status)
           AND ("from" IS NULL OR d.starts_at >= "from")
           AND ("to" IS NULL OR d.starts_at < "to")
           AND (after IS NULL OR (d.starts_at, d.id) > (after_at, after_id))
         ORDER BY d.starts_at, d.id
         LIMIT lim + 1
    )
    SELECT jsonb_build_object(
        'student_id', student,
        'sessions', coalesce((SELECT jsonb_agg(kc_flow.session_json(p.s) ORDER BY p.rn)
                                FROM page p WHERE p.rn <= lim), '[]'),
        'next_after', (SELECT kc_flow.session_cursor((p.s).starts_at, (p.s).id)
                         FROM page p
                        WHERE p.rn = lim AND EXISTS (SELECT 1 FROM page q WHERE q.rn = lim + 1)))
      INTO result;
    RETURN result;
END;
$$;
COMMENT ON FUNCTION kc_flow.student_sessions(uuid, text, timestamptz, timestamptz, text, int) IS
    'one page of a student''s sessions in start order, filtered by status and [from, to); pass next_after back as after for the next page (null: last page); P0002 for an unknown student, 22023 for a bad status, lim or cursor';

CREATE FUNCTION kc_flow.settled_event_id() RETURNS bigint
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
AS $$
    SELECT coalesce((SELECT r.last_pos FROM kc_flow.log_rounds r ORDER BY r.last_pos DESC LIMIT 1), 0)
$$;
COMMENT ON FUNCTION kc_flow.settled_event_id() IS
    'the newest log position (every position up to it is readable); a reader with no position starts events_since from it';
