#!/usr/bin/env bash
# scripts/run-demo.sh - the body of `make run`: kc_flow with demo data, on this machine only.
# Installs the Debian packages it needs (test/deps.sh run, when missing), builds and installs
# the extension, starts a throwaway Postgres (kc_flow preloaded, workers on) and Redis on
# loopback, loads scripts/demo_data.sql, starts kc-gateway in demo mode (--demo: the home page's
# "Buy a course" button), prints the home screen URLs with demo tokens and the operator console's
# URL with an admin token, and waits for Ctrl-C; then it stops everything it started and removes
# its files.
# KC_LISTEN (default 127.0.0.1:8080) picks the gateway address.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/demo_lib.sh"
demo_build run

# stop_all: stops what this script started in WORK (demo_workdir calls it on the way out)
stop_all() {
    kc_gateway_stop "$WORK/gw"
    kc_redis_stop "$WORK/redis"
    kc_pg_stop "$WORK/pg"
}
demo_workdir demo stop_all

PG_PORT=$(kc_free_port)
REDIS_PORT=$(kc_free_port)
LISTEN=${KC_LISTEN:-127.0.0.1:8080}
if (exec 3<>"/dev/tcp/${LISTEN%:*}/${LISTEN##*:}") 2>/dev/null; then
    LISTEN=127.0.0.1:$(kc_free_port)
    echo "run-demo: ${KC_LISTEN:-127.0.0.1:8080} is busy, using $LISTEN"
fi
# fsync off: a demo's data may go with the machine
kc_pg_init "$WORK/pg" "$PG_PORT" kc_demo "${KC_PG_NO_FSYNC[@]}"
kc_pg_start "$WORK/pg" "$PG_PORT" kc_demo
kc_redis_start "$WORK/redis" "$REDIS_PORT"
PSQL=("$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d kc_demo -v ON_ERROR_STOP=1 -Atq)
# The workers started before kc_demo existed and come back about 5 s later (their restart delay)
demo_load "${PSQL[@]}"

SECRET=${KC_JWT_SECRET:-demo-secret-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')}
export KC_JWT_SECRET=$SECRET
# demo mode (--demo): the home page shows a "Buy a course (demo)" button (POST /api/v1/demo/purchase)
kc_gateway_start "$WORK/gw" "$LISTEN" KC_DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/kc_demo" \
    KC_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" KC_STATIC_DIR="$ROOT/gateway/static" KC_DEMO=on

demo_tokens "$ROOT/gateway/kc-gateway"
cat <<TXT

kc_flow demo is running, in demo mode (--demo): the home pages show a "Buy a course (demo)" button.
  Home screen of Asha (two courses):   http://$LISTEN/#token=$T1
  Home screen of Chen (nothing yet):   http://$LISTEN/#token=$T3
  Operator console (admin):            http://$LISTEN/admin#token=$TA

Buy Chen a course: press "Buy a course (demo)" on Chen's page and watch it update within a
second, then find the payment in the operator console (search "Chen"). Or in SQL:
  ${PSQL[*]} -c "SELECT kc_flow.confirm_payment(kc_flow.create_payment('$S3', 'cccccccc-0000-4000-8000-000000000004', 10, '{\"weekdays\":[1,3,5],\"start\":\"18:00\",\"timezone\":\"Asia/Kolkata\"}', 29900, 'INR'))"
(as root, prefix it with: runuser -u postgres --)

API:  curl -H "Authorization: Bearer $T3" http://$LISTEN/api/v1/students/$S3/home
Logs: $WORK/gw/gateway.log      Metrics: http://$LISTEN/metrics
Press Ctrl-C to stop and clean up.
TXT
wait "$(cat "$WORK/gw/gateway.pid")" || true
