#!/usr/bin/env bash
# bench/home/replica.sh - cache misses with and without a read replica (--replica-url), in one
# run: a primary and a hot standby made from it (pg_basebackup -R, asynchronous streaming), one
# Redis, two gateways (one without a replica, one with the standby as replica, each on its own
# Redis db), and the miss run of bench/home/run.sh (miss.lua: a different student per request)
# three times: without, with, without again (the spread of the two "without" runs is the noise
# of the machine). For each run it also counts the transactions each server ran, i.e. where
# the misses were read. Throwaway servers, stopped at the end; the last line is one JSON object.
# Settings: DURATION (s, 10), CONNECTIONS (64), THREADS (wrk threads, 2), GW_THREADS (4),
# MISS_STUDENTS (300000; each run starts 100000 further).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/test/cluster.sh"
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
GW_THREADS=${GW_THREADS:-4}
MISS_STUDENTS=${MISS_STUDENTS:-300000}
WORK=$(mktemp -d /tmp/kc-bench-replica.XXXXXX)
chmod 777 "$WORK"

cleanup() {
    set +e
    kc_gateway_stop "$WORK/gw-primary"
    kc_gateway_stop "$WORK/gw-replica"
    kc_redis_stop "$WORK/redis"
    kc_pg_stop "$WORK/standby" immediate
    kc_pg_stop "$WORK/pg" immediate
    rm -rf "$WORK"
}
trap cleanup EXIT

command -v wrk >/dev/null || { echo "bench: needs wrk (apt-get install wrk)" >&2; exit 1; }
make -s -C "$ROOT/gateway" kc-gateway
PG_PORT=$(kc_free_port); SB_PORT=$(kc_free_port); REDIS_PORT=$(kc_free_port)
GW_PORT=$(kc_free_port); GR_PORT=$(kc_free_port)
# the primary as in bench/home/run.sh
kc_pg_init "$WORK/pg" "$PG_PORT" kc_bench "kc_flow.workers = 0" "max_connections = 200" "shared_buffers = 128MB" \
    "${KC_PG_NO_FSYNC[@]}" "wal_keep_size = 1GB"
kc_pg_start "$WORK/pg" "$PG_PORT" kc_bench
psql_on() { local port=$1; shift; kc_as_postgres "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d kc_bench -v ON_ERROR_STOP=1 -Atq "$@"; }
psql_on "$PG_PORT" -f "$ROOT/scripts/demo_data.sql" >/dev/null
while [ "$(psql_on "$PG_PORT" -c 'SELECT kc_flow.run_pending(1000)')" != 0 ]; do :; done
psql_on "$PG_PORT" -c 'SELECT kc_flow.refresh_trending()' >/dev/null
psql_on "$PG_PORT" -c "INSERT INTO kc_flow.students (display_name)
           SELECT 'bench ' || g FROM generate_series(1, $MISS_STUDENTS) g" >/dev/null
psql_on "$PG_PORT" -c "SELECT id FROM kc_flow.students WHERE display_name LIKE 'bench %' ORDER BY id" >"$WORK/students.txt"
mkdir -p "$WORK/standby" && chown postgres:postgres "$WORK/standby"
kc_as_postgres "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PG_PORT" -U postgres -D "$WORK/standby/data" -R -X stream -c fast
printf "port = %s\nunix_socket_directories = '%s'\n" "$SB_PORT" "$WORK/standby" |
    kc_as_postgres tee -a "$WORK/standby/data/postgresql.conf" >/dev/null
kc_pg_start "$WORK/standby"
kc_redis_start "$WORK/redis" "$REDIS_PORT"
LSN=$(psql_on "$PG_PORT" -c "SELECT pg_current_wal_lsn()")
for _ in $(seq 1 300); do
    [ "$(psql_on "$SB_PORT" -c "SELECT pg_last_wal_replay_lsn() >= '$LSN'")" = t ] && break; sleep 0.1
done

export KC_JWT_SECRET=bench-secret
PRIMARY="postgresql://postgres@127.0.0.1:$PG_PORT/kc_bench"
kc_gateway_start "$WORK/gw-primary" "127.0.0.1:$GW_PORT" KC_THREADS="$GW_THREADS" KC_DATABASE_URL="$PRIMARY" \
    KC_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" KC_LOCAL_CACHE=0
kc_gateway_start "$WORK/gw-replica" "127.0.0.1:$GR_PORT" KC_THREADS="$GW_THREADS" KC_DATABASE_URL="$PRIMARY" \
    KC_REPLICA_URL="postgresql://postgres@127.0.0.1:$SB_PORT/kc_bench" \
    KC_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/1" KC_LOCAL_CACHE=0
ADMIN=$("$ROOT/gateway/kc-gateway" --issue-token=ops --token-role=admin)

xacts() { psql_on "$1" -c "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'kc_bench'"; }
counter() { curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n {print $2 + 0}'; }
# run NAME PORT START: prints "NAME req/s p50 p99 primary_xacts/req replica_xacts/req hits"
run() {
    local name=$1 port=$2 start=$3 p0 s0 h0 rps p50 p99 n
    p0=$(xacts "$PG_PORT"); s0=$(xacts "$SB_PORT"); h0=$(counter "$port" 'kc_cache_requests_total{route="home",outcome="hit"}')
    STUDENTS="$WORK/students.txt" TOKEN=$ADMIN THREADS=$THREADS START=$start \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$ROOT/bench/home/miss.lua" \
        "http://127.0.0.1:$port" >"$WORK/wrk-$name.txt" 2>&1
    sleep 1      # pg_stat_database is flushed by each backend within a second
    rps=$(awk '/^Requests\/sec/ {print $2}' "$WORK/wrk-$name.txt")
    p50=$(awk '$1 == "50%" {print $2}' "$WORK/wrk-$name.txt")
    p99=$(awk '$1 == "99%" {print $2}' "$WORK/wrk-$name.txt")
    n=$(awk '/requests in/ {print $1}' "$WORK/wrk-$name.txt")
    printf '%-20s %10s req/s  p50 %-9s p99 %-9s primary xacts/req %s  replica xacts/req %s  hits %s\n' "$name" "$rps" "$p50" "$p99" \
        "$(awk -v a="$(xacts "$PG_PORT")" -v b="$p0" -v n="$n" 'BEGIN { printf "%.2f", (a - b) / n }')" \
        "$(awk -v a="$(xacts "$SB_PORT")" -v b="$s0" -v n="$n" 'BEGIN { printf "%.2f", (a - b) / n }')" \
        "$(( $(counter "$port" 'kc_cache_requests_total{route="home",outcome="hit"}') - h0 ))"
    eval "RPS_$name=$rps"
}
echo "# load before the run: $(cut -d" " -f1-3 /proc/loadavg)"
echo "# replica bench: $(nproc) cores, wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, gateway threads $GW_THREADS, primary and standby on this machine"
run miss_primary "$GW_PORT" 0
run miss_replica "$GR_PORT" 100000
run miss_primary_again "$GW_PORT" 200000
echo "# replica reads $(counter "$GR_PORT" kc_replica_reads_total), fallbacks to the primary $(counter "$GR_PORT" kc_replica_fallbacks_total)"
echo "# load after the run: $(cut -d" " -f1-3 /proc/loadavg)"
best=$(awk -v a="$RPS_miss_primary" -v b="$RPS_miss_primary_again" 'BEGIN { print (a > b ? a : b) }')
ratio=$(awk -v a="$RPS_miss_replica" -v b="$best" 'BEGIN { printf "%.2f", a / b }')
echo "ratio miss_replica / miss_primary (best of two) = $ratio"
printf '{"bench":"home_replica","miss_primary_rps":%s,"miss_primary_again_rps":%s,"miss_replica_rps":%s,"ratio":%s,"replica_reads":%s,"replica_fallbacks":%s}\n' \
    "$RPS_miss_primary" "$RPS_miss_primary_again" "$RPS_miss_replica" "$ratio" \
    "$(counter "$GR_PORT" kc_replica_reads_total)" "$(counter "$GR_PORT" kc_replica_fallbacks_total)"
