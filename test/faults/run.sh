#!/usr/bin/env bash
# test/faults/run.sh [faults.py options] - fault injection under continuous load on servers
# of its own: a throwaway Postgres cluster (kc_flow preloaded, 2 workers), a Redis with an
# append-only file, and kc-gateway (started by faults.py), all as the postgres user on
# free loopback ports; everything is stopped by pid on exit. The harness's shared servers
# are never touched (faults.py kills and restarts its servers).
# Needs kc_flow installed (make install) and gateway/kc-gateway built (make).
# Prints "ok - ..." / "not ok - ..." lines and "# faults N, payments M, violations V".
set -u
KC_ROOT=${KC_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
export PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
source "$KC_ROOT/test/cluster.sh"
PY=/usr/bin/python3

BASE=${KC_TEST_TMP:-$(mktemp -d /tmp/kc_faults.XXXXXX)}
WORK="$BASE/faults.$$"
mkdir -p "$WORK"
chmod 755 "$BASE" 2>/dev/null
chmod 777 "$WORK"
PG_DIR="$WORK/pg"
REDIS_DIR="$WORK/redis"

cleanup() {
    kc_gateway_stop "$WORK"     # the one faults.py started, should it have left it behind
    kc_redis_stop "$REDIS_DIR"
    kc_pg_stop "$PG_DIR" immediate
    if [ -z "${KC_KEEP_TMP:-}" ] && [ -z "${KC_TEST_TMP:-}" ]; then rm -rf "$BASE"; fi
}
trap cleanup EXIT

if [ ! -x "$KC_ROOT/gateway/kc-gateway" ]; then
    echo "not ok - faults: gateway/kc-gateway is built (run make)"; exit 1
fi
PG_PORT=$(kc_free_port)
REDIS_PORT=$(kc_free_port)
# fsync off: only processes are killed here, never the machine; commits stay synchronous
if ! kc_pg_init "$PG_DIR" "$PG_PORT" kc_test "${KC_PG_NO_FSYNC[@]}" >"$WORK/pg-start.log" 2>&1 ||
   ! kc_pg_start "$PG_DIR" "$PG_PORT" kc_test >>"$WORK/pg-start.log" 2>&1 ||
   ! kc_redis_start "$REDIS_DIR" "$REDIS_PORT" persist >"$WORK/redis-start.log" 2>&1; then
    echo "not ok - faults: private Postgres and Redis start"
    cat "$WORK"/pg-start.log "$WORK"/redis-start.log | sed 's/^/# /' | tail -20
    exit 1
fi
# The faults need every acknowledged commit to survive a process crash (kill -9 of a backend
# resets shared memory, WAL buffers included), hence synchronous_commit = on.
# FAULT_SYNCHRONOUS_COMMIT=off shows the loss (the durability check fails).
kc_as_postgres "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d kc_test -qAt \
    -c "ALTER SYSTEM SET synchronous_commit = ${FAULT_SYNCHRONOUS_COMMIT:-on}" -c "SELECT pg_reload_conf()" >/dev/null
echo "# faults: Postgres on port $PG_PORT, Redis on port $REDIS_PORT, logs in $WORK"

PGHOST=127.0.0.1 PGPORT=$PG_PORT PGUSER=postgres PGDATABASE=kc_test KC_ROOT=$KC_ROOT \
FAULT_PG_DIR=$PG_DIR FAULT_REDIS_DIR=$REDIS_DIR FAULT_REDIS_PORT=$REDIS_PORT FAULT_WORK=$WORK \
    timeout "${FAULT_TIMEOUT:-3600}" $PY "$KC_ROOT/test/faults/faults.py" "$@"
rc=$?
if [ $rc -eq 124 ]; then echo "not ok - faults: finished within ${FAULT_TIMEOUT:-3600} s"; fi
if [ $rc -ne 0 ]; then
    echo "# postgres log (last lines):"; tail -5 "$PG_DIR/postgres.log" | sed 's/^/#   /'
fi
exit $rc
