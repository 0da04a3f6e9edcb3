#!/usr/bin/env bash
# scripts/run-fleet.sh - the body of `make run-fleet`: kc_flow on the topology of issue 11, on
# this machine only (test/fleet.sh starts it; docs/scaling.md describes it): a pg_auto_failover
# monitor, a primary and a synchronous standby (kc_flow preloaded on both, its workers running
# on the primary only), Redis, three kc-gateway processes in demo mode and HAProxy in front of
# them with TLS (a self-signed certificate made for the run). Installs what it needs
# (test/deps.sh fleet), builds and installs kc_flow, loads scripts/demo_data.sql, prints the
# https URLs with demo tokens and how to fail things over, and waits for Ctrl-C; then it stops
# everything it started and removes its files.
# KC_FLEET_PORT picks HAProxy's port (default: a free one).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/demo_lib.sh"
. "$ROOT/test/fleet.sh"
demo_build fleet

# stop_all: stops what this script started in WORK (demo_workdir calls it on the way out)
stop_all() {
    kc_fleet_stop "$WORK"
}
demo_workdir fleet stop_all

SECRET=${KC_JWT_SECRET:-fleet-secret-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')}
echo "run-fleet: starting the monitor, the primary, the synchronous standby, Redis, 3 gateways and HAProxy (about a minute)"
kc_fleet_start "$WORK" kc_demo KC_JWT_SECRET="$SECRET" KC_DEMO=on
. "$WORK/fleet.env"
PSQL=("$PG_BIN/psql" -X -v ON_ERROR_STOP=1 -Atq -d "$DATABASE_URL")
demo_load "${PSQL[@]}"

demo_tokens "$ROOT/gateway/kc-gateway" --jwt-secret="$SECRET"
URL=https://127.0.0.1:$HAPROXY_PORT
FLEET_SH=". $ROOT/test/cluster.sh; . $ROOT/test/fleet.sh"
cat <<TXT

The kc_flow fleet is running (demo mode: the home pages show a "Buy a course (demo)" button).
HAProxy terminates TLS with a self-signed certificate: accept it in the browser once
(or trust $CA_FILE).
  Home screen of Asha (two courses):   $URL/#token=$T1
  Home screen of Chen (nothing yet):   $URL/#token=$T3
  Operator console (admin):            $URL/admin#token=$TA

Behind it: gateways on 127.0.0.1:$GW1_PORT, :$GW2_PORT, :$GW3_PORT; Redis :$REDIS_PORT;
Postgres node1 :$NODE1_PORT (primary), node2 :$NODE2_PORT (synchronous standby); the monitor
$MONITOR_URI
The gateways connect with $DATABASE_URL

Fail things over (in another shell, as root):
  state:               bash -c '$FLEET_SH; kc_fleet_state $WORK'
  kill a gateway:      bash -c '$FLEET_SH; kc_fleet_gateway_kill $WORK 1'    (start: kc_fleet_gateway_start $WORK 1)
  the primary dies:    bash -c '$FLEET_SH; kc_fleet_node_kill $WORK node1'   (back: kc_fleet_node_start $WORK node1)
  Redis outage:        bash -c '$FLEET_SH; kc_fleet_redis_stop $WORK'        (back: kc_fleet_redis_start $WORK)

API:  curl --cacert $CA_FILE -H "Authorization: Bearer $T3" $URL/api/v1/students/$S3/home
Logs: $WORK/{monitor,node1,node2}/autoctl.log, $WORK/gw1/gateway.log, $WORK/haproxy/haproxy.log
Press Ctrl-C to stop and clean up.
TXT
while :; do sleep 1; done
