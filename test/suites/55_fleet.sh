#!/usr/bin/env bash
# test/suites/55_fleet.sh - kc_flow on the fleet of issue 11 (test/fleet.sh): a pg_auto_failover
# monitor, a primary and a synchronous standby with kc_flow preloaded, Redis, three gateways
# behind HAProxy (TLS). Under continuous purchases and reads through HAProxy it stalls the
# standby, kills a gateway, stops Redis, kills the primary's machine and brings it back
# (test/fleet/test_fleet.py says what each check asks). The gateways run with the in-process
# cache on: the case where a read through another gateway than the push could be older, unless
# it honours ?min_version=.
#
# Self-contained: starts its own fleet under $KC_TEST_TMP and stops all of it on exit; about
# 3 minutes. Run alone with `bash test/run.sh fleet`. Output: "ok - ..." / "not ok - ..." lines.
set -u
KC_ROOT=${KC_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
KC_TEST_TMP=${KC_TEST_TMP:-$(mktemp -d)}
chmod 755 "$KC_TEST_TMP"
export KC_ROOT PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
. "$KC_ROOT/test/cluster.sh"
. "$KC_ROOT/test/fleet.sh"
PY=python3; [ -x /usr/bin/python3 ] && PY=/usr/bin/python3   # the Debian one has the Debian modules

FLEET="$KC_TEST_TMP/fleet.$$"
trap 'kc_fleet_stop "$FLEET"' EXIT

missing=""
for cmd in pg_autoctl haproxy openssl setpriv; do command -v "$cmd" >/dev/null || missing="$missing $cmd"; done
if [ -n "$missing" ] || ! $PY -c 'import websockets, psycopg2' 2>/dev/null; then
    echo "not ok - fleet: its programs are installed (test/deps.sh test; missing:${missing:- python3-websockets or python3-psycopg2})"
    exit 0
fi
if ! make -s -C "$KC_ROOT/gateway" >"$KC_TEST_TMP/fleet-build.log" 2>&1; then
    echo "not ok - fleet: kc-gateway builds"; sed 's/^/# /' "$KC_TEST_TMP/fleet-build.log" | tail -10
    exit 0
fi

SECRET="fleet-$$-$RANDOM"
start=$SECONDS
if kc_fleet_start "$FLEET" kc_fleet KC_JWT_SECRET="$SECRET" KC_DEMO=on KC_LOCAL_CACHE=10000 \
        KC_THREADS=2 >"$KC_TEST_TMP/fleet-start.log" 2>&1; then
    echo "ok - fleet: monitor, primary, synchronous standby, Redis, 3 gateways and HAProxy start ($((SECONDS - start)) s)"
else
    echo "not ok - fleet: monitor, primary, synchronous standby, Redis, 3 gateways and HAProxy start"
    sed 's/^/# /' "$KC_TEST_TMP/fleet-start.log" | tail -20
    exit 0
fi

# the standby is synchronous and runs no kc_flow worker; the primary runs them
. "$FLEET/fleet.env"
q() { kc_as_postgres "$PG_BIN/psql" -X -Atq -h 127.0.0.1 -p "$1" -d kc_fleet -c "$2" 2>&1; }
sync=$(q "$NODE1_PORT" "SELECT sync_state FROM pg_stat_replication")
workers=$(q "$NODE1_PORT" "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'kc_flow worker'")
standby=$(q "$NODE2_PORT" "SELECT pg_is_in_recovery(), (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'kc_flow worker')")
if [ "$sync" = quorum ] || [ "$sync" = sync ]; then
    echo "ok - fleet: the standby replicates synchronously ($sync)"
else
    echo "not ok - fleet: the standby replicates synchronously (pg_stat_replication.sync_state: '$sync')"
fi
if [ "$workers" = 2 ] && [ "$standby" = "t|0" ]; then
    echo "ok - fleet: the primary runs the 2 kc_flow workers, the standby (in recovery) none"
else
    echo "not ok - fleet: the primary runs the 2 kc_flow workers, the standby (in recovery) none (primary: $workers, standby: $standby)"
fi

FLEET=$FLEET KC_JWT_SECRET=$SECRET timeout 240 $PY "$KC_ROOT/test/fleet/test_fleet.py"
rc=$?
[ $rc -eq 124 ] && echo "not ok - fleet: the checks finished within 240 s"
[ $rc -ne 0 ] && [ $rc -ne 124 ] && echo "not ok - fleet: test program exited with $rc"
if [ -n "${KC_FLEET_KEEP_LOGS:-}" ]; then cp -r "$FLEET" "$KC_FLEET_KEEP_LOGS" 2>/dev/null; fi
exit 0
