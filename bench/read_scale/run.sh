#!/usr/bin/env bash
# bench/read_scale/run.sh: how the cost of a home-screen read (a cache miss) grows with
# data.  kc_flow.student_home() for random students, with pgbench, at SMALL students
# (default 10,000) and again after growing to LARGE (default 600,000), each student
# with a purchase, an allocation and three sessions.  Prints tps and latency, and the ratio.
set -euo pipefail
KC_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$KC_ROOT/bench/lock.sh"; bench_lock "$KC_ROOT/bench/read_scale/run.sh" "$@"
cd "$KC_ROOT"
source test/cluster.sh
bash test/deps.sh test
make -s NO_GATEWAY=1 >/dev/null && make -s install NO_GATEWAY=1 >/dev/null
SMALL=${SMALL:-10000}; LARGE=${LARGE:-600000}; SECONDS_EACH=${SECONDS_EACH:-10}

TMP=$(mktemp -d /tmp/kc_bench.XXXXXX)
chmod 755 "$TMP"; chown postgres:postgres "$TMP"
export PGHOST=127.0.0.1 PGUSER=postgres PGDATABASE=kc_test
PGPORT=$(kc_free_port)
export PGPORT
trap 'kc_pg_stop "$TMP/pg"; rm -rf "$TMP"' EXIT
kc_pg_init "$TMP/pg" "$PGPORT" kc_test "kc_flow.workers = 0" "max_wal_size = 8GB" "shared_buffers = 1GB"
kc_pg_start "$TMP/pg" "$PGPORT" kc_test
psql -q -X -f bench/read_scale/setup.sql >/dev/null

measure() {
  psql -q -X -v from="$1" -v to="$2" -f bench/read_scale/load.sql
  pgbench -n -c 4 -j 2 -T "$SECONDS_EACH" -D students="$2" -f bench/read_scale/home.sql 2>/dev/null |
    awk -v n="$2" '/latency average/ {lat = $4} /^tps/ {tps = $3} END {printf "%d %s %s\n", n, tps, lat}'
}
t0=$SECONDS
small=$(measure 1 "$SMALL")
large=$(measure $((SMALL + 1)) "$LARGE")
echo
echo "kc_flow.student_home() for random students, pgbench -c 4, ${SECONDS_EACH} s each (load took $((SECONDS - t0)) s)"
printf "%-12s %12s %18s\n" students "calls/s" "latency avg ms"
for r in "$small" "$large"; do set -- $r; printf "%-12s %12.0f %18.3f\n" "$1" "$2" "$3"; done
set -- $small; s_tps=$2; set -- $large; l_tps=$2
awk -v a="$s_tps" -v b="$l_tps" 'BEGIN {printf "ratio %d -> %d students: %.2f of the throughput\n", 0, 0, b / a}' |
  sed "s/0 -> 0/$SMALL -> $LARGE/"
printf '{"bench":"read_scale","small_students":%d,"small_calls_per_s":%s,"large_students":%d,"large_calls_per_s":%s,"ratio":%s}\n' \
  "$SMALL" "$s_tps" "$LARGE" "$l_tps" "$(awk -v a="$s_tps" -v b="$l_tps" 'BEGIN {printf "%.3f", b / a}')"
