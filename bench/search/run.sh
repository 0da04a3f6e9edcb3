#!/usr/bin/env bash
# bench/search/run.sh: the allocation search alone, as the workers run it (a generic plan,
# locking its trainer), on one course of 200 trainers with random loads 0-5 (real approved
# allocations). Prints the backend's CPU per search (from /proc), first on a fresh table, then
# after --churn N changes of load (an allocation completed and approved again, each in its own
# transaction) made while another session holds a snapshot, as under issue 9's held horizon.
# Measures every form of the search the installed kc_flow has: 0.1.0's and main's load column
# (trainers.active_students) or, without it, the shared-memory hint (kc_flow.trainer_load())
# and the plain count of allocations (the no-preload form).
#   --searches N (4000)  --churn N (10000)
set -euo pipefail
KC_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$KC_ROOT/bench/lock.sh"; bench_lock "$KC_ROOT/bench/search/run.sh" "$@"
cd "$KC_ROOT"
searches=4000 churn=10000
while [ $# -gt 0 ]; do
  case $1 in
    --searches) searches=$2; shift 2 ;;
    --churn) churn=$2; shift 2 ;;
    *) echo "usage: $0 [--searches N] [--churn N]" >&2; exit 2 ;;
  esac
done
source test/cluster.sh
make -s NO_GATEWAY=1 >/dev/null && make -s install NO_GATEWAY=1 >/dev/null

tmp=$(mktemp -d /tmp/kc_search.XXXXXX)
chmod 755 "$tmp"; chown postgres:postgres "$tmp"
export PGHOST=127.0.0.1 PGUSER=postgres PGDATABASE=kc_search
PGPORT=$(kc_free_port); export PGPORT
holder=""
trap '[ -z "$holder" ] || kill "$holder" 2>/dev/null; kc_pg_stop "$tmp"; rm -rf "$tmp"' EXIT
# the workers serve another database: nothing else runs here
kc_pg_init "$tmp" "$PGPORT" kc_idle "autovacuum = off"
kc_pg_start "$tmp" "$PGPORT" kc_idle
psql -qX -d postgres -c "CREATE DATABASE kc_search"
psql -qX -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
CREATE EXTENSION kc_flow CASCADE;
SELECT setseed(0.42);
INSERT INTO kc_flow.courses (id, title, is_published) VALUES ('00000000-0000-0000-0000-00000000c0de', 'Search', true);
INSERT INTO kc_flow.trainers (id, display_name, max_active_students)
SELECT gen_random_uuid(), 'T' || i, 10 FROM generate_series(1, 200) i;
INSERT INTO kc_flow.trainer_courses SELECT id, '00000000-0000-0000-0000-00000000c0de' FROM kc_flow.trainers;
INSERT INTO kc_flow.trainer_availability (trainer_id, weekday, start_time, end_time)
SELECT t.id, d, '00:00', '24:00' FROM kc_flow.trainers t, generate_series(1, 7) d;
\set starts_on 2031-01-01
\i bench/search/loads.sql
VACUUM ANALYZE;
SQL

# the search of stage_allocation.c, in each form this build has (load: the load of trainer r.id)
forms=$(psql -qXAt -c "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'kc_flow.trainers'::regclass
                                                  AND attname = 'active_students' AND NOT attisdropped)
                           THEN 'column' ELSE 'hint count' END")
# (the statements of stage_allocation.c, ELIGIBLE_TRAINERS_SQL, and of main before issue 9's change)
search_sql() {
  case $1 in
    column)
      cat <<'SQL'
SELECT f.id FROM (
  SELECT r.id, r.active_students AS load
    FROM unnest(ARRAY (SELECT tc.trainer_id FROM kc_flow.trainer_courses tc WHERE tc.course_id = $1)) u(id)
    JOIN kc_flow.trainers r ON r.id = u.id
   WHERE r.is_active AND r.active_students < r.max_active_students AND r.id <> ALL ($5)
   ORDER BY r.active_students, r.id OFFSET 0) c,
  LATERAL (SELECT t.id FROM kc_flow.trainers t
   WHERE t.id = c.id AND t.is_active AND t.active_students < t.max_active_students
SQL
      ;;
    hint)
      cat <<'SQL'
SELECT f.id FROM (
  SELECT r.id, u.load
    FROM (SELECT ARRAY (SELECT tc.trainer_id FROM kc_flow.trainer_courses tc WHERE tc.course_id = $1) AS ids OFFSET 0) a
    CROSS JOIN LATERAL unnest(a.ids, kc_flow.trainer_loads(a.ids)) u(id, load)
    JOIN kc_flow.trainers r ON r.id = u.id
   WHERE r.is_active AND u.load < r.max_active_students AND r.id <> ALL ($5)
   ORDER BY u.load, r.id OFFSET 0) c,
  LATERAL (SELECT t.id FROM kc_flow.trainers t
   WHERE t.id = c.id AND t.is_active
SQL
      ;;
    count)
      cat <<'SQL'
SELECT f.id FROM (
  SELECT s.id, s.load FROM (
    SELECT r.id, r.max_active_students,
           (SELECT count(*)::int FROM kc_flow.trainer_allocations a
             WHERE a.trainer_id = r.id AND a.status IN ('approved', 'active')) AS load
      FROM unnest(ARRAY (SELECT tc.trainer_id FROM kc_flow.trainer_courses tc WHERE tc.course_id = $1)) u(id)
      JOIN kc_flow.trainers r ON r.id = u.id
     WHERE r.is_active AND r.id <> ALL ($5) OFFSET 0) s
   WHERE s.load < s.max_active_students
   ORDER BY s.load, s.id OFFSET 0) c,
  LATERAL (SELECT t.id FROM kc_flow.trainers t
   WHERE t.id = c.id AND t.is_active
SQL
      ;;
  esac
  cat <<'SQL'
     AND NOT EXISTS (SELECT 1 FROM kc_flow.trainer_bookings b WHERE b.trainer_id = t.id AND b.during && $2 OFFSET 0)
     AND NOT EXISTS (SELECT 1 FROM unnest($3::timestamptz[], $4::timestamptz[]) AS pl(starts_at, ends_at)
          WHERE NOT EXISTS (
            SELECT 1 FROM kc_flow.trainer_availability av
             WHERE av.trainer_id = t.id
               AND av.weekday = extract(isodow FROM pl.starts_at AT TIME ZONE t.timezone)::int
               AND av.start_time <= (pl.starts_at AT TIME ZONE t.timezone)::time
               AND pl.ends_at AT TIME ZONE t.timezone
                   <= (pl.starts_at AT TIME ZONE t.timezone)::date + av.end_time) OFFSET 0)
   OFFSET 0 FOR NO KEY UPDATE SKIP LOCKED) f
 ORDER BY c.load, c.id LIMIT 1
SQL
}

# CPU (user + system, clock ticks of 10 ms) of the backend running N searches, each in a
# transaction of its own, rolled back
measure() {
  local form=$1
  psql -qXAt -v ON_ERROR_STOP=1 <<SQL
SET plan_cache_mode = force_generic_plan;
SET jit = off;
PREPARE search(uuid, tstzmultirange, timestamptz[], timestamptz[], uuid[]) AS $(search_sql "$form");
CREATE TEMP TABLE plan AS
SELECT range_agg(tstzrange(s, s + interval '1 hour')) AS times, array_agg(s ORDER BY s) AS starts,
       array_agg(s + interval '1 hour' ORDER BY s) AS ends
  FROM generate_series(timestamptz '2031-01-06 10:00+00', timestamptz '2031-01-06 10:00+00' + interval '9 weeks',
                       interval '1 week') s;
SELECT plan.times AS times, plan.starts AS starts, plan.ends AS ends FROM plan \gset
\o /dev/null
BEGIN; EXECUTE search('00000000-0000-0000-0000-00000000c0de', :'times', :'starts', :'ends', '{}'); ROLLBACK;
\o
SELECT split_part(pg_read_file('/proc/' || pg_backend_pid() || '/stat'), ' ', 14)::int
     + split_part(pg_read_file('/proc/' || pg_backend_pid() || '/stat'), ' ', 15)::int AS t0 \gset
\o /dev/null
$(for _ in $(seq "$searches"); do
    echo "BEGIN; EXECUTE search('00000000-0000-0000-0000-00000000c0de', :'times', :'starts', :'ends', '{}'); ROLLBACK;"
  done)
\o
SELECT format('%s: %s us per search (%s searches)', '$form',
              round(((split_part(pg_read_file('/proc/' || pg_backend_pid() || '/stat'), ' ', 14)::int
                    + split_part(pg_read_file('/proc/' || pg_backend_pid() || '/stat'), ' ', 15)::int
                    - :t0) * 10000.0 / $searches)), $searches);
SQL
}

echo "load average $(cut -d' ' -f1-3 /proc/loadavg); forms: $forms"
for form in $forms; do measure "$form"; done

# a snapshot held by another session, then churn changes of load
psql -qX -c "BEGIN ISOLATION LEVEL REPEATABLE READ" -c "SELECT pg_current_xact_id()" -c "SELECT pg_sleep(3600)" >/dev/null &
holder=$!
sleep 1
psql -qX -v ON_ERROR_STOP=1 >/dev/null <<SQL
SET synchronous_commit = off;
DO \$\$
DECLARE a uuid;
BEGIN
  FOR i IN 1..$churn / 2 LOOP
    SELECT id INTO a FROM kc_flow.trainer_allocations WHERE status = 'approved' ORDER BY random() LIMIT 1;
    UPDATE kc_flow.trainer_allocations SET status = 'completed' WHERE id = a;
    COMMIT;
    UPDATE kc_flow.trainer_allocations SET status = 'approved' WHERE id = a;
    COMMIT;
  END LOOP;
END \$\$;
SQL
echo "after $churn changes of load under a held snapshot, load average $(cut -d' ' -f1-3 /proc/loadavg):"
psql -qXAt -c "SELECT format('trainers: %s kB, %s dead versions', pg_relation_size('kc_flow.trainers') / 1024, n_dead_tup)
                 FROM pg_stat_user_tables WHERE relid = 'kc_flow.trainers'::regclass"
for form in $forms; do measure "$form"; done
