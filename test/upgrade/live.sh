#!/usr/bin/env bash
# test/upgrade/live.sh - the live part of the upgrade suite (test/suites/27_upgrade.sh):
# the real background workers on a 0.1.0 schema, then across ALTER EXTENSION kc_flow
# UPDATE. They serve the database of kc_flow.database only (kc_test), so its extension is
# put back to 0.1.0 for this part and reinstalled fresh afterwards, whatever happens, for
# the suites that follow.
set -uo pipefail
KC_ROOT=${KC_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
source "$KC_ROOT/test/upgrade/lib.sh"
WDB=$(sql postgres -c "SHOW kc_flow.database")
restore_worker_db() {
  sql "$WDB" -c "SET client_min_messages = warning" -c "DROP EXTENSION IF EXISTS kc_flow CASCADE" \
    -c "CREATE EXTENSION kc_flow CASCADE" >/dev/null
}
trap restore_worker_db EXIT
sql "$WDB" -c "SET client_min_messages = warning" -c "DROP EXTENSION kc_flow CASCADE" \
  -c "CREATE EXTENSION kc_flow VERSION '0.1.0' CASCADE" >/dev/null
wait_for "$WDB" "SELECT count(*) > 0 AND bool_and(pid <> 0) FROM kc_flow.worker_status()" ||
  echo "# the workers did not attach"
pids=$(sql "$WDB" -c "SELECT string_agg(pid::text, ',' ORDER BY worker) FROM kc_flow.worker_status()")
sql "$WDB" >/dev/null <<'SQL'
INSERT INTO kc_flow.courses (id, title, is_published) VALUES ('00000000-0000-0000-0000-0000000fc001', 'Upgrade', true);
INSERT INTO kc_flow.trainers (id, display_name) VALUES ('00000000-0000-0000-0000-0000000fd001', 'Wendy');
INSERT INTO kc_flow.trainer_courses VALUES ('00000000-0000-0000-0000-0000000fd001', '00000000-0000-0000-0000-0000000fc001');
INSERT INTO kc_flow.trainer_availability (trainer_id, weekday, start_time, end_time)
SELECT '00000000-0000-0000-0000-0000000fd001', d, '00:00', '24:00' FROM generate_series(1, 7) d;
INSERT INTO kc_flow.students (id, display_name)
SELECT ('00000000-0000-0000-0000-0000000fa00' || i)::uuid, 'Student ' || i FROM generate_series(1, 2) i;
INSERT INTO kc_flow.payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status)
SELECT ('00000000-0000-0000-0000-0000000fe00' || n)::uuid, ('00000000-0000-0000-0000-0000000fa00' || s)::uuid,
       '00000000-0000-0000-0000-0000000fc001', 10,
       jsonb_build_object('weekdays', jsonb_build_array(n), 'start', '10:00', 'timezone', 'UTC',
                          'starts_on', '2031-01-01'), 100, 'succeeded'
  FROM (VALUES (1, 1), (2, 1)) v(n, s);
SQL
if wait_for "$WDB" "SELECT count(*) = 1 FROM kc_flow.events WHERE event_type = 'SESSIONS_GENERATED'
                    AND student_id = '00000000-0000-0000-0000-0000000fa001'" &&
   wait_for "$WDB" "SELECT count(*) = 1 FROM kc_flow.dead_letters WHERE attempts = 1 AND sqlstate = '23505'"; then
  echo "ok - upgrade: the 0.2.0 workers run a 0.1.0 schema: one payment to its sessions, its duplicate refused"
else
  echo "not ok - upgrade: the 0.2.0 workers run a 0.1.0 schema: one payment to its sessions, its duplicate refused"
fi
sql "$WDB" -c "ALTER EXTENSION kc_flow UPDATE"
sql "$WDB" >/dev/null <<'SQL'
INSERT INTO kc_flow.payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status)
VALUES ('00000000-0000-0000-0000-0000000fe003', '00000000-0000-0000-0000-0000000fa002',
        '00000000-0000-0000-0000-0000000fc001', 10,
        '{"weekdays":[3],"start":"10:00","timezone":"UTC","starts_on":"2031-01-01"}', 100, 'succeeded');
SQL
if wait_for "$WDB" "SELECT count(*) = 1 FROM kc_flow.events WHERE event_type = 'SESSIONS_GENERATED'
                    AND student_id = '00000000-0000-0000-0000-0000000fa002'"; then
  echo "ok - upgrade: the same workers go on after ALTER EXTENSION kc_flow UPDATE"
else
  echo "not ok - upgrade: the same workers go on after ALTER EXTENSION kc_flow UPDATE"
fi
check "no worker crashed or restarted meanwhile" "$pids" \
  "$(sql "$WDB" -c "SELECT string_agg(pid::text, ',' ORDER BY worker) FROM kc_flow.worker_status()")"
