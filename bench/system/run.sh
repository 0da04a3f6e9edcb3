#!/usr/bin/env bash
# bench/system/run.sh: the whole system at fixed offered loads: payment commit ->
# home JSON showing the sessions, fetched through kc-gateway right after the
# WebSocket push, beside the pipeline alone (commit -> NOTIFY).  Starts its own
# Postgres (synchronous_commit on), Redis and gateway on loopback.
# The limit beside it: pgbench doing the same writes in one transaction per purchase.
#   KC_BENCH_PURCHASES (1000)  KC_BENCH_RATES ("50 200 max"; max: saturation)
#   KC_BENCH_CONF (extra postgresql.conf lines, separated by ';')
set -euo pipefail
KC_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$KC_ROOT/bench/lock.sh"; bench_lock "$KC_ROOT/bench/system/run.sh" "$@"
cd "$KC_ROOT"
source test/cluster.sh
bash test/deps.sh test
make -s >/dev/null && make -s install >/dev/null

KC_BENCH_TMP=$(mktemp -d /tmp/kc_bench.XXXXXX)
export KC_BENCH_TMP
chmod 755 "$KC_BENCH_TMP"; chown postgres:postgres "$KC_BENCH_TMP"
export PGHOST=127.0.0.1 PGUSER=postgres PGDATABASE=kc_test KC_ROOT
PGPORT=$(kc_free_port); GW_PORT=$(kc_free_port)
export PGPORT GW_PORT
REDIS_PORT=$(kc_free_port)
export KC_JWT_SECRET=bench-system-secret
export KC_BENCH_PURCHASES=${KC_BENCH_PURCHASES:-1000}   # the limit run uses the same count
cleanup() {
  set +e
  kc_gateway_stop "$KC_BENCH_TMP/gw"
  kc_redis_stop "$KC_BENCH_TMP/redis"
  kc_pg_stop "$KC_BENCH_TMP/pg"
  rm -rf "$KC_BENCH_TMP"
}
trap cleanup EXIT

IFS=';' read -r -a extra_conf <<< "${KC_BENCH_CONF:-}"
kc_pg_init "$KC_BENCH_TMP/pg" "$PGPORT" kc_test "synchronous_commit = on" ${extra_conf[@]+"${extra_conf[@]}"}
kc_pg_start "$KC_BENCH_TMP/pg" "$PGPORT" kc_test
psql -q -X -d postgres -c "CREATE DATABASE kc_limit"
psql -q -X -d kc_limit -c "SET client_min_messages = warning" -c "CREATE EXTENSION kc_flow CASCADE"
psql -q -X -d kc_limit -f bench/pipeline/same_writes.sql
psql -q -X -d kc_limit -f bench/pipeline/mission_writes.sql
export KC_LIMIT_DB=kc_limit
kc_redis_start "$KC_BENCH_TMP/redis" "$REDIS_PORT"
kc_gateway_start "$KC_BENCH_TMP/gw" "127.0.0.1:$GW_PORT" KC_DATABASE_URL="postgresql://postgres@127.0.0.1:$PGPORT/kc_test" \
  KC_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" KC_LOG_LEVEL=warn
/usr/bin/python3 bench/system/system_bench.py
