-- 10_tables.sql: the tables of docs/design.md §3, with the constraints that keep the flow honest.
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
    created_at          timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE kc_flow.trainers IS
    'tutors; an allocation needs a free place: fewer than max_active_students approved and active allocations (kc_flow.trainer_load)';

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

-- A payment is stored as its order (the terms, written once and changed only while
-- pending) and its outcomes (one row per transition, never updated): confirming or
-- refunding inserts a row and rewrites none, so it leaves no dead version behind even
-- while an old snapshot holds the xmin horizon (docs/extension.md, "Payments: a status
-- change inserts a row").  The view kc_flow.payments (20_payment_rules.sql) shows both
-- as one row, as 0.1.0's table did; the constraints keep 0.1.0's names, which its
-- errors report.
CREATE TABLE kc_flow.payment_orders (
    id            uuid CONSTRAINT payments_pkey PRIMARY KEY DEFAULT gen_random_uuid(),
    student_id    uuid NOT NULL CONSTRAINT payments_student_id_fkey REFERENCES kc_flow.students,
    course_id     uuid NOT NULL CONSTRAINT payments_course_id_fkey REFERENCES kc_flow.courses,
    amount_cents  bigint NOT NULL CONSTRAINT payments_amount_not_negative CHECK (amount_cents >= 0),
    currency      char(3) NOT NULL DEFAULT 'USD'
                  CONSTRAINT payments_currency_is_iso4217 CHECK (currency ~ '^[A-Z]{3}$'),
    purchase_tier int NOT NULL
                  CONSTRAINT payments_tier_is_10_20_30 CHECK (purchase_tier IN (10, 20, 30)),
    time_slot     jsonb NOT NULL,
    metadata      jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payments_by_student ON kc_flow.payment_orders (student_id);
COMMENT ON TABLE kc_flow.payment_orders IS
    'the terms of each payment (kc_flow.payments shows them with their status); updated in place only while the payment is pending (terms) or for its metadata, never by a change of status';
COMMENT ON COLUMN kc_flow.payment_orders.updated_at IS
    'when the terms or metadata last changed; kc_flow.payments.updated_at is the later of this and the last outcome';

CREATE TABLE kc_flow.payment_outcomes (
    payment_id  uuid NOT NULL
                CONSTRAINT payment_outcomes_payment_id_fkey REFERENCES kc_flow.payment_orders ON DELETE CASCADE,
    outcome     text NOT NULL
                CONSTRAINT payment_outcomes_outcome_known CHECK (outcome IN ('succeeded', 'failed', 'refunded')),
    occurred_at timestamptz NOT NULL DEFAULT now(),
    follows     text GENERATED ALWAYS AS (CASE WHEN outcome = 'refunded' THEN 'succeeded' END) STORED,
    CONSTRAINT payment_outcomes_pkey PRIMARY KEY (payment_id, outcome),
    CONSTRAINT payment_outcomes_refund_needs_success FOREIGN KEY (payment_id, follows)
        REFERENCES kc_flow.payment_outcomes (payment_id, outcome) ON DELETE CASCADE
);
-- the hard guarantee under concurrency: of two sessions settling one payment, the
-- second waits for the first and then finds its row here
CREATE UNIQUE INDEX payment_outcomes_settled_once ON kc_flow.payment_outcomes (payment_id)
    WHERE outcome IN ('succeeded', 'failed');
COMMENT ON TABLE kc_flow.payment_outcomes IS
    'the status changes of each payment, insert-only: no row is pending, succeeded or failed settles it (one of the two, once), refunded follows succeeded; a succeeded or refunded row emits its event';
COMMENT ON COLUMN kc_flow.payment_outcomes.follows IS
    'the outcome this one requires before it (succeeded for refunded), enforced by payment_outcomes_refund_needs_success';

CREATE TABLE kc_flow.student_course_purchases (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    payment_id    uuid NOT NULL CONSTRAINT purchases_one_per_payment UNIQUE REFERENCES kc_flow.payment_orders,
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
        CHECK ((status = 'pending') = (trainer_id IS NULL) OR status = 'cancelled'),
    -- what a session references: its allocation with the allocation's parties
    CONSTRAINT allocations_parties UNIQUE (id, student_id, course_id, trainer_id)
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
    allocation_id uuid PRIMARY KEY REFERENCES kc_flow.trainer_allocations ON DELETE CASCADE,
    trainer_id    uuid NOT NULL REFERENCES kc_flow.trainers,
    during        tstzmultirange NOT NULL CONSTRAINT bookings_not_empty CHECK (NOT isempty(during)),
    CONSTRAINT bookings_no_trainer_double_booking EXCLUDE USING gist (trainer_id WITH =, during WITH &&)
);
COMMENT ON TABLE kc_flow.trainer_bookings IS
    'the session times an allocation reserves on its trainer, one row per allocation holding its whole plan (kc_flow.purchase_plan), generated or not yet (rolling mode); the exclusion constraint makes double booking impossible';

CREATE TABLE kc_flow.tutoring_sessions (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    allocation_id  uuid NOT NULL,
    student_id     uuid NOT NULL,
    course_id      uuid NOT NULL,
    trainer_id     uuid NOT NULL,
    seq            int  NOT NULL CONSTRAINT sessions_seq_in_range CHECK (seq BETWEEN 1 AND 30),
    scheduled_date date NOT NULL,
    scheduled_time time NOT NULL,
    starts_at      timestamptz NOT NULL,
    ends_at        timestamptz NOT NULL,
    status         text NOT NULL DEFAULT 'scheduled'
                   CONSTRAINT sessions_status_known CHECK (status IN ('scheduled', 'completed', 'cancelled', 'missed')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sessions_end_after_start CHECK (ends_at > starts_at),
    -- one check per session row: the allocation, and through it the student, course and
    -- trainer (which the allocation references), are the session's own
    CONSTRAINT sessions_of_allocation FOREIGN KEY (allocation_id, student_id, course_id, trainer_id)
        REFERENCES kc_flow.trainer_allocations (id, student_id, course_id, trainer_id) ON DELETE CASCADE,
    CONSTRAINT sessions_one_per_slot UNIQUE (allocation_id, scheduled_date, scheduled_time),
    -- also the index by which an allocation's sessions are found (stages, read side)
    CONSTRAINT sessions_one_per_seq UNIQUE (allocation_id, seq)
    -- no two scheduled sessions of one trainer overlap: each lies inside its allocation's
    -- booking (triggers, 15_session_bookings.sql), and bookings never overlap
);
-- every list and count of a student's sessions on the read side, the upcoming ones included
-- (a student's sessions are a few heap pages: a partial index of the scheduled ones saved nothing)
CREATE INDEX sessions_by_student ON kc_flow.tutoring_sessions (student_id, starts_at, id);
COMMENT ON TABLE kc_flow.tutoring_sessions IS
    'the sessions a student will attend; scheduled_date/scheduled_time are local to the purchase''s time slot zone';

CREATE SEQUENCE kc_flow.events_id_seq AS bigint CACHE 1;
COMMENT ON SEQUENCE kc_flow.events_id_seq IS
    'event ids, taken inside the writing transaction; they may commit in any order: the order of the log is event_log.pos, given after commit';

CREATE SEQUENCE kc_flow.log_generation AS bigint MINVALUE 0 START 0 CACHE 1;
COMMENT ON SEQUENCE kc_flow.log_generation IS
    'the generation of the event log''s ring (events, event_log, processed_events, log_rounds): new rows go to slot last_value % 3; each rotation truncates the next slot and advances it (extension/log_ring.c)';

-- The ring slot functions (this one, event_queue_slot(), version_slot()) are C
-- (extension/ring_slot.c): a column default evaluated for each row inserted, a dozen rows
-- per purchase; they read the sequence's last_value % 3 as a SELECT does, without running one.
CREATE FUNCTION kc_flow.log_slot() RETURNS smallint
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'kcf_log_slot';
COMMENT ON FUNCTION kc_flow.log_slot() IS
    'the slot of the event log''s ring that new rows go to (the default of the slot column of events, event_log, processed_events and log_rounds)';

CREATE TABLE kc_flow.events (
    id             bigint NOT NULL,
    event_type     text NOT NULL CONSTRAINT events_type_known CHECK (kc_flow.is_event_type(event_type)),
    correlation_id uuid NOT NULL,
    student_id     uuid NOT NULL,
    payload        jsonb NOT NULL DEFAULT '{}',
    version        bigint NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    txid           xid8 DEFAULT pg_current_xact_id(),
    slot           smallint NOT NULL DEFAULT kc_flow.log_slot()
) PARTITION BY LIST (slot);
CREATE TABLE kc_flow.events_0 PARTITION OF kc_flow.events (CONSTRAINT events_0_pkey PRIMARY KEY (id)) FOR VALUES IN (0);
CREATE TABLE kc_flow.events_1 PARTITION OF kc_flow.events (CONSTRAINT events_1_pkey PRIMARY KEY (id)) FOR VALUES IN (1);
CREATE TABLE kc_flow.events_2 PARTITION OF kc_flow.events (CONSTRAINT events_2_pkey PRIMARY KEY (id)) FOR VALUES IN (2);
CREATE INDEX events_by_student ON kc_flow.events (student_id, id);
CREATE INDEX events_by_correlation ON kc_flow.events (correlation_id, id);
CREATE INDEX events_by_txid ON kc_flow.events (txid);
COMMENT ON TABLE kc_flow.events_0 IS 'slot 0 of the event log''s ring: events (kc_flow.events)';
COMMENT ON TABLE kc_flow.events_1 IS 'slot 1 of the event log''s ring: events (kc_flow.events)';
COMMENT ON TABLE kc_flow.events_2 IS 'slot 2 of the event log''s ring: events (kc_flow.events)';
COMMENT ON TABLE kc_flow.events IS
    'outbox; written only by kc_flow.emit_event (ids from events_id_seq, unique: one sequence, and a primary key per table of the ring) and copied forward by the rotation, in the log (event_log) once committed, read in log order with kc_flow.events_since; a ring of three tables (slot), the oldest truncated by age (extension/log_ring.c)';
COMMENT ON COLUMN kc_flow.events.txid IS
    'the transaction that wrote the event (NULL: written before 0.2.0, in the log from the update on); the sequencer finds committed events by it';
COMMENT ON COLUMN kc_flow.events.event_type IS
    'one of the types of kc_flow.event_types(), the table in extension/event_types.c';
COMMENT ON COLUMN kc_flow.events.version IS 'the student''s cache_versions.version after this event''s transaction bumped it';
COMMENT ON COLUMN kc_flow.events.slot IS
    'the table of the log''s ring the row is in; rotation copies the events that must stay (queued, of a payment with an unresolved dead letter, not in the log yet) into the current table before truncating the oldest';

CREATE TABLE kc_flow.event_log (
    pos        bigint NOT NULL,
    event_id   bigint NOT NULL,
    student_id uuid NOT NULL,
    logged_at  timestamptz NOT NULL,
    slot       smallint NOT NULL DEFAULT kc_flow.log_slot()
) PARTITION BY LIST (slot);
CREATE TABLE kc_flow.event_log_0 PARTITION OF kc_flow.event_log (
    CONSTRAINT event_log_0_pkey PRIMARY KEY (pos),
    CONSTRAINT event_log_0_once_per_event UNIQUE (event_id)) FOR VALUES IN (0);
CREATE TABLE kc_flow.event_log_1 PARTITION OF kc_flow.event_log (
    CONSTRAINT event_log_1_pkey PRIMARY KEY (pos),
    CONSTRAINT event_log_1_once_per_event UNIQUE (event_id)) FOR VALUES IN (1);
CREATE TABLE kc_flow.event_log_2 PARTITION OF kc_flow.event_log (
    CONSTRAINT event_log_2_pkey PRIMARY KEY (pos),
    CONSTRAINT event_log_2_once_per_event UNIQUE (event_id)) FOR VALUES IN (2);
CREATE INDEX event_log_by_student ON kc_flow.event_log (student_id, pos);
COMMENT ON TABLE kc_flow.event_log_0 IS 'slot 0 of the event log''s ring: positions (kc_flow.event_log)';
COMMENT ON TABLE kc_flow.event_log_1 IS 'slot 1 of the event log''s ring: positions (kc_flow.event_log)';
COMMENT ON TABLE kc_flow.event_log_2 IS 'slot 2 of the event log''s ring: positions (kc_flow.event_log)';
COMMENT ON TABLE kc_flow.event_log IS
    'the event log in commit order: a dense position per committed event, given after its commit by a sequencer round (worker or run_pending); insert-only; a reader that sees a position sees every smaller one down to kc_flow.log_floor(); a ring of three tables (slot) rotated with events; positions and event ids are unique per table, and across tables because one sequencer at a time gives them (docs/extension.md)';
COMMENT ON COLUMN kc_flow.event_log.pos IS
    'the public cursor (after= of events_since, the gateway and its clients); events written before 0.2.0 kept their id as position';
COMMENT ON COLUMN kc_flow.event_log.logged_at IS
    'when the round gave the position, just before that round committed: the event is readable in the log from about then';
COMMENT ON COLUMN kc_flow.event_log.slot IS
    'the table of the log''s ring the row is in; rotation copies the positions of the events that stay';

CREATE TABLE kc_flow.log_rounds (
    last_pos     bigint NOT NULL,
    first_pos    bigint NOT NULL,
    snapshot     pg_snapshot NOT NULL,
    xid          xid8 NOT NULL,
    announced    boolean NOT NULL,
    sequenced_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    slot         smallint NOT NULL DEFAULT kc_flow.log_slot()
) PARTITION BY LIST (slot);
CREATE TABLE kc_flow.log_rounds_0 PARTITION OF kc_flow.log_rounds (CONSTRAINT log_rounds_0_pkey PRIMARY KEY (last_pos)) FOR VALUES IN (0);
CREATE TABLE kc_flow.log_rounds_1 PARTITION OF kc_flow.log_rounds (CONSTRAINT log_rounds_1_pkey PRIMARY KEY (last_pos)) FOR VALUES IN (1);
CREATE TABLE kc_flow.log_rounds_2 PARTITION OF kc_flow.log_rounds (CONSTRAINT log_rounds_2_pkey PRIMARY KEY (last_pos)) FOR VALUES IN (2);
COMMENT ON TABLE kc_flow.log_rounds_0 IS 'slot 0 of the event log''s ring: rounds (kc_flow.log_rounds)';
COMMENT ON TABLE kc_flow.log_rounds_1 IS 'slot 1 of the event log''s ring: rounds (kc_flow.log_rounds)';
COMMENT ON TABLE kc_flow.log_rounds_2 IS 'slot 2 of the event log''s ring: rounds (kc_flow.log_rounds)';
COMMENT ON TABLE kc_flow.log_rounds IS
    'one row per sequencer round that gave positions (first_pos..last_pos): the snapshot it read with and its transaction, which tell the next round what is new; announced: a NOTIFY covered it; the newest row is the log head; a ring of three tables (slot) rotated with events, which keeps the head and the newest announced round';
INSERT INTO kc_flow.log_rounds (last_pos, first_pos, snapshot, xid, announced)
VALUES (0, 1, pg_current_snapshot(), pg_current_xact_id(), true);

CREATE SEQUENCE kc_flow.log_floor_position AS bigint MINVALUE 0 START 0 CACHE 1;
COMMENT ON SEQUENCE kc_flow.log_floor_position IS
    'kc_flow.log_floor(): the highest position a rotation of the log''s ring removed; a sequence so that a reader reads it without a snapshot (extension/log_ring.c)';

CREATE TABLE kc_flow.log_rotations (
    generation     bigint PRIMARY KEY,
    rotated_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    floor_pos      bigint NOT NULL,
    kept_events    bigint NOT NULL DEFAULT 0,
    kept_positions bigint NOT NULL DEFAULT 0,
    kept_marks     bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE kc_flow.log_rotations IS
    'one row per generation of the event log''s ring, written by the rotation that made it current: when, the log''s floor after it, and the events, positions and processed marks it copied forward; insert-only';
INSERT INTO kc_flow.log_rotations (generation, floor_pos) VALUES (0, 0);

CREATE SEQUENCE kc_flow.event_queue_generation AS bigint MINVALUE 0 START 0 CACHE 1;
COMMENT ON SEQUENCE kc_flow.event_queue_generation IS
    'the generation of the event queue''s ring: new rows go to slot last_value % 3; each rotation truncates the next slot and advances it (extension/queue_ring.c)';

CREATE FUNCTION kc_flow.event_queue_slot() RETURNS smallint
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'kcf_event_queue_slot';
COMMENT ON FUNCTION kc_flow.event_queue_slot() IS
    'the slot of the event queue''s ring that new rows go to (the default of event_queue.slot)';

CREATE TABLE kc_flow.event_queue (
    event_id      bigint NOT NULL,
    consumer      text NOT NULL,
    attempts      int NOT NULL DEFAULT 0,
    deferrals     int NOT NULL DEFAULT 0,
    run_after     timestamptz NOT NULL DEFAULT now(),
    last_sqlstate text,
    last_error    text,
    slot          smallint NOT NULL DEFAULT kc_flow.event_queue_slot()
) PARTITION BY LIST (slot);
CREATE TABLE kc_flow.event_queue_0 PARTITION OF kc_flow.event_queue FOR VALUES IN (0);
CREATE TABLE kc_flow.event_queue_1 PARTITION OF kc_flow.event_queue FOR VALUES IN (1);
CREATE TABLE kc_flow.event_queue_2 PARTITION OF kc_flow.event_queue FOR VALUES IN (2);
CREATE INDEX event_queue_due ON kc_flow.event_queue (run_after, event_id);
CREATE INDEX event_queue_by_event ON kc_flow.event_queue (event_id);
COMMENT ON TABLE kc_flow.event_queue IS
    'work still to do: one row per event that a stage must handle, claimed with FOR UPDATE SKIP LOCKED, deleted when handled or dead-lettered; a ring of three tables (slot), the oldest truncated when the current one has grown (extension/queue_ring.c), so that dead rows do not pile up while something holds the xmin horizon';
COMMENT ON COLUMN kc_flow.event_queue.event_id IS
    'the event (kc_flow.events.id); no foreign key, since events is a ring of truncated tables: the log''s rotation keeps every queued event';
COMMENT ON COLUMN kc_flow.event_queue.slot IS
    'the table of the ring the row is in; rotation copies what is left in the oldest table into the current one before truncating it';
COMMENT ON TABLE kc_flow.event_queue_0 IS 'slot 0 of the event queue''s ring (kc_flow.event_queue)';
COMMENT ON TABLE kc_flow.event_queue_1 IS 'slot 1 of the event queue''s ring (kc_flow.event_queue)';
COMMENT ON TABLE kc_flow.event_queue_2 IS 'slot 2 of the event queue''s ring (kc_flow.event_queue)';

CREATE TABLE kc_flow.processed_events (
    event_id     bigint NOT NULL,
    consumer     text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    slot         smallint NOT NULL DEFAULT kc_flow.log_slot()
) PARTITION BY LIST (slot);
CREATE TABLE kc_flow.processed_events_0 PARTITION OF kc_flow.processed_events (
    CONSTRAINT processed_events_0_pkey PRIMARY KEY (event_id, consumer)) FOR VALUES IN (0);
CREATE TABLE kc_flow.processed_events_1 PARTITION OF kc_flow.processed_events (
    CONSTRAINT processed_events_1_pkey PRIMARY KEY (event_id, consumer)) FOR VALUES IN (1);
CREATE TABLE kc_flow.processed_events_2 PARTITION OF kc_flow.processed_events (
    CONSTRAINT processed_events_2_pkey PRIMARY KEY (event_id, consumer)) FOR VALUES IN (2);
COMMENT ON TABLE kc_flow.processed_events_0 IS 'slot 0 of the event log''s ring: processed marks (kc_flow.processed_events)';
COMMENT ON TABLE kc_flow.processed_events_1 IS 'slot 1 of the event log''s ring: processed marks (kc_flow.processed_events)';
COMMENT ON TABLE kc_flow.processed_events_2 IS 'slot 2 of the event log''s ring: processed marks (kc_flow.processed_events)';
COMMENT ON TABLE kc_flow.processed_events IS
    'one row per stage that handled an event, written in the same transaction as the stage''s effect and the deletion of its claimed queue row (what makes a stage run once); unique per table of the log''s ring (slot), rotated with events';
COMMENT ON COLUMN kc_flow.processed_events.slot IS
    'the table of the log''s ring the row is in; rotation copies the marks of the events that stay';

CREATE TABLE kc_flow.dead_letters (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id       bigint NOT NULL,
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
COMMENT ON COLUMN kc_flow.dead_letters.event_id IS
    'the event (kc_flow.events.id); no foreign key, since events is a ring of truncated tables: the log''s rotation keeps every event of a payment with an unresolved dead letter, and deletes the resolved dead letters whose event it removes';
COMMENT ON TABLE kc_flow.dead_letters IS
    'events a stage could not handle, with the last error: refused by the stage or failed with an error that cannot succeed on retry (first attempt), or failed kc_flow.max_attempts times; kc_flow.retry_dead_letter(id) puts one back in the queue';

-- The students' cache versions (issue 9): insert-only rows in a ring of three tables emptied
-- by TRUNCATE (extension/version_ring.c, docs/extension.md "Cache versions"). 0.1.0 kept one
-- row per student in the table cache_versions and updated it with every bump, a dead version
-- per bump while something held the xmin horizon; cache_versions is now a view of the ring.
CREATE SEQUENCE kc_flow.version_generation AS bigint MINVALUE 0 START 0 CACHE 1;
COMMENT ON SEQUENCE kc_flow.version_generation IS
    'the generation of the cache versions'' ring (student_versions): new rows go to slot last_value % 3; each rotation truncates the next slot and advances it (extension/version_ring.c); read without a snapshot by student_version()';

CREATE FUNCTION kc_flow.version_slot() RETURNS smallint
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'kcf_version_slot';
COMMENT ON FUNCTION kc_flow.version_slot() IS
    'the slot of the cache versions'' ring that new rows go to (the default of student_versions.slot)';

CREATE TABLE kc_flow.student_versions (
    student_id uuid NOT NULL,
    version    bigint NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    slot       smallint NOT NULL DEFAULT kc_flow.version_slot()
) PARTITION BY LIST (slot);
CREATE TABLE kc_flow.student_versions_0 PARTITION OF kc_flow.student_versions (
    CONSTRAINT student_versions_0_pkey PRIMARY KEY (student_id, version)) FOR VALUES IN (0);
CREATE TABLE kc_flow.student_versions_1 PARTITION OF kc_flow.student_versions (
    CONSTRAINT student_versions_1_pkey PRIMARY KEY (student_id, version)) FOR VALUES IN (1);
CREATE TABLE kc_flow.student_versions_2 PARTITION OF kc_flow.student_versions (
    CONSTRAINT student_versions_2_pkey PRIMARY KEY (student_id, version)) FOR VALUES IN (2);
COMMENT ON TABLE kc_flow.student_versions_0 IS 'slot 0 of the cache versions'' ring (kc_flow.student_versions)';
COMMENT ON TABLE kc_flow.student_versions_1 IS 'slot 1 of the cache versions'' ring (kc_flow.student_versions)';
COMMENT ON TABLE kc_flow.student_versions_2 IS 'slot 2 of the cache versions'' ring (kc_flow.student_versions)';
COMMENT ON TABLE kc_flow.student_versions IS
    'a row per bump of a student''s cache version, in every transaction that changes what the student''s home or learning view shows (emit_event; a worker''s batch bumps once for all of a student''s events in it), under the student''s advisory lock; the version is the largest (kc_flow.student_version()); insert-only, a ring of three tables (slot), the oldest truncated once the current one has grown, each student''s largest version carried forward (extension/version_ring.c)';
COMMENT ON COLUMN kc_flow.student_versions.version IS
    'the student''s version after the bump: the previous one plus the number of the student''s events the bump''s statement wrote';
COMMENT ON COLUMN kc_flow.student_versions.slot IS
    'the table of the ring the row is in; rotation copies each student''s largest version left only in the oldest table into the current one before truncating it';

CREATE TABLE kc_flow.version_rotations (
    generation bigint PRIMARY KEY,
    rotated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    carried    bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE kc_flow.version_rotations IS
    'one row per generation of the cache versions'' ring, written by the rotation that made it current: when, and how many students'' versions it carried forward (the next rotation waits for twice as many rows); insert-only';
INSERT INTO kc_flow.version_rotations (generation) VALUES (0);

CREATE FUNCTION kc_flow.student_version(student uuid) RETURNS bigint
    LANGUAGE plpgsql STABLE
AS $$
BEGIN
    -- The ring's tables are locked (by the plan) before the generation is read. A snapshot
    -- older than the last rotation (its row is not in it, the sequence says it happened)
    -- sees the truncated table empty and the carried rows not yet written: the student's
    -- events of that snapshot carry the versions their bumps gave.
    RETURN greatest(
        (SELECT coalesce(max(v.version), 0) FROM kc_flow.student_versions v WHERE v.student_id = student),
        CASE WHEN (SELECT max(r.generation) FROM kc_flow.version_rotations r)
                  < (SELECT g.last_value FROM kc_flow.version_generation g)
             THEN (SELECT max(e.version) FROM kc_flow.events e WHERE e.student_id = student)
        END);
END
$$;
COMMENT ON FUNCTION kc_flow.student_version(uuid) IS
    'the student''s cache version in the calling snapshot (0 before its first event): the largest of the ring''s rows, and, in a snapshot older than the ring''s last rotation, of the student''s events; the read side''s "version"';

CREATE VIEW kc_flow.cache_versions AS
SELECT DISTINCT ON (v.student_id) v.student_id, v.version, v.at AS updated_at
  FROM kc_flow.student_versions v
 ORDER BY v.student_id, v.version DESC;
COMMENT ON VIEW kc_flow.cache_versions IS
    'per student, the cache version (the largest of kc_flow.student_versions) and when it was bumped; caches fence on it; a view since 0.2.0 (0.1.0 kept a row per student, updated by every bump)';
