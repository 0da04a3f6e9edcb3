#!/usr/bin/env bash
# test/suites/35_faults.sh - fault injection under continuous load, the quick variant
# (make soak runs the full counts): kill -9 of a worker x3, immediate Postgres restart x1,
# Redis stop/start x1, gateway kill -9 and restart x1, WebSocket client dropped mid-stream
# and reconnecting with after= x3, with the invariants checked after each (test/faults/).
# On its own Postgres, Redis and gateway, never the harness's shared servers. About 1 minute.
set -u
KC_ROOT=${KC_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
export KC_ROOT
if ! make -s -C "$KC_ROOT/gateway" >/dev/null 2>&1; then
    echo "not ok - faults: kc-gateway builds"; exit 0
fi
FAULT_TIMEOUT=300 bash "$KC_ROOT/test/faults/run.sh" \
    --worker 3 --pg 1 --redis 1 --gateway 1 --ws 3 --rate 20 --world 400 --load-before 1.5 ||
    echo "not ok - faults: quick fault run ended with status $?"
exit 0
