-- mission_writes.sql: the machine's limit for the writes the mission requires, whatever our
-- schema does. One transaction per purchase: the payment's update, one purchase, one
-- allocation, its N sessions and the four events, with the guarantees kept by the same kinds
-- of constraint kc_flow uses: one purchase per payment and one active purchase per course
-- (unique indexes), one allocation per purchase, no trainer double-booked (a GiST exclusion
-- constraint on the sessions). The trainer and the session times come from mission.plan, which
-- bench/pipeline/pipeline_bench.py fills with what the pipeline itself chose for the same
-- students, so the limit has the pipeline's spread over trainers and times. Nothing here reads
-- to decide (no allocation search): that is the third figure of the benchmark.

CREATE SCHEMA mission;

CREATE TABLE mission.payments (
    id           bigint PRIMARY KEY,
    student_id   uuid NOT NULL,
    course_id    uuid NOT NULL,
    tier         int NOT NULL,
    status       text NOT NULL DEFAULT 'pending',
    succeeded_at timestamptz
);

CREATE TABLE mission.plan (
    payment_id  bigint PRIMARY KEY REFERENCES mission.payments,
    trainer_id  uuid NOT NULL,
    starts      timestamptz[] NOT NULL,
    minutes     int NOT NULL
);

CREATE TABLE mission.purchases (
    id          bigserial PRIMARY KEY,
    payment_id  bigint NOT NULL UNIQUE REFERENCES mission.payments,
    student_id  uuid NOT NULL,
    course_id   uuid NOT NULL,
    tier        int NOT NULL,
    status      text NOT NULL DEFAULT 'active'
);
CREATE UNIQUE INDEX purchases_one_active_per_course ON mission.purchases (student_id, course_id)
    WHERE status = 'active';

CREATE TABLE mission.allocations (
    id          bigserial PRIMARY KEY,
    purchase_id bigint NOT NULL UNIQUE REFERENCES mission.purchases,
    trainer_id  uuid NOT NULL
);

CREATE TABLE mission.sessions (
    id            bigserial PRIMARY KEY,
    allocation_id bigint NOT NULL REFERENCES mission.allocations,
    seq           int NOT NULL,
    trainer_id    uuid NOT NULL,
    student_id    uuid NOT NULL,
    during        tstzrange NOT NULL,
    UNIQUE (allocation_id, seq),
    CONSTRAINT sessions_no_double_booking EXCLUDE USING gist (trainer_id WITH =, during WITH &&)
);

CREATE TABLE mission.events (
    id         bigserial PRIMARY KEY,
    type       text NOT NULL,
    payment_id bigint NOT NULL,
    student_id uuid NOT NULL,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- one purchase, start to finish
CREATE FUNCTION mission.confirm_one() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    p record;
    purchase bigint;
    allocation bigint;
BEGIN
    SELECT x.id, x.student_id, x.course_id, x.tier, pl.trainer_id, pl.starts, pl.minutes INTO p
      FROM mission.payments x JOIN mission.plan pl ON pl.payment_id = x.id
     WHERE x.status = 'pending' LIMIT 1 FOR UPDATE OF x SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    UPDATE mission.payments SET status = 'succeeded', succeeded_at = now() WHERE id = p.id;
    INSERT INTO mission.events (type, payment_id, student_id, payload)
    VALUES ('PURCHASE_CONFIRMED', p.id, p.student_id, jsonb_build_object('tier', p.tier));
    INSERT INTO mission.purchases (payment_id, student_id, course_id, tier)
    VALUES (p.id, p.student_id, p.course_id, p.tier) RETURNING id INTO purchase;
    INSERT INTO mission.events (type, payment_id, student_id, payload)
    VALUES ('PURCHASE_CREATED', p.id, p.student_id, jsonb_build_object('purchase_id', purchase));
    INSERT INTO mission.allocations (purchase_id, trainer_id) VALUES (purchase, p.trainer_id)
    RETURNING id INTO allocation;
    INSERT INTO mission.events (type, payment_id, student_id, payload)
    VALUES ('TRAINER_ALLOCATED', p.id, p.student_id, jsonb_build_object('allocation_id', allocation));
    INSERT INTO mission.sessions (allocation_id, seq, trainer_id, student_id, during)
    SELECT allocation, s.seq, p.trainer_id, p.student_id,
           tstzrange(s.starts_at, s.starts_at + make_interval(mins => p.minutes))
      FROM unnest(p.starts) WITH ORDINALITY AS s(starts_at, seq);
    INSERT INTO mission.events (type, payment_id, student_id, payload)
    VALUES ('SESSIONS_GENERATED', p.id, p.student_id,
            jsonb_build_object('allocation_id', allocation, 'sessions', cardinality(p.starts)));
END;
$$;

-- The same writes with the allocation search in the transaction (the benchmark's second
-- limit): the trainers of the course with their load, capacity, zone and weekly windows, and
-- for each payment only its plan (mission.request). The search is the mission's: trainers
-- with a free place in order of load, then id; the first not booked at any planned time (one
-- probe of the sessions' exclusion index with the plan as a multirange) and available at
-- every planned session in its own zone; locked, skipping trainers another transaction is
-- booking, and its bookings checked again once locked. The same rules as kc_flow's stage,
-- with nothing of kc_flow's in it.

CREATE TABLE mission.trainers (
    id        uuid PRIMARY KEY,
    timezone  text NOT NULL,
    capacity  int NOT NULL,
    load      int NOT NULL DEFAULT 0 CHECK (load <= capacity)
);

CREATE TABLE mission.availability (
    trainer_id uuid NOT NULL REFERENCES mission.trainers,
    weekday    int NOT NULL,
    start_time time NOT NULL,
    end_time   time NOT NULL
);
CREATE INDEX availability_by_trainer ON mission.availability (trainer_id, weekday);

CREATE TABLE mission.request (
    payment_id  bigint PRIMARY KEY REFERENCES mission.payments,
    starts      timestamptz[] NOT NULL,
    minutes     int NOT NULL
);

CREATE FUNCTION mission.confirm_one_searching() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    p record;
    plan tstzmultirange;
    trainer uuid;
    candidate record;
    purchase bigint;
    allocation bigint;
BEGIN
    SELECT x.id, x.student_id, x.course_id, x.tier, r.starts, r.minutes INTO p
      FROM mission.payments x JOIN mission.request r ON r.payment_id = x.id
     WHERE x.status = 'pending' LIMIT 1 FOR UPDATE OF x SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT range_agg(tstzrange(s, s + make_interval(mins => p.minutes))) INTO plan FROM unnest(p.starts) s;
    FOR candidate IN
        SELECT t.id, t.timezone FROM mission.trainers t WHERE t.load < t.capacity ORDER BY t.load, t.id
    LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM mission.sessions s
                               WHERE s.trainer_id = candidate.id AND s.during && plan);
        CONTINUE WHEN EXISTS (
            SELECT 1 FROM unnest(p.starts) s
             WHERE NOT EXISTS (
                SELECT 1 FROM mission.availability a
                 WHERE a.trainer_id = candidate.id
                   AND a.weekday = extract(isodow FROM s AT TIME ZONE candidate.timezone)::int
                   AND a.start_time <= (s AT TIME ZONE candidate.timezone)::time
                   AND (s + make_interval(mins => p.minutes)) AT TIME ZONE candidate.timezone
                       <= (s AT TIME ZONE candidate.timezone)::date + a.end_time));
        PERFORM FROM mission.trainers x WHERE x.id = candidate.id AND x.load < x.capacity
            FOR NO KEY UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        -- locked: checked again with a fresh snapshot, since a booking may have committed meanwhile
        CONTINUE WHEN EXISTS (SELECT 1 FROM mission.sessions s
                               WHERE s.trainer_id = candidate.id AND s.during && plan);
        UPDATE mission.trainers t SET load = t.load + 1 WHERE t.id = candidate.id RETURNING t.id INTO trainer;
        EXIT;
    END LOOP;
    IF trainer IS NULL THEN
        RAISE EXCEPTION 'no trainer for payment %', p.id;
    END IF;
    UPDATE mission.payments SET status = 'succeeded', succeeded_at = now() WHERE id = p.id;
    INSERT INTO mission.events (type, payment_id, student_id, payload)
    VALUES ('PURCHASE_CONFIRMED', p.id, p.student_id, jsonb_build_object('tier', p.tier));
    INSERT INTO mission.purchases (payment_id, student_id, course_id, tier)
    VALUES (p.id, p.student_id, p.course_id, p.tier) RETURNING id INTO purchase;
    INSERT INTO mission.events (type, payment_id, student_id, payload)
    VALUES ('PURCHASE_CREATED', p.id, p.student_id, jsonb_build_object('purchase_id', purchase));
    INSERT INTO mission.allocations (purchase_id, trainer_id) VALUES (purchase, trainer)
    RETURNING id INTO allocation;
    INSERT INTO mission.events (type, payment_id, student_id, payload)
    VALUES ('TRAINER_ALLOCATED', p.id, p.student_id, jsonb_build_object('allocation_id', allocation));
    INSERT INTO mission.sessions (allocation_id, seq, trainer_id, student_id, during)
    SELECT allocation, s.seq, trainer, p.student_id, tstzrange(s.starts_at, s.starts_at + make_interval(mins => p.minutes))
      FROM unnest(p.starts) WITH ORDINALITY AS s(starts_at, seq);
    INSERT INTO mission.events (type, payment_id, student_id, payload)
    VALUES ('SESSIONS_GENERATED', p.id, p.student_id,
            jsonb_build_object('allocation_id', allocation, 'sessions', cardinality(p.starts)));
END;
$$;
