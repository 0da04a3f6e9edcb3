#!/usr/bin/env bash
# test/faults/soak.sh (make soak) - the full fault-injection run: kill -9 of a worker x20,
# immediate Postgres stop and restart x5, Redis stop/start x5 (SIGTERM and kill -9 in turn),
# gateway kill -9 and restart x5, WebSocket client dropped mid-stream x20, under 25
# payments/s, with the invariants checked after each fault and at the end. Installs what
# it needs, builds, installs kc_flow, then runs test/faults/run.sh. About 4 minutes.
# Extra arguments go to faults.py (e.g. --rate 40, --worker 50); FAULT_SEED repeats an order.
set -u
KC_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$KC_ROOT" || exit 1
bash test/deps.sh test || { echo "not ok - soak: the packages the tests need install"; exit 1; }
{ make -s >/dev/null && make -s install >/dev/null; } || { echo "not ok - soak: build and install"; exit 1; }
FAULT_TIMEOUT=${FAULT_TIMEOUT:-3600} bash test/faults/run.sh \
    --worker 20 --pg 5 --redis 5 --gateway 5 --ws 20 --rate 25 "$@"
