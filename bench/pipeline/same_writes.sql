-- same_writes.sql: the machine's limit for kc_flow's own writes of a purchase.
-- One transaction per purchase doing the writes the pipeline does for it: the
-- payment update (with its real trigger: event, queue row, cache version), the
-- purchase, the allocation, its booking, the sessions, the three further events
-- and the processed_events rows, with the same tables, indexes and constraints.
-- The trainer is precomputed (bench_plan: the pipeline's own choices), so the
-- allocation search, which only reads, is not part of the limit. Nor are the
-- event log's rows (a position per event, written by a sequencer round that
-- holds the log head to its commit): doing them here would serialise the
-- clients on that head, so the limit leaves them out and is the higher for it.

-- bench_plan's rows are taken in order, by number (see confirm_in_order in pipeline_bench.py)
CREATE TABLE bench_plan (payment_id uuid PRIMARY KEY, trainer_id uuid NOT NULL,
                         n bigint GENERATED ALWAYS AS IDENTITY UNIQUE);
CREATE SEQUENCE bench_plan_next;

CREATE FUNCTION bench_same_writes() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    p record;
    k bigint := nextval('bench_plan_next');
    purchase uuid;
    allocation uuid;
    ev bigint;
BEGIN
    SELECT x.id, x.student_id, x.course_id, x.purchase_tier, b.trainer_id INTO p
      FROM kc_flow.payments x JOIN bench_plan b ON b.payment_id = x.id
     WHERE b.n = k;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    UPDATE kc_flow.payments SET status = 'succeeded' WHERE id = p.id;
    DELETE FROM kc_flow.event_queue q USING kc_flow.events e
     WHERE e.id = q.event_id AND e.correlation_id = p.id RETURNING q.event_id INTO ev;
    INSERT INTO kc_flow.processed_events (event_id, consumer) VALUES (ev, 'purchase');

    INSERT INTO kc_flow.student_course_purchases (payment_id, student_id, course_id, purchase_tier)
    VALUES (p.id, p.student_id, p.course_id, p.purchase_tier) RETURNING id INTO purchase;
    ev := kc_flow.emit_event('PURCHASE_CREATED', p.id, p.student_id, jsonb_build_object('purchase_id', purchase));
    DELETE FROM kc_flow.event_queue WHERE event_id = ev;
    INSERT INTO kc_flow.processed_events (event_id, consumer) VALUES (ev, 'allocation');

    INSERT INTO kc_flow.trainer_allocations (purchase_id, student_id, course_id, trainer_id, status, allocated_at)
    VALUES (purchase, p.student_id, p.course_id, p.trainer_id, 'approved', now()) RETURNING id INTO allocation;
    INSERT INTO kc_flow.trainer_bookings (allocation_id, trainer_id, during)
    SELECT allocation, p.trainer_id, range_agg(tstzrange(pl.starts_at, pl.ends_at))
      FROM kc_flow.purchase_plan(purchase) pl;
    ev := kc_flow.emit_event('TRAINER_ALLOCATED', p.id, p.student_id, jsonb_build_object('allocation_id', allocation));
    DELETE FROM kc_flow.event_queue WHERE event_id = ev;
    INSERT INTO kc_flow.processed_events (event_id, consumer) VALUES (ev, 'sessions');

    INSERT INTO kc_flow.tutoring_sessions (allocation_id, student_id, course_id, trainer_id, seq,
                                           scheduled_date, scheduled_time, starts_at, ends_at)
    SELECT allocation, p.student_id, p.course_id, p.trainer_id, pl.seq, pl.local_date, pl.local_time,
           pl.starts_at, pl.ends_at
      FROM kc_flow.purchase_plan(purchase) pl;
    PERFORM kc_flow.emit_event('SESSIONS_GENERATED', p.id, p.student_id, jsonb_build_object('allocation_id', allocation));
END;
$$;
