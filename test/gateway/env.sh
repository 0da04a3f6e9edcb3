# test/gateway/env.sh - throwaway Postgres clusters and Redis servers for the gateway tests.
# Sourced by test/suites/40_gateway.sh, bench/home/run.sh and scripts/run-demo.sh.
# Servers run as the postgres user (they refuse root) on loopback, in directories that
# user owns; each kc_*_stop stops exactly the server it started, by its pid.

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

# Runs a command as postgres when we are root, else as ourselves.
kc_as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Prints a free TCP port on 127.0.0.1.
kc_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# kc_pg_start DIR PORT [DB] [noworkers]: initdb (once), start with kc_flow preloaded, create DB
# with kc_flow. "noworkers" sets kc_flow.workers = 0: kc_flow.run_pending drives the pipeline.
# synchronous_commit stays on: a crash of a server process must not lose acknowledged commits
# (the fault tests check exactly that); fsync is off, which only an operating-system crash
# could expose, to keep the tests fast.
kc_pg_start() {
    local dir=$1 port=$2 db=${3:-kc_test} workers=2
    [ "${4:-}" = noworkers ] && workers=0
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        kc_as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1 || {
            cat "$dir/initdb.log" >&2; return 1; }
        cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
shared_preload_libraries = 'kc_flow'
kc_flow.workers = $workers
kc_flow.database = '$db'
fsync = off
synchronous_commit = on
full_page_writes = off
max_connections = 200
CONF
    fi
    kc_as_pg setsid "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start >/dev/null || {
        tail -20 "$dir/postgres.log" >&2; return 1; }
    if ! kc_as_pg "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -Atqc \
            "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
        kc_as_pg "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -qc "CREATE DATABASE $db" &&
        kc_as_pg "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d "$db" -qc \
            "SET client_min_messages = warning; CREATE EXTENSION kc_flow CASCADE" || return 1
    fi
}

# kc_pg_stop DIR [MODE]: stops the cluster of DIR (fast by default).
kc_pg_stop() {
    local dir=$1 mode=${2:-fast}
    [ -f "$dir/data/postmaster.pid" ] || return 0
    kc_as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m "$mode" -w -t 60 stop >/dev/null 2>&1
}

# kc_redis_start DIR PORT [persist]: a Redis on 127.0.0.1:PORT; with "persist" it keeps its
# data across restarts (append-only file), as a production Redis would.
kc_redis_start() {
    local dir=$1 port=$2 aof=no
    [ "${3:-}" = persist ] && aof=yes
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    kc_as_pg setsid redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --save '' --appendonly "$aof" \
        --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" || return 1
    for _ in $(seq 1 100); do
        redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.05
    done
    echo "redis on port $port did not start" >&2
    return 1
}

# kc_redis_stop DIR: stops the Redis started in DIR, by its pid.
kc_redis_stop() {
    local dir=$1 pid
    [ -f "$dir/redis.pid" ] || return 0
    pid=$(cat "$dir/redis.pid")
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$dir/redis.pid"; return 0; }
        sleep 0.05
    done
    kill -9 "$pid" 2>/dev/null
    rm -f "$dir/redis.pid"
}
