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
