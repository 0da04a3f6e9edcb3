#!/usr/bin/env bash
# bench/home/run.sh - the home endpoint under load, next to two baselines, in one run:
#   1. trivial: a bare libmicrohttpd server (bench/home/trivial.c) returning the same body
#   2. kc-gateway GET /api/v1/students/{id}/home, cache HIT from Redis (KC_LOCAL_CACHE=0): HIT_STUDENTS students
#      in turn, each with its own token (bench/home/hit.lua), every view cached beforehand
#   3. the gateway in its default configuration (in-process cache on): the HIT is served
#      from the gateway's memory
#   4. kc-gateway, cache MISS (a different student per request: Postgres read + fenced fill),
#      at CONNECTIONS and at MISS_LOW_CONNECTIONS
#   5. redis-benchmark GET/SET of a value the size of the home body
# and prints the ratios. Everything runs on this machine on loopback, in throwaway servers
# (Postgres without background workers, Redis without persistence) that are stopped at the end.
# The trivial server and both gateways get the same HTTP thread count and libmicrohttpd
# settings and the same requests (paths and tokens); wrk keeps connections alive on both; the
# trivial server's body is the gateway's home body of a student of the hit run, sent with the
# same headers as the gateway's. The last line of the output is one JSON object holding the
# figures.
# Settings: DURATION (s, default 10), CONNECTIONS (64), THREADS (wrk threads, 2),
# GW_THREADS (gateway and trivial server threads, 4), MISS_STUDENTS (400000),
# MISS_LOW_CONNECTIONS (8), HIT_STUDENTS (10000), LOCAL_CACHE (students kept in process by the
# second gateway; default: the gateway's own default), PIN (0; 1: wrk on CPU 0, the
# trivial server and the gateways on CPU 1, so the load generator does not steal the
# servers' CPU: on a 2-core machine that contention, not the server, sets p99).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/test/cluster.sh"
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
GW_THREADS=${GW_THREADS:-4}
MISS_STUDENTS=${MISS_STUDENTS:-400000}
MISS_LOW_CONNECTIONS=${MISS_LOW_CONNECTIONS:-8}
HIT_STUDENTS=${HIT_STUDENTS:-10000}
LOCAL_CACHE=${LOCAL_CACHE:-}
PIN=${PIN:-0}
if [ "$PIN" = 1 ]; then
    [ "$(nproc)" -ge 2 ] || { echo "bench: PIN=1 needs 2 CPUs" >&2; exit 1; }
    PIN_CLIENT="taskset -c 0"; PIN_SERVER="taskset -c 1"
else
    PIN_CLIENT=""; PIN_SERVER=""
fi
WORK=$(mktemp -d /tmp/kc-bench-home.XXXXXX)
chmod 777 "$WORK"
TR_PID=

cleanup() {
    set +e
    [ -n "$TR_PID" ] && kill "$TR_PID" 2>/dev/null && wait "$TR_PID" 2>/dev/null
    kc_gateway_stop "$WORK/gw"
    kc_gateway_stop "$WORK/gw-local"
    kc_redis_stop "$WORK/redis"
    kc_pg_stop "$WORK/pg" immediate
    rm -rf "$WORK"
}
trap cleanup EXIT

command -v wrk >/dev/null && command -v redis-benchmark >/dev/null || {
    echo "bench: needs wrk and redis-benchmark (apt-get install wrk redis-tools)" >&2; exit 1; }
make -s -C "$ROOT/gateway" kc-gateway
cc -O2 -Wall -Wextra -o "$WORK/trivial" "$ROOT/bench/home/trivial.c" -lmicrohttpd -pthread

PG_PORT=$(kc_free_port); REDIS_PORT=$(kc_free_port); GW_PORT=$(kc_free_port); TR_PORT=$(kc_free_port)
LC_PORT=$(kc_free_port)
# the settings of every earlier run, so that the figures stay comparable
kc_pg_init "$WORK/pg" "$PG_PORT" kc_bench "kc_flow.workers = 0" "max_connections = 200" "shared_buffers = 128MB" \
    "${KC_PG_NO_FSYNC[@]}"
kc_pg_start "$WORK/pg" "$PG_PORT" kc_bench
kc_redis_start "$WORK/redis" "$REDIS_PORT"
psql_q() { kc_as_postgres "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d kc_bench -v ON_ERROR_STOP=1 -Atq "$@"; }
psql_q -f "$ROOT/scripts/demo_data.sql" >/dev/null
while [ "$(psql_q -c 'SELECT kc_flow.run_pending(1000)')" != 0 ]; do :; done
psql_q -c 'SELECT kc_flow.refresh_trending()' >/dev/null
psql_q -c "INSERT INTO kc_flow.students (display_name)
           SELECT 'bench ' || g FROM generate_series(1, $MISS_STUDENTS) g" >/dev/null
psql_q -c "SELECT id FROM kc_flow.students WHERE display_name LIKE 'bench %' ORDER BY id" >"$WORK/students.txt"

SECRET=bench-secret
STUDENT=11111111-1111-4111-8111-111111111111
export KC_JWT_SECRET=$SECRET
export KC_DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/kc_bench" KC_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
kc_gateway_start "$WORK/gw" "127.0.0.1:$GW_PORT" KC_THREADS="$GW_THREADS" KC_LOG_LEVEL="${KC_LOG_LEVEL:-info}" \
    KC_LOCAL_CACHE=0
kc_gateway_start "$WORK/gw-local" "127.0.0.1:$LC_PORT" KC_THREADS="$GW_THREADS" KC_LOG_LEVEL="${KC_LOG_LEVEL:-info}" \
    ${LOCAL_CACHE:+KC_LOCAL_CACHE="$LOCAL_CACHE"}
if [ "$PIN" = 1 ]; then     # every thread of both gateways, before any load
    for g in gw gw-local; do taskset -a -p -c 1 "$(cat "$WORK/$g/gateway.pid")" >/dev/null; done
fi
TOKEN=$("$ROOT/gateway/kc-gateway" --issue-token=$STUDENT)
ADMIN=$("$ROOT/gateway/kc-gateway" --issue-token=ops --token-role=admin)
synced() { curl -sf "http://127.0.0.1:$1/readyz" | grep -q '"cache_synced":true'; }
for _ in $(seq 1 100); do synced "$GW_PORT" && synced "$LC_PORT" && break; sleep 0.1; done
URL="http://127.0.0.1:$GW_PORT/api/v1/students/$STUDENT/home"
curl -sf -H "Authorization: Bearer $TOKEN" "$URL" >"$WORK/body.json"
HIT_CHECK=$(curl -s -o /dev/null -D - -H "Authorization: Bearer $TOKEN" "$URL" | tr -d '\r' | awk '/^X-Cache/ {print $2}')
[ "$HIT_CHECK" = HIT ] || { echo "bench: expected a cache HIT, got '$HIT_CHECK'" >&2; exit 1; }
LC_URL="http://127.0.0.1:$LC_PORT/api/v1/students/$STUDENT/home"
curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" "$LC_URL"
HIT_CHECK=$(curl -s -o /dev/null -D - -H "Authorization: Bearer $TOKEN" "$LC_URL" | tr -d '\r' | awk '/^X-Cache/ {print $2}')
[ "$HIT_CHECK" = HIT ] || { echo "bench: expected a cache HIT (local), got '$HIT_CHECK'" >&2; exit 1; }
# the hit run's students: the last HIT_STUDENTS bench students (the miss runs start at the
# first), each with its own token, every home cached in both gateways beforehand
tail -n "$HIT_STUDENTS" "$WORK/students.txt" >"$WORK/hit_ids.txt"
python3 "$ROOT/bench/home/tokens.py" "$SECRET" "$WORK/hit_ids.txt" "$WORK/pairs.txt"
python3 - "$WORK/pairs.txt" "$GW_PORT" "$LC_PORT" "$WORK/body.json" <<'PY'
import http.client, sys
pairs = [l.split() for l in open(sys.argv[1])]
for port in sys.argv[2:4]:
    c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=30)
    for sid, tok in pairs:
        c.request("GET", "/api/v1/students/%s/home" % sid, headers={"Authorization": "Bearer " + tok})
        r = c.getresponse(); body = r.read()
        if r.status != 200:
            sys.exit("bench: warming %s on port %s: %d %s" % (sid, port, r.status, body[:200]))
    c.close()
open(sys.argv[4], "wb").write(body)     # a hit student's home: the trivial server's body
PY
export PAIRS="$WORK/pairs.txt"
home_count() { curl -s "http://127.0.0.1:$1/metrics" | awk -v o="$2" '$1 == "kc_cache_requests_total{route=\"home\",outcome=\"" o "\"}" {print $2}'; }
BODY_BYTES=$(wc -c <"$WORK/body.json")
$PIN_SERVER "$WORK/trivial" "$TR_PORT" "$GW_THREADS" "$WORK/body.json" &
TR_PID=$!
sleep 0.3

# run_wrk NAME ARGS...: prints "NAME req/s p50 p99" and keeps wrk's output (CONNS overrides -c)
run_wrk() {
    local name=$1; shift
    $PIN_CLIENT wrk -t"$THREADS" -c"${CONNS:-$CONNECTIONS}" -d"${DURATION}s" --latency "$@" >"$WORK/wrk-$name.txt" 2>&1
    local rps p50 p99 errs
    rps=$(awk '/^Requests\/sec/ {print $2}' "$WORK/wrk-$name.txt")
    p50=$(awk '$1 == "50%" {print $2}' "$WORK/wrk-$name.txt")
    p99=$(awk '$1 == "99%" {print $2}' "$WORK/wrk-$name.txt")
    errs=$(awk '/Non-2xx|Socket errors/ {print}' "$WORK/wrk-$name.txt" | tr '\n' ' ')
    printf '%-22s %12s req/s   p50 %-9s p99 %-9s c%-4s %s\n' "$name" "$rps" "$p50" "$p99" "${CONNS:-$CONNECTIONS}" "$errs"
    eval "RPS_$name=$rps"
}

echo "# load before the run: $(cut -d" " -f1-3 /proc/loadavg)"
echo "# home bench: $(nproc) cores, wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, gateway/trivial threads $GW_THREADS, body $BODY_BYTES bytes, gateway log level ${KC_LOG_LEVEL:-info}, local cache ${LOCAL_CACHE:-default}, pin $PIN"
run_wrk trivial -s "$ROOT/bench/home/hit.lua" "http://127.0.0.1:$TR_PORT"
miss0=$(home_count "$GW_PORT" miss); lmiss0=$(home_count "$LC_PORT" miss)
run_wrk gateway_hit -s "$ROOT/bench/home/hit.lua" "http://127.0.0.1:$GW_PORT"
run_wrk gateway_hit_local -s "$ROOT/bench/home/hit.lua" "http://127.0.0.1:$LC_PORT"
HIT_MISSES=$(( $(home_count "$GW_PORT" miss) - miss0 + $(home_count "$LC_PORT" miss) - lmiss0 ))
echo "# hit runs: $HIT_STUDENTS students with a token each; requests that missed the cache: $HIT_MISSES"
before=$(curl -s "http://127.0.0.1:$GW_PORT/metrics" | awk '/^kc_cache_requests_total\{route="home"/ {printf "%s=%s ", $1, $2}')
mhit0=$(home_count "$GW_PORT" hit)
STUDENTS="$WORK/students.txt" TOKEN=$ADMIN THREADS=$THREADS run_wrk gateway_miss \
    -s "$ROOT/bench/home/miss.lua" "http://127.0.0.1:$GW_PORT"
misses=$(curl -s "http://127.0.0.1:$GW_PORT/metrics" | awk '/^kc_cache_requests_total\{route="home",outcome="miss"/ {print $2}')
CONNS=$MISS_LOW_CONNECTIONS START=$((misses * 2 + 1000)) STUDENTS="$WORK/students.txt" TOKEN=$ADMIN THREADS=$THREADS run_wrk gateway_miss_low \
    -s "$ROOT/bench/home/miss.lua" "http://127.0.0.1:$GW_PORT"
after=$(curl -s "http://127.0.0.1:$GW_PORT/metrics" | awk '/^kc_cache_requests_total\{route="home"/ {printf "%s=%s ", $1, $2}')
echo "#   cache counters before miss run: $before"
echo "#   cache counters after miss run:  $after"
MISS_RUN_HITS=$(( $(home_count "$GW_PORT" hit) - mhit0 ))
if [ "$MISS_RUN_HITS" -gt 0 ]; then
    echo "# WARNING: $MISS_RUN_HITS requests of the miss runs hit the cache (MISS_STUDENTS=$MISS_STUDENTS is too few"
    echo "#          for this run's length): the miss figures below are not misses"
fi
redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -c "$CONNECTIONS" -n 300000 -d "$BODY_BYTES" -t get,set --csv \
    >"$WORK/redis.csv" 2>/dev/null
RPS_redis_get=$(awk -F'"' '$2 == "GET" {print $4}' "$WORK/redis.csv")
RPS_redis_set=$(awk -F'"' '$2 == "SET" {print $4}' "$WORK/redis.csv")
printf '%-22s %12s req/s\n%-22s %12s req/s\n' redis_get "$RPS_redis_get" redis_set "$RPS_redis_set"
# the baseline again: the spread between the two trivial runs is the noise of this machine
run_wrk trivial_again -s "$ROOT/bench/home/hit.lua" "http://127.0.0.1:$TR_PORT"
RPS_trivial=$(awk -v a="$RPS_trivial" -v b="$RPS_trivial_again" 'BEGIN { print (a > b ? a : b) }')

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
echo "ratio gateway_hit / trivial     = $(ratio "$RPS_gateway_hit" "$RPS_trivial")   (Redis hit, KC_LOCAL_CACHE=0; best of the two trivial runs)"
echo "ratio gateway_hit_local / trivial = $(ratio "$RPS_gateway_hit_local" "$RPS_trivial")   (in-process hit, the default configuration; target >= 0.70)"
echo "ratio gateway_miss / gateway_hit = $(ratio "$RPS_gateway_miss" "$RPS_gateway_hit")"
echo "ratio gateway_hit / redis_get   = $(ratio "$RPS_gateway_hit" "$RPS_redis_get")"
for n in trivial trivial_again gateway_hit gateway_hit_local gateway_miss gateway_miss_low; do
    echo "$n p99 = $(awk '$1 == "99%" {print $2}' "$WORK/wrk-$n.txt") (target < 5ms)"
done
p99ms() { awk '$1 == "99%" { v = $2; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v) }
                              else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 }; print v + 0 }' "$WORK/wrk-$1.txt"; }
printf '{"bench":"home","default_hit":"in_process","students":%d,"hit_rps":%s,"hit_local_rps":%s,"limit_rps":%s,"ratio":%s,"ratio_local":%s,' \
    "$HIT_STUDENTS" "$RPS_gateway_hit" "$RPS_gateway_hit_local" "$RPS_trivial" \
    "$(ratio "$RPS_gateway_hit" "$RPS_trivial")" "$(ratio "$RPS_gateway_hit_local" "$RPS_trivial")"
printf '"hit_misses":%d,"miss_run_hits":%d,"p99_ms":%s,"p99_local_ms":%s,"limit_p99_ms":%s,"miss_rps":%s,"miss_p99_ms":%s,"redis_get_rps":%s}\n' \
    "$HIT_MISSES" "$MISS_RUN_HITS" "$(p99ms gateway_hit)" "$(p99ms gateway_hit_local)" "$(p99ms trivial)" "$RPS_gateway_miss" \
    "$(p99ms gateway_miss)" "$RPS_redis_get"
