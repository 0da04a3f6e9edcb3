#!/usr/bin/env bash
# In-place upgrade 0.1.0 -> 0.2.0 with the 0.2.0 library loaded: payments left
# at every stage under 0.1.0 (pending, queued, mid-pipeline with a retry due
# later, waiting for a trainer, dead-lettered) complete exactly once after
# ALTER EXTENSION kc_flow UPDATE, and the upgraded schema equals a fresh 0.2.0
# install (pg_dump --schema-only).  Uses only the server of test/run.sh (PGHOST,
# PGPORT, PGUSER).  Its workers serve kc_test only, so in databases of its own
# run_pending() drives the pipeline here; test/upgrade/live.sh then runs the
# workers themselves, a kc-gateway and a WebSocket client across the update.
set -uo pipefail
OLD=kc_upgrade_old
NEW=kc_upgrade_new
KC_ROOT=${KC_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
DUMP_DIR="$KC_TEST_TMP/upgrade"
mkdir -p "$DUMP_DIR"
source "$KC_ROOT/test/upgrade/lib.sh"

for db in $OLD $NEW; do
  sql postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null 2>&1
done

sql $OLD -c "SET client_min_messages = warning" -c "CREATE EXTENSION kc_flow VERSION '0.1.0' CASCADE"
check "CREATE EXTENSION ... VERSION '0.1.0' installs 0.1.0" "0.1.0" \
  "$(sql $OLD -c "SELECT extversion FROM pg_extension WHERE extname = 'kc_flow'")"

# Under 0.1.0: P1 pending, P2 confirmed but not yet handled (queued), P3 waiting
# for a trainer (no one teaches Chess yet), P4 done, P5 a second Algebra
# payment of P4's student, dead-lettered.
sql $OLD >/dev/null 2>"$DUMP_DIR/setup.err" <<'SQL'
SET client_min_messages = error;
INSERT INTO kc_flow.courses (id, title, is_published) VALUES
  ('00000000-0000-0000-0000-00000000c001', 'Algebra', true), ('00000000-0000-0000-0000-00000000c002', 'Chess', true);
INSERT INTO kc_flow.trainers (id, display_name) VALUES ('00000000-0000-0000-0000-00000000d001', 'Ada');
INSERT INTO kc_flow.trainer_courses VALUES ('00000000-0000-0000-0000-00000000d001', '00000000-0000-0000-0000-00000000c001');
INSERT INTO kc_flow.trainer_availability (trainer_id, weekday, start_time, end_time)
SELECT '00000000-0000-0000-0000-00000000d001', d, '00:00', '24:00' FROM generate_series(1, 7) d;
INSERT INTO kc_flow.students (id, display_name)
SELECT ('00000000-0000-0000-0000-00000000a00' || i)::uuid, 'Student ' || i FROM generate_series(1, 6) i;
INSERT INTO kc_flow.payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status)
SELECT ('00000000-0000-0000-0000-0000000be00' || n)::uuid, ('00000000-0000-0000-0000-00000000a00' || s)::uuid,
       ('00000000-0000-0000-0000-00000000c00' || c)::uuid, 10,
       jsonb_build_object('weekdays', jsonb_build_array(n), 'start', '10:00', 'timezone', 'UTC',
                          'starts_on', '2031-01-01'), 100, st
  FROM (VALUES (1, 1, 1, 'pending'), (3, 3, 2, 'succeeded'), (4, 4, 1, 'succeeded')) v(n, s, c, st);
SELECT kc_flow.run_pending(100);
INSERT INTO kc_flow.payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status)
SELECT ('00000000-0000-0000-0000-0000000be00' || n)::uuid, ('00000000-0000-0000-0000-00000000a00' || s)::uuid,
       '00000000-0000-0000-0000-00000000c001', 10,
       jsonb_build_object('weekdays', jsonb_build_array(n), 'start', '10:00', 'timezone', 'UTC',
                          'starts_on', '2031-01-01'), 100, 'succeeded'
  FROM (VALUES (5, 4)) v(n, s);
SELECT kc_flow.run_pending(100);
INSERT INTO kc_flow.payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status)
VALUES ('00000000-0000-0000-0000-0000000be002', '00000000-0000-0000-0000-00000000a002',
        '00000000-0000-0000-0000-00000000c001', 10,
        '{"weekdays":[2],"start":"10:00","timezone":"UTC","starts_on":"2031-01-01"}', 100, 'succeeded');
SQL
check "payments left at every stage under 0.1.0" "pending|1|t|1|1" "$(sql $OLD -c "
  SELECT (SELECT status FROM kc_flow.payments WHERE id = '00000000-0000-0000-0000-0000000be001'),
         (SELECT count(*) FROM kc_flow.event_queue q JOIN kc_flow.events e ON e.id = q.event_id
           WHERE e.correlation_id = '00000000-0000-0000-0000-0000000be002' AND q.consumer = 'purchase'),
         (SELECT status = 'pending' FROM kc_flow.trainer_allocations WHERE course_id = '00000000-0000-0000-0000-00000000c002'),
         (SELECT count(*) FROM kc_flow.student_course_purchases WHERE payment_id = '00000000-0000-0000-0000-0000000be004'),
         (SELECT count(*) FROM kc_flow.dead_letters d JOIN kc_flow.events e ON e.id = d.event_id
           WHERE e.correlation_id = '00000000-0000-0000-0000-0000000be005' AND NOT d.resolved)")"
check "the 0.1.0 home has no payment_notices" "f" \
  "$(sql $OLD -c "SELECT kc_flow.student_home('00000000-0000-0000-0000-00000000a004') ? 'payment_notices'")"

# Mid-pipeline: P6's purchase is made but its allocation failed once, P7 has its
# trainer booked but its sessions failed once (test/upgrade/hold.sql); both
# events wait in the queue for a retry that falls due after the update.
sql $OLD -f "$KC_ROOT/test/upgrade/hold.sql" >/dev/null
sql $OLD >/dev/null 2>>"$DUMP_DIR/setup.err" <<'SQL'
SET client_min_messages = error;
SET kc_flow.retry_base_ms = '3s';
INSERT INTO kc_upgrade_hold.held VALUES ('allocation', '00000000-0000-0000-0000-00000000a005'),
                                        ('sessions', '00000000-0000-0000-0000-00000000a006');
INSERT INTO kc_flow.payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status)
SELECT ('00000000-0000-0000-0000-0000000be00' || n)::uuid, ('00000000-0000-0000-0000-00000000a00' || s)::uuid,
       '00000000-0000-0000-0000-00000000c001', 10,
       jsonb_build_object('weekdays', jsonb_build_array(n), 'start', '10:00', 'timezone', 'UTC',
                          'starts_on', '2031-01-01'), 100, 'succeeded'
  FROM (VALUES (6, 5), (7, 6)) v(n, s);
SELECT kc_flow.run_pending(100);
SQL
check "two payments mid-pipeline as the update starts, their retry due later" \
  "be006 purchase 1 allocation 0 sessions 0 queued allocation attempts 1 due later,be007 purchase 1 allocation 1 sessions 0 queued sessions attempts 1 due later" \
  "$(sql $OLD -c "
  SELECT string_agg(format('%s purchase %s allocation %s sessions %s queued %s attempts %s due %s', right(p.id::text, 5),
                           (SELECT count(*) FROM kc_flow.student_course_purchases pu WHERE pu.payment_id = p.id),
                           (SELECT count(*) FROM kc_flow.trainer_allocations a
                              JOIN kc_flow.student_course_purchases pu ON pu.id = a.purchase_id
                             WHERE pu.payment_id = p.id AND a.status = 'approved'),
                           (SELECT count(*) FROM kc_flow.tutoring_sessions s WHERE s.student_id = p.student_id),
                           q.consumer, q.attempts, CASE WHEN q.run_after > clock_timestamp() THEN 'later' ELSE 'now' END),
                    ',' ORDER BY p.id)
    FROM kc_flow.payments p
    JOIN kc_flow.events e ON e.correlation_id = p.id
    JOIN kc_flow.event_queue q ON q.event_id = e.id
   WHERE p.id IN ('00000000-0000-0000-0000-0000000be006', '00000000-0000-0000-0000-0000000be007')")"

# what a client's cursor saw under 0.1.0: the log as events_since returned it
log_before=$(sql $OLD -c "SELECT count(*) || '|' || coalesce(max(id), 0) FROM kc_flow.events_since(0, NULL, 10000)")
top=${log_before#*|}
# ids given out and trimmed since (or rolled back): a 0.1.0 cursor may be above every id left
given=$(sql $OLD -c "SELECT setval('kc_flow.events_id_seq', (SELECT last_value + 5 FROM kc_flow.events_id_seq))")
# each student's cache version under 0.1.0 (a row of the table cache_versions)
versions_before=$(sql $OLD -c "SELECT string_agg(s.id || ' ' || coalesce(c.version, 0), ',' ORDER BY s.id)
                                 FROM kc_flow.students s LEFT JOIN kc_flow.cache_versions c ON c.student_id = s.id")
sql $OLD -c "ALTER EXTENSION kc_flow UPDATE"
check "ALTER EXTENSION kc_flow UPDATE goes to 0.2.0" "0.2.0" \
  "$(sql $OLD -c "SELECT extversion FROM pg_extension WHERE extname = 'kc_flow'")"
check "each student's cache version goes on from 0.1.0's, raised by the events the update wrote, in the ring" \
  "$versions_before" \
  "$(sql $OLD -c "SELECT string_agg(s.id || ' ' || (kc_flow.student_version(s.id)
                                                    - (SELECT count(*) FROM kc_flow.events e
                                                        WHERE e.student_id = s.id AND e.id > $given)), ',' ORDER BY s.id)
                    FROM kc_flow.students s")"
sql $OLD -c "SELECT kc_flow.sequence_log()" >/dev/null     # the workers' round, as run_pending does
check "cursors go on across the update: each old event keeps its id as its position, the new ones come after" \
  "$log_before|true|true" \
  "$(sql $OLD -c "SELECT count(*) FILTER (WHERE pos <= $top) || '|' || coalesce(max(pos) FILTER (WHERE pos <= $top), 0)
                         || '|' || coalesce(bool_and(pos = id) FILTER (WHERE pos <= $top), true)
                         || '|' || (count(*) FILTER (WHERE pos > $top) > 0)
                    FROM kc_flow.events_since(0, NULL, 10000)")"
check "new positions start above every id 0.1.0 gave out, trimmed ones included" "t" \
  "$(sql $OLD -c "SELECT min(pos) > $given FROM kc_flow.events_since($top, NULL, 10000)")"
check "a log 0.1.0 never trimmed gets no floor" "0|0" \
  "$(sql $OLD -c "SELECT kc_flow.log_floor() || '|' || count(*) FROM kc_flow.log_rotations WHERE floor_pos > 0")"
check "after the update the home shows the payment refused before it" \
  "payment received, course already active|00000000-0000-0000-0000-0000000be005" \
  "$(sql $OLD -c "SELECT n->>'message', n->>'payment_id'
                    FROM jsonb_array_elements(kc_flow.student_home('00000000-0000-0000-0000-00000000a004')->'payment_notices') n")"

# Under 0.2.0: confirm P1, hire a Chess trainer for P3, refund P4 and retry P5's dead letter.
sql $OLD >/dev/null 2>>"$DUMP_DIR/setup.err" <<'SQL'
SET client_min_messages = error;
SELECT kc_flow.confirm_payment('00000000-0000-0000-0000-0000000be001');
INSERT INTO kc_flow.trainers (id, display_name) VALUES ('00000000-0000-0000-0000-00000000d002', 'Bobby');
INSERT INTO kc_flow.trainer_availability (trainer_id, weekday, start_time, end_time)
SELECT '00000000-0000-0000-0000-00000000d002', d, '00:00', '24:00' FROM generate_series(1, 7) d;
INSERT INTO kc_flow.trainer_courses VALUES ('00000000-0000-0000-0000-00000000d002', '00000000-0000-0000-0000-00000000c002');
UPDATE kc_flow.payments SET status = 'refunded' WHERE id = '00000000-0000-0000-0000-0000000be004';
SELECT kc_flow.run_pending(1000);
SELECT kc_flow.retry_dead_letter(id) FROM kc_flow.dead_letters WHERE NOT resolved;
SELECT kc_flow.run_pending(1000);
SQL
# P6 and P7 go on when their retries fall due, as they would with the workers
sql $OLD -c "DELETE FROM kc_upgrade_hold.held"
for _ in $(seq 100); do
  sql $OLD -c "SELECT kc_flow.run_pending(1000)" >/dev/null 2>>"$DUMP_DIR/setup.err"
  [ "$(sql $OLD -c "SELECT count(*) FROM kc_flow.event_queue")" = 0 ] && break
  sleep 0.1
done
check "every payment completes after the update: purchase, trainer, 10 sessions, 10 bookings" \
  "be001 1 approved 10 10,be002 1 approved 10 10,be003 1 approved 10 10,be005 1 approved 10 10,be006 1 approved 10 10,be007 1 approved 10 10" \
  "$(sql $OLD -c "
  SELECT string_agg(format('%s %s %s %s %s', right(p.id::text, 5),
                           (SELECT count(*) FROM kc_flow.student_course_purchases x WHERE x.payment_id = p.id),
                           a.status, (SELECT count(*) FROM kc_flow.tutoring_sessions s WHERE s.allocation_id = a.id),
                           (SELECT count(*) FROM kc_flow.trainer_bookings b, unnest(b.during::tstzmultirange) WHERE b.allocation_id = a.id)),
                    ',' ORDER BY p.id)
    FROM kc_flow.payments p
    JOIN kc_flow.student_course_purchases pu ON pu.payment_id = p.id
    JOIN kc_flow.trainer_allocations a ON a.purchase_id = pu.id
   WHERE p.status = 'succeeded'")"
check "exactly once: no event type twice for a payment, every consumed event handled once, nothing left" "0|0|0|0" \
  "$(sql $OLD -c "
  SELECT (SELECT count(*) FROM (SELECT 1 FROM kc_flow.events GROUP BY correlation_id, event_type HAVING count(*) > 1) d),
         (SELECT count(*) FROM kc_flow.events e JOIN kc_flow.event_types() t USING (event_type)
           WHERE t.consumer IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM kc_flow.processed_events pe WHERE pe.event_id = e.id AND pe.consumer = t.consumer)),
         (SELECT count(*) FROM kc_flow.event_queue),
         (SELECT count(*) FROM kc_flow.dead_letters WHERE NOT resolved)")"
check "the upgraded create_payment refuses a course the student holds" "23505" \
  "$(sql $OLD -c "DO \$\$ BEGIN
       PERFORM kc_flow.create_payment('00000000-0000-0000-0000-00000000a001', '00000000-0000-0000-0000-00000000c001', 10,
                                      '{\"weekdays\":[6],\"start\":\"10:00\",\"timezone\":\"UTC\"}');
       RAISE NOTICE 'accepted';
     EXCEPTION WHEN OTHERS THEN RAISE NOTICE '%', SQLSTATE; END \$\$" 2>&1 | sed 's/^NOTICE: *//')"

# The upgraded schema against a fresh install.  pg_dump leaves out an
# extension's members, so both databases first release them from the extension;
# the holds of the mid-pipeline payments go first.
sql $OLD -c "SET client_min_messages = warning" -c "DROP SCHEMA kc_upgrade_hold CASCADE"
sql $NEW -c "SET client_min_messages = warning" -c "CREATE EXTENSION kc_flow CASCADE"
check "a fresh CREATE EXTENSION installs 0.2.0" "0.2.0" \
  "$(sql $NEW -c "SELECT extversion FROM pg_extension WHERE extname = 'kc_flow'")"
# pg_dump leaves out internal triggers, the foreign keys' among them: which of those are
# disabled (12_sessions_of_allocation.sql) is compared on its own
internal_triggers="SELECT string_agg(t.tgrelid::regclass || ' ' || c.conname || ' ' || t.tgfoid::regproc || ' ' || t.tgenabled::text,
                                     ', ' ORDER BY t.tgrelid::regclass::text, c.conname, t.tgfoid::regproc::text)
                     FROM pg_trigger t JOIN pg_constraint c ON c.oid = t.tgconstraint
                    WHERE t.tgisinternal AND t.tgrelid::regclass::text LIKE 'kc_flow.%'"
check "the upgraded schema's internal triggers are enabled and disabled as a fresh install's" \
  "$(sql $NEW -c "$internal_triggers")" "$(sql $OLD -c "$internal_triggers")"
check "the upgraded schema checks sessions_of_allocation on insert once per statement" \
  "kc_flow.tutoring_sessions sessions_of_allocation \"RI_FKey_check_ins\" D|O" "$(sql $OLD -c "
  SELECT t.tgrelid::regclass || ' ' || c.conname || ' ' || t.tgfoid::regproc || ' ' || t.tgenabled::text,
         (SELECT tgenabled FROM pg_trigger WHERE tgname = 'sessions_have_their_allocation')
    FROM pg_trigger t JOIN pg_constraint c ON c.oid = t.tgconstraint
   WHERE c.conname = 'sessions_of_allocation' AND t.tgfoid = '\"RI_FKey_check_ins\"'::regproc")"
for db in $OLD $NEW; do
  sql "$db" >/dev/null <<'SQL'
DO $$
DECLARE
    member text;
BEGIN
    FOR member IN
        SELECT pg_describe_object(d.classid, d.objid, d.objsubid)
          FROM pg_depend d JOIN pg_extension x ON x.oid = d.refobjid
         WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' AND x.extname = 'kc_flow'
    LOOP
        EXECUTE 'ALTER EXTENSION kc_flow DROP ' || member;
    END LOOP;
END $$;
SQL
  pg_dump --schema-only --no-owner -d "$db" | grep -vE '^((--|\\(un)?restrict ).*)?$' >"$DUMP_DIR/$db.sql"
done
members=$(grep -c '^CREATE FUNCTION kc_flow\.' "$DUMP_DIR/$NEW.sql")
check "the dump shows the extension's objects (more than 20 functions)" "yes" "$([ "$members" -gt 20 ] && echo yes || echo "no ($members)")"
if diff -u "$DUMP_DIR/$NEW.sql" "$DUMP_DIR/$OLD.sql" >"$DUMP_DIR/schema.diff"; then
  echo "ok - upgrade: the upgraded schema equals a fresh 0.2.0 install (pg_dump --schema-only)"
else
  echo "not ok - upgrade: the upgraded schema equals a fresh 0.2.0 install (pg_dump --schema-only)"
  sed 's/^/# /' "$DUMP_DIR/schema.diff" | head -60
fi
[ -s "$DUMP_DIR/setup.err" ] && sed 's/^/# /' "$DUMP_DIR/setup.err" | head -20

for db in $OLD $NEW; do sql postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null; done

# A 0.1.0 log that was trimmed: a 0.1.0 cursor a trim could have skipped gets KC410 after
# the update, the others go on.  Student a gets three events and loses its second (the floor
# is just below its third), student b loses all of its events (the floor is the head).
TRIM=kc_upgrade_trim
for lose in middle all; do
  sql postgres -c "DROP DATABASE IF EXISTS $TRIM" -c "CREATE DATABASE $TRIM" >/dev/null 2>&1
  sql $TRIM -c "SET client_min_messages = warning" -c "CREATE EXTENSION kc_flow VERSION '0.1.0' CASCADE"
  sql $TRIM >/dev/null <<'SQL'
INSERT INTO kc_flow.students (id, display_name) VALUES
  ('00000000-0000-0000-0000-00000000a00a', 'a'), ('00000000-0000-0000-0000-00000000a00b', 'b');
SELECT kc_flow.emit_event('SESSIONS_GENERATED', gen_random_uuid(), s::uuid)
  FROM unnest(ARRAY['00000000-0000-0000-0000-00000000a00a', '00000000-0000-0000-0000-00000000a00b',
                    '00000000-0000-0000-0000-00000000a00a', '00000000-0000-0000-0000-00000000a00a',
                    '00000000-0000-0000-0000-00000000a00b']) s;
SQL
  if [ $lose = middle ]; then
    gone="student_id = '00000000-0000-0000-0000-00000000a00a' AND version = 2"
    want="SELECT id - 1 FROM kc_flow.events WHERE student_id = '00000000-0000-0000-0000-00000000a00a' AND version = 3"
  else
    gone="student_id = '00000000-0000-0000-0000-00000000a00b'"
    want="SELECT max(id) FROM kc_flow.events"
  fi
  sql $TRIM -c "DELETE FROM kc_flow.events WHERE $gone" >/dev/null
  floor=$(sql $TRIM -c "$want")
  sql $TRIM -c "ALTER EXTENSION kc_flow UPDATE"
  check "a trimmed 0.1.0 log ($lose of a student's events): the floor covers what went, KC410 below it, reads at it" \
    "$floor|KC410|ok" \
    "$(sql $TRIM -c "SELECT kc_flow.log_floor()")|$(sql $TRIM -c "DO \$\$ BEGIN
         PERFORM kc_flow.events_since(kc_flow.log_floor() - 1); RAISE NOTICE 'no error';
       EXCEPTION WHEN OTHERS THEN RAISE NOTICE '%', SQLSTATE; END \$\$" 2>&1 | sed 's/^NOTICE: *//')|$(
      sql $TRIM -c "SELECT count(*) FROM kc_flow.events_since(kc_flow.log_floor())" >/dev/null && echo ok)"
done
sql postgres -c "DROP DATABASE IF EXISTS $TRIM" >/dev/null

# The workers, a kc-gateway and a WebSocket client across the update
# 0.1.0's refund deleted the booking of sessions that had started and stay scheduled; the
# update gives them one back, holding their times only (every scheduled session lies inside
# its allocation's booking from 0.2.0 on).
REFUND=kc_upgrade_refund
sql postgres -c "DROP DATABASE IF EXISTS $REFUND" -c "CREATE DATABASE $REFUND" >/dev/null 2>&1
sql $REFUND -c "SET client_min_messages = warning" -c "CREATE EXTENSION kc_flow VERSION '0.1.0' CASCADE"
sql $REFUND >/dev/null <<'SQL'
INSERT INTO kc_flow.courses (id, title, is_published) VALUES ('00000000-0000-0000-0000-00000000c001', 'Algebra', true);
INSERT INTO kc_flow.trainers (id, display_name) VALUES ('00000000-0000-0000-0000-00000000d001', 'Ada');
INSERT INTO kc_flow.trainer_courses VALUES ('00000000-0000-0000-0000-00000000d001', '00000000-0000-0000-0000-00000000c001');
INSERT INTO kc_flow.trainer_availability (trainer_id, weekday, start_time, end_time)
SELECT '00000000-0000-0000-0000-00000000d001', d, '00:00', '24:00' FROM generate_series(1, 7) d;
INSERT INTO kc_flow.students (id, display_name) VALUES ('00000000-0000-0000-0000-00000000a001', 'S');
INSERT INTO kc_flow.payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents, status)
VALUES ('00000000-0000-0000-0000-0000000be001', '00000000-0000-0000-0000-00000000a001',
        '00000000-0000-0000-0000-00000000c001', 10,
        jsonb_build_object('weekdays', '[1,2,3,4,5,6,7]'::jsonb, 'start', '00:00', 'timezone', 'UTC',
                           'starts_on', (now() AT TIME ZONE 'UTC')::date - 4), 100, 'succeeded');
SELECT kc_flow.run_pending(100);
UPDATE kc_flow.payments SET status = 'refunded';
SELECT kc_flow.run_pending(100);
SQL
started="SELECT count(*) FROM kc_flow.tutoring_sessions WHERE status = 'scheduled'"
check "0.1.0's refund left the started sessions scheduled without a booking" "5|0" \
  "$(sql $REFUND -c "SELECT ($started), (SELECT count(*) FROM kc_flow.trainer_bookings)")"
sql $REFUND -c "ALTER EXTENSION kc_flow UPDATE"
check "after the update they have their booking back, with their times only" "5|t" \
  "$(sql $REFUND -c "SELECT ($started), (SELECT b.during FROM kc_flow.trainer_bookings b)
                       = (SELECT range_agg(tstzrange(starts_at, ends_at)) FROM kc_flow.tutoring_sessions
                           WHERE status = 'scheduled')")"
sql postgres -c "DROP DATABASE IF EXISTS $REFUND" >/dev/null

bash "$KC_ROOT/test/upgrade/live.sh"
