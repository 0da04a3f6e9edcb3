#!/usr/bin/env bash
# test/suites/40_gateway.sh - kc-gateway: unit tests, the stale-refill race, and the
# integration tests (routes, errors, auth, the purchase flow, catch-up after a gateway
# restart, Redis outage, Postgres restart, SIGTERM drain).
#
# Self-contained: it starts its own Postgres cluster and Redis (the integration tests stop
# and restart them, which must never happen to the harness's shared servers) under
# $KC_TEST_TMP and stops them on exit. Needs the extension installed (make install) and the
# gateway built (make -C gateway). Output: "ok - ..." / "not ok - ..." lines.
set -u
KC_ROOT=${KC_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
KC_TEST_TMP=${KC_TEST_TMP:-$(mktemp -d)}
chmod 755 "$KC_TEST_TMP"          # the postgres user walks through it
export PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
ENV_SH="$KC_ROOT/test/cluster.sh"     # test_gateway.py stops and starts the servers through it
. "$ENV_SH"

WORK="$KC_TEST_TMP/gateway-suite.$$"
mkdir -p "$WORK"
chmod 777 "$WORK"
PG_DIR="$WORK/pg"
REDIS_DIR="$WORK/redis"

cleanup() {
    kc_redis_stop "$REDIS_DIR"
    kc_pg_stop "$PG_DIR" immediate
}
trap cleanup EXIT

say() { echo "$1 - $2"; }

if make -s -C "$KC_ROOT/gateway" all tests >"$WORK/build.log" 2>&1; then
    say ok "gateway: kc-gateway and its test programs build"
else
    say "not ok" "gateway: kc-gateway and its test programs build"
    sed 's/^/# /' "$WORK/build.log" | tail -20
    exit 1
fi
if grep -q 'warning:' "$WORK/build.log"; then
    say "not ok" "gateway: builds without compiler warnings"
    grep 'warning:' "$WORK/build.log" | sed 's/^/# /' | head
else
    say ok "gateway: builds without compiler warnings"
fi

"$KC_ROOT/test/gateway/test_unit"

PG_PORT=$(kc_free_port)
REDIS_PORT=$(kc_free_port)
# fsync off: the tests kill and restart processes, never the machine
if ! kc_pg_init "$PG_DIR" "$PG_PORT" kc_test "${KC_PG_NO_FSYNC[@]}" >"$WORK/pg-start.log" 2>&1 ||
   ! kc_pg_start "$PG_DIR" "$PG_PORT" kc_test >>"$WORK/pg-start.log" 2>&1 ||
   ! kc_redis_start "$REDIS_DIR" "$REDIS_PORT" persist >"$WORK/redis-start.log" 2>&1; then
    say "not ok" "gateway: private Postgres and Redis start"
    cat "$WORK"/pg-start.log "$WORK"/redis-start.log | sed 's/^/# /' | tail -20
    exit 1
fi
say ok "gateway: private Postgres (port $PG_PORT) and Redis (port $REDIS_PORT) start"

psql_q() { kc_as_postgres "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d kc_test -v ON_ERROR_STOP=1 -Atq "$@"; }
if psql_q -f "$KC_ROOT/scripts/demo_data.sql" >"$WORK/demo.log" 2>&1; then
    say ok "gateway: demo data loads"
else
    say "not ok" "gateway: demo data loads"
    sed 's/^/# /' "$WORK/demo.log" | tail -10
    exit 1
fi
# wait until the workers have generated the demo sessions (40 of them), then rank courses
for _ in $(seq 1 100); do
    [ "$(psql_q -c 'SELECT count(*) FROM kc_flow.tutoring_sessions')" -ge 40 ] && break
    sleep 0.1
done
psql_q -c 'SELECT kc_flow.refresh_trending()' >/dev/null

RACE_STUDENT=$(psql_q -c "INSERT INTO kc_flow.students (display_name) VALUES ('race') RETURNING id")
KC_DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/kc_test" \
KC_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" \
    "$KC_ROOT/test/gateway/test_cache_race" "$RACE_STUDENT" ||
    say "not ok" "gateway: test_cache_race ran to its end (exit status $?)"

# KC_GATEWAY_BIN: another build of the gateway to test (test/suites/45_gateway_asan.sh)
GW_BIN="${KC_GATEWAY_BIN:-$KC_ROOT/gateway/kc-gateway}" GW_STATIC="$KC_ROOT/gateway/static" GW_TMP="$WORK" \
PG_PORT=$PG_PORT PG_DIR=$PG_DIR PG_DB=kc_test REDIS_PORT=$REDIS_PORT REDIS_DIR=$REDIS_DIR ENV_SH=$ENV_SH \
    timeout 600 python3 "$KC_ROOT/test/gateway/test_gateway.py"
rc=$?
[ $rc -eq 124 ] && say "not ok" "gateway: integration tests finished in time"
exit 0
