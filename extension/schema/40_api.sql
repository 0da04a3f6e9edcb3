-- 40_api.sql: the SQL API other programs use to drive and inspect the flow.

CREATE FUNCTION kc_flow.create_payment(student uuid, course uuid, purchase_tier int, time_slot jsonb,
                                       amount_cents bigint DEFAULT 0, currency text DEFAULT 'USD',
                                       metadata jsonb DEFAULT '{}')
    RETURNS uuid
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, kc_flow
AS $$
DECLARE
    active  kc_flow.student_course_purchases;
    payment uuid;
BEGIN
    INSERT INTO kc_flow.payments (student_id, course_id, purchase_tier, time_slot, amount_cents, currency, metadata)
    VALUES (student, course, purchase_tier, time_slot, amount_cents, upper(currency), coalesce(metadata, '{}'))
    RETURNING id INTO payment;
    -- checked after the payment's own rules, so bad input is reported first; a
    -- concurrent sale that slips past this check ends as PURCHASE_ALREADY_ACTIVE
    SELECT * INTO active FROM kc_flow.student_course_purchases p
     WHERE p.student_id = student AND p.course_id = course AND p.is_active;
    IF FOUND THEN
        RAISE EXCEPTION 'student % already holds course %', student, course
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'purchases_one_active_per_course',
                  DETAIL = format('Active purchase %s (payment %s) covers this course.', active.id, active.payment_id),
                  HINT = 'Refund or end the active purchase before selling the course again.';
    END IF;
    RETURN payment;
END;
$$;
COMMENT ON FUNCTION kc_flow.create_payment(uuid, uuid, int, jsonb, bigint, text, jsonb) IS
    'records a pending payment after checking student, course, tier and time slot; returns its id; 23505 when the student already holds the course (an active purchase)';

-- C (extension/payments_confirm.c): the order's row lock serializes a payment's confirmations,
-- the status is read after it, then the outcome; any status but pending, or any isolation
-- but READ COMMITTED, goes to record_outcome(), whose errors are the only ones raised.
CREATE FUNCTION kc_flow.confirm_payment(payment uuid) RETURNS bigint
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'kcf_confirm_payment';
COMMENT ON FUNCTION kc_flow.confirm_payment(uuid) IS
    'marks a pending payment succeeded (an outcome row), which emits PURCHASE_CONFIRMED; returns that event id, or NULL when it was already succeeded';

CREATE FUNCTION kc_flow.log_floor() RETURNS bigint
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
AS $$ SELECT last_value FROM kc_flow.log_floor_position $$;
COMMENT ON FUNCTION kc_flow.log_floor() IS
    'the highest log position a rotation of the log''s ring may have removed (0: none yet); every position above it that was ever given is still readable, and events_since refuses a cursor below it (SQLSTATE KC410); read without a snapshot, so it is the newest floor even in an old snapshot';

CREATE FUNCTION kc_flow.log_head() RETURNS bigint
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
AS $$ SELECT coalesce((SELECT r.last_pos FROM kc_flow.log_rounds r ORDER BY r.last_pos DESC LIMIT 1), 0) $$;
COMMENT ON FUNCTION kc_flow.log_head() IS
    'the newest log position (every position from kc_flow.log_floor() up to it is readable): where a reader that reloaded its state reads on from';

CREATE FUNCTION kc_flow.events_since(after bigint, student uuid DEFAULT NULL, max int DEFAULT 100)
    RETURNS TABLE (pos bigint, id bigint, event_type text, correlation_id uuid, student_id uuid,
                   payload jsonb, version bigint, created_at timestamptz, logged_at timestamptz)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
AS $$
DECLARE
    floor_pos bigint;
    head_pos bigint;
    got_rows boolean;
BEGIN
    IF after IS NULL OR after < 0 THEN
        RAISE EXCEPTION 'after must be a log position >= 0' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF max IS NULL OR max < 1 OR max > 10000 THEN
        RAISE EXCEPTION 'max must be between 1 and 10000' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('Got %s.', coalesce(max::text, 'NULL'));
    END IF;
    -- positions commit in order, a round at a time: any snapshot sees a prefix of the log
    IF student IS NULL THEN
        RETURN QUERY SELECT l.pos, e.id, e.event_type, e.correlation_id, e.student_id, e.payload, e.version,
                            e.created_at, l.logged_at
                       FROM kc_flow.event_log l JOIN kc_flow.events e ON e.id = l.event_id
                      WHERE l.pos > after
                      ORDER BY l.pos LIMIT max;
    ELSE
        RETURN QUERY SELECT l.pos, e.id, e.event_type, e.correlation_id, e.student_id, e.payload, e.version,
                            e.created_at, l.logged_at
                       FROM kc_flow.event_log l JOIN kc_flow.events e ON e.id = l.event_id
                      WHERE l.student_id = student AND l.pos > after
                      ORDER BY l.pos LIMIT max;
    END IF;
    got_rows := FOUND;
    -- after the rows: a rotation that emptied a table this snapshot still saw full has set the
    -- floor by now (read without a snapshot), so a page with a hole is never returned
    floor_pos := kc_flow.log_floor();
    IF after < floor_pos THEN
        RAISE EXCEPTION 'log position % is no longer in the event log', after USING ERRCODE = 'KC410',
            DETAIL = format('The log keeps positions above %s: older ones were removed by the rotation of the log''s ring (kc_flow.event_retention is %s).',
                            floor_pos, coalesce(current_setting('kc_flow.event_retention', true), '7d, its default')),
            HINT = 'Reload the state (student_home, flow_status), then read on from kc_flow.log_head().';
    END IF;
    -- above the head: the position was given by a log that has since been rewound (a failover
    -- that lost commits, a restored backup), and names another event or none now. Asked of an
    -- empty page only; the head is at least the floor, for a snapshot older than a rotation
    -- that copied the newest round forward does not see it
    IF NOT got_rows THEN
        head_pos := greatest(kc_flow.log_head(), floor_pos);
        IF after > head_pos THEN
            RAISE EXCEPTION 'log position % is past the end of the event log', after USING ERRCODE = 'KC410',
                DETAIL = format('The log ends at position %s: it was rewound (a failover that lost commits, or a restored backup) since the position was read.',
                                head_pos),
                HINT = 'Reload the state (student_home, flow_status), then read on from kc_flow.log_head().';
        END IF;
    END IF;
END;
$$;
COMMENT ON FUNCTION kc_flow.events_since(bigint, uuid, int) IS
    'events after a log position, in log (commit) order, of one student or (NULL) all; pos is the cursor to pass back as "after"; a position is never given below one already visible, so a reader that follows "after" misses nothing; a position below kc_flow.log_floor(), or above kc_flow.log_head() (the log was rewound since), is refused with SQLSTATE KC410 (reload the state, then read on from kc_flow.log_head())';

CREATE FUNCTION kc_flow.health(reader_position bigint DEFAULT NULL) RETURNS jsonb
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
AS $$
    WITH head AS (
        SELECT r.last_pos, r.sequenced_at FROM kc_flow.log_rounds r ORDER BY r.last_pos DESC LIMIT 1
    ), backlog AS (
        SELECT * FROM kc_flow.log_backlog()
    ), writer AS (
        SELECT kc_flow.oldest_event_writer() AS since
    )
    SELECT jsonb_build_object(
        'queue_depth', (SELECT count(*) FROM kc_flow.event_queue),
        'dead_letters', (SELECT count(*) FROM kc_flow.dead_letters d WHERE NOT d.resolved),
        'oldest_xact_holding_events_seconds',
            coalesce(extract(epoch FROM clock_timestamp() - (SELECT w.since FROM writer w)), 0)::float8,
        'log_unsequenced', (SELECT b.unsequenced FROM backlog b),
        'log_oldest_unsequenced_seconds',
            coalesce(extract(epoch FROM clock_timestamp() - (SELECT b.oldest_created_at FROM backlog b)), 0)::float8,
        'log_unannounced', h.last_pos - coalesce((SELECT r.last_pos FROM kc_flow.log_rounds r WHERE r.announced
                                                   ORDER BY r.last_pos DESC LIMIT 1), 0),
        'notification_queue_usage', pg_notification_queue_usage(),
        'newest_position', h.last_pos,
        'newest_committed_at', h.sequenced_at,
        'log_ring', (SELECT jsonb_build_object(
                         'generation', r.generation,
                         'current_seconds', extract(epoch FROM clock_timestamp() - r.rotated_at)::float8,
                         'floor', kc_flow.log_floor(),
                         'kept_events', r.kept_events, 'kept_positions', r.kept_positions,
                         'kept_marks', r.kept_marks)
                        FROM kc_flow.log_rotations r ORDER BY r.generation DESC LIMIT 1),
        'reader_position', reader_position,
        'reader_lag_seconds',
            CASE WHEN reader_position IS NOT NULL THEN
                coalesce(extract(epoch FROM clock_timestamp() -
                                 (SELECT l.logged_at FROM kc_flow.event_log l WHERE l.pos > reader_position
                                   ORDER BY l.pos LIMIT 1)), 0)::float8
            END)
      FROM head h
$$;
COMMENT ON FUNCTION kc_flow.health(bigint) IS
    'the pipeline and its log at a glance: queue depth, unresolved dead letters, age of the oldest open transaction whose events are still to come, committed events without a position (unsequenced) or not announced, NOTIFY queue usage, the newest position and when it was given, the log''s ring (its generation, how long its current tables have been current, the floor, and the events, positions and processed marks the last rotation copied forward); with a reader''s position, how long the oldest event it has not read has been in the log (0: none)';

CREATE FUNCTION kc_flow.flow_status(payment uuid) RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
AS $$
    SELECT jsonb_build_object(
        'payment', (SELECT jsonb_build_object('id', p.id, 'status', p.status, 'student_id', p.student_id,
                                              'course_id', p.course_id, 'purchase_tier', p.purchase_tier,
                                              'succeeded_at', p.succeeded_at)
                      FROM kc_flow.payments p WHERE p.id = payment),
        'events', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                       'id', e.id, 'type', e.event_type, 'created_at', e.created_at, 'version', e.version,
                       'processed_by', (SELECT coalesce(jsonb_agg(jsonb_build_object('consumer', pe.consumer,
                                                                                     'at', pe.processed_at)
                                                                  ORDER BY pe.processed_at), '[]')
                                          FROM kc_flow.processed_events pe WHERE pe.event_id = e.id),
                       'queued', (SELECT jsonb_build_object('consumer', q.consumer, 'attempts', q.attempts,
                                                            'run_after', q.run_after, 'last_error', q.last_error)
                                    FROM kc_flow.event_queue q WHERE q.event_id = e.id))
                   ORDER BY e.id)
              FROM kc_flow.events e WHERE e.correlation_id = payment), '[]'),
        'dead_letters', coalesce((
            SELECT jsonb_agg(jsonb_build_object('id', d.id, 'event_id', d.event_id, 'consumer', d.consumer,
                                                'attempts', d.attempts, 'sqlstate', d.sqlstate,
                                                'error', d.error_message, 'resolved', d.resolved)
                             ORDER BY d.id)
              FROM kc_flow.dead_letters d JOIN kc_flow.events e ON e.id = d.event_id
             WHERE e.correlation_id = payment), '[]'),
        'purchases', (SELECT count(*) FROM kc_flow.student_course_purchases WHERE payment_id = payment),
        'allocation', (SELECT jsonb_build_object('id', a.id, 'status', a.status, 'trainer_id', a.trainer_id)
                         FROM kc_flow.trainer_allocations a
                         JOIN kc_flow.student_course_purchases pu ON pu.id = a.purchase_id
                        WHERE pu.payment_id = payment),
        'sessions', (SELECT count(*) FROM kc_flow.tutoring_sessions s
                       JOIN kc_flow.trainer_allocations a ON a.id = s.allocation_id
                       JOIN kc_flow.student_course_purchases pu ON pu.id = a.purchase_id
                      WHERE pu.payment_id = payment AND s.status <> 'cancelled'))
     WHERE EXISTS (SELECT 1 FROM kc_flow.payments WHERE id = payment)
$$;
COMMENT ON FUNCTION kc_flow.flow_status(uuid) IS
    'the whole story of one payment: its events, which stages handled them and when, dead letters, and counts of purchase, allocation and sessions; NULL for an unknown payment';

CREATE FUNCTION kc_flow.retry_dead_letter(dead_letter_id bigint) RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, kc_flow
AS $$
DECLARE
    d kc_flow.dead_letters;
BEGIN
    SELECT * INTO d FROM kc_flow.dead_letters WHERE id = dead_letter_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'dead letter % does not exist', dead_letter_id USING ERRCODE = 'no_data_found';
    END IF;
    IF d.resolved THEN
        RETURN false;
    END IF;
    UPDATE kc_flow.dead_letters SET resolved = true, resolved_at = now() WHERE id = dead_letter_id;
    -- the queue's ring has no unique index on event_id (its key includes the slot)
    UPDATE kc_flow.event_queue SET attempts = 0, run_after = now() WHERE event_id = d.event_id;
    IF NOT FOUND THEN
        INSERT INTO kc_flow.event_queue (event_id, consumer) VALUES (d.event_id, d.consumer);
    END IF;
    PERFORM kc_flow.wake_workers();
    RETURN true;
END;
$$;
COMMENT ON FUNCTION kc_flow.retry_dead_letter(bigint) IS
    'marks a dead letter resolved and queues its event again with a fresh set of attempts; false if it was already resolved';

-- When trainers, their courses or availability change, pending allocations may succeed now.
CREATE FUNCTION kc_flow.retry_pending_allocations() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
AS $$
BEGIN
    UPDATE kc_flow.event_queue SET run_after = now()
     WHERE consumer = 'allocation' AND deferrals > 0 AND run_after > now();
    IF FOUND THEN
        PERFORM kc_flow.wake_workers();
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION kc_flow.retry_pending_allocations() IS
    'statement trigger: makes deferred allocations due now, since a trainer may have become free';

CREATE TRIGGER trainers_changed AFTER INSERT OR UPDATE OF is_active, max_active_students ON kc_flow.trainers
    FOR EACH STATEMENT EXECUTE FUNCTION kc_flow.retry_pending_allocations();
CREATE TRIGGER trainer_courses_changed AFTER INSERT OR UPDATE ON kc_flow.trainer_courses
    FOR EACH STATEMENT EXECUTE FUNCTION kc_flow.retry_pending_allocations();
CREATE TRIGGER trainer_availability_changed AFTER INSERT OR UPDATE ON kc_flow.trainer_availability
    FOR EACH STATEMENT EXECUTE FUNCTION kc_flow.retry_pending_allocations();
CREATE TRIGGER allocations_freed AFTER UPDATE OF status ON kc_flow.trainer_allocations
    FOR EACH STATEMENT EXECUTE FUNCTION kc_flow.retry_pending_allocations();

CREATE TRIGGER allocations_note_load AFTER INSERT OR UPDATE OF status, trainer_id OR DELETE ON kc_flow.trainer_allocations
    FOR EACH ROW EXECUTE FUNCTION kc_flow.note_trainer_load();
CREATE TRIGGER allocations_truncated AFTER TRUNCATE ON kc_flow.trainer_allocations
    FOR EACH STATEMENT EXECUTE FUNCTION kc_flow.forget_trainer_loads();

REVOKE ALL ON FUNCTION kc_flow.emit_event(text, uuid, uuid, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION kc_flow.run_pending(int) FROM PUBLIC;
REVOKE ALL ON FUNCTION kc_flow.sequence_log() FROM PUBLIC;
REVOKE ALL ON FUNCTION kc_flow.rotate_queue() FROM PUBLIC;
REVOKE ALL ON FUNCTION kc_flow.rotate_log() FROM PUBLIC;
REVOKE ALL ON FUNCTION kc_flow.rotate_versions() FROM PUBLIC;
REVOKE ALL ON FUNCTION kc_flow.trim_event_log(int) FROM PUBLIC;
REVOKE ALL ON FUNCTION kc_flow.retry_dead_letter(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION kc_flow.auto_assign(uuid) FROM PUBLIC;
