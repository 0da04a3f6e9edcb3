#!/usr/bin/env bash
# bench/browser/run.sh - commit -> browser: PURCHASES purchases (default 200) at an offered
# RATE/s (default 20) over PAGES students (default 10), each student's home open in its own
# page of headless Chromium (Debian's /usr/bin/chromium driven by playwright-core from
# test/e2e). For each purchase: from the payment's commit (the driver's clock right after the
# confirming COMMIT returns) to its sessions rendered in the page's DOM; p50/p90/p99/max.
# The measurement itself is test/e2e/latency_test.js (also run by test/suites/60_browser.sh).
# Starts its own throwaway Postgres (fsync off, synchronous_commit on), Redis and gateway
# on loopback (kc_stack_start, test/cluster.sh) and stops them. Takes the machine-wide
# benchmark lock (/tmp/kc_bench.lock). Ends with one JSON line.
#   PURCHASES=200 RATE=20 PAGES=10 bash bench/browser/run.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/bench/lock.sh"; bench_lock "$ROOT/bench/browser/run.sh" "$@"
PURCHASES=${PURCHASES:-200}
RATE=${RATE:-20}
PAGES=${PAGES:-10}
PY=python3; [ -x /usr/bin/python3 ] && PY=/usr/bin/python3
E2E="$ROOT/test/e2e"
. "$ROOT/test/cluster.sh"

if [ ! -x /usr/bin/chromium ] || ! command -v node >/dev/null; then
    bash "$ROOT/test/deps.sh" test chromium nodejs npm >/dev/null
fi
if [ ! -d "$E2E/node_modules/playwright-core" ]; then
    (cd "$E2E" && npm ci --no-audit --no-fund --loglevel=error)
fi


make -s -C "$ROOT" >/dev/null
make -s -C "$ROOT" install >/dev/null
WORK=$(mktemp -d /tmp/kc-browserbench.XXXXXX)
chmod 755 "$WORK"
cleanup() {
    set +e
    kc_stack_stop "$WORK"
    rm -rf "$WORK"
}
trap cleanup EXIT

# KC_DEMO as in the suite: the page asks whether the demo route exists, and a 404 is a console error
export KC_JWT_SECRET=bench-secret
kc_stack_start "$WORK" kc_bench KC_STATIC_DIR="$ROOT/gateway/static" KC_DEMO=on
GW_PORT=$KC_STACK_GW_PORT DB_URL=$KC_STACK_DB_URL
PSQL=("$PG_BIN/psql" -h 127.0.0.1 -p "$KC_STACK_PG_PORT" -U postgres -d kc_bench -X -v ON_ERROR_STOP=1 -Atq)
kc_as_postgres "${PSQL[@]}" -f "$E2E/latency_fixture.sql" >/dev/null
STUDENTS=$(kc_as_postgres "${PSQL[@]}" -c "INSERT INTO kc_flow.students (display_name, timezone)
    SELECT 'bench ' || g, 'UTC' FROM generate_series(1, $PAGES) g RETURNING id" | tr '\n' ' ')
TOKENS=""
for s in $STUDENTS; do TOKENS="$TOKENS $("$ROOT/gateway/kc-gateway" --issue-token="$s")"; done

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== bench/browser on $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), load average $LOAD0"
GW_URL="http://127.0.0.1:$GW_PORT" DB_URL="$DB_URL" STUDENTS="$STUDENTS" TOKENS="$TOKENS" PYTHON=$PY \
    PURCHASES=$PURCHASES RATE=$RATE node "$E2E/latency_test.js" | tee "$WORK/out"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
grep -E '^\{"bench":"browser"' "$WORK/out" | tail -1 |
    python3 -c 'import json, sys; d = json.load(sys.stdin); d["loadavg"] = sys.argv[1]; print(json.dumps(d))' "$LOAD0"
