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

-- A payment as one row, as 0.1.0's table was: its order, and its status derived from
-- its outcomes.  Only the order is in FROM, so SELECT ... FOR UPDATE [SKIP LOCKED] on
-- the view locks the order's row, and a reader that does not ask for the status pays
-- nothing for it.  The status is the alphabetically first outcome: failed, refunded
-- (beside succeeded), succeeded.  The three derived columns are functions in C
-- (extension/payments_status.c), each one probe of payment_outcomes_pkey in the
-- statement's snapshot, as correlated subqueries were: a function call costs the
-- planner nothing, where the subqueries were most of the time an UPDATE of the view
-- (planned at every call with the simple protocol) spent in planning.
CREATE FUNCTION kc_flow.payment_status(payment uuid) RETURNS text
    LANGUAGE c STABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'kcf_payment_status';
COMMENT ON FUNCTION kc_flow.payment_status(uuid) IS
    'the payment''s status as kc_flow.payments shows it: its first outcome in order (failed, refunded, succeeded), pending when it has none';

CREATE FUNCTION kc_flow.payment_updated_at(payment uuid, order_updated_at timestamptz) RETURNS timestamptz
    LANGUAGE c STABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'kcf_payment_updated_at';
COMMENT ON FUNCTION kc_flow.payment_updated_at(uuid, timestamptz) IS
    'kc_flow.payments.updated_at: the later of the order''s updated_at and the payment''s last outcome';

CREATE FUNCTION kc_flow.payment_succeeded_at(payment uuid) RETURNS timestamptz
    LANGUAGE c STABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'kcf_payment_succeeded_at';
COMMENT ON FUNCTION kc_flow.payment_succeeded_at(uuid) IS
    'kc_flow.payments.succeeded_at: when the payment''s succeeded outcome was recorded, NULL without one';

CREATE VIEW kc_flow.payments AS
SELECT o.id, o.student_id, o.course_id, o.amount_cents, o.currency,
       kc_flow.payment_status(o.id) AS status,
       o.purchase_tier, o.time_slot, o.metadata, o.created_at,
       kc_flow.payment_updated_at(o.id, o.updated_at) AS updated_at,
       kc_flow.payment_succeeded_at(o.id) AS succeeded_at
  FROM kc_flow.payment_orders o;
ALTER VIEW kc_flow.payments ALTER COLUMN id SET DEFAULT gen_random_uuid();
ALTER VIEW kc_flow.payments ALTER COLUMN currency SET DEFAULT 'USD';
ALTER VIEW kc_flow.payments ALTER COLUMN status SET DEFAULT 'pending';
ALTER VIEW kc_flow.payments ALTER COLUMN metadata SET DEFAULT '{}';
ALTER VIEW kc_flow.payments ALTER COLUMN created_at SET DEFAULT now();
ALTER VIEW kc_flow.payments ALTER COLUMN updated_at SET DEFAULT now();
COMMENT ON VIEW kc_flow.payments IS
    'payments as reported by the payment provider; status moves pending->succeeded|failed, succeeded->refunded; becoming succeeded emits PURCHASE_CONFIRMED; written through its INSTEAD OF trigger into payment_orders and payment_outcomes';

-- Records a change of status after checking it against the payment's current
-- status; the caller holds the lock of the payment's order.
CREATE FUNCTION kc_flow.record_outcome(payment uuid, current text, target text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, kc_flow
AS $$
BEGIN
    IF NOT ((current = 'pending' AND target IN ('succeeded', 'failed'))
            OR (current = 'succeeded' AND target = 'refunded')) THEN
        RAISE EXCEPTION 'payment % cannot go from % to %', payment, current, target
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_status_transition',
                  DETAIL = 'Allowed: pending->succeeded, pending->failed, succeeded->refunded.';
    END IF;
    IF current_setting('transaction_isolation') = 'read committed' THEN
        INSERT INTO kc_flow.payment_outcomes (payment_id, outcome) VALUES (payment, target);
        RETURN;
    END IF;
    -- a transaction snapshot may miss an outcome committed while the lock was awaited:
    -- the indexes refuse it, reported as an UPDATE of a row changed meanwhile would be
    BEGIN
        INSERT INTO kc_flow.payment_outcomes (payment_id, outcome) VALUES (payment, target);
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'could not serialize access due to concurrent update'
            USING ERRCODE = 'serialization_failure',
                  DETAIL = format('Payment %s got an outcome after this transaction''s snapshot.', payment);
    END;
END;
$$;
COMMENT ON FUNCTION kc_flow.record_outcome(uuid, text, text) IS
    'inserts a payment''s next outcome if current->target is pending->succeeded|failed or succeeded->refunded (23514 otherwise); 40001 when a transaction snapshot missed a concurrent outcome';

-- Writes kc_flow.payments: the checks of 0.1.0's BEFORE trigger, with its errors, then
-- the order (insert, or update of terms and metadata) and an outcome per status change.
-- Called by the view's trigger payments_write() (extension/payments_write.c) for every
-- write but an INSERT that passes every check below and a status-only UPDATE the rules
-- allow in a READ COMMITTED transaction, which it writes itself.
CREATE FUNCTION kc_flow.payments_write_rules() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, kc_flow
AS $$
DECLARE
    ord     kc_flow.payment_orders;
    changed kc_flow.payment_orders;
    cur     record;
    settles boolean;
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM kc_flow.payment_orders WHERE id = OLD.id;
        RETURN CASE WHEN FOUND THEN OLD END;
    END IF;

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
        IF NEW.status IS NULL THEN
            RAISE EXCEPTION 'null value in column "status" of relation "payments" violates not-null constraint'
                USING ERRCODE = 'not_null_violation', SCHEMA = 'kc_flow', TABLE = 'payments', COLUMN = 'status';
        END IF;
        IF NEW.succeeded_at IS NOT NULL AND NEW.status <> 'succeeded' THEN
            RAISE EXCEPTION 'column "succeeded_at" of kc_flow.payments can only be set by a status change'
                USING ERRCODE = 'generated_always',
                      DETAIL = 'It is the time the payment became succeeded.';
        END IF;
        INSERT INTO kc_flow.payment_orders (id, student_id, course_id, amount_cents, currency, purchase_tier,
                                            time_slot, metadata, created_at, updated_at)
        VALUES (NEW.id, NEW.student_id, NEW.course_id, NEW.amount_cents, NEW.currency, NEW.purchase_tier,
                NEW.time_slot, NEW.metadata, NEW.created_at, NEW.updated_at);
        IF NEW.status <> 'pending' THEN
            INSERT INTO kc_flow.payment_outcomes (payment_id, outcome) VALUES (NEW.id, NEW.status);
            NEW.updated_at := greatest(NEW.updated_at, now());
        END IF;
        NEW.succeeded_at := CASE WHEN NEW.status = 'succeeded' THEN now() END;
        RETURN NEW;
    END IF;

    -- UPDATE: the order's row lock stands for the lock an UPDATE of 0.1.0's row took (it
    -- writes no version); status and terms are read after it, so a session that waited
    -- for another's change sees that change, as an UPDATE that re-reads its row does
    SELECT * INTO ord FROM kc_flow.payment_orders WHERE id = OLD.id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT coalesce(min(x.outcome), 'pending') AS status,
           max(x.occurred_at) FILTER (WHERE x.outcome = 'succeeded') AS succeeded_at,
           max(x.occurred_at) AS changed_at
      INTO cur FROM kc_flow.payment_outcomes x WHERE x.payment_id = OLD.id;
    -- the common statement sets the status alone (a confirmation, a failure, a refund):
    -- the order keeps its terms and row, so the result is what the steps below would give
    -- for it, in one comparison and one assignment
    IF (NEW.id, NEW.student_id, NEW.course_id, NEW.amount_cents, NEW.currency, NEW.purchase_tier,
        NEW.time_slot, NEW.metadata, NEW.created_at, NEW.succeeded_at)
       IS NOT DISTINCT FROM
       (OLD.id, OLD.student_id, OLD.course_id, OLD.amount_cents, OLD.currency, OLD.purchase_tier,
        OLD.time_slot, OLD.metadata, OLD.created_at, OLD.succeeded_at)
    THEN
        settles := NEW.status IS DISTINCT FROM OLD.status AND NEW.status IS DISTINCT FROM cur.status;
        IF settles THEN
            PERFORM kc_flow.record_outcome(ord.id, cur.status, NEW.status);
        END IF;
        NEW := ROW(ord.id, ord.student_id, ord.course_id, ord.amount_cents, ord.currency,
                   CASE WHEN settles THEN NEW.status ELSE cur.status END,
                   ord.purchase_tier, ord.time_slot, ord.metadata, ord.created_at,
                   CASE WHEN settles THEN now() ELSE greatest(ord.updated_at, cur.changed_at) END,
                   CASE WHEN settles AND NEW.status = 'succeeded' THEN now() ELSE cur.succeeded_at END);
        RETURN NEW;
    END IF;

    IF NEW.succeeded_at IS DISTINCT FROM OLD.succeeded_at THEN
        RAISE EXCEPTION 'column "succeeded_at" of kc_flow.payments can only be set by a status change'
            USING ERRCODE = 'generated_always',
                  DETAIL = 'It is the time the payment became succeeded.';
    END IF;

    -- the columns this statement sets take its values, the others keep the current ones
    changed := ord;
    IF NEW.id IS DISTINCT FROM OLD.id THEN changed.id := NEW.id; END IF;
    IF NEW.student_id IS DISTINCT FROM OLD.student_id THEN changed.student_id := NEW.student_id; END IF;
    IF NEW.course_id IS DISTINCT FROM OLD.course_id THEN changed.course_id := NEW.course_id; END IF;
    IF NEW.amount_cents IS DISTINCT FROM OLD.amount_cents THEN changed.amount_cents := NEW.amount_cents; END IF;
    IF NEW.currency IS DISTINCT FROM OLD.currency THEN changed.currency := NEW.currency; END IF;
    IF NEW.purchase_tier IS DISTINCT FROM OLD.purchase_tier THEN changed.purchase_tier := NEW.purchase_tier; END IF;
    IF NEW.time_slot IS DISTINCT FROM OLD.time_slot THEN changed.time_slot := NEW.time_slot; END IF;
    IF NEW.metadata IS DISTINCT FROM OLD.metadata THEN changed.metadata := NEW.metadata; END IF;
    IF NEW.created_at IS DISTINCT FROM OLD.created_at THEN changed.created_at := NEW.created_at; END IF;

    IF (changed.student_id, changed.course_id, changed.purchase_tier, changed.time_slot, changed.amount_cents,
        changed.currency)
       IS DISTINCT FROM
       (ord.student_id, ord.course_id, ord.purchase_tier, ord.time_slot, ord.amount_cents, ord.currency)
    THEN
        IF cur.status <> 'pending' THEN
            RAISE EXCEPTION 'payment % is %, its terms can no longer change', OLD.id, cur.status
                USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_terms_frozen',
                      HINT = 'Only status and metadata of a settled payment may be updated.';
        END IF;
        PERFORM kc_flow.validate_time_slot(changed.time_slot);
    END IF;

    settles := NEW.status IS DISTINCT FROM OLD.status AND NEW.status IS DISTINCT FROM cur.status;
    IF changed IS DISTINCT FROM ord THEN
        changed.updated_at := now();
        UPDATE kc_flow.payment_orders
           SET id = changed.id, student_id = changed.student_id, course_id = changed.course_id,
               amount_cents = changed.amount_cents, currency = changed.currency,
               purchase_tier = changed.purchase_tier, time_slot = changed.time_slot,
               metadata = changed.metadata, created_at = changed.created_at, updated_at = changed.updated_at
         WHERE id = OLD.id;
    END IF;
    IF settles THEN
        PERFORM kc_flow.record_outcome(changed.id, cur.status, NEW.status);
    END IF;

    NEW.id := changed.id;
    NEW.student_id := changed.student_id;
    NEW.course_id := changed.course_id;
    NEW.amount_cents := changed.amount_cents;
    NEW.currency := changed.currency;
    NEW.purchase_tier := changed.purchase_tier;
    NEW.time_slot := changed.time_slot;
    NEW.metadata := changed.metadata;
    NEW.created_at := changed.created_at;
    NEW.status := CASE WHEN settles THEN NEW.status ELSE cur.status END;
    NEW.succeeded_at := CASE WHEN settles AND NEW.status = 'succeeded' THEN now() ELSE cur.succeeded_at END;
    NEW.updated_at := CASE WHEN settles THEN now() ELSE greatest(changed.updated_at, cur.changed_at) END;
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION kc_flow.payments_write_rules() IS
    'the payments view''s writes as rules, called by its trigger payments_write(): 0.1.0''s checks and errors (unknown or unpublished courses, bad slots, frozen terms, illegal status changes), then the order and one outcome per status change';

CREATE FUNCTION kc_flow.payments_write() RETURNS trigger
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'kcf_payments_write';
COMMENT ON FUNCTION kc_flow.payments_write() IS
    'INSTEAD OF trigger of the payments view: an INSERT that passes every check, and a status-only UPDATE the rules allow in READ COMMITTED (the order locked, the outcome inserted), written with plans kept per backend; every other write goes to payments_write_rules(), whose errors are the only ones raised';

CREATE TRIGGER payments_write INSTEAD OF INSERT OR UPDATE OR DELETE ON kc_flow.payments
    FOR EACH ROW EXECUTE FUNCTION kc_flow.payments_write();

-- Emits PURCHASE_CONFIRMED / PURCHASE_REFUNDED in the payment's own transaction: C
-- (extension/payments_emit.c), one statement prepared once per backend.
CREATE FUNCTION kc_flow.payments_emit() RETURNS trigger
    LANGUAGE c SECURITY DEFINER
    AS 'MODULE_PATHNAME', 'kcf_payments_emit';
COMMENT ON FUNCTION kc_flow.payments_emit() IS
    'AFTER trigger of payment_outcomes: a payment becoming succeeded (or refunded) emits its event in the same transaction';

CREATE TRIGGER payments_emit AFTER INSERT ON kc_flow.payment_outcomes
    FOR EACH ROW WHEN (NEW.outcome IN ('succeeded', 'refunded')) EXECUTE FUNCTION kc_flow.payments_emit();
