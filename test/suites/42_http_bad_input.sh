#!/usr/bin/env bash
# Malformed input at the gateway's doors (test/http/bad_input.py), against a gateway on
# the harness's shared Postgres and Redis.
set -u
cd "$KC_ROOT" || exit 1
source test/cluster.sh
gw="$KC_TEST_TMP/bad_input_gateway"
trap 'kc_gateway_stop "$gw"' EXIT
port=$(kc_free_port)
export KC_JWT_SECRET=bad-input-secret
if ! kc_gateway_start "$gw" "127.0.0.1:$port" KC_LOG_LEVEL=error; then
  echo "not ok - bad input: the gateway starts"
  exit 0
fi
GW_PORT=$port /usr/bin/python3 test/http/bad_input.py ||
  echo "not ok - bad input: bad_input.py exited with $?"
if kc_gateway_running "$gw"; then
  kc_gateway_stop "$gw"; rc=$?
  [ $rc -eq 0 ] && echo "ok - bad input: the gateway exits 0 on SIGTERM afterwards" ||
    echo "not ok - bad input: the gateway exits 0 on SIGTERM afterwards (exit $rc)"
else
  echo "not ok - bad input: the gateway survived the bad input"
  tail -20 "$gw/gateway.log" | sed 's/^/# /'
fi
