-- pgTAP: a long transaction that has read the event queue holds a lock on every table of
-- its ring; rotation then gives up after its short lock_timeout (and is tried again later)
-- instead of blocking the workers, whose claims go on beside that transaction.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS dblink;
SELECT plan(7);
SET LOCAL kc_flow.queue_rotation_size = '8kB';

INSERT INTO kc_flow.students (id, display_name) VALUES ('00000000-0000-0000-0000-0000000ee101', 'Held');
INSERT INTO kc_flow.courses (id, title, is_published) VALUES ('00000000-0000-0000-0000-0000000ee102', 'Ring', true);
INSERT INTO kc_flow.trainers (id, display_name) VALUES ('00000000-0000-0000-0000-0000000ee103', 'Free');
INSERT INTO kc_flow.trainer_courses VALUES ('00000000-0000-0000-0000-0000000ee103', '00000000-0000-0000-0000-0000000ee102');
INSERT INTO kc_flow.trainer_availability (trainer_id, weekday, start_time, end_time)
SELECT '00000000-0000-0000-0000-0000000ee103', d, '00:00', '24:00' FROM generate_series(1, 7) d;
INSERT INTO kc_flow.payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status) VALUES
  ('00000000-0000-0000-0000-0000000ee104', '00000000-0000-0000-0000-0000000ee101', '00000000-0000-0000-0000-0000000ee102',
   10, '{"weekdays":[2],"start":"10:00","timezone":"UTC","starts_on":"2031-01-01"}', 100, 'succeeded');

-- another session reads the queue and stays open (a report, a forgotten BEGIN)
SELECT dblink_connect('holder', format('dbname=%s port=%s host=%s', current_database(), current_setting('port'),
                                       coalesce(host(inet_server_addr()), split_part(current_setting('unix_socket_directories'), ',', 1))));
SELECT dblink_exec('holder', 'BEGIN');
SELECT * FROM dblink('holder', 'SELECT count(*) FROM kc_flow.event_queue') AS t(n bigint);

CREATE TEMP TABLE t0 AS SELECT clock_timestamp() AS at, last_value AS g FROM kc_flow.event_queue_generation;
SELECT is(kc_flow.rotate_queue(), 'busy', 'rotation gives up while a transaction holds a lock on the oldest table');
SELECT ok((SELECT clock_timestamp() - at < interval '1 s' FROM t0), 'after its short lock_timeout, not for as long as that transaction');
SELECT is((SELECT last_value - g FROM kc_flow.event_queue_generation, t0), 0::bigint, 'the ring did not move');
SELECT is(kc_flow.run_pending(10), 3, 'claims go on beside the long transaction: the payment runs through its three stages');
SELECT is((SELECT count(*) FROM kc_flow.tutoring_sessions s JOIN kc_flow.trainer_allocations a ON a.id = s.allocation_id
            WHERE a.student_id = '00000000-0000-0000-0000-0000000ee101'), 10::bigint, 'with its sessions');

-- the long transaction ends: the next try rotates
SELECT dblink_exec('holder', 'COMMIT');
SELECT dblink_disconnect('holder');
SELECT is(kc_flow.rotate_queue(), 'rotated', 'once it has ended, the next try rotates');
SELECT is((SELECT last_value - g FROM kc_flow.event_queue_generation, t0), 1::bigint, 'and the ring moved by one table');

SELECT * FROM finish();
ROLLBACK;
