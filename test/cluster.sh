#!/usr/bin/env bash
# test/cluster.sh - the one helper library for throwaway servers: PostgreSQL clusters,
# Redis servers and kc-gateway, for the test suites, the fault tests, the benchmarks and
# `make run`. Source it; it sets no shell option and starts nothing by itself. Every
# function returns non-zero on failure (with the reason on stderr), so it works with and
# without `set -e`, and under `set -u`.
#
# Postgres and Redis run as the postgres user (Postgres refuses root) in directories that
# user owns, on 127.0.0.1 only, each in a session of its own (setsid), so a Ctrl-C meant
# for the caller does not reach them: the caller stops them. Each kc_*_stop stops exactly
# the server the matching kc_*_start started, by the pid that server wrote into its DIR.
# PG_BIN (default /usr/lib/postgresql/15/bin) picks the Postgres programs.
#
#   kc_as_postgres CMD [ARG...]
#       runs CMD as the postgres user when we are root, else as ourselves.
#   kc_free_port
#       prints a TCP port on 127.0.0.1 that nothing is bound to, picked at random below
#       the kernel's ephemeral range (outgoing connections do not take it meanwhile, and
#       concurrent test runs rarely pick the same).
#   kc_pg_init DIR PORT DB [CONF-LINE...]
#       makes a new cluster in DIR/data (DIR is created and given to postgres): UTF8, locale
#       C.UTF-8, trust authentication, port PORT, socket in DIR, kc_flow preloaded with 2
#       workers on database DB, then each CONF-LINE appended to postgresql.conf, where a
#       later line wins ("kc_flow.workers = 0", "shared_preload_libraries = ''"). Durability
#       is Postgres's default (fsync on); "${KC_PG_NO_FSYNC[@]}" trades it for speed where
#       only processes are ever killed, never the machine. Does not start the cluster.
#   kc_pg_start DIR [PORT DB]
#       starts the cluster of DIR (log: DIR/postgres.log). With PORT (the cluster's port)
#       and DB, also creates database DB with kc_flow in it, unless DB exists.
#   kc_pg_stop DIR [MODE]
#       stops the cluster of DIR, MODE fast (default), smart or immediate; nothing to do
#       when it is not running.
#   kc_redis_start DIR PORT [persist]
#       starts a Redis on 127.0.0.1:PORT, its files in DIR (pid: DIR/redis.pid, log:
#       DIR/redis.log); with "persist" it keeps its data across restarts in an append-only
#       file, as a production Redis would. Returns once it answers PING.
#   kc_redis_stop DIR
#       stops the Redis of DIR (SIGTERM, SIGKILL after 5 s).
#   kc_gateway_start DIR ADDR [NAME=VALUE...]
#       starts kc-gateway ($KC_GATEWAY_BIN, default gateway/kc-gateway of this tree) in the
#       background of the calling shell, as the calling user, listening on ADDR (host:port),
#       with the caller's environment plus the NAME=VALUE settings (KC_DATABASE_URL,
#       KC_REDIS_URL, KC_JWT_SECRET, KC_THREADS, ...); log DIR/gateway.log, pid
#       DIR/gateway.pid. Returns once /readyz answers 200 (at most 10 s). Call it directly,
#       not inside $(...), so that kc_gateway_stop can collect its exit status.
#   kc_gateway_running DIR
#       true while the gateway of DIR runs (neither exited nor a zombie). The gateway
#       functions act on the pid in DIR/gateway.pid only while it is a kc-gateway.
#   kc_gateway_stop DIR
#       stops the gateway of DIR (SIGTERM, which drains; SIGKILL after 30 s) and returns its
#       exit status (0: a clean exit) when it is a child of this shell, else 0.
#   kc_stack_start DIR DB [NAME=VALUE...]
#       the servers of a benchmark, each on a free port of 127.0.0.1: a cluster in DIR/pg
#       (kc_flow in DB, "${KC_PG_NO_FSYNC[@]}", max_connections 200, shared_buffers 128MB, the
#       settings every earlier benchmark run had), a Redis in DIR/redis and kc-gateway in DIR/gw
#       with KC_DATABASE_URL and KC_REDIS_URL set for them plus the NAME=VALUE settings. Returns
#       once kc_flow's workers have attached to DB (they start before DB exists and come back
#       some seconds later), so that a measurement does not time their restart. Sets
#       KC_STACK_PG_PORT, KC_STACK_GW_PORT and KC_STACK_DB_URL in the calling shell: call it
#       directly, not inside $(...).
#   kc_stack_stop DIR
#       stops what kc_stack_start started in DIR (the cluster in immediate mode: its data is
#       thrown away).

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
KC_LIB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# postgresql.conf lines for a cluster that may lose its data with the machine (tests of
# process crashes, benchmarks of the gateway, the demo): commits stay synchronous, so a
# crashed server process loses no acknowledged commit; only an operating-system crash could.
# shellcheck disable=SC2034  # used by the scripts that source this file
KC_PG_NO_FSYNC=("fsync = off" "full_page_writes = off" "synchronous_commit = on")

kc_as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

kc_free_port() {
    python3 - <<'PY'
import random, socket
lo, hi = 20000, 32000
with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
    hi = min(hi, int(f.read().split()[0]))
for _ in range(1000):
    port = random.randrange(lo, hi)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
else:
    raise SystemExit("kc_free_port: no free port in %d..%d" % (lo, hi))
PY
}

# _kc_own_dir DIR: creates DIR and gives it to postgres (when we are root).
_kc_own_dir() {
    mkdir -p "$1" || return 1
    if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$1" || return 1; fi
}

# _kc_alive PID [COMM]: true while PID runs (a zombie does not), as COMM when given.
_kc_alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    [ -z "${2:-}" ] || [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ] || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

# _kc_usage N USAGE ARGS...: fails with USAGE unless there are at least N ARGS.
_kc_usage() {
    local n=$1 usage=$2
    shift 2
    [ $# -ge "$n" ] && return 0
    echo "usage: $usage" >&2
    return 2
}

kc_pg_init() {
    _kc_usage 3 "kc_pg_init DIR PORT DB [CONF-LINE...]" "$@" || return
    local dir=$1 port=$2 db=$3 line
    shift 3
    if [ -e "$dir/data/PG_VERSION" ]; then
        echo "kc_pg_init: $dir already holds a cluster" >&2; return 1
    fi
    _kc_own_dir "$dir" || return 1
    kc_as_postgres "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 \
            --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1 || {
        echo "kc_pg_init: initdb failed:" >&2; tail -20 "$dir/initdb.log" >&2; return 1; }
    {
        echo "# kc_pg_init (test/cluster.sh)"
        echo "port = $port"
        echo "listen_addresses = '127.0.0.1'"
        echo "unix_socket_directories = '$dir'"
        echo "max_connections = 300"
        echo "shared_buffers = 256MB"
        echo "shared_preload_libraries = 'kc_flow'"
        echo "kc_flow.database = '$db'"
        echo "kc_flow.workers = 2"
        echo "log_line_prefix = '%m [%p] %b '"
        echo "deadlock_timeout = 200ms"
        for line in "$@"; do echo "$line"; done
    } | kc_as_postgres tee -a "$dir/data/postgresql.conf" >/dev/null
}

kc_pg_start() {
    _kc_usage 1 "kc_pg_start DIR [PORT DB]" "$@" || return
    [ $# -ne 2 ] || { _kc_usage 3 "kc_pg_start DIR [PORT DB]"; return; }
    local dir=$1 port=${2:-} db=${3:-} psql running
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        echo "kc_pg_start: no cluster in $dir (kc_pg_init makes one)" >&2; return 1
    fi
    kc_as_postgres setsid "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start >/dev/null || {
        echo "kc_pg_start: the cluster in $dir did not start:" >&2; tail -20 "$dir/postgres.log" >&2; return 1; }
    [ -n "$db" ] || return 0
    running=$(sed -n 4p "$dir/data/postmaster.pid")
    if [ "$running" != "$port" ]; then
        echo "kc_pg_start: the cluster in $dir listens on port $running, not $port" >&2; return 1
    fi
    psql=("$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -v ON_ERROR_STOP=1)
    if [ -z "$(kc_as_postgres "${psql[@]}" -d postgres -Atc "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
        kc_as_postgres "${psql[@]}" -d postgres -c "CREATE DATABASE \"$db\"" &&
        kc_as_postgres "${psql[@]}" -d "$db" -c "SET client_min_messages = warning" \
            -c "CREATE EXTENSION kc_flow CASCADE" || {
            echo "kc_pg_start: could not create database $db with kc_flow" >&2; return 1; }
    fi
}

# _kc_pg_pid DIR: prints the pid of the postmaster of DIR's cluster when it runs (a stale
# postmaster.pid, whose pid another process may have taken since, prints nothing).
_kc_pg_pid() {
    local pid
    pid=$(head -1 "$1/data/postmaster.pid" 2>/dev/null) || return 0
    _kc_alive "$pid" postgres || return 0
    [ "$(readlink -f "/proc/$pid/cwd" 2>/dev/null)" = "$(readlink -f "$1/data")" ] && echo "$pid"
    return 0
}

kc_pg_stop() {
    _kc_usage 1 "kc_pg_stop DIR [MODE]" "$@" || return
    local dir=$1 mode=${2:-fast} pid
    pid=$(_kc_pg_pid "$dir")
    [ -n "$pid" ] || return 0
    kc_as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" -m "$mode" -w -t 60 stop >/dev/null 2>&1 && return 0
    # pg_ctl gave up: an immediate stop of the same postmaster, then its end
    kill -QUIT "$pid" 2>/dev/null
    for _ in $(seq 1 100); do _kc_alive "$pid" postgres || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    echo "kc_pg_stop: the cluster in $dir did not stop; killed postmaster $pid" >&2
    return 1
}

kc_redis_start() {
    _kc_usage 2 "kc_redis_start DIR PORT [persist]" "$@" || return
    local dir=$1 port=$2 aof=no
    [ "${3:-}" = persist ] && aof=yes
    _kc_own_dir "$dir" || return 1
    kc_as_postgres setsid redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --save '' \
        --appendonly "$aof" --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" || {
        echo "kc_redis_start: redis-server failed" >&2; return 1; }
    for _ in $(seq 1 100); do
        redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.05
    done
    echo "kc_redis_start: redis on port $port did not start:" >&2
    tail -5 "$dir/redis.log" >&2 2>/dev/null
    return 1
}

kc_redis_stop() {
    _kc_usage 1 "kc_redis_stop DIR" "$@" || return
    local dir=$1 pid
    pid=$(cat "$dir/redis.pid" 2>/dev/null) || return 0
    if _kc_alive "$pid" redis-server; then
        kill "$pid" 2>/dev/null
        for _ in $(seq 1 100); do _kc_alive "$pid" redis-server || break; sleep 0.05; done
        _kc_alive "$pid" redis-server && kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$dir/redis.pid"
    return 0
}

kc_gateway_start() {
    _kc_usage 2 "kc_gateway_start DIR ADDR [NAME=VALUE...]" "$@" || return
    local dir=$1 addr=$2 bin=${KC_GATEWAY_BIN:-$KC_LIB_ROOT/gateway/kc-gateway} pid
    shift 2
    mkdir -p "$dir" || return 1
    if [ ! -x "$bin" ]; then
        echo "kc_gateway_start: $bin is not built (make)" >&2; return 1
    fi
    env "$@" KC_LISTEN="$addr" "$bin" </dev/null >>"$dir/gateway.log" 2>&1 &
    pid=$!
    echo "$pid" >"$dir/gateway.pid"
    for _ in $(seq 1 100); do
        curl -sf -o /dev/null "http://$addr/readyz" && return 0
        _kc_alive "$pid" || break
        sleep 0.1
    done
    echo "kc_gateway_start: the gateway on $addr did not become ready:" >&2
    tail -5 "$dir/gateway.log" >&2
    return 1
}

kc_gateway_running() {
    _kc_usage 1 "kc_gateway_running DIR" "$@" || return
    local pid
    pid=$(cat "$1/gateway.pid" 2>/dev/null) || return 1
    _kc_alive "$pid" kc-gateway
}

kc_gateway_stop() {
    _kc_usage 1 "kc_gateway_stop DIR" "$@" || return
    local dir=$1 pid rc=0
    pid=$(cat "$dir/gateway.pid" 2>/dev/null) || return 0
    if _kc_alive "$pid" kc-gateway; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 1 300); do _kc_alive "$pid" || break; sleep 0.1; done
        if _kc_alive "$pid" kc-gateway; then
            echo "kc_gateway_stop: the gateway $pid did not stop in 30 s; killed" >&2
            kill -KILL "$pid" 2>/dev/null
        fi
    fi
    # our child: collect its exit status (127: not our child, nothing to report)
    wait "$pid" 2>/dev/null || rc=$?
    [ "$rc" = 127 ] && rc=0
    rm -f "$dir/gateway.pid"
    return "$rc"
}

kc_stack_start() {
    _kc_usage 2 "kc_stack_start DIR DB [NAME=VALUE...]" "$@" || return
    local dir=$1 db=$2 redis_port ready
    shift 2
    KC_STACK_PG_PORT=$(kc_free_port) && redis_port=$(kc_free_port) && KC_STACK_GW_PORT=$(kc_free_port) || return 1
    KC_STACK_DB_URL="postgresql://postgres@127.0.0.1:$KC_STACK_PG_PORT/$db"
    kc_pg_init "$dir/pg" "$KC_STACK_PG_PORT" "$db" "max_connections = 200" "shared_buffers = 128MB" \
        "${KC_PG_NO_FSYNC[@]}" || return 1
    kc_pg_start "$dir/pg" "$KC_STACK_PG_PORT" "$db" || return 1
    kc_redis_start "$dir/redis" "$redis_port" || return 1
    for _ in $(seq 1 300); do
        ready=$(kc_as_postgres "$PG_BIN/psql" -X -Atq -h 127.0.0.1 -p "$KC_STACK_PG_PORT" -U postgres -d "$db" \
                -c "SELECT count(*) > 0 AND bool_and(pid <> 0) FROM kc_flow.worker_status()") || return 1
        [ "$ready" = t ] && break
        sleep 0.1
    done
    if [ "$ready" != t ]; then
        echo "kc_stack_start: kc_flow's workers did not attach to $db in 30 s" >&2; return 1
    fi
    kc_gateway_start "$dir/gw" "127.0.0.1:$KC_STACK_GW_PORT" KC_DATABASE_URL="$KC_STACK_DB_URL" \
        KC_REDIS_URL="redis://127.0.0.1:$redis_port/0" "$@"
}

kc_stack_stop() {
    _kc_usage 1 "kc_stack_stop DIR" "$@" || return
    local rc=0
    kc_gateway_stop "$1/gw" || rc=$?
    kc_redis_stop "$1/redis"
    kc_pg_stop "$1/pg" immediate || rc=1
    return "$rc"
}
