-- pgTAP: the schema's promises, stated as assertions.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(31);

SELECT has_extension('kc_flow');
SELECT tables_are('kc_flow', ARRAY['students', 'trainers', 'courses', 'trainer_courses', 'trainer_availability',
  'payment_orders', 'payment_outcomes', 'student_course_purchases', 'trainer_allocations', 'trainer_bookings', 'tutoring_sessions',
  'events', 'events_0', 'events_1', 'events_2', 'event_log', 'event_log_0', 'event_log_1', 'event_log_2',
  'log_rounds', 'log_rounds_0', 'log_rounds_1', 'log_rounds_2', 'log_rotations',
  'event_queue', 'event_queue_0', 'event_queue_1', 'event_queue_2',
  'processed_events', 'processed_events_0', 'processed_events_1', 'processed_events_2', 'dead_letters',
  'student_versions', 'student_versions_0', 'student_versions_1', 'student_versions_2', 'version_rotations',
  'course_trending']);
SELECT is((SELECT count(*)::int FROM pg_constraint c WHERE c.conrelid IN ('kc_flow.event_log_0'::regclass, 'kc_flow.event_log_1'::regclass, 'kc_flow.event_log_2'::regclass)
             AND pg_get_constraintdef(c.oid) = 'PRIMARY KEY (pos)'), 3, 'each table of the log''s ring is keyed by position');
SELECT is((SELECT count(*)::int FROM pg_constraint c WHERE c.conrelid IN ('kc_flow.event_log_0'::regclass, 'kc_flow.event_log_1'::regclass, 'kc_flow.event_log_2'::regclass)
             AND pg_get_constraintdef(c.oid) = 'UNIQUE (event_id)'), 3, 'an event has one position at most in each table of the log''s ring');
SELECT has_index('kc_flow', 'events', 'events_by_txid', ARRAY['txid'], 'the sequencer finds committed events by their writer');
SELECT is((SELECT count(*)::int FROM pg_constraint c WHERE c.conrelid IN ('kc_flow.processed_events_0'::regclass, 'kc_flow.processed_events_1'::regclass, 'kc_flow.processed_events_2'::regclass)
             AND pg_get_constraintdef(c.oid) = 'PRIMARY KEY (event_id, consumer)'), 3, 'each table of processed_events is keyed by (event, stage)');
SELECT col_is_unique('kc_flow', 'student_course_purchases', ARRAY['payment_id'], 'one purchase per payment');
SELECT col_is_unique('kc_flow', 'trainer_allocations', ARRAY['purchase_id'], 'one allocation per purchase');
SELECT index_is_unique('kc_flow', 'student_course_purchases', 'purchases_one_active_per_course', 'one active purchase per course');
SELECT index_is_unique('kc_flow', 'trainer_allocations', 'allocations_one_live_per_course', 'one live allocation per course');
SELECT col_is_unique('kc_flow', 'tutoring_sessions', ARRAY['allocation_id', 'scheduled_date', 'scheduled_time'], 'one session per slot');
SELECT is((SELECT array_agg(tgname::text ORDER BY tgname) FROM pg_trigger
            WHERE tgrelid IN ('kc_flow.tutoring_sessions'::regclass, 'kc_flow.trainer_bookings'::regclass)
              AND tgname::text LIKE ANY (ARRAY['sessions_inside_booking%', 'bookings_hold_their_sessions'])),
          ARRAY['bookings_hold_their_sessions', 'sessions_inside_booking_on_insert', 'sessions_inside_booking_on_update'],
          'a scheduled session lies inside its booking (no two of one trainer overlap): checked on both tables');
SELECT ok(EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'bookings_no_trainer_double_booking' AND contype = 'x'),
          'bookings carry the no-double-booking exclusion constraint');
SELECT has_view('kc_flow', 'payments', 'payments is a view of orders and their outcomes');
SELECT has_trigger('kc_flow', 'payment_outcomes', 'payments_emit', 'payments emit their events in a trigger');
SELECT has_trigger('kc_flow', 'payments', 'payments_write', 'payments are checked in a trigger');
SELECT index_is_unique('kc_flow', 'payment_outcomes', 'payment_outcomes_settled_once',
                       'a payment is settled (succeeded or failed) once');
SELECT fk_ok('kc_flow', 'payment_outcomes', ARRAY['payment_id', 'follows'],
             'kc_flow', 'payment_outcomes', ARRAY['payment_id', 'outcome'], 'a refund follows a success');

SELECT is_definer('kc_flow', 'student_home', ARRAY['uuid'], 'student_home is SECURITY DEFINER');
SELECT is_definer('kc_flow', 'student_learning', ARRAY['uuid'], 'student_learning is SECURITY DEFINER');
SELECT is_definer('kc_flow', 'events_since', ARRAY['bigint', 'uuid', 'integer'], 'events_since is SECURITY DEFINER');
SELECT ok(NOT has_function_privilege('public', 'kc_flow.emit_event(text, uuid, uuid, jsonb)', 'EXECUTE'),
          'PUBLIC cannot emit events directly');
SELECT ok(NOT has_function_privilege('public', 'kc_flow.run_pending(int)', 'EXECUTE'),
          'PUBLIC cannot drive the pipeline');
SELECT ok(NOT has_function_privilege('public', 'kc_flow.sequence_log()', 'EXECUTE'),
          'PUBLIC cannot take the log head');
SELECT ok(NOT has_function_privilege('public', 'kc_flow.trim_event_log(int)', 'EXECUTE'),
          'PUBLIC cannot trim the log');
SELECT col_is_pk('kc_flow', 'log_rotations', ARRAY['generation'], 'a rotation of the log is recorded by the generation it made current');
SELECT ok((SELECT proconfig::text LIKE '%search_path%' FROM pg_proc WHERE oid = 'kc_flow.student_home(uuid)'::regprocedure),
          'student_home pins its search_path');

SELECT is((SELECT seqcache FROM pg_sequence WHERE seqrelid = 'kc_flow.events_id_seq'::regclass), 1::bigint,
          'event ids are handed out one at a time, in order');
SELECT throws_ok($$SELECT kc_flow.student_home('00000000-0000-0000-0000-00000000dead')$$, 'P0002', NULL,
                 'an unknown student is no_data_found');
SELECT throws_ok($$INSERT INTO kc_flow.students (display_name, timezone) VALUES ('x', 'Moon/Base')$$, '23514', NULL,
                 'students need a real IANA zone');
SELECT throws_ok($$INSERT INTO kc_flow.trainers (display_name, max_active_students) VALUES ('x', 0)$$, '23514', NULL,
                 'trainers need capacity');

SELECT * FROM finish();
ROLLBACK;
