#!/usr/bin/env bash
# test/suites/60_browser.sh - end-to-end in a real browser: the demo home screen
# (gateway/static/index.html) in headless Chromium, driven by playwright-core from npm
# (test/e2e; no browser is downloaded: Debian's /usr/bin/chromium is used). A payment
# confirmed in SQL must make the sessions appear on the open page, without a reload,
# within 1 s, and a page whose last event fell below the log's floor must reload its home
# on the refetch answer and go on. Then commit -> browser as a measurement (test/e2e/latency_test.js): 200
# purchases at an offered 20/s over 10 students, each page open in Chromium; every purchase
# must be rendered with its sessions (asserted), and p50/p99 from the payment's commit to
# the render are reported (a JSON line; P99_LIMIT_MS asserts a limit when set). Then the
# operator console (gateway/static/admin.html, test/e2e/admin_test.js): search, a payment's
# story, Retry of a dead letter. The screenshots are kept under test/e2e/artifacts/ (their
# paths are printed).
#
# Installs what it needs when missing: Debian's chromium (and nodejs/npm), then
# `npm ci` in test/e2e. Uses the harness's Postgres and Redis (another db number) and
# starts its own gateway on a free port. Output: "ok - ..." / "not ok - ..." lines.
set -u
KC_ROOT=${KC_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
KC_TEST_TMP=${KC_TEST_TMP:-$(mktemp -d)}
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres} PGDATABASE=${PGDATABASE:-kc_test}
DB_URL=${KC_DATABASE_URL:-postgresql://$PGUSER@$PGHOST:$PGPORT/$PGDATABASE}
WORK="$KC_TEST_TMP/browser-suite.$$"
E2E="$KC_ROOT/test/e2e"
ART="$E2E/artifacts"
mkdir -p "$WORK" "$ART"
. "$KC_ROOT/test/cluster.sh"
trap 'kc_gateway_stop "$WORK/gw"' EXIT

# npm may come with a nodejs from elsewhere (NodeSource's includes it and conflicts with Debian's npm)
extra=(chromium)
command -v npm >/dev/null || extra+=(nodejs npm)
if ! bash "$KC_ROOT/test/deps.sh" test "${extra[@]}" >"$WORK/apt.log" 2>&1; then
    echo "not ok - browser: ${extra[*]} install"; tail -5 "$WORK/apt.log" | sed 's/^/# /'; exit 0
fi
if [ ! -d "$E2E/node_modules/playwright-core" ] || [ "$E2E/package-lock.json" -nt "$E2E/node_modules/.package-lock.json" ]; then
    (cd "$E2E" && npm ci --no-audit --no-fund --loglevel=error) >"$WORK/npm.log" 2>&1 ||
        { echo "not ok - browser: npm ci in test/e2e"; tail -10 "$WORK/npm.log" | sed 's/^/# /'; exit 0; }
fi
echo "ok - browser: chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}') and playwright-core ready"

make -s -C "$KC_ROOT/gateway" >"$WORK/build.log" 2>&1 || { echo "not ok - browser: gateway builds"; exit 0; }
psql_q() { psql -X -Atq -v ON_ERROR_STOP=1 "$@"; }
psql_q -f "$KC_ROOT/test/ws/fixture.sql" >"$WORK/fixture.log" 2>&1 ||
    { echo "not ok - browser: test/ws/fixture.sql loads"; sed 's/^/# /' "$WORK/fixture.log" | tail; exit 0; }
STUDENT=$(psql_q -c "INSERT INTO kc_flow.students (display_name, timezone) VALUES ('Browser Test', 'Europe/Berlin') RETURNING id")

PORT=$(kc_free_port)
export KC_JWT_SECRET=browser-test-secret
if ! kc_gateway_start "$WORK/gw" "127.0.0.1:$PORT" KC_DATABASE_URL="$DB_URL" KC_REDIS_URL="${KC_REDIS_URL%/*}/7" \
        KC_DEMO=on KC_STATIC_DIR="$KC_ROOT/gateway/static"; then
    echo "not ok - browser: the gateway starts"; exit 0
fi
TOKEN=$("$KC_ROOT/gateway/kc-gateway" --issue-token="$STUDENT")
SHOT="$ART/home-$(date +%Y%m%d-%H%M%S).png"

GW_URL="http://127.0.0.1:$PORT" TOKEN=$TOKEN STUDENT=$STUDENT SHOT=$SHOT \
PSQL="psql -X -Atq -v ON_ERROR_STOP=1" timeout 120 node "$E2E/home_test.js"
rc=$?
[ $rc -ne 0 ] && echo "not ok - browser: the test program exited with $rc" && tail -5 "$WORK/gw/gateway.log" | sed 's/^/# /'
echo "# screenshot: $SHOT"

# Commit -> browser (test/e2e/latency_test.js): students of its own, courses and trainers of
# test/e2e/latency_fixture.sql.
PY=python3; [ -x /usr/bin/python3 ] && PY=/usr/bin/python3   # the Debian one has psycopg2
if psql_q -f "$E2E/latency_fixture.sql" >"$WORK/latency_fixture.log" 2>&1; then
    LSTUDENTS=$(psql_q -c "INSERT INTO kc_flow.students (display_name, timezone)
                           SELECT 'Latency ' || g, 'UTC' FROM generate_series(1, 10) g RETURNING id" | tr '\n' ' ')
    LTOKENS=""
    for s in $LSTUDENTS; do LTOKENS="$LTOKENS $("$KC_ROOT/gateway/kc-gateway" --issue-token="$s")"; done
    GW_URL="http://127.0.0.1:$PORT" DB_URL="$DB_URL" STUDENTS="$LSTUDENTS" TOKENS="$LTOKENS" PYTHON=$PY \
        PURCHASES=200 RATE=20 timeout 180 node "$E2E/latency_test.js"
    rc=$?
    [ $rc -ne 0 ] && echo "not ok - browser latency: the test program exited with $rc" && tail -5 "$WORK/gw/gateway.log" | sed 's/^/# /'
else
    echo "not ok - browser latency: test/e2e/latency_fixture.sql loads"; sed 's/^/# /' "$WORK/latency_fixture.log" | tail
fi

# The operator console (test/e2e/admin_test.js): a student of its own, an admin token.
NAME="Console Test $RANDOM$RANDOM"
CSTUDENT=$(psql_q -c "INSERT INTO kc_flow.students (display_name, timezone) VALUES ('$NAME', 'Europe/Berlin') RETURNING id")
CSHOT="$ART/admin-$(date +%Y%m%d-%H%M%S).png"
GW_URL="http://127.0.0.1:$PORT" ADMIN_TOKEN=$("$KC_ROOT/gateway/kc-gateway" --issue-token=ops --token-role=admin) \
STUDENT_TOKEN=$("$KC_ROOT/gateway/kc-gateway" --issue-token="$CSTUDENT") STUDENT=$CSTUDENT STUDENT_NAME=$NAME SHOT=$CSHOT \
PSQL="psql -X -Atq -v ON_ERROR_STOP=1" timeout 120 node "$E2E/admin_test.js"
rc=$?
[ $rc -ne 0 ] && echo "not ok - console: the test program exited with $rc" && tail -5 "$WORK/gw/gateway.log" | sed 's/^/# /'
echo "# screenshot: $CSHOT"
exit 0
