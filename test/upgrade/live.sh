#!/usr/bin/env bash
# test/upgrade/live.sh - the live part of the upgrade suite (test/suites/27_upgrade.sh):
# the real background workers, a kc-gateway with a Redis of its own, and a WebSocket
# client, across ALTER EXTENSION kc_flow UPDATE.
#   1. the 0.2.0 workers on a 0.1.0 schema: a payment to its sessions, its duplicate refused;
#   2. test/upgrade/across.py: a student's home cached and their WebSocket open, a payment
#      of theirs held mid-pipeline and a burst of payments in flight while the update runs;
#      then every payment completes once, the socket gets each event once and in order,
#      and the home is never served stale;
#   3. the same workers go on after the update, none restarted, every event handled once.
# The workers serve the database of kc_flow.database only (kc_test), so its extension is
# put back to 0.1.0 for this part, and the retry delay raised so that a held payment stays
# mid-pipeline through the update; on exit, whatever happened, both are undone (a fresh
# extension, as test/run.sh set it up) for the suites that follow.
set -uo pipefail
KC_ROOT=${KC_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
source "$KC_ROOT/test/cluster.sh"
source "$KC_ROOT/test/upgrade/lib.sh"
WORK="$KC_TEST_TMP/upgrade-live"
PY=python3; [ -x /usr/bin/python3 ] && PY=/usr/bin/python3   # the Debian one has the Debian modules
mkdir -p "$WORK"
WDB=$(sql postgres -c "SHOW kc_flow.database")

cleanup() {
  kc_gateway_stop "$WORK/gateway" || echo "not ok - upgrade: the gateway exits cleanly (SIGTERM)"
  kc_redis_stop "$WORK/redis"
  sql postgres -c "ALTER SYSTEM RESET kc_flow.retry_base_ms" -c "SELECT pg_reload_conf()" >/dev/null
  sql "$WDB" -c "SET client_min_messages = warning" -c "DROP SCHEMA IF EXISTS kc_upgrade_hold CASCADE" \
    -c "DROP EXTENSION IF EXISTS kc_flow CASCADE" -c "CREATE EXTENSION kc_flow CASCADE" >/dev/null
}
trap cleanup EXIT

sql "$WDB" -c "SET client_min_messages = warning" -c "DROP EXTENSION kc_flow CASCADE" \
  -c "CREATE EXTENSION kc_flow VERSION '0.1.0' CASCADE" >/dev/null
sql postgres -c "ALTER SYSTEM SET kc_flow.retry_base_ms = '5s'" -c "SELECT pg_reload_conf()" >/dev/null
wait_for "$WDB" "SELECT count(*) > 0 AND bool_and(pid <> 0) FROM kc_flow.worker_status()" ||
  echo "# the workers did not attach"
pids=$(sql "$WDB" -c "SELECT string_agg(pid::text, ',' ORDER BY worker) FROM kc_flow.worker_status()")

# the gateway runs from here to the end: through the 0.1.0 part, the update and after
export KC_JWT_SECRET=upgrade-test-secret
gateway_addr=127.0.0.1:$(kc_free_port)
redis_port=$(kc_free_port)
if ! kc_redis_start "$WORK/redis" "$redis_port" ||
   ! kc_gateway_start "$WORK/gateway" "$gateway_addr" KC_THREADS=2 \
       KC_DATABASE_URL="postgresql://$PGUSER@$PGHOST:$PGPORT/$WDB" KC_REDIS_URL="redis://127.0.0.1:$redis_port/0"; then
  echo "not ok - upgrade: a kc-gateway with Redis starts on the 0.1.0 database"
  exit 0
fi

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

# student fa001 (one course, a refused second payment) across the update, with the gateway
KC_UPGRADE_GATEWAY=$gateway_addr KC_UPGRADE_HOLD_SQL="$KC_ROOT/test/upgrade/hold.sql" PGDATABASE=$WDB \
  timeout 120 $PY "$KC_ROOT/test/upgrade/across.py"
rc=$?
[ $rc -eq 0 ] || echo "not ok - upgrade: test/upgrade/across.py ran to its end (exit $rc)"

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
check "with the workers, every event once: no type twice for a payment, each consumed one handled, none left, only the refused duplicate dead" \
  "0|0|0|fe002 23505" "$(sql "$WDB" -c "
  SELECT (SELECT count(*) FROM (SELECT 1 FROM kc_flow.events GROUP BY correlation_id, event_type HAVING count(*) > 1) d),
         (SELECT count(*) FROM kc_flow.events e JOIN kc_flow.event_types() t USING (event_type)
           WHERE t.consumer IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM kc_flow.processed_events pe WHERE pe.event_id = e.id AND pe.consumer = t.consumer)
             AND NOT EXISTS (SELECT 1 FROM kc_flow.dead_letters d WHERE d.event_id = e.id AND NOT d.resolved)),
         (SELECT count(*) FROM kc_flow.event_queue),
         (SELECT string_agg(right(e.correlation_id::text, 5) || ' ' || d.sqlstate, ',')
            FROM kc_flow.dead_letters d JOIN kc_flow.events e ON e.id = d.event_id WHERE NOT d.resolved)")"
check "no worker crashed or restarted meanwhile" "$pids" \
  "$(sql "$WDB" -c "SELECT string_agg(pid::text, ',' ORDER BY worker) FROM kc_flow.worker_status()")"
