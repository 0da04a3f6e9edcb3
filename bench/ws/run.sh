#!/usr/bin/env bash
# bench/ws/run.sh - WebSocket fan-out benchmark of kc-gateway: holds CONNECTIONS sockets
# (one per student, default 10000), emits RATE events/s (default 1000) for DURATION s
# with pgbench calling kc_flow.emit_event for random students, and reports: connections
# held, commit-to-delivery latency p50/p90/p99/max (measured by the client, bench/ws/client.py),
# events delivered vs emitted, gateway RSS before and with the connections open.
# Starts its own throwaway Postgres and Redis on loopback and stops them. Takes the
# machine-wide benchmark lock (/tmp/kc_bench.lock).
#   CONNECTIONS=10000 RATE=1000 DURATION=20 bash bench/ws/run.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CONNECTIONS=${CONNECTIONS:-10000}
RATE=${RATE:-1000}
DURATION=${DURATION:-20}
PY=python3; [ -x /usr/bin/python3 ] && PY=/usr/bin/python3
. "$ROOT/test/cluster.sh"

exec 9>/tmp/kc_bench.lock
echo "bench/ws: waiting for the benchmark lock..."
flock 9

make -s -C "$ROOT" >/dev/null
make -s -C "$ROOT" install >/dev/null
WORK=$(mktemp -d /tmp/kc-wsbench.XXXXXX)
chmod 755 "$WORK"
CL_PID=
cleanup() {
    set +e
    [ -n "$CL_PID" ] && kill "$CL_PID" 2>/dev/null && wait "$CL_PID" 2>/dev/null
    kc_gateway_stop "$WORK/gw"
    kc_redis_stop "$WORK/redis"
    kc_pg_stop "$WORK/pg" immediate
    rm -rf "$WORK"
}
trap cleanup EXIT

PG_PORT=$(kc_free_port); REDIS_PORT=$(kc_free_port); GW_PORT=$(kc_free_port)
# the settings of every earlier run, so that the figures stay comparable
kc_pg_init "$WORK/pg" "$PG_PORT" kc_bench "max_connections = 200" "shared_buffers = 128MB" "${KC_PG_NO_FSYNC[@]}"
kc_pg_start "$WORK/pg" "$PG_PORT" kc_bench
kc_redis_start "$WORK/redis" "$REDIS_PORT"
PSQL=("$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d kc_bench -X -v ON_ERROR_STOP=1 -Atq)
kc_as_postgres "${PSQL[@]}" -c "
  CREATE TABLE ws_bench_students (n int PRIMARY KEY, id uuid NOT NULL);
  WITH s AS (INSERT INTO kc_flow.students (display_name, timezone)
             SELECT 'bench ' || g, 'UTC' FROM generate_series(1, $CONNECTIONS) g RETURNING id)
  INSERT INTO ws_bench_students SELECT row_number() OVER (), id FROM s;"
kc_as_postgres "${PSQL[@]}" -c "SELECT id FROM ws_bench_students ORDER BY n" >"$WORK/students"
# Since 0.2.0 an event reaches the log, and so the sockets, through a worker's round. The
# workers started before kc_bench existed and come back some seconds later: wait for them, or
# the first seconds of events would measure their restart, not the push.
for _ in $(seq 1 300); do
    [ "$(kc_as_postgres "${PSQL[@]}" -c "SELECT count(*) > 0 AND bool_and(pid <> 0) FROM kc_flow.worker_status()")" = t ] && break
    sleep 0.1
done

SECRET=bench-secret
kc_gateway_start "$WORK/gw" "127.0.0.1:$GW_PORT" KC_DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/kc_bench" \
    KC_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" KC_JWT_SECRET="$SECRET" KC_WS_MAX_CONNECTIONS=$((CONNECTIONS + 100))
GW_PID=$(cat "$WORK/gw/gateway.pid")
rss() { awk '/VmRSS/ {print $2 / 1024 " MiB"}' /proc/$GW_PID/status; }
RSS0=$(rss)

"$PY" "$ROOT/bench/ws/client.py" "$GW_PORT" "$SECRET" "$WORK/students" "$CONNECTIONS" "$WORK/ready" \
    $((DURATION + 5)) >"$WORK/client.json" &
CL_PID=$!
for _ in $(seq 1 1200); do [ -s "$WORK/ready" ] && break; sleep 0.1; done
HELD=$(cat "$WORK/ready" 2>/dev/null || echo 0)
sleep 1
RSS1=$(rss)
WS_GAUGE=$(curl -s "http://127.0.0.1:$GW_PORT/metrics" | awk '$1 == "kc_ws_connections" {print $2}')
echo "bench/ws: $HELD connections open (gateway gauge $WS_GAUGE), emitting $RATE events/s for $DURATION s"

kc_as_postgres "$PG_BIN/pgbench" -h 127.0.0.1 -p "$PG_PORT" -U postgres -n -c 4 -j 2 -R "$RATE" -T "$DURATION" \
    -D students="$CONNECTIONS" -f "$ROOT/bench/ws/emit.sql" kc_bench >"$WORK/pgbench.log" 2>&1 || true
EMITTED=$(kc_as_postgres "${PSQL[@]}" -c "SELECT count(*) FROM kc_flow.events WHERE payload ? 'bench'")
RSS2=$(rss)
wait "$CL_PID" || true
CL_PID=
CPU=$(ps -o times= -p "$GW_PID")

echo
echo "== bench/ws on $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "connections requested:        $CONNECTIONS"
echo "client result:                $(cat "$WORK/client.json")"
echo "events emitted (committed):   $EMITTED at a target of $RATE/s ($(grep -E '^tps' "$WORK/pgbench.log" | head -1))"
echo "gateway RSS:                  $RSS0 idle, $RSS1 with the connections, $RSS2 after the run"
echo "gateway CPU time (s):         $CPU"
grep -E '"level":"(warn|error)"' "$WORK/gw/gateway.log" | head -5 || true
python3 - "$WORK/client.json" "$CONNECTIONS" "$RATE" "$EMITTED" "$RSS0" "$RSS1" <<'PY'
import json, sys
client = json.load(open(sys.argv[1]))
held, rss1 = client["connections_open"], float(sys.argv[6].split()[0])
print(json.dumps({"bench": "ws", "connections": int(sys.argv[2]), "held": held, "rate": int(sys.argv[3]),
                  "emitted": int(sys.argv[4]), "received": client["events_received"],
                  "p50_ms": client["latency_ms"]["p50"], "p99_ms": client["latency_ms"]["p99"],
                  "rss_idle_mib": round(float(sys.argv[5].split()[0]), 1), "rss_mib": round(rss1, 1),
                  "kib_per_connection": round((rss1 - float(sys.argv[5].split()[0])) * 1024 / max(held, 1), 1)}))
PY
