#!/usr/bin/env bash
# Malformed input at the gateway's doors (test/http/bad_input.py), against a gateway on
# the harness's shared Postgres and Redis.
cd "$KC_ROOT"
source test/cluster.sh
port=$(kc_free_port 58180)
export KC_JWT_SECRET=bad-input-secret
KC_LISTEN="127.0.0.1:$port" KC_LOG_LEVEL=error gateway/kc-gateway >"$KC_TEST_TMP/bad_input_gateway.log" 2>&1 &
gw=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
GW_PORT=$port /usr/bin/python3 test/http/bad_input.py || echo "not ok - bad input: bad_input.py exited with $?"
if kill -0 "$gw" 2>/dev/null; then
  kill -TERM "$gw"; wait "$gw"; rc=$?
  [ $rc -eq 0 ] && echo "ok - bad input: the gateway exits 0 on SIGTERM afterwards" ||
    echo "not ok - bad input: the gateway exits 0 on SIGTERM afterwards (exit $rc)"
else
  echo "not ok - bad input: the gateway survived the bad input"
  tail -20 "$KC_TEST_TMP/bad_input_gateway.log" | sed 's/^/# /'
fi
