#!/usr/bin/env bash
# bench/pipeline/run.sh: the pipeline benchmark.  Starts its own cluster
# (kc_flow preloaded, synchronous_commit on), measures the limit with pgbench
# and then the pipeline, and prints a table with the ratio.
#   KC_BENCH_CONF (extra postgresql.conf lines)  KC_BENCH_PURCHASES (2000)  KC_BENCH_CLIENTS (8)  KC_BENCH_RATES ("100 300": offered loads, purchases/s)
#   KC_BENCH_PROFILE (a file: perf profile of the workers at saturation, see pipeline_bench.py)
#   KC_BENCH_PROFILE_RATE (profile the run at this offered load instead)
set -euo pipefail
KC_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$KC_ROOT/bench/lock.sh"; bench_lock "$KC_ROOT/bench/pipeline/run.sh" "$@"
cd "$KC_ROOT"
source test/cluster.sh
bash test/deps.sh test
make -s NO_GATEWAY=1 >/dev/null && make -s install NO_GATEWAY=1 >/dev/null

KC_BENCH_TMP=$(mktemp -d /tmp/kc_bench.XXXXXX)
export KC_BENCH_TMP
chmod 755 "$KC_BENCH_TMP"; chown postgres:postgres "$KC_BENCH_TMP"
export PGHOST=127.0.0.1 PGUSER=postgres PGDATABASE=kc_test KC_LIMIT_DB=kc_limit KC_ROOT
PGPORT=$(kc_free_port)
export PGPORT
trap 'kc_pg_stop "$KC_BENCH_TMP/pg"; rm -rf "$KC_BENCH_TMP"' EXIT

# KC_BENCH_CONF: extra postgresql.conf lines, separated by ';' (e.g. "kc_flow.batch_size = 4")
IFS=';' read -r -a extra_conf <<< "${KC_BENCH_CONF:-}"
kc_pg_init "$KC_BENCH_TMP/pg" "$PGPORT" kc_test "synchronous_commit = on" "max_wal_size = 4GB" \
  "checkpoint_timeout = 30min" ${extra_conf[@]+"${extra_conf[@]}"}
kc_pg_start "$KC_BENCH_TMP/pg" "$PGPORT" kc_test
psql -q -X -d postgres -c "CREATE DATABASE kc_limit"
psql -q -X -d kc_limit -c "SET client_min_messages = warning" -c "CREATE EXTENSION kc_flow CASCADE"
psql -q -X -d kc_limit -f bench/pipeline/same_writes.sql
psql -q -X -d kc_limit -f bench/pipeline/mission_writes.sql
/usr/bin/python3 bench/pipeline/pipeline_bench.py
