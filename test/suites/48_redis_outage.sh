#!/usr/bin/env bash
# test/suites/48_redis_outage.sh - Redis stopped under steady purchases: the WebSocket pushes go
# on (latency measured, "# figure:" line), reads answer from Postgres, /readyz stays 200; Redis
# comes back with the views and the watermark it had (append-only file): 0 stale answers, every
# event pushed once. See test/failover/test_redis_outage.py.
#
# Uses the harness's Postgres (PGPORT, workers on) and a Redis of its own under $KC_TEST_TMP
# (the test stops and restarts it; never the harness's). Run alone: bash test/run.sh redis_outage
set -u
KC_ROOT=${KC_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
KC_TEST_TMP=${KC_TEST_TMP:-$(mktemp -d)}
. "$KC_ROOT/test/cluster.sh"
export KC_ROOT PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres} PGDATABASE=${PGDATABASE:-kc_test}
PY=python3; [ -x /usr/bin/python3 ] && PY=/usr/bin/python3
WORK="$KC_TEST_TMP/redis-outage-suite.$$"
mkdir -p "$WORK"
RO_REDIS_DIR="$WORK/redis"
trap 'kc_redis_stop "$RO_REDIS_DIR"' EXIT
say() { echo "$1 - redis outage: $2"; }

if ! make -s -C "$KC_ROOT/gateway" >"$WORK/build.log" 2>&1; then
    say "not ok" "kc-gateway builds"; sed 's/^/# /' "$WORK/build.log" | tail -20; exit 0
fi
if ! $PY -c 'import websockets, psycopg2' 2>/dev/null; then
    say "not ok" "python3-websockets and python3-psycopg2 are installed (test/deps.sh)"; exit 0
fi
RO_REDIS_PORT=$(kc_free_port)
if ! psql -X -q -v ON_ERROR_STOP=1 -f "$KC_ROOT/test/failover/fixture.sql" >"$WORK/fixture.log" 2>&1 ||
   ! kc_redis_start "$RO_REDIS_DIR" "$RO_REDIS_PORT" persist >"$WORK/redis.log" 2>&1; then
    say "not ok" "the fixture loads and Redis starts"; cat "$WORK"/fixture.log "$WORK"/redis.log | sed 's/^/# /'; exit 0
fi
export RO_TMP="$WORK" RO_REDIS_DIR RO_REDIS_PORT
timeout 200 $PY "$KC_ROOT/test/failover/test_redis_outage.py"
rc=$?
[ $rc -eq 124 ] && say "not ok" "tests finished within 200 s"
[ $rc -ne 0 ] && [ $rc -ne 124 ] && say "not ok" "test program exited with $rc"
exit 0
