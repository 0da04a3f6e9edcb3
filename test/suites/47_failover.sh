#!/usr/bin/env bash
# test/suites/47_failover.sh - kc-gateway on a primary and a hot standby (plain streaming
# replication, synchronous): read replicas for cache misses (a lagging replica never answers
# an older view, a replica that is down sends misses to the primary), a URL that lists only
# standbys (a clear log line, /readyz 503 with the reason, retries), and a failover (kill -9
# of the primary's postmaster, pg_ctl promote of the standby): the gateway follows, pushes
# resume, 0 stale answers; kc_flow's workers start on the standby only at its promotion.
# See test/failover/test_failover.py. Prints the failover times as "# figure:" lines.
# Then a failover that loses commits: the promoted standby gets an asynchronous standby of its
# own, cut off while it commits, then killed; the log rewound under the gateways' cursors is
# found, views purged, sockets told to refetch (test/failover/test_rewind.py).
#
# Self-contained: its own two clusters (the standby made with pg_basebackup -R) and Redis
# under $KC_TEST_TMP, stopped on exit by data directory. Run alone: bash test/run.sh failover
set -u
KC_ROOT=${KC_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
KC_TEST_TMP=${KC_TEST_TMP:-$(mktemp -d)}
chmod 755 "$KC_TEST_TMP"
export PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
ENV_SH="$KC_ROOT/test/cluster.sh"
. "$ENV_SH"
PY=python3; [ -x /usr/bin/python3 ] && PY=/usr/bin/python3

WORK="$KC_TEST_TMP/failover-suite.$$"
mkdir -p "$WORK" && chmod 777 "$WORK"
PRIMARY_DIR="$WORK/primary"
STANDBY_DIR="$WORK/standby"
REWIND_DIR="$WORK/rewind"
REDIS_DIR="$WORK/redis"

cleanup() {
    kc_redis_stop "$REDIS_DIR"
    kc_pg_stop "$REWIND_DIR" immediate
    kc_pg_stop "$STANDBY_DIR" immediate
    kc_pg_stop "$PRIMARY_DIR" immediate
}
trap cleanup EXIT
say() { echo "$1 - failover: $2"; }

if ! make -s -C "$KC_ROOT/gateway" >"$WORK/build.log" 2>&1; then
    say "not ok" "kc-gateway builds"; sed 's/^/# /' "$WORK/build.log" | tail -20; exit 0
fi
if ! $PY -c 'import websockets, psycopg2' 2>/dev/null; then
    say "not ok" "python3-websockets and python3-psycopg2 are installed (test/deps.sh)"; exit 0
fi

PRIMARY_PORT=$(kc_free_port)
STANDBY_PORT=$(kc_free_port)
REDIS_PORT=$(kc_free_port)
if ! kc_pg_init "$PRIMARY_DIR" "$PRIMARY_PORT" kc_fo "${KC_PG_NO_FSYNC[@]}" \
        "wal_keep_size = 256MB" >"$WORK/start.log" 2>&1 ||
   ! kc_pg_start "$PRIMARY_DIR" "$PRIMARY_PORT" kc_fo >>"$WORK/start.log" 2>&1 ||
   ! kc_as_postgres "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -d kc_fo \
        -v ON_ERROR_STOP=1 -f "$KC_ROOT/test/failover/fixture.sql" >>"$WORK/start.log" 2>&1; then
    say "not ok" "the primary starts"; sed 's/^/# /' "$WORK/start.log" | tail -20; exit 0
fi
mkdir -p "$STANDBY_DIR" && chown postgres:postgres "$STANDBY_DIR" 2>/dev/null
# the standby: a base backup with -R (standby.signal, primary_conninfo), its own port and
# socket, and no synchronous standby of its own once promoted (it would wait forever)
if ! kc_as_postgres "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres \
        -D "$STANDBY_DIR/data" -R -X stream -c fast >>"$WORK/start.log" 2>&1 ||
   ! printf "port = %s\nunix_socket_directories = '%s'\nsynchronous_standby_names = ''\n" \
        "$STANDBY_PORT" "$STANDBY_DIR" | kc_as_postgres tee -a "$STANDBY_DIR/data/postgresql.conf" >/dev/null ||
   ! kc_pg_start "$STANDBY_DIR" >>"$WORK/start.log" 2>&1 ||
   ! kc_redis_start "$REDIS_DIR" "$REDIS_PORT" >>"$WORK/start.log" 2>&1; then
    say "not ok" "the standby (pg_basebackup -R) and Redis start"; sed 's/^/# /' "$WORK/start.log" | tail -20; exit 0
fi
# synchronous from now on: an acknowledged commit is on the standby before the primary can
# die with it (set after the base backup, so the standby does not inherit it)
if ! kc_as_postgres "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -d kc_fo -v ON_ERROR_STOP=1 \
        -c "ALTER SYSTEM SET synchronous_standby_names = '*'" -c "SELECT pg_reload_conf()" >>"$WORK/start.log" 2>&1; then
    say "not ok" "synchronous replication is set"; sed 's/^/# /' "$WORK/start.log" | tail -20; exit 0
fi
say ok "a primary (port $PRIMARY_PORT), its synchronous hot standby (port $STANDBY_PORT) and Redis start"

export KC_ROOT PG_BIN PRIMARY_PORT STANDBY_PORT PRIMARY_DIR STANDBY_DIR REDIS_PORT FO_TMP="$WORK"
timeout 400 $PY "$KC_ROOT/test/failover/test_failover.py"
rc=$?
[ $rc -eq 124 ] && say "not ok" "tests finished within 400 s"
[ $rc -ne 0 ] && [ $rc -ne 124 ] && say "not ok" "test program exited with $rc"

# the promoted standby (no synchronous standby of its own) gets an asynchronous one
REWIND_PORT=$(kc_free_port)
mkdir -p "$REWIND_DIR" && chown postgres:postgres "$REWIND_DIR" 2>/dev/null
if ! kc_as_postgres "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$STANDBY_PORT" -U postgres \
        -D "$REWIND_DIR/data" -R -X stream -c fast >"$WORK/rewind-start.log" 2>&1 ||
   ! printf "port = %s\nunix_socket_directories = '%s'\n" "$REWIND_PORT" "$REWIND_DIR" |
        kc_as_postgres tee -a "$REWIND_DIR/data/postgresql.conf" >/dev/null ||
   ! kc_pg_start "$REWIND_DIR" >>"$WORK/rewind-start.log" 2>&1; then
    say "not ok" "an asynchronous standby of the promoted one starts"
    sed 's/^/# /' "$WORK/rewind-start.log" | tail -20; exit 0
fi
export REWIND_PORT REWIND_DIR REDIS_DIR
timeout 300 $PY "$KC_ROOT/test/failover/test_rewind.py"
rc=$?
[ $rc -eq 124 ] && say "not ok" "rewind tests finished within 300 s"
[ $rc -ne 0 ] && [ $rc -ne 124 ] && say "not ok" "rewind test program exited with $rc"
exit 0
