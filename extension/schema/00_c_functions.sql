-- 00_c_functions.sql: the SQL face of the C module (extension/*.c).
-- Everything the pipeline does in C is reachable from SQL through these declarations.

\echo Use "CREATE EXTENSION kc_flow CASCADE" to load this file. \quit

CREATE FUNCTION kc_flow.is_iana_timezone(zone text) RETURNS boolean
    LANGUAGE c STABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'kcf_is_iana_timezone';
COMMENT ON FUNCTION kc_flow.is_iana_timezone(text) IS
    'true when the name is a zone of the IANA time zone database known to this server (e.g. Asia/Kolkata, UTC); POSIX strings such as XYZ+3 are refused';

CREATE FUNCTION kc_flow.event_types(OUT event_type text, OUT consumer text, OUT emitted_by text, OUT meaning text)
    RETURNS SETOF record
    LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'kcf_event_types';
COMMENT ON FUNCTION kc_flow.event_types() IS
    'the event types of the log, one row each: the stage that consumes it (NULL: only readers of the log act on it), who emits it and what it means';

CREATE FUNCTION kc_flow.is_event_type(name text) RETURNS boolean
    LANGUAGE c STABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'kcf_is_event_type';
COMMENT ON FUNCTION kc_flow.is_event_type(text) IS
    'true when kc_flow.event_types() has a type of that name; the events_type_known constraint of kc_flow.events';

CREATE FUNCTION kc_flow.emit_event(event_type text, correlation_id uuid, student_id uuid, payload jsonb DEFAULT '{}')
    RETURNS bigint
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'kcf_emit_event_sql';
COMMENT ON FUNCTION kc_flow.emit_event(text, uuid, uuid, jsonb) IS
    'appends an event to the outbox in the current transaction: bumps the student''s cache version, queues the event for its stage and wakes the workers at commit, which give it its log position and announce it; returns the event id';

CREATE FUNCTION kc_flow.sequence_log(OUT first_pos bigint, OUT last_pos bigint) RETURNS record
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'kcf_sequence_sql';
COMMENT ON FUNCTION kc_flow.sequence_log() IS
    'one sequencer round in the calling transaction, as the workers and run_pending() do: log positions for every event committed since the last round (and those this transaction wrote), one NOTIFY kc_flow_events "first-last"; holds the log head until the transaction ends';

CREATE FUNCTION kc_flow.log_backlog(OUT unsequenced bigint, OUT oldest_created_at timestamptz) RETURNS record
    LANGUAGE c STABLE SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
    AS 'MODULE_PATHNAME', 'kcf_log_backlog';
COMMENT ON FUNCTION kc_flow.log_backlog() IS
    'committed events that have no log position yet, and when the oldest of them was written';

CREATE FUNCTION kc_flow.log_covers(snapshot pg_snapshot) RETURNS boolean
    LANGUAGE c STABLE STRICT SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
    AS 'MODULE_PATHNAME', 'kcf_log_covers';
COMMENT ON FUNCTION kc_flow.log_covers(pg_snapshot) IS
    'true when every event visible in the snapshot (pg_current_snapshot() of an earlier moment) has a log position: reading the log to its end then sees all that had committed';

CREATE FUNCTION kc_flow.oldest_event_writer() RETURNS timestamptz
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, kc_flow
    AS 'MODULE_PATHNAME', 'kcf_oldest_event_writer';
COMMENT ON FUNCTION kc_flow.oldest_event_writer() IS
    'the start of the oldest open transaction that has emitted events (the only events still to come), NULL when none';

CREATE FUNCTION kc_flow.run_pending(max_jobs int DEFAULT 1000) RETURNS int
    LANGUAGE c VOLATILE STRICT
    AS 'MODULE_PATHNAME', 'kcf_run_pending';
COMMENT ON FUNCTION kc_flow.run_pending(int) IS
    'runs due pipeline work in the calling transaction, as the background workers would: at most max_jobs events, then a round of the log sequencer and, when due, a rotation of the queue''s ring; returns how many were handled. The log head (and a rotated queue table) stay locked until the transaction ends: call it in a short READ COMMITTED transaction of its own';

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

CREATE FUNCTION kc_flow.rotate_queue() RETURNS text
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'kcf_rotate_queue_sql';
COMMENT ON FUNCTION kc_flow.rotate_queue() IS
    'rotates the event queue''s ring now if its current table is larger than kc_flow.queue_rotation_size, as worker 0 and run_pending() do: ''rotated'', ''not due'' or ''busy'' (another rotation, or the oldest table''s lock not granted within 200 ms); call it in a short transaction of its own';

CREATE FUNCTION kc_flow.rotate_log() RETURNS text
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'kcf_rotate_log_sql';
COMMENT ON FUNCTION kc_flow.rotate_log() IS
    'rotates the event log''s ring now if its current tables have been current for half of kc_flow.event_retention, as worker 0 and run_pending() do: ''rotated'', ''not due'' or ''busy'' (another rotation, the first oldest table''s lock not granted within 200 ms, or another one or the log head not free at once); call it in a short transaction of its own';

CREATE FUNCTION kc_flow.rotate_versions() RETURNS text
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'kcf_rotate_versions_sql';
COMMENT ON FUNCTION kc_flow.rotate_versions() IS
    'rotates the cache versions'' ring now if its current table holds at least kc_flow.version_rotation_rows rows and twice what the last rotation carried into it, as worker 0 and run_pending() do: ''rotated'', ''not due'' or ''busy'' (another rotation, or the oldest table''s lock not granted within 200 ms: a transaction that read the versions holds it until it ends); call it in a short transaction of its own';

CREATE FUNCTION kc_flow.trim_event_log(retention_s int DEFAULT NULL) RETURNS bigint
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'kcf_trim_event_log_sql';
COMMENT ON FUNCTION kc_flow.trim_event_log(int) IS
    'trims the event log now by rotating its ring by hand: each of its three tables whose events are all older than retention_s seconds (NULL: kc_flow.event_retention) is emptied in turn, the rows that stay copied forward as a rotation does (at most three rotations, each retried briefly while busy); returns kc_flow.log_floor(); call it in a short READ COMMITTED transaction of its own';

CREATE FUNCTION kc_flow.trainer_load(trainer_id uuid) RETURNS int
    LANGUAGE c VOLATILE STRICT
    AS 'MODULE_PATHNAME', 'kcf_trainer_load_sql';
COMMENT ON FUNCTION kc_flow.trainer_load(uuid) IS
    'the trainer''s approved and active allocations (its load, below max_active_students while it has a free place): when kc_flow is preloaded the latest committed load from shared memory plus this transaction''s own changes, else counted';

CREATE FUNCTION kc_flow.trainer_loads(trainer_ids uuid[]) RETURNS int[]
    LANGUAGE c VOLATILE STRICT
    AS 'MODULE_PATHNAME', 'kcf_trainer_loads_sql';
COMMENT ON FUNCTION kc_flow.trainer_loads(uuid[]) IS
    'kc_flow.trainer_load() of each trainer of the array, in the same order, in one call: what the allocation search ranks by';

CREATE FUNCTION kc_flow.note_trainer_load() RETURNS trigger
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'kcf_note_trainer_load';
COMMENT ON FUNCTION kc_flow.note_trainer_load() IS
    'row trigger of trainer_allocations: notes each change of a trainer''s load, applied to kc_flow.trainer_load()''s shared memory once the transaction commits';

CREATE FUNCTION kc_flow.forget_trainer_loads() RETURNS trigger
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'kcf_forget_trainer_loads';
COMMENT ON FUNCTION kc_flow.forget_trainer_loads() IS
    'TRUNCATE trigger of trainer_allocations: the loads kept in shared memory are counted again once the transaction commits';
