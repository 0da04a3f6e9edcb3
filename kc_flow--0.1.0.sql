-- 00_c_functions.sql: the SQL face of the C module (extension/*.c).
-- Everything the pipeline does in C is reachable from SQL through these declarations.

\echo Use "CREATE EXTENSION kc_flow CASCADE" to load this file. \quit

CREATE FUNCTION kc_flow.is_iana_timezone(zone text) RETURNS boolean
    LANGUAGE c STABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'kcf_is_iana_timezone';
COMMENT ON FUNCTION kc_flow.is_iana_timezone(text) IS
    'true when the name is a zone of the IANA time zone database known to this server (e.g. Asia/Kolkata, UTC); POSIX strings such as XYZ+3 are refused';

CREATE FUNCTION kc_flow.emit_event(event_type text, correlation_id uuid, student_id uuid, payload jsonb DEFAULT '{}')
    RETURNS bigint
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'kcf_emit_event_sql';
COMMENT ON FUNCTION kc_flow.emit_event(text, uuid, uuid, jsonb) IS
    'appends an event to the outbox in the current transaction: bumps the student''s cache version, queues the event for its stage, sends NOTIFY kc_flow_events and wakes the workers at commit; returns the event id';

CREATE FUNCTION kc_flow.event_horizon() RETURNS bigint
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'kcf_event_horizon';
COMMENT ON FUNCTION kc_flow.event_horizon() IS
    'the smallest event id that may still commit (NULL: none); events below it that are not visible now never will be';

CREATE FUNCTION kc_flow.run_pending(max_jobs int DEFAULT 1000) RETURNS int
    LANGUAGE c VOLATILE STRICT
    AS 'MODULE_PATHNAME', 'kcf_run_pending';
COMMENT ON FUNCTION kc_flow.run_pending(int) IS
    'runs due pipeline work in the calling transaction, as the background workers would: at most max_jobs events; returns how many were handled';

CREATE FUNCTION kc_flow.auto_assign(purchase_id uuid) RETURNS uuid
    LANGUAGE c VOLATILE STRICT
    AS 'MODULE_PATHNAME', 'kcf_auto_assign';
COMMENT ON FUNCTION kc_flow.auto_assign(uuid) IS
    'runs trainer allocation for a purchase now; returns the trainer chosen, or NULL when none is free (the allocation stays pending)';

CREATE FUNCTION kc_flow.worker_status(OUT worker int, OUT pid int, OUT state text) RETURNS SETOF record
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'kcf_worker_status';
COMMENT ON FUNCTION kc_flow.worker_status() IS
    'the background workers this server runs for kc_flow and whether they are attached';

CREATE FUNCTION kc_flow.wake_workers() RETURNS void
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'kcf_wake_workers_sql';
COMMENT ON FUNCTION kc_flow.wake_workers() IS
    'asks the background workers to look at the queue as soon as the current transaction commits';
-- 10_tables.sql: the tables of DESIGN.md §3, with the constraints that keep the flow honest.
-- Constraint names say what they forbid; they show up in error messages.

CREATE TABLE kc_flow.students (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    display_name text NOT NULL CONSTRAINT students_name_not_blank CHECK (btrim(display_name) <> ''),
    timezone     text NOT NULL DEFAULT 'UTC'
                 CONSTRAINT students_timezone_must_be_iana CHECK (kc_flow.is_iana_timezone(timezone)),
    created_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE kc_flow.students IS 'learners; timezone is an IANA zone name';

CREATE TABLE kc_flow.trainers (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    display_name        text NOT NULL CONSTRAINT trainers_name_not_blank CHECK (btrim(display_name) <> ''),
    timezone            text NOT NULL DEFAULT 'UTC'
                        CONSTRAINT trainers_timezone_must_be_iana CHECK (kc_flow.is_iana_timezone(timezone)),
    max_active_students int NOT NULL DEFAULT 10
                        CONSTRAINT trainers_capacity_positive CHECK (max_active_students > 0),
    is_active           boolean NOT NULL DEFAULT true,
    active_students     int NOT NULL DEFAULT 0
                        CONSTRAINT trainers_load_not_negative CHECK (active_students >= 0),
    created_at          timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE kc_flow.trainers IS 'tutors; an allocation needs a free place below max_active_students';
COMMENT ON COLUMN kc_flow.trainers.active_students IS
    'approved and active allocations of this trainer, kept by a trigger on trainer_allocations; the allocation stage ranks and admits by it';

CREATE TABLE kc_flow.courses (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    title           text NOT NULL CONSTRAINT courses_title_not_blank CHECK (btrim(title) <> ''),
    session_minutes int NOT NULL DEFAULT 60
                    CONSTRAINT courses_session_minutes_in_range CHECK (session_minutes BETWEEN 1 AND 720),
    is_published    boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE kc_flow.courses IS 'what can be bought; only published courses can be paid for';

CREATE TABLE kc_flow.trainer_courses (
    trainer_id uuid NOT NULL REFERENCES kc_flow.trainers ON DELETE CASCADE,
    course_id  uuid NOT NULL REFERENCES kc_flow.courses ON DELETE CASCADE,
    PRIMARY KEY (trainer_id, course_id)
);
CREATE INDEX trainer_courses_by_course ON kc_flow.trainer_courses (course_id, trainer_id);
COMMENT ON TABLE kc_flow.trainer_courses IS 'who may teach what';

CREATE TABLE kc_flow.trainer_availability (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    trainer_id uuid NOT NULL REFERENCES kc_flow.trainers ON DELETE CASCADE,
    weekday    int  NOT NULL CONSTRAINT availability_weekday_is_iso CHECK (weekday BETWEEN 1 AND 7),
    start_time time NOT NULL,
    end_time   time NOT NULL,
    CONSTRAINT availability_window_not_empty CHECK (start_time < end_time)
);
CREATE INDEX trainer_availability_by_trainer ON kc_flow.trainer_availability (trainer_id, weekday);
COMMENT ON TABLE kc_flow.trainer_availability IS
    'weekly windows (ISO weekday, local times in the trainer''s zone) in which a trainer can teach; a window ends on the day it starts';

CREATE TABLE kc_flow.payments (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    student_id    uuid NOT NULL REFERENCES kc_flow.students,
    course_id     uuid NOT NULL REFERENCES kc_flow.courses,
    amount_cents  bigint NOT NULL CONSTRAINT payments_amount_not_negative CHECK (amount_cents >= 0),
    currency      char(3) NOT NULL DEFAULT 'USD'
                  CONSTRAINT payments_currency_is_iso4217 CHECK (currency ~ '^[A-Z]{3}$'),
    status        text NOT NULL DEFAULT 'pending'
                  CONSTRAINT payments_status_known CHECK (status IN ('pending', 'succeeded', 'failed', 'refunded')),
    purchase_tier int NOT NULL
                  CONSTRAINT payments_tier_is_10_20_30 CHECK (purchase_tier IN (10, 20, 30)),
    time_slot     jsonb NOT NULL,
    metadata      jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    succeeded_at  timestamptz
);
CREATE INDEX payments_by_student ON kc_flow.payments (student_id);
COMMENT ON TABLE kc_flow.payments IS
    'payments as reported by the payment provider; status moves pending->succeeded|failed, succeeded->refunded; becoming succeeded emits PURCHASE_CONFIRMED';

CREATE TABLE kc_flow.student_course_purchases (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    payment_id    uuid NOT NULL CONSTRAINT purchases_one_per_payment UNIQUE REFERENCES kc_flow.payments,
    student_id    uuid NOT NULL REFERENCES kc_flow.students,
    course_id     uuid NOT NULL REFERENCES kc_flow.courses,
    purchase_tier int NOT NULL CONSTRAINT purchases_tier_is_10_20_30 CHECK (purchase_tier IN (10, 20, 30)),
    is_active     boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    ended_at      timestamptz
);
CREATE UNIQUE INDEX purchases_one_active_per_course
    ON kc_flow.student_course_purchases (student_id, course_id) WHERE is_active;
CREATE INDEX purchases_by_student ON kc_flow.student_course_purchases (student_id, created_at DESC);
COMMENT ON TABLE kc_flow.student_course_purchases IS
    'one purchase per succeeded payment, at most one active purchase of a course per student';

CREATE TABLE kc_flow.trainer_allocations (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    purchase_id  uuid NOT NULL CONSTRAINT allocations_one_per_purchase UNIQUE
                 REFERENCES kc_flow.student_course_purchases,
    student_id   uuid NOT NULL REFERENCES kc_flow.students,
    course_id    uuid NOT NULL REFERENCES kc_flow.courses,
    trainer_id   uuid REFERENCES kc_flow.trainers,
    status       text NOT NULL DEFAULT 'pending'
                 CONSTRAINT allocations_status_known
                 CHECK (status IN ('pending', 'approved', 'active', 'completed', 'cancelled')),
    session_mode text NOT NULL DEFAULT 'full'
                 CONSTRAINT allocations_session_mode_known CHECK (session_mode IN ('full', 'rolling')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    allocated_at timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT allocations_trainer_set_unless_pending
        CHECK ((status = 'pending') = (trainer_id IS NULL) OR status = 'cancelled')
);
CREATE UNIQUE INDEX allocations_one_live_per_course
    ON kc_flow.trainer_allocations (student_id, course_id) WHERE status IN ('approved', 'active');
CREATE INDEX allocations_live_by_trainer
    ON kc_flow.trainer_allocations (trainer_id) WHERE status IN ('approved', 'active');
CREATE INDEX allocations_by_student ON kc_flow.trainer_allocations (student_id);
CREATE INDEX allocations_rolling_live ON kc_flow.trainer_allocations (id)
    WHERE session_mode = 'rolling' AND status IN ('approved', 'active');
COMMENT ON TABLE kc_flow.trainer_allocations IS
    'which trainer teaches a purchase; pending while no trainer is free (retried), approved once booked';

CREATE TABLE kc_flow.trainer_bookings (
    allocation_id    uuid NOT NULL REFERENCES kc_flow.trainer_allocations ON DELETE CASCADE,
    seq              int  NOT NULL CONSTRAINT bookings_seq_in_range CHECK (seq BETWEEN 1 AND 30),
    trainer_id       uuid NOT NULL REFERENCES kc_flow.trainers,
    local_date       date NOT NULL,
    local_time       time NOT NULL,
    during           tstzrange NOT NULL,
    PRIMARY KEY (allocation_id, seq),
    CONSTRAINT bookings_no_trainer_double_booking EXCLUDE USING gist (trainer_id WITH =, during WITH &&)
);
COMMENT ON TABLE kc_flow.trainer_bookings IS
    'every session time an allocation reserves on its trainer, generated or not yet (rolling mode); the exclusion constraint makes double booking impossible';

CREATE TABLE kc_flow.tutoring_sessions (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    allocation_id  uuid NOT NULL REFERENCES kc_flow.trainer_allocations ON DELETE CASCADE,
    student_id     uuid NOT NULL REFERENCES kc_flow.students,
    course_id      uuid NOT NULL REFERENCES kc_flow.courses,
    trainer_id     uuid NOT NULL REFERENCES kc_flow.trainers,
    seq            int  NOT NULL CONSTRAINT sessions_seq_in_range CHECK (seq BETWEEN 1 AND 30),
    scheduled_date date NOT NULL,
    scheduled_time time NOT NULL,
    starts_at      timestamptz NOT NULL,
    ends_at        timestamptz NOT NULL,
    status         text NOT NULL DEFAULT 'scheduled'
                   CONSTRAINT sessions_status_known CHECK (status IN ('scheduled', 'completed', 'cancelled', 'missed')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sessions_end_after_start CHECK (ends_at > starts_at),
    CONSTRAINT sessions_one_per_slot UNIQUE (allocation_id, scheduled_date, scheduled_time),
    CONSTRAINT sessions_one_per_seq UNIQUE (allocation_id, seq),
    CONSTRAINT sessions_no_trainer_overlap EXCLUDE USING gist
        (trainer_id WITH =, tstzrange(starts_at, ends_at) WITH &&) WHERE (status = 'scheduled')
);
CREATE INDEX sessions_by_student ON kc_flow.tutoring_sessions (student_id, starts_at, id);
COMMENT ON TABLE kc_flow.tutoring_sessions IS
    'the sessions a student will attend; scheduled_date/scheduled_time are local to the purchase''s time slot zone';

CREATE SEQUENCE kc_flow.events_id_seq AS bigint CACHE 1;
COMMENT ON SEQUENCE kc_flow.events_id_seq IS
    'event ids; CACHE must stay 1: events_since relies on ids being handed out in increasing order across sessions';

CREATE TABLE kc_flow.events (
    id             bigint PRIMARY KEY,
    event_type     text NOT NULL CONSTRAINT events_type_known CHECK (event_type IN
                   ('PURCHASE_CONFIRMED', 'PURCHASE_CREATED', 'TRAINER_ALLOCATED', 'ALLOCATION_PENDING',
                    'SESSIONS_GENERATED', 'PURCHASE_REFUNDED', 'PURCHASE_CANCELLED')),
    correlation_id uuid NOT NULL,
    student_id     uuid NOT NULL,
    payload        jsonb NOT NULL DEFAULT '{}',
    version        bigint NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_by_student ON kc_flow.events (student_id, id);
CREATE INDEX events_by_correlation ON kc_flow.events (correlation_id, id);
COMMENT ON TABLE kc_flow.events IS
    'outbox and event log; written only by kc_flow.emit_event (ids from events_id_seq), read in commit-safe order with kc_flow.events_since';
COMMENT ON COLUMN kc_flow.events.version IS 'the student''s cache_versions.version after this event''s transaction bumped it';

CREATE TABLE kc_flow.event_queue (
    event_id      bigint NOT NULL PRIMARY KEY REFERENCES kc_flow.events ON DELETE CASCADE,
    consumer      text NOT NULL,
    attempts      int NOT NULL DEFAULT 0,
    deferrals     int NOT NULL DEFAULT 0,
    run_after     timestamptz NOT NULL DEFAULT now(),
    last_sqlstate text,
    last_error    text
);
CREATE INDEX event_queue_due ON kc_flow.event_queue (run_after, event_id);
COMMENT ON TABLE kc_flow.event_queue IS
    'work still to do: one row per event that a stage must handle, claimed with FOR UPDATE SKIP LOCKED, deleted when handled or dead-lettered';

CREATE TABLE kc_flow.processed_events (
    event_id     bigint NOT NULL,
    consumer     text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, consumer)
);
COMMENT ON TABLE kc_flow.processed_events IS
    'one row per stage that handled an event, written in the same transaction as the stage''s effect';

CREATE TABLE kc_flow.dead_letters (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id       bigint NOT NULL REFERENCES kc_flow.events ON DELETE CASCADE,
    consumer       text NOT NULL,
    attempts       int NOT NULL,
    sqlstate       text NOT NULL,
    error_message  text NOT NULL,
    error_detail   text,
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    last_failed_at timestamptz NOT NULL DEFAULT now(),
    resolved       boolean NOT NULL DEFAULT false,
    resolved_at    timestamptz
);
CREATE UNIQUE INDEX dead_letters_one_open_per_event
    ON kc_flow.dead_letters (event_id, consumer) WHERE NOT resolved;
COMMENT ON TABLE kc_flow.dead_letters IS
    'events a stage failed on kc_flow.max_attempts times, with the last error; kc_flow.retry_dead_letter(id) puts one back in the queue';

CREATE TABLE kc_flow.cache_versions (
    student_id uuid PRIMARY KEY,
    version    bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE kc_flow.cache_versions IS
    'per student, bumped in every transaction that changes what the student''s home or learning view shows; caches fence on it';
-- 20_payment_rules.sql: what a payment may be, and the trigger that starts the flow.
-- Bad input is refused with a clear error before anything is written.

CREATE FUNCTION kc_flow.validate_time_slot(slot jsonb) RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, kc_flow
AS $$
DECLARE
    key  text;
    day  jsonb;
    days int[] := '{}';
BEGIN
    IF slot IS NULL OR jsonb_typeof(slot) <> 'object' THEN
        RAISE EXCEPTION 'time_slot must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got %s.', coalesce(jsonb_typeof(slot), 'NULL')),
                  HINT = 'Example: {"weekdays":[1,3,5],"start":"18:00","timezone":"Asia/Kolkata"}';
    END IF;
    FOR key IN SELECT jsonb_object_keys(slot) LOOP
        IF key NOT IN ('weekdays', 'start', 'timezone', 'starts_on') THEN
            RAISE EXCEPTION 'time_slot has an unknown key "%"', key
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Allowed keys: weekdays, start, timezone, starts_on.';
        END IF;
    END LOOP;

    IF jsonb_typeof(slot->'weekdays') IS DISTINCT FROM 'array' OR jsonb_array_length(slot->'weekdays') = 0 THEN
        RAISE EXCEPTION 'time_slot.weekdays must be a non-empty array of ISO weekdays'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Monday is 1, Sunday is 7.';
    END IF;
    FOR day IN SELECT jsonb_array_elements(slot->'weekdays') LOOP
        IF jsonb_typeof(day) <> 'number' OR day::text !~ '^[1-7]$' THEN
            RAISE EXCEPTION 'time_slot.weekdays has % where an ISO weekday 1..7 was expected', day
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Monday is 1, Sunday is 7.';
        END IF;
        IF day::text::int = ANY (days) THEN
            RAISE EXCEPTION 'time_slot.weekdays lists weekday % twice', day
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        days := days || day::text::int;
    END LOOP;

    IF jsonb_typeof(slot->'start') IS DISTINCT FROM 'string'
       OR (slot->>'start') !~ '^([01][0-9]|2[0-3]):[0-5][0-9]$' THEN
        RAISE EXCEPTION 'time_slot.start must be a local time "HH:MM"'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got %s.', coalesce(slot->'start', 'null'::jsonb)),
                  HINT = 'Use 24-hour time, e.g. "18:00".';
    END IF;

    IF jsonb_typeof(slot->'timezone') IS DISTINCT FROM 'string'
       OR NOT kc_flow.is_iana_timezone(slot->>'timezone') THEN
        RAISE EXCEPTION 'time_slot.timezone must name an IANA time zone'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got %s.', coalesce(slot->'timezone', 'null'::jsonb)),
                  HINT = 'Use a zone such as "Asia/Kolkata" or "Europe/Berlin"; fixed offsets are not accepted.';
    END IF;

    IF slot ? 'starts_on' THEN
        IF jsonb_typeof(slot->'starts_on') IS DISTINCT FROM 'string'
           OR (slot->>'starts_on') !~ '^\d{4}-\d{2}-\d{2}$' THEN
            RAISE EXCEPTION 'time_slot.starts_on must be a date "YYYY-MM-DD"'
                USING ERRCODE = 'invalid_parameter_value', DETAIL = format('Got %s.', slot->'starts_on');
        END IF;
        BEGIN
            PERFORM (slot->>'starts_on')::date;
        EXCEPTION WHEN datetime_field_overflow OR invalid_datetime_format THEN
            RAISE EXCEPTION 'time_slot.starts_on is not a calendar date'
                USING ERRCODE = 'invalid_parameter_value', DETAIL = format('Got %s.', slot->'starts_on');
        END;
    END IF;
END;
$$;
COMMENT ON FUNCTION kc_flow.validate_time_slot(jsonb) IS
    'raises invalid_parameter_value unless the time slot is {"weekdays":[ISO days],"start":"HH:MM","timezone":IANA zone[,"starts_on":"YYYY-MM-DD"]}';

-- Checks a payment before it is written: references, publication, slot, and
-- the status machine pending->succeeded|failed, succeeded->refunded.
CREATE FUNCTION kc_flow.payments_check() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, kc_flow
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.student_id IS NULL OR NEW.course_id IS NULL THEN
            RAISE EXCEPTION 'a payment needs a student and a course'
                USING ERRCODE = 'not_null_violation',
                      DETAIL = format('Got student %s, course %s.',
                                      coalesce(NEW.student_id::text, 'NULL'), coalesce(NEW.course_id::text, 'NULL'));
        END IF;
        IF NOT EXISTS (SELECT 1 FROM kc_flow.students WHERE id = NEW.student_id) THEN
            RAISE EXCEPTION 'student % does not exist', NEW.student_id
                USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'payments_student_id_fkey';
        END IF;
        IF NOT EXISTS (SELECT 1 FROM kc_flow.courses WHERE id = NEW.course_id) THEN
            RAISE EXCEPTION 'course % does not exist', NEW.course_id
                USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'payments_course_id_fkey';
        END IF;
        IF NOT (SELECT is_published FROM kc_flow.courses WHERE id = NEW.course_id) THEN
            RAISE EXCEPTION 'course % is not published', NEW.course_id
                USING ERRCODE = 'check_violation',
                      HINT = 'Only published courses can be paid for.';
        END IF;
        IF NEW.purchase_tier IS NULL OR NEW.purchase_tier NOT IN (10, 20, 30) THEN
            RAISE EXCEPTION 'purchase tier must be 10, 20 or 30 sessions'
                USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_tier_is_10_20_30',
                      DETAIL = format('Got %s.', coalesce(NEW.purchase_tier::text, 'NULL'));
        END IF;
        IF NEW.amount_cents IS NULL OR NEW.amount_cents < 0 THEN
            RAISE EXCEPTION 'amount_cents must be zero or more'
                USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_amount_not_negative',
                      DETAIL = format('Got %s.', coalesce(NEW.amount_cents::text, 'NULL'));
        END IF;
        IF NEW.currency IS NULL OR NEW.currency !~ '^[A-Z]{3}$' THEN
            RAISE EXCEPTION 'currency must be an ISO 4217 code of three capital letters'
                USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_currency_is_iso4217',
                      DETAIL = format('Got %s.', coalesce(NEW.currency, 'NULL'));
        END IF;
        IF NEW.status NOT IN ('pending', 'succeeded', 'failed') THEN
            RAISE EXCEPTION 'a new payment cannot be %', NEW.status
                USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_status_transition',
                      HINT = 'Insert it as pending, succeeded or failed.';
        END IF;
        PERFORM kc_flow.validate_time_slot(NEW.time_slot);
        IF NEW.status = 'succeeded' THEN
            NEW.succeeded_at := now();
        END IF;
        RETURN NEW;
    END IF;

    IF (NEW.student_id, NEW.course_id, NEW.purchase_tier, NEW.time_slot, NEW.amount_cents, NEW.currency)
       IS DISTINCT FROM
       (OLD.student_id, OLD.course_id, OLD.purchase_tier, OLD.time_slot, OLD.amount_cents, OLD.currency)
    THEN
        IF OLD.status <> 'pending' THEN
            RAISE EXCEPTION 'payment % is %, its terms can no longer change', OLD.id, OLD.status
                USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_terms_frozen',
                      HINT = 'Only status and metadata of a settled payment may be updated.';
        END IF;
        PERFORM kc_flow.validate_time_slot(NEW.time_slot);
    END IF;

    IF NEW.status IS DISTINCT FROM OLD.status THEN
        IF NOT ((OLD.status = 'pending' AND NEW.status IN ('succeeded', 'failed'))
                OR (OLD.status = 'succeeded' AND NEW.status = 'refunded')) THEN
            RAISE EXCEPTION 'payment % cannot go from % to %', OLD.id, OLD.status, NEW.status
                USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_status_transition',
                      DETAIL = 'Allowed: pending->succeeded, pending->failed, succeeded->refunded.';
        END IF;
        IF NEW.status = 'succeeded' THEN
            NEW.succeeded_at := now();
        END IF;
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION kc_flow.payments_check() IS
    'BEFORE trigger of payments: clear errors for unknown or unpublished courses, bad slots and illegal status changes';

CREATE TRIGGER payments_check BEFORE INSERT OR UPDATE ON kc_flow.payments
    FOR EACH ROW EXECUTE FUNCTION kc_flow.payments_check();

-- Emits PURCHASE_CONFIRMED / PURCHASE_REFUNDED in the payment's own transaction.
CREATE FUNCTION kc_flow.payments_emit() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
AS $$
BEGIN
    IF NEW.status = 'succeeded' AND (TG_OP = 'INSERT' OR OLD.status = 'pending') THEN
        PERFORM kc_flow.emit_event('PURCHASE_CONFIRMED', NEW.id, NEW.student_id,
            jsonb_build_object('payment_id', NEW.id, 'course_id', NEW.course_id,
                               'purchase_tier', NEW.purchase_tier, 'amount_cents', NEW.amount_cents,
                               'currency', NEW.currency));
    ELSIF TG_OP = 'UPDATE' AND OLD.status = 'succeeded' AND NEW.status = 'refunded' THEN
        PERFORM kc_flow.emit_event('PURCHASE_REFUNDED', NEW.id, NEW.student_id,
            jsonb_build_object('payment_id', NEW.id, 'course_id', NEW.course_id));
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION kc_flow.payments_emit() IS
    'AFTER trigger of payments: a payment becoming succeeded (or refunded) emits its event in the same transaction';

CREATE TRIGGER payments_emit AFTER INSERT OR UPDATE OF status ON kc_flow.payments
    FOR EACH ROW EXECUTE FUNCTION kc_flow.payments_emit();
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
-- 40_api.sql: the SQL API other programs use to drive and inspect the flow.

CREATE FUNCTION kc_flow.create_payment(student uuid, course uuid, purchase_tier int, time_slot jsonb,
                                       amount_cents bigint DEFAULT 0, currency text DEFAULT 'USD',
                                       metadata jsonb DEFAULT '{}')
    RETURNS uuid
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, kc_flow
AS $$
    INSERT INTO kc_flow.payments (student_id, course_id, purchase_tier, time_slot, amount_cents, currency, metadata)
    VALUES (student, course, purchase_tier, time_slot, amount_cents, upper(currency), coalesce(metadata, '{}'))
    RETURNING id
$$;
COMMENT ON FUNCTION kc_flow.create_payment(uuid, uuid, int, jsonb, bigint, text, jsonb) IS
    'records a pending payment after checking student, course, tier and time slot; returns its id';

CREATE FUNCTION kc_flow.confirm_payment(payment uuid) RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, kc_flow
AS $$
DECLARE
    current text;
    event_id bigint;
BEGIN
    IF payment IS NULL THEN
        RAISE EXCEPTION 'payment id must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT status INTO current FROM kc_flow.payments WHERE id = payment FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'payment % does not exist', payment USING ERRCODE = 'no_data_found';
    END IF;
    IF current = 'succeeded' THEN
        RETURN NULL;            -- confirming twice is harmless: one event only
    END IF;
    UPDATE kc_flow.payments SET status = 'succeeded' WHERE id = payment;
    SELECT max(id) INTO event_id FROM kc_flow.events
     WHERE correlation_id = payment AND event_type = 'PURCHASE_CONFIRMED';
    RETURN event_id;
END;
$$;
COMMENT ON FUNCTION kc_flow.confirm_payment(uuid) IS
    'marks a pending payment succeeded, which emits PURCHASE_CONFIRMED; returns that event id, or NULL when it was already succeeded';

CREATE FUNCTION kc_flow.events_since(after bigint, student uuid DEFAULT NULL, max int DEFAULT 100)
    RETURNS SETOF kc_flow.events
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
AS $$
DECLARE
    horizon bigint;
BEGIN
    IF after IS NULL OR after < 0 THEN
        RAISE EXCEPTION 'after must be an event id >= 0' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF max IS NULL OR max < 1 OR max > 10000 THEN
        RAISE EXCEPTION 'max must be between 1 and 10000' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('Got %s.', coalesce(max::text, 'NULL'));
    END IF;
    -- taken before the snapshot of the query below: nothing under it can still appear
    horizon := kc_flow.event_horizon();
    IF student IS NULL THEN
        RETURN QUERY SELECT * FROM kc_flow.events e
                      WHERE e.id > after AND (horizon IS NULL OR e.id < horizon)
                      ORDER BY e.id LIMIT max;
    ELSE
        RETURN QUERY SELECT * FROM kc_flow.events e
                      WHERE e.student_id = student AND e.id > after AND (horizon IS NULL OR e.id < horizon)
                      ORDER BY e.id LIMIT max;
    END IF;
END;
$$;
COMMENT ON FUNCTION kc_flow.events_since(bigint, uuid, int) IS
    'events after an id, in id order, of one student or (NULL) all; never returns an id while a smaller one may still commit, so a reader that follows "after" misses nothing';

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
    INSERT INTO kc_flow.event_queue (event_id, consumer) VALUES (d.event_id, d.consumer)
        ON CONFLICT (event_id) DO UPDATE SET attempts = 0, run_after = now();
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

-- Keeps trainers.active_students equal to the trainer's approved and active allocations.
CREATE FUNCTION kc_flow.count_trainer_load() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, kc_flow
AS $$
DECLARE
    was_live boolean := TG_OP <> 'INSERT' AND OLD.trainer_id IS NOT NULL AND OLD.status IN ('approved', 'active');
    is_live  boolean := TG_OP <> 'DELETE' AND NEW.trainer_id IS NOT NULL AND NEW.status IN ('approved', 'active');
BEGIN
    IF was_live AND (NOT is_live OR OLD.trainer_id <> NEW.trainer_id) THEN
        UPDATE kc_flow.trainers SET active_students = active_students - 1 WHERE id = OLD.trainer_id;
    END IF;
    IF is_live AND (NOT was_live OR OLD.trainer_id <> NEW.trainer_id) THEN
        UPDATE kc_flow.trainers SET active_students = active_students + 1 WHERE id = NEW.trainer_id;
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION kc_flow.count_trainer_load() IS
    'row trigger of trainer_allocations: moves trainers.active_students with every allocation that starts or stops holding a place';

CREATE TRIGGER allocations_count_load AFTER INSERT OR UPDATE OF status, trainer_id OR DELETE ON kc_flow.trainer_allocations
    FOR EACH ROW EXECUTE FUNCTION kc_flow.count_trainer_load();

REVOKE ALL ON FUNCTION kc_flow.emit_event(text, uuid, uuid, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION kc_flow.run_pending(int) FROM PUBLIC;
REVOKE ALL ON FUNCTION kc_flow.retry_dead_letter(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION kc_flow.auto_assign(uuid) FROM PUBLIC;
-- 50_read_side.sql: the read side of DESIGN.md §5, used by kc-gateway and by any other app.
--
-- Every read function is SECURITY DEFINER with a fixed search_path, so a role that may only
-- EXECUTE them can serve the gateway. The JSON views are STABLE: all their statements run in
-- the snapshot of the calling query, so the "version" they return is the student's
-- cache_versions.version as of exactly the data shown (a cache fenced on that version is safe).
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

-- Partial index for "what is next": scheduled sessions of a student by start time.
CREATE INDEX sessions_scheduled_by_student
    ON kc_flow.tutoring_sessions (student_id, starts_at, id) WHERE status = 'scheduled';
-- Trending is computed from recent purchases; this keeps the refresh a range scan.
CREATE INDEX purchases_by_created_at ON kc_flow.student_course_purchases (created_at, course_id);
CREATE INDEX sessions_by_allocation ON kc_flow.tutoring_sessions (allocation_id, status);

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
    )
    SELECT jsonb_build_object(
        'student_id', student,
        'version', coalesce((SELECT v.version FROM kc_flow.cache_versions v WHERE v.student_id = student), 0),
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
    'the home screen of a student as JSON: version, overview, the next 20 upcoming sessions, the 5 latest purchases with progress, trending courses; P0002 for an unknown student';

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
        'version', coalesce((SELECT v.version FROM kc_flow.cache_versions v WHERE v.student_id = student), 0),
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
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
AS $$
DECLARE
    newest  bigint;
    horizon bigint;
BEGIN
    -- the horizon first, the snapshot after: every id below the horizon is
    -- decided by then, so the query below sees all that committed
    horizon := kc_flow.event_horizon();
    SELECT max(e.id) INTO newest FROM kc_flow.events e;
    RETURN coalesce(least(newest, horizon - 1), 0);
END;
$$;
COMMENT ON FUNCTION kc_flow.settled_event_id() IS
    'the largest event id at or below which no event can still commit; a reader with no position starts events_since from it';
