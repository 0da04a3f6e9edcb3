#!/usr/bin/env bash
# bench/search/auto_assign_cpu.sh: the allocation stage on its own, as CPU: the backend's user +
# system time (from /proc) per kc_flow.auto_assign() call, each rolled back, on a throwaway
# cluster: 200 trainers of one course (capacity 20, Europe/Berlin, 07:00-22:00 daily, loads 0-5
# from approved allocations) and 200 probe purchases (tiers 10/20/30, varied weekdays and hours,
# as bench/pipeline's allocation run). Builds and installs this checkout first.
#   --calls N (2000)
set -euo pipefail
KC_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$KC_ROOT/bench/lock.sh"; bench_lock "$KC_ROOT/bench/search/auto_assign_cpu.sh" "$@"
cd "$KC_ROOT"
n=2000
while [ $# -gt 0 ]; do
  case $1 in
    --calls) n=$2; shift 2 ;;
    *) echo "usage: $0 [--calls N]" >&2; exit 2 ;;
  esac
done
source test/cluster.sh
make -s NO_GATEWAY=1 >/dev/null && make -s install NO_GATEWAY=1 >/dev/null

tmp=$(mktemp -d /tmp/kc_assign.XXXXXX); chmod 755 "$tmp"; chown postgres:postgres "$tmp"
export PGHOST=127.0.0.1 PGUSER=postgres PGDATABASE=kc_cpu
PGPORT=$(kc_free_port); export PGPORT
trap 'kc_pg_stop "$tmp" >/dev/null 2>&1; rm -rf "$tmp"' EXIT
kc_pg_init "$tmp" "$PGPORT" kc_idle "autovacuum = off" >/dev/null
kc_pg_start "$tmp" "$PGPORT" kc_idle >/dev/null
echo "load average $(cut -d' ' -f1-3 /proc/loadavg)"
psql -qX -d postgres -c "CREATE DATABASE kc_cpu"
psql -qX -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION kc_flow CASCADE;
SELECT setseed(0.42);
INSERT INTO kc_flow.courses (id, title, session_minutes, is_published) VALUES ('00000000-0000-0000-0000-00000000c0de', 'CPU', 45, true);
INSERT INTO kc_flow.trainers (id, display_name, timezone, max_active_students)
SELECT md5('t' || i)::uuid, 'T' || i, 'Europe/Berlin', 20 FROM generate_series(1, 200) i;
INSERT INTO kc_flow.trainer_courses SELECT id, '00000000-0000-0000-0000-00000000c0de' FROM kc_flow.trainers;
INSERT INTO kc_flow.trainer_availability (trainer_id, weekday, start_time, end_time)
SELECT t.id, d, '07:00', '22:00' FROM kc_flow.trainers t, generate_series(1, 7) d;
\set starts_on 2041-01-01
\i bench/search/loads.sql
CREATE TABLE probe (i int PRIMARY KEY, purchase_id uuid);
WITH s AS (INSERT INTO kc_flow.students (display_name, timezone)
           SELECT 'probe ' || g, 'Europe/Berlin' FROM generate_series(0, 199) g RETURNING id),
n AS (SELECT id, row_number() OVER () - 1 AS i FROM s),
p AS (INSERT INTO kc_flow.payments (student_id, course_id, amount_cents, purchase_tier, time_slot)
      SELECT n.id, '00000000-0000-0000-0000-00000000c0de', 100, (ARRAY[10, 20, 30])[1 + n.i % 3],
             jsonb_build_object('weekdays', jsonb_build_array(1 + n.i % 7),
                                'start', lpad((7 + (n.i / 7) % 14)::text, 2, '0') || ':00',
                                'timezone', 'Europe/Berlin', 'starts_on', '2031-01-06')
        FROM n RETURNING id, student_id, course_id, purchase_tier),
pu AS (INSERT INTO kc_flow.student_course_purchases (payment_id, student_id, course_id, purchase_tier)
       SELECT id, student_id, course_id, purchase_tier FROM p RETURNING id, student_id)
INSERT INTO probe SELECT n.i, pu.id FROM pu JOIN n ON n.id = pu.student_id;
VACUUM ANALYZE;
SQL
psql -qXAt -v ON_ERROR_STOP=1 <<SQL
SET client_min_messages = warning;
\o /dev/null
$(for i in $(seq 0 199); do echo "BEGIN; SELECT kc_flow.auto_assign(purchase_id) FROM probe WHERE i = $i; ROLLBACK;"; done)
\o
SELECT split_part(pg_read_file('/proc/' || pg_backend_pid() || '/stat'), ' ', 14)::int
     + split_part(pg_read_file('/proc/' || pg_backend_pid() || '/stat'), ' ', 15)::int AS t0 \gset
\o /dev/null
$(for k in $(seq 1 "$n"); do echo "BEGIN; SELECT kc_flow.auto_assign(purchase_id) FROM probe WHERE i = $((k % 200)); ROLLBACK;"; done)
\o
SELECT format('%s us CPU per auto_assign (%s calls, rolled back), found %s of 200', 
              round(((split_part(pg_read_file('/proc/' || pg_backend_pid() || '/stat'), ' ', 14)::int
                    + split_part(pg_read_file('/proc/' || pg_backend_pid() || '/stat'), ' ', 15)::int
                    - :t0) * 10000.0 / $n)), $n,
              (SELECT count(*) FROM probe WHERE kc_flow.auto_assign(purchase_id) IS NOT NULL));
SQL
