#!/usr/bin/env bash
# bench/ws/run.sh - WebSocket fan-out benchmark of kc-gateway: holds CONNECTIONS sockets
# (one per student, default 10000), emits RATE events/s (default 1000) for DURATION s
# with pgbench calling kc_flow.emit_event for random students, and reports: connections
# held, commit-to-delivery latency p50/p90/p99/max and events/s delivered (measured by the
# client, bench/ws/client.c, one epoll set per process), events delivered vs emitted, gateway RSS
# before and with the connections open, and RSS per connection. Each event's latency is also
# split in two at the time the kc_flow worker's round gave it its log position (logged_at):
# commit -> logged (the workers) and logged -> received (the round's commit and NOTIFY, the
# gateway, the client). WS_PERF=DIR adds a perf sched profile of the run's middle (below).
# Beyond what one process may open, the gateway runs as PROCESSES processes on its one port
# (kc-gateway --processes; default: as many as the per-process open-files limit calls for):
# then RSS is summed over its processes, and PSS (/proc/PID/smaps_rollup: pages the processes
# share counted once) is reported beside it.
# The open-files limits are raised for the client (ulimit -n here) and the gateway (its own
# setrlimit, --open-files); both need root above the hard limit. One loopback source
# address gives about 28,000 ports towards the gateway (ip_local_port_range), so the
# client spreads its sockets over 127.0.0.1, 127.0.0.2, ... (SOURCES to choose them), one
# per 10,000: the kernel's search for a free port slows as an address's range fills up.
# Starts its own throwaway Postgres, Redis and gateway on loopback (kc_stack_start,
# test/cluster.sh) and stops them. Takes the machine-wide benchmark lock (/tmp/kc_bench.lock).
#   CONNECTIONS=10000 RATE=1000 DURATION=20 bash bench/ws/run.sh
#   CONNECTIONS=100000 bash bench/ws/run.sh          # issue 10's target
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/bench/lock.sh"; bench_lock "$ROOT/bench/ws/run.sh" "$@"
CONNECTIONS=${CONNECTIONS:-10000}
RATE=${RATE:-1000}
DURATION=${DURATION:-20}
if [ -z "${SOURCES:-}" ]; then
    SOURCES=""
    for i in $(seq 1 $(( (CONNECTIONS + 9999) / 10000 ))); do SOURCES="$SOURCES 127.0.0.$i"; done
fi
# Without CAP_SYS_RESOURCE (e.g. in a container) the hard limit stays: then the client runs
# as several processes, and the gateway holds what its own limit allows (it says so in its log).
NOFILE=$((CONNECTIONS + 10000))
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$NOFILE" ]; then
    ulimit -Hn "$NOFILE" 2>/dev/null ||
        echo "bench/ws: the hard open-files limit stays $(ulimit -Hn) (no CAP_SYS_RESOURCE): a process holds about that many sockets"
fi
ulimit -n "$(ulimit -Hn)"
PER_CLIENT=$(( $(ulimit -n) - 1000 ))
CLIENTS=$(( (CONNECTIONS + PER_CLIENT - 1) / PER_CLIENT ))
CHUNK=$(( (CONNECTIONS + CLIENTS - 1) / CLIENTS ))     # the same share for each
# A gateway process holds its open-files limit less ~500 other descriptors; past that the
# gateway runs as several processes, 10% spare each: the kernel's SO_REUSEPORT hash spreads
# the sockets over them unevenly by a few hundred.
PER_GW=$(( $(ulimit -Hn) - 500 ))
if [ -z "${PROCESSES:-}" ]; then
    PROCESSES=1
    [ "$CONNECTIONS" -gt "$PER_GW" ] && PROCESSES=$(( (CONNECTIONS * 10 / 9 + PER_GW - 1) / PER_GW ))
fi
if [ "$PROCESSES" -gt 1 ]; then
    GW_OPTS=(KC_PROCESSES="$PROCESSES" KC_WS_MAX_CONNECTIONS="$PER_GW" KC_OPEN_FILES="$(ulimit -Hn)")
else
    GW_OPTS=(KC_WS_MAX_CONNECTIONS=$((CONNECTIONS + 100)))
fi
. "$ROOT/test/cluster.sh"

make -s -C "$ROOT" >/dev/null
make -s -C "$ROOT" install >/dev/null
WORK=$(mktemp -d /tmp/kc-wsbench.XXXXXX)
chmod 755 "$WORK"
cc -O2 -Wall -Wextra -Wno-unused-parameter -o "$WORK/client" "$ROOT/bench/ws/client.c" -lwslay -ljwt -lcjson -lcrypto
CL_PIDS=""
cleanup() {
    set +e
    for p in $CL_PIDS; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    kc_stack_stop "$WORK"
    rm -rf "$WORK"
}
trap cleanup EXIT

SECRET=bench-secret
# the settings of every earlier run (kc_stack_start's), so that the figures stay comparable; it
# returns once the workers run: since 0.2.0 an event reaches the log, and so the sockets, through
# a worker's round, and the first seconds of events would measure their restart, not the push
kc_stack_start "$WORK" kc_bench KC_JWT_SECRET="$SECRET" "${GW_OPTS[@]}"
PG_PORT=$KC_STACK_PG_PORT GW_PORT=$KC_STACK_GW_PORT
PSQL=("$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d kc_bench -X -v ON_ERROR_STOP=1 -Atq)
kc_as_postgres "${PSQL[@]}" -c "
  CREATE TABLE ws_bench_students (n int PRIMARY KEY, id uuid NOT NULL);
  WITH s AS (INSERT INTO kc_flow.students (display_name, timezone)
             SELECT 'bench ' || g, 'UTC' FROM generate_series(1, $CONNECTIONS) g RETURNING id)
  INSERT INTO ws_bench_students SELECT row_number() OVER (), id FROM s;"
kc_as_postgres "${PSQL[@]}" -c "SELECT id FROM ws_bench_students ORDER BY n" >"$WORK/students"
GW_PID=$(cat "$WORK/gw/gateway.pid")
# the gateway's processes: the one, or the supervisor and its children
gw_pids() { echo "$GW_PID" $(cat "/proc/$GW_PID/task/$GW_PID/children" 2>/dev/null); }
# "RSS PSS" in KiB, summed over the gateway's processes
mem() {
    local p rss=0 pss=0
    for p in $(gw_pids); do
        rss=$((rss + $(awk '/^Rss:/ {print $2}' "/proc/$p/smaps_rollup")))
        pss=$((pss + $(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup")))
    done
    echo "$rss $pss"
}
mib() { awk -v r="$1" -v p="$2" 'BEGIN {printf "RSS %.1f MiB (PSS %.1f MiB)", r / 1024, p / 1024}'; }
read -r RSS0 PSS0 < <(mem)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

for c in $(seq 0 $((CLIENTS - 1))); do
    first=$((c * CHUNK)); count=$((CONNECTIONS - first < CHUNK ? CONNECTIONS - first : CHUNK))
    # shellcheck disable=SC2086  # one argument per source address
    "$WORK/client" "$GW_PORT" "$SECRET" "$WORK/students" "$first" "$count" "$WORK/ready.$c" \
        "$WORK/stop" "$WORK/lat.$c" $SOURCES >"$WORK/client.$c.json" &
    CL_PIDS="$CL_PIDS $!"
done
HELD=0
for c in $(seq 0 $((CLIENTS - 1))); do
    for _ in $(seq 1 6100); do [ -s "$WORK/ready.$c" ] && break; sleep 0.1; done
    HELD=$((HELD + $(cat "$WORK/ready.$c" 2>/dev/null || echo 0)))
done
sleep 1
read -r RSS1 PSS1 < <(mem)
FDS=""
for p in $(gw_pids); do FDS="$FDS $(ls "/proc/$p/fd" | wc -l)"; done
WS_GAUGE=$(curl -s "http://127.0.0.1:$GW_PORT/metrics" | awk '$1 == "kc_ws_connections" {print $2}')
echo "bench/ws: $HELD connections open by $CLIENTS client process(es) to $PROCESSES gateway process(es) (gateway gauge $WS_GAUGE), emitting $RATE events/s for $DURATION s"

# WS_PERF=DIR: the scheduler's switches of the whole machine, WS_PERF_S (default 6) seconds from
# the middle of the run on, recorded with perf and summed per task (perf sched timehist):
# CPU time, and how long each task waited for a CPU once woken ("sch delay"); the events' own
# files (the clients' lat.N, the stamps from the database) are kept there too
if [ -n "${WS_PERF:-}" ]; then
    mkdir -p "$WS_PERF"
    ( sleep $((DURATION / 2 - ${WS_PERF_S:-6} / 2)) &&
      perf sched record -a -o "$WS_PERF/sched.data" -- sleep "${WS_PERF_S:-6}" >/dev/null 2>&1 ) &
    PERF_PID=$!
fi
kc_as_postgres "$PG_BIN/pgbench" -h 127.0.0.1 -p "$PG_PORT" -U postgres -n -c 4 -j 2 -R "$RATE" -T "$DURATION" \
    -D students="$CONNECTIONS" -f "$ROOT/bench/ws/emit.sql" kc_bench >"$WORK/pgbench.log" 2>&1 || true
[ -n "${WS_PERF:-}" ] && wait "$PERF_PID"
EMITTED=$(kc_as_postgres "${PSQL[@]}" -c "SELECT count(*) FROM kc_flow.events WHERE payload ? 'bench'")
# each event's stamps: its log position, t (the emitter's clock inside its transaction) and
# logged_at (the clock of the worker's round that gave it its position), for the breakdown below
kc_as_postgres "${PSQL[@]}" -F ' ' -c "
  SELECT l.pos, (e.payload->>'t')::float8, extract(epoch from l.logged_at)::float8
    FROM kc_flow.events e JOIN kc_flow.event_log l ON l.event_id = e.id
   WHERE e.payload ? 'bench'" >"$WORK/stamps"
read -r RSS2 PSS2 < <(mem)
sleep 3                          # the last events' way to the clients
curl -s "http://127.0.0.1:$GW_PORT/metrics" >"$WORK/metrics.after"
touch "$WORK/stop"
for p in $CL_PIDS; do wait "$p" || true; done
CL_PIDS=""
CPU=$(ps -o times= -p "$(gw_pids | tr ' ' ',')" | awk '{s += $1} END {print s}')

echo
echo "== bench/ws on $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "connections requested:        $CONNECTIONS"
echo "client results:               $(cat "$WORK"/client.*.json | tr '\n' ' ')"
echo "events emitted (committed):   $EMITTED at a target of $RATE/s ($(grep -E '^tps' "$WORK/pgbench.log" | head -1))"
echo "gateway processes:            $PROCESSES serving (descriptors open in each, supervisor first:$FDS)"
echo "gateway memory, all processes: $(mib $RSS0 $PSS0) idle, $(mib $RSS1 $PSS1) with the connections, $(mib $RSS2 $PSS2) after the run"
echo "gateway CPU time (s):         $CPU"
# where the time goes: the gateway's own histograms (bucket bounds), commit -> invalidation and
# commit -> handed to the hub (with several processes: every process's observations together)
python3 - "$WORK/metrics.after" <<'PY'
import re, sys
b = {}
for line in open(sys.argv[1]):
    m = re.match(r'(kc_(?:event|push)_lag_seconds)_bucket\{le="([^"]+)"\} (\d+)', line)
    if m:
        b.setdefault(m.group(1), []).append((float(m.group(2)), int(m.group(3))))
for name, rows in sorted(b.items()):
    total = rows[-1][1]
    q = lambda f: next((le for le, c in rows if c >= f * total), None) if total else None
    print("gateway %-22s p50 <= %s s, p99 <= %s s (%d observations)" % (name + ":", q(0.5), q(0.99), total))
PY
echo "gateway open-files limit:     $(awk '/Max open files/ {print $4}' /proc/"$(gw_pids | awk '{print $NF}')"/limits) per process"
echo "load average:                 $LOAD0 before the run, $(cut -d' ' -f1-3 /proc/loadavg) after"
grep -E '"level":"(warn|error)"' "$WORK/gw/gateway.log" | head -5 || true
python3 - "$WORK" "$CLIENTS" "$CONNECTIONS" "$RATE" "$EMITTED" "$RSS0 $PSS0" "$RSS1 $PSS1" "$LOAD0" "$PROCESSES" <<'PY'
import json, sys
work, clients = sys.argv[1], int(sys.argv[2])
res = [json.load(open("%s/client.%d.json" % (work, c))) for c in range(clients)]
rows = [l.split() for c in range(clients) for l in open("%s/lat.%d" % (work, c))]
lat = sorted(float(r[0]) for r in rows)
pct = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 2) if lat else None
held = sum(r["connections_open"] for r in res)
received = sum(r["events_received"] for r in res)
firsts = [r["first_event"] for r in res if r["first_event"]]
lasts = [r["last_event"] for r in res if r["last_event"]]
span = max(lasts) - min(firsts) if firsts and lasts else 0
(rss0, pss0), (rss1, pss1) = [[float(x) / 1024 for x in a.split()] for a in sys.argv[6:8]]
cpu = round(sum(r["client_cpu_s"] for r in res), 1)
cpu_held = round(cpu - sum(r["connect_cpu_s"] for r in res), 1)
print("latency (ms):                 p50 %s, p90 %s, p99 %s, max %s over %d events; closed by the server %d"
      % (pct(0.5), pct(0.9), pct(0.99), pct(1.0), len(lat), sum(r["closed_by_server"] for r in res)))
print("client CPU time (s):          %s in all, %s of it after every connection was open" % (cpu, cpu_held))
# the way of each event in two legs: commit -> its position in the log (the emitter's commit,
# the worker's wake-up and round), and logged -> received (the round's commit and NOTIFY, the
# listener process, the feed, the gateway process, the client's own wake-up)
stamps = {}
for l in open("%s/stamps" % work):
    pos, t, logged = l.split()
    stamps[int(pos)] = (float(t), float(logged))
legs = sorted((float(r[0]), (stamps[int(r[1])][1] - stamps[int(r[1])][0]) * 1000,
               (float(r[2]) - stamps[int(r[1])][1]) * 1000) for r in rows if int(r[1]) in stamps)
if legs:
    q = lambda v, f: round(sorted(v)[min(len(v) - 1, int(f * len(v)))], 2)
    a, b = [x[1] for x in legs], [x[2] for x in legs]
    tail = legs[int(0.99 * len(legs)):]
    print("legs (ms):                    commit -> logged p50 %s, p99 %s, max %s; logged -> received p50 %s, p99 %s, max %s"
          % (q(a, .5), q(a, .99), q(a, 1), q(b, .5), q(b, .99), q(b, 1)))
    print("the slowest 1%% (%d events, >= %.2f ms): median commit -> logged %s ms, logged -> received %s ms"
          % (len(tail), tail[0][0], q([x[1] for x in tail], .5), q([x[2] for x in tail], .5)))
print(json.dumps({"bench": "ws", "connections": int(sys.argv[3]), "held": held, "rate": int(sys.argv[4]),
                  "emitted": int(sys.argv[5]), "received": received,
                  "delivered_per_s": round(received / span, 1) if span else None,
                  "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0),
                  "gateway_processes": int(sys.argv[9]),
                  "rss_idle_mib": round(rss0, 1), "rss_mib": round(rss1, 1),
                  "pss_idle_mib": round(pss0, 1), "pss_mib": round(pss1, 1),
                  "kib_per_connection": round((rss1 - rss0) * 1024 / max(held, 1), 2),
                  "pss_kib_per_connection": round((pss1 - pss0) * 1024 / max(held, 1), 2),
                  "client_processes": clients, "client_cpu_s": cpu, "client_cpu_held_s": cpu_held,
                  "loadavg": sys.argv[8]}))
PY
[ -n "${WS_PERF:-}" ] && cp "$WORK"/lat.* "$WORK/stamps" "$WS_PERF/"
if [ -n "${WS_PERF:-}" ] && [ -s "$WS_PERF/sched.data" ]; then
    perf sched timehist -i "$WS_PERF/sched.data" 2>/dev/null >"$WS_PERF/timehist.txt" || true
    echo "perf sched, ${WS_PERF_S:-6} s from the middle of the run, per task name: CPU, and the wait for a CPU once woken"
    python3 - "$WS_PERF/timehist.txt" <<'PY'
import re, sys
by = {}
for line in open(sys.argv[1]):
    m = re.match(r"\s*[\d.]+\s+\[\d+\]\s+(.*?)\[[\d/]+\]\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$", line)
    if m:
        d = by.setdefault(m.group(1), [0.0, []])
        d[0] += float(m.group(4))
        d[1].append(float(m.group(3)))
q = lambda v, f: sorted(v)[min(len(v) - 1, int(f * len(v)))]
print("%-18s %9s %9s %10s %10s %10s" % ("task", "CPU ms", "switches", "delay p50", "p99 ms", "max ms"))
for name, (run, d) in sorted(by.items(), key=lambda kv: -kv[1][0])[:16]:
    print("%-18s %9.0f %9d %10.3f %10.3f %10.3f" % (name[:18], run, len(d), q(d, .5), q(d, .99), max(d)))
PY
fi
