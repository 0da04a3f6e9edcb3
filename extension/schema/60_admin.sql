-- 60_admin.sql: the reads of the operator console (kc-gateway's /api/v1/admin routes,
-- docs/gateway.md "Operator console"), added in 0.2.0.
--
-- Like the read side they are SECURITY DEFINER with a fixed search_path and STABLE (one
-- snapshot per call), and they write nothing. Unlike it they show every student's payments,
-- so they are revoked from PUBLIC: grant EXECUTE to the role the gateway connects as. The
-- console's one write is kc_flow.retry_dead_letter().

CREATE FUNCTION kc_flow.payment_story(payment uuid) RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
AS $$
    WITH pay AS (
        SELECT p.*, s.display_name AS student_name, c.title AS course_title
          FROM kc_flow.payments p
          JOIN kc_flow.students s ON s.id = p.student_id
          JOIN kc_flow.courses c ON c.id = p.course_id
         WHERE p.id = payment),
    pur AS (
        SELECT pu.* FROM kc_flow.student_course_purchases pu WHERE pu.payment_id = payment),
    alloc AS (
        SELECT a.*, t.display_name AS trainer_name
          FROM kc_flow.trainer_allocations a
          JOIN pur ON pur.id = a.purchase_id
          LEFT JOIN kc_flow.trainers t ON t.id = a.trainer_id),
    sess AS (
        SELECT s.*, t.display_name AS trainer_name
          FROM kc_flow.tutoring_sessions s
          JOIN alloc ON alloc.id = s.allocation_id
          JOIN kc_flow.trainers t ON t.id = s.trainer_id),
    ev AS (
        SELECT e.*, ty.consumer AS stage
          FROM kc_flow.events e
          LEFT JOIN kc_flow.event_types() ty ON ty.event_type = e.event_type
         WHERE e.correlation_id = payment)
    SELECT jsonb_build_object(
        'payment', (SELECT jsonb_build_object(
                               'id', pay.id, 'status', pay.status,
                               'student_id', pay.student_id, 'student_name', pay.student_name,
                               'course_id', pay.course_id, 'course_title', pay.course_title,
                               'purchase_tier', pay.purchase_tier, 'amount_cents', pay.amount_cents,
                               'currency', pay.currency, 'time_slot', pay.time_slot, 'metadata', pay.metadata,
                               'created_at', pay.created_at, 'updated_at', pay.updated_at,
                               'succeeded_at', pay.succeeded_at)
                      FROM pay),
        'events', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                       'id', ev.id, 'type', ev.event_type, 'created_at', ev.created_at,
                       'pos', (SELECT l.pos FROM kc_flow.event_log l WHERE l.event_id = ev.id),
                       'version', ev.version, 'student_id', ev.student_id, 'payload', ev.payload,
                       'stage', ev.stage,
                       'processed_by', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                                   'consumer', pe.consumer, 'at', pe.processed_at,
                                                   'after_ms', round((extract(epoch FROM pe.processed_at - ev.created_at)
                                                                      * 1000)::numeric, 3))
                                               ORDER BY pe.processed_at), '[]')
                                          FROM kc_flow.processed_events pe WHERE pe.event_id = ev.id),
                       'queued', (SELECT jsonb_build_object(
                                             'consumer', q.consumer, 'attempts', q.attempts,
                                             'deferrals', q.deferrals, 'run_after', q.run_after,
                                             'last_sqlstate', q.last_sqlstate, 'last_error', q.last_error)
                                    FROM kc_flow.event_queue q WHERE q.event_id = ev.id),
                       'dead_letters', (SELECT coalesce(jsonb_agg(d.id ORDER BY d.id), '[]')
                                          FROM kc_flow.dead_letters d WHERE d.event_id = ev.id))
                   ORDER BY ev.id)
              FROM ev), '[]'),
        'dead_letters', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                       'id', d.id, 'event_id', d.event_id, 'event_type', ev.event_type,
                       'consumer', d.consumer, 'attempts', d.attempts, 'sqlstate', d.sqlstate,
                       'error', d.error_message, 'detail', d.error_detail,
                       'first_failed_at', d.first_failed_at, 'last_failed_at', d.last_failed_at,
                       'resolved', d.resolved, 'resolved_at', d.resolved_at)
                   ORDER BY d.id)
              FROM kc_flow.dead_letters d JOIN ev ON ev.id = d.event_id), '[]'),
        'purchase', (SELECT jsonb_build_object(
                                'id', pur.id, 'purchase_tier', pur.purchase_tier, 'is_active', pur.is_active,
                                'created_at', pur.created_at, 'ended_at', pur.ended_at)
                       FROM pur),
        'allocation', (SELECT jsonb_build_object(
                                  'id', alloc.id, 'status', alloc.status, 'session_mode', alloc.session_mode,
                                  'trainer_id', alloc.trainer_id, 'trainer_name', alloc.trainer_name,
                                  'created_at', alloc.created_at, 'allocated_at', alloc.allocated_at)
                         FROM alloc),
        'sessions', jsonb_build_object(
            'expected', (SELECT pur.purchase_tier FROM pur),
            'created', (SELECT count(*) FROM sess),
            'scheduled', (SELECT count(*) FROM sess WHERE sess.status = 'scheduled'),
            'completed', (SELECT count(*) FROM sess WHERE sess.status = 'completed'),
            'cancelled', (SELECT count(*) FROM sess WHERE sess.status = 'cancelled'),
            'missed', (SELECT count(*) FROM sess WHERE sess.status = 'missed'),
            'list', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                          'id', sess.id, 'seq', sess.seq, 'starts_at', sess.starts_at,
                                          'ends_at', sess.ends_at, 'status', sess.status,
                                          'trainer_name', sess.trainer_name, 'created_at', sess.created_at)
                                      ORDER BY sess.seq)
                                FROM sess), '[]')),
        'generated_at', now())
      FROM pay
$$;
COMMENT ON FUNCTION kc_flow.payment_story(uuid) IS
    'the operator console''s story of one payment: the payment with student and course, each event with the stage that consumes it, when each stage handled it, its queue state (attempts, last error) and dead letters, the dead letters with their reason, the purchase, the allocation and the sessions created against those expected; NULL for an unknown payment';

CREATE FUNCTION kc_flow.admin_search(query text, max_results int DEFAULT 20) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
AS $$
DECLARE
    q        text := btrim(coalesce(query, ''), E' \t\r\n');
    hex      text;
    lo       uuid;
    hi       uuid;
    event_no bigint;
    pattern  text;
    payments jsonb;
    students jsonb;
    more     boolean;
    message  text;
BEGIN
    IF max_results IS NULL OR max_results < 1 OR max_results > 100 THEN
        RAISE EXCEPTION 'max_results must be between 1 and 100, not %', max_results
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF length(q) > 200 THEN
        RAISE EXCEPTION 'search text is longer than 200 characters (%)', length(q)
            USING ERRCODE = 'string_data_right_truncation',
                  HINT = 'Search for a payment or student id, its first characters, an event id or part of a name.';
    END IF;
    IF q = '' THEN
        RETURN jsonb_build_object('query', q, 'payments', '[]'::jsonb, 'students', '[]'::jsonb,
                                  'truncated', false,
                                  'message', 'type a payment or student id (or its first 4 characters or more), an event id, or part of a student''s name');
    END IF;

    -- an id or its first characters: a range of the primary key (dashes anywhere, any case)
    IF q ~ '^[0-9A-Fa-f-]+$' THEN
        hex := lower(replace(q, '-', ''));
        IF length(hex) BETWEEN 4 AND 32 THEN
            lo := rpad(hex, 32, '0')::uuid;
            hi := rpad(hex, 32, 'f')::uuid;
        END IF;
    END IF;
    -- an event id: the payment it belongs to
    IF q ~ '^[0-9]{1,18}$' THEN
        event_no := q::bigint;
    END IF;
    -- any text: part of a student's name, taken literally
    pattern := '%' || replace(replace(replace(q, '\', '\\'), '%', '\%'), '_', '\_') || '%';

    WITH found AS (
        SELECT p.id, 1 AS rank, CASE WHEN lo = hi THEN 'payment id' ELSE 'payment id prefix' END AS how
          FROM kc_flow.payments p WHERE lo IS NOT NULL AND p.id BETWEEN lo AND hi
        UNION ALL
        SELECT e.correlation_id, 1, 'event ' || e.id
          FROM kc_flow.events e WHERE event_no IS NOT NULL AND e.id = event_no
    ), best AS (
        SELECT DISTINCT ON (f.id) f.id, f.rank, f.how FROM found f ORDER BY f.id, f.rank
    ), hits AS (
        SELECT b.how, b.rank, p.*, s.display_name AS student_name, c.title AS course_title
          FROM best b
          JOIN kc_flow.payments p ON p.id = b.id
          JOIN kc_flow.students s ON s.id = p.student_id
          JOIN kc_flow.courses c ON c.id = p.course_id
         ORDER BY b.rank, p.created_at DESC, p.id
         LIMIT max_results + 1
    )
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'id', h.id, 'status', h.status, 'student_id', h.student_id, 'student_name', h.student_name,
               'course_id', h.course_id, 'course_title', h.course_title, 'purchase_tier', h.purchase_tier,
               'amount_cents', h.amount_cents, 'currency', h.currency, 'created_at', h.created_at,
               'succeeded_at', h.succeeded_at, 'match', h.how)
               ORDER BY h.rank, h.created_at DESC, h.id), '[]')
      INTO payments
      FROM hits h;
    more := jsonb_array_length(payments) > max_results;
    IF more THEN
        payments := payments - max_results;
    END IF;

    WITH found AS (
        SELECT s.id, 1 AS rank, CASE WHEN lo = hi THEN 'student id' ELSE 'student id prefix' END AS how
          FROM kc_flow.students s WHERE lo IS NOT NULL AND s.id BETWEEN lo AND hi
        UNION ALL
        SELECT s.id, 2, 'student name'
          FROM kc_flow.students s WHERE s.display_name ILIKE pattern
    ), best AS (
        SELECT DISTINCT ON (f.id) f.id, f.rank, f.how FROM found f ORDER BY f.id, f.rank
    ), hits AS (
        SELECT b.how, b.rank, s.*
          FROM best b JOIN kc_flow.students s ON s.id = b.id
         ORDER BY b.rank, s.display_name, s.id
         LIMIT max_results + 1
    )
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'id', h.id, 'display_name', h.display_name, 'timezone', h.timezone, 'created_at', h.created_at,
               'match', h.how,
               'payment_count', (SELECT count(*) FROM kc_flow.payments p WHERE p.student_id = h.id),
               'payments', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                                'id', x.id, 'status', x.status, 'course_title', x.title,
                                                'purchase_tier', x.purchase_tier, 'created_at', x.created_at)
                                            ORDER BY x.created_at DESC, x.id), '[]')
                              FROM (SELECT p.*, c.title
                                      FROM kc_flow.payments p JOIN kc_flow.courses c ON c.id = p.course_id
                                     WHERE p.student_id = h.id
                                     ORDER BY p.created_at DESC, p.id LIMIT 10) x))
               ORDER BY h.rank, h.display_name, h.id), '[]')
      INTO students
      FROM hits h;
    IF jsonb_array_length(students) > max_results THEN
        students := students - max_results;
        more := true;
    END IF;

    IF jsonb_array_length(payments) + jsonb_array_length(students) = 0 THEN
        message := format('nothing matches %s: search for a payment or student id (or its first 4 characters or more), an event id, or part of a student''s name',
                          to_json(q)::text);
    ELSIF more THEN
        message := format('more than %s found: showing the first %s of each kind; type more of the id or name', max_results, max_results);
    END IF;
    RETURN jsonb_build_object('query', q, 'payments', payments, 'students', students,
                              'truncated', more, 'message', message);
END;
$$;
COMMENT ON FUNCTION kc_flow.admin_search(text, int) IS
    'the operator console''s search: payments whose id (or event id) matches and students whose id or name matches the text, at most max_results (1..100) of each, each student with their latest payments; any text is taken literally; 22001 above 200 characters';

CREATE FUNCTION kc_flow.admin_queue_counts() RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
AS $$
    SELECT jsonb_build_object(
        'queue_depth', (SELECT count(*) FROM kc_flow.event_queue),
        'queue_due', (SELECT count(*) FROM kc_flow.event_queue WHERE run_after <= now()),
        'queue_retrying', (SELECT count(*) FROM kc_flow.event_queue WHERE attempts > 0),
        'dead_letters', (SELECT count(*) FROM kc_flow.dead_letters WHERE NOT resolved),
        'at', now())
$$;
COMMENT ON FUNCTION kc_flow.admin_queue_counts() IS
    'the operator console''s queue figures: events queued (all, due now, failed at least once) and unresolved dead letters';

REVOKE ALL ON FUNCTION kc_flow.payment_story(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION kc_flow.admin_search(text, int) FROM PUBLIC;
REVOKE ALL ON FUNCTION kc_flow.admin_queue_counts() FROM PUBLIC;
