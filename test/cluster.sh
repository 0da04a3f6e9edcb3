#!/usr/bin/env bash
# test/cluster.sh: throwaway PostgreSQL and Redis servers for tests, benchmarks
# and the demo.  Source it, then call kc_cluster_start DIR PGPORT REDISPORT and
# kc_cluster_stop.  Servers run as the postgres user, on 127.0.0.1 only.
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

kc_as_postgres() {
  if [ "$(id -un)" = postgres ]; then "$@"; else runuser -u postgres -- "$@"; fi
}

# kc_pg_init DIR PORT [extra postgresql.conf lines...]
kc_pg_init() {
  local dir=$1 port=$2; shift 2
  mkdir -p "$dir"
  chown postgres:postgres "$dir" 2>/dev/null || true
  kc_as_postgres "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1
  {
    echo "port = $port"
    echo "listen_addresses = '127.0.0.1'"
    echo "unix_socket_directories = '$dir'"
    echo "max_connections = 300"
    echo "shared_buffers = 256MB"
    echo "shared_preload_libraries = 'kc_flow'"
    echo "kc_flow.database = 'kc_test'"
    echo "kc_flow.workers = 2"
    echo "log_line_prefix = '%m [%p] %b '"
    echo "deadlock_timeout = 200ms"
    for line in "$@"; do echo "$line"; done
  } | kc_as_postgres tee -a "$dir/data/postgresql.conf" >/dev/null
}

kc_pg_start() {
  local dir=$1
  kc_as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start >/dev/null
}

kc_pg_stop() {
  local dir=$1 mode=${2:-fast}
  [ -f "$dir/data/postmaster.pid" ] || return 0
  kc_as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" -m "$mode" -w -t 60 stop >/dev/null 2>&1 || true
}

kc_redis_start() {
  local dir=$1 port=$2
  mkdir -p "$dir/redis"; chown postgres:postgres "$dir/redis" 2>/dev/null || true
  kc_as_postgres redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize yes --dir "$dir/redis" --pidfile "$dir/redis/redis.pid" --logfile "$dir/redis/redis.log"
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "redis did not start on port $port" >&2; return 1
}

kc_redis_stop() {
  local dir=$1
  local pid
  pid=$(cat "$dir/redis/redis.pid" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$dir/redis/redis.pid"
}

# a free TCP port on 127.0.0.1, starting the search at $1
kc_free_port() {
  local p=$1
  while (echo >/dev/tcp/127.0.0.1/$p) 2>/dev/null; do p=$((p + 1)); done
  echo "$p"
}
