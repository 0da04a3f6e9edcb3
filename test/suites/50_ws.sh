#!/usr/bin/env bash
# test/suites/50_ws.sh - the WebSocket route of kc-gateway (docs/design.md §8): handshakes,
# bad frames, replay, live order under out-of-order commits, reconnect without loss,
# isolation between students, invalidate-before-push, the demo purchase route, slow
# consumers (1008), dead peers, SIGTERM (1001), and a gateway of two processes (--processes 2:
# test/ws/test_processes.py, with a child stopped until the feed drops it). See
# test/ws/test_ws.py; the hub's per-socket bound alone: test/gateway/test_ws_hub.c.
#
# Uses the harness's Postgres (PGPORT, workers on) and Redis (KC_REDIS_URL; other db
# numbers), starts its own gateways on free ports and stops them. Run alone with
# `bash test/run.sh ws`. Output: "ok - ..." / "not ok - ..." lines.
set -u
KC_ROOT=${KC_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
KC_TEST_TMP=${KC_TEST_TMP:-$(mktemp -d)}
export KC_ROOT PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres} PGDATABASE=${PGDATABASE:-kc_test}
export KC_DATABASE_URL=${KC_DATABASE_URL:-postgresql://$PGUSER@$PGHOST:$PGPORT/$PGDATABASE}
WORK="$KC_TEST_TMP/ws-suite.$$"
PY=python3; [ -x /usr/bin/python3 ] && PY=/usr/bin/python3   # the Debian one has the Debian modules
mkdir -p "$WORK"

if ! make -s -C "$KC_ROOT/gateway" all ../test/gateway/test_ws_hub >"$WORK/build.log" 2>&1; then
    echo "not ok - ws: kc-gateway and test/gateway/test_ws_hub build"
    sed 's/^/# /' "$WORK/build.log" | tail -20
    exit 0
fi
# the hub alone, through its inbox and a socket pair: the per-socket bound
timeout 30 "$KC_ROOT/test/gateway/test_ws_hub" | tee "$WORK/hub.out"
rc=${PIPESTATUS[0]}
[ $rc -ne 0 ] && ! grep -q '^not ok' "$WORK/hub.out" &&
    echo "not ok - ws: test_ws_hub ran to its end (exit status $rc)"
if ! $PY -c 'import websockets, psycopg2' 2>/dev/null; then
    echo "not ok - ws: python3-websockets and python3-psycopg2 are installed (test/deps.sh)"
    exit 0
fi
# a course and trainers of our own (other suites leave their data in the shared database)
psql -X -q -v ON_ERROR_STOP=1 -f "$KC_ROOT/test/ws/fixture.sql" >"$WORK/fixture.log" 2>&1 ||
    { echo "not ok - ws: test/ws/fixture.sql loads"; sed 's/^/# /' "$WORK/fixture.log" | tail; }
KC_WS_TMP="$WORK" timeout 300 $PY "$KC_ROOT/test/ws/test_ws.py"
rc=$?
[ $rc -eq 124 ] && echo "not ok - ws: tests finished within 300 s"
[ $rc -ne 0 ] && [ $rc -ne 124 ] && echo "not ok - ws: test program exited with $rc"
# --processes 2: a supervisor and two children on one port (test/ws/test_processes.py)
KC_WS_TMP="$WORK" timeout 120 $PY "$KC_ROOT/test/ws/test_processes.py"
rc=$?
[ $rc -eq 124 ] && echo "not ok - ws: --processes tests finished within 120 s"
[ $rc -ne 0 ] && [ $rc -ne 124 ] && echo "not ok - ws: test_processes.py exited with $rc"
exit 0
