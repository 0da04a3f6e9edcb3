#!/usr/bin/env bash
# test/suites/44_admin.sh - the operator console (docs/gateway.md, "Operator console"):
# the unit tests of its pure parts (test/admin/test_admin_unit.c), its routes against a
# gateway on the harness's Postgres and Redis (test/admin/test_admin.py: auth, story,
# search and its bad input, retry, stats, metrics), and the dashboard and alert rules of
# docs/ops/ against that gateway's /metrics (test/admin/check_ops.py); then `make run`
# (scripts/run-demo.sh) says it runs in demo mode, has the demo purchase route and prints a
# console URL that works. The console in a browser is test/e2e/admin_test.js (60_browser.sh).
# Output: "ok - ..." / "not ok - ..." lines.
set -u
KC_ROOT=${KC_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
KC_TEST_TMP=${KC_TEST_TMP:-$(mktemp -d)}
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres} PGDATABASE=${PGDATABASE:-kc_test}
DB_URL=${KC_DATABASE_URL:-postgresql://$PGUSER@$PGHOST:$PGPORT/$PGDATABASE}
WORK="$KC_TEST_TMP/admin-suite.$$"
mkdir -p "$WORK"
cd "$KC_ROOT" || exit 1
. test/cluster.sh
demo_pid=
stop_all() {
    kc_gateway_stop "$WORK/gw" >/dev/null 2>&1
    [ -z "$demo_pid" ] || kill -TERM "$demo_pid" 2>/dev/null
}
trap stop_all EXIT

if ! bash test/deps.sh test python3-yaml >"$WORK/apt.log" 2>&1; then
    echo "not ok - admin: python3-yaml installs"; tail -5 "$WORK/apt.log" | sed 's/^/# /'; exit 0
fi
if ! make -s -C gateway >"$WORK/build.log" 2>&1; then
    echo "not ok - admin: the gateway builds"; tail -20 "$WORK/build.log" | sed 's/^/# /'; exit 0
fi
objs=$(ls gateway/*.o | grep -v '/main\.o$')
# shellcheck disable=SC2086  # the object list is meant to split
if cc -O2 -g -std=gnu11 -Wall -Wextra -Wshadow -Wno-unused-parameter -pthread \
      -I"$(pg_config --includedir)" -Igateway -o "$WORK/test_admin_unit" test/admin/test_admin_unit.c $objs \
      -lmicrohttpd -lhiredis -lcjson -lpq -ljwt -lwslay -lcrypto -pthread -lm >"$WORK/unit-build.log" 2>&1 &&
   ! grep -q 'warning:' "$WORK/unit-build.log"; then
    "$WORK/test_admin_unit"
else
    echo "not ok - admin: the unit tests build without warnings"; sed 's/^/# /' "$WORK/unit-build.log" | head -20
fi

psql_q() { psql -X -Atq -v ON_ERROR_STOP=1 "$@"; }
psql_q -f test/ws/fixture.sql >"$WORK/fixture.log" 2>&1 ||
    { echo "not ok - admin: test/ws/fixture.sql loads"; sed 's/^/# /' "$WORK/fixture.log" | tail; exit 0; }
# a payment the workers handle before the gateway starts: its events precede the gateway's record
OLD_STUDENT=$(psql_q -c "INSERT INTO kc_flow.students (display_name) VALUES ('Admin Old') RETURNING id")
OLD_PAYMENT=$(psql_q -c "SELECT kc_flow.create_payment('$OLD_STUDENT', 'eeeeeeee-0000-4000-8000-0000000000c1', 10,
                           '{\"weekdays\":[2],\"start\":\"06:15\",\"timezone\":\"UTC\"}')")
psql_q -c "SELECT kc_flow.confirm_payment('$OLD_PAYMENT')" >/dev/null
for _ in $(seq 1 150); do
    [ "$(psql_q -c "SELECT count(*) FROM kc_flow.events WHERE correlation_id = '$OLD_PAYMENT' AND event_type = 'SESSIONS_GENERATED'")" = 1 ] && break
    sleep 0.1
done

PORT=$(kc_free_port)
export KC_JWT_SECRET=admin-suite-secret
# Redis database 6 of the harness's server: a new one, so the gateway starts from the log's end
redis-cli -p "$REDIS_PORT" -n 6 flushdb >/dev/null 2>&1
if ! kc_gateway_start "$WORK/gw" "127.0.0.1:$PORT" KC_DATABASE_URL="$DB_URL" KC_REDIS_URL="${KC_REDIS_URL%/*}/6" \
        KC_STATIC_DIR="$KC_ROOT/gateway/static"; then
    echo "not ok - admin: the gateway starts"; exit 0
fi
GW_PORT=$PORT GW_LOG="$WORK/gw/gateway.log" OLD_PAYMENT=$OLD_PAYMENT timeout 180 /usr/bin/python3 test/admin/test_admin.py ||
    echo "not ok - admin: test_admin.py exited with $?"
GW_PORT=$PORT KC_ROOT=$KC_ROOT timeout 60 /usr/bin/python3 test/admin/check_ops.py ||
    echo "not ok - ops: check_ops.py exited with $?"
if kc_gateway_running "$WORK/gw"; then
    kc_gateway_stop "$WORK/gw"; rc=$?
    [ $rc -eq 0 ] && echo "ok - admin: the gateway exits 0 on SIGTERM afterwards" ||
        echo "not ok - admin: the gateway exits 0 on SIGTERM afterwards (exit $rc)"
else
    echo "not ok - admin: the gateway survived the tests"; tail -20 "$WORK/gw/gateway.log" | sed 's/^/# /'
fi

# make run: its own servers, the gateway in demo mode; Ctrl-C (SIGINT) stops everything
DEMO_PORT=$(kc_free_port)
# a background job of a script starts with SIGINT ignored, which bash cannot trap: give it back
# its default, as a terminal's Ctrl-C finds it
KC_LISTEN=127.0.0.1:$DEMO_PORT setsid /usr/bin/python3 -c 'import os, signal
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.execvp("bash", ["bash", "scripts/run-demo.sh"])' >"$WORK/demo.out" 2>&1 </dev/null &
demo_pid=$!
for _ in $(seq 1 900); do
    grep -q "Press Ctrl-C" "$WORK/demo.out" && break
    kill -0 "$demo_pid" 2>/dev/null || break
    sleep 0.1
done
if grep -q "running, in demo mode (--demo)" "$WORK/demo.out" && grep -q 'Buy a course (demo)' "$WORK/demo.out"; then
    echo "ok - make run: says the gateway runs in demo mode, with the Buy a course button"
else
    echo "not ok - make run: says the gateway runs in demo mode, with the Buy a course button"
    tail -20 "$WORK/demo.out" | sed 's/^/# /'
fi
st=$(curl -s -o /dev/null -w '%{http_code}' -X OPTIONS "http://127.0.0.1:$DEMO_PORT/api/v1/demo/purchase")
[ "$st" = 204 ] && echo "ok - make run: the demo purchase route exists (the page shows its button)" ||
    echo "not ok - make run: the demo purchase route exists (OPTIONS answered $st)"
console=$(grep -o "http://[^ ]*/admin#token=[^ ]*" "$WORK/demo.out" | head -1)
st=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${console##*#token=}" \
     "http://127.0.0.1:$DEMO_PORT/api/v1/admin/search?q=Chen")
[ -n "$console" ] && [ "$st" = 200 ] && echo "ok - make run: prints the operator console's URL with an admin token that works" ||
    echo "not ok - make run: prints the operator console's URL with an admin token that works ($st)"
demo_dir=$(grep -o "/tmp/kc-demo\.[A-Za-z0-9]*" "$WORK/demo.out" | head -1)
kill -INT "$demo_pid" 2>/dev/null
for _ in $(seq 1 600); do kill -0 "$demo_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$demo_pid" 2>/dev/null; then
    kill -TERM "$demo_pid"          # its trap stops and removes what it started
    for _ in $(seq 1 600); do kill -0 "$demo_pid" 2>/dev/null || break; sleep 0.1; done
    rc="still running after SIGINT"
else
    wait "$demo_pid"; rc=$?
fi
demo_pid=
if [ "$rc" = 0 ] && [ -n "$demo_dir" ] && [ ! -e "$demo_dir" ]; then
    echo "ok - make run: Ctrl-C stops it and removes its files"
else
    echo "not ok - make run: Ctrl-C stops it and removes its files (exit $rc, ${demo_dir:-no dir} left: $([ -e "$demo_dir" ] && echo yes || echo no))"
fi
