#!/usr/bin/env bash
# test/suites/52_version_tokens.sh - version tokens with two gateways (docs/design.md §6):
# a push from gateway A, then a read through a deliberately late gateway B with
# ?min_version= (or KC-Min-Version) never shows an older view, with the in-process cache on
# in both. See test/gateway/test_versions.py.
#
# Uses the harness's Postgres (PGPORT, workers on) and Redis (KC_REDIS_URL's server, its
# database 6, shared by the two gateways), starts its own gateways on free ports and stops
# them. Run alone with `bash test/run.sh version`. Output: "ok - ..." / "not ok - ..." lines.
set -u
KC_ROOT=${KC_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
KC_TEST_TMP=${KC_TEST_TMP:-$(mktemp -d)}
export KC_ROOT PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres} PGDATABASE=${PGDATABASE:-kc_test}
export KC_DATABASE_URL=${KC_DATABASE_URL:-postgresql://$PGUSER@$PGHOST:$PGPORT/$PGDATABASE}
export KC_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/6"
WORK="$KC_TEST_TMP/versions-suite.$$"
PY=python3; [ -x /usr/bin/python3 ] && PY=/usr/bin/python3   # the Debian one has the Debian modules
mkdir -p "$WORK"

if ! make -s -C "$KC_ROOT/gateway" >"$WORK/build.log" 2>&1; then
    echo "not ok - versions: kc-gateway builds"
    sed 's/^/# /' "$WORK/build.log" | tail -20
    exit 0
fi
KC_VERSIONS_TMP="$WORK" timeout 300 $PY "$KC_ROOT/test/gateway/test_versions.py"
rc=$?
[ $rc -eq 124 ] && echo "not ok - versions: tests finished within 300 s"
[ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $rc -ne 1 ] && echo "not ok - versions: test program exited with $rc"
exit 0
