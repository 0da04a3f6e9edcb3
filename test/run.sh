#!/usr/bin/env bash
# test/run.sh: the whole test suite, from a fresh Debian 12 machine.
# Installs missing packages, builds and installs kc_flow, starts a throwaway
# cluster (kc_flow preloaded, workers on) and Redis on loopback, runs every
# suite in test/suites/ and ends with "N passed, N failed".
#   bash test/run.sh [suite-name-substring...]
# KC_PG_CONF: extra postgresql.conf lines for that cluster, separated by ';'.
# KC_KEEP_TMP=1 keeps the servers' directories (logs) after the run.
set -uo pipefail
KC_ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$KC_ROOT" || exit 1
source test/cluster.sh

bash test/deps.sh test || { echo "could not install the packages the tests need"; echo "0 passed, 1 failed"; exit 1; }
make -s >/dev/null && make -s install >/dev/null || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }

KC_TEST_TMP=$(mktemp -d /tmp/kc_test.XXXXXX)
chmod 755 "$KC_TEST_TMP"; chown postgres:postgres "$KC_TEST_TMP"
export KC_ROOT KC_TEST_TMP PG_BIN
export PGHOST=127.0.0.1 PGUSER=postgres PGDATABASE=kc_test
PGPORT=$(kc_free_port) && REDIS_PORT=$(kc_free_port) ||
  { echo "no free port"; echo "0 passed, 1 failed"; exit 1; }
export PGPORT REDIS_PORT
export KC_DATABASE_URL="postgresql://postgres@127.0.0.1:$PGPORT/kc_test"
export KC_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"

cleanup() {
  kc_pg_stop "$KC_TEST_TMP/main"
  kc_redis_stop "$KC_TEST_TMP/redis"
  [ -n "${KC_KEEP_TMP:-}" ] || rm -rf "$KC_TEST_TMP"
}
trap cleanup EXIT

IFS=';' read -r -a extra_conf <<< "${KC_PG_CONF:-}"
if ! kc_pg_init "$KC_TEST_TMP/main" "$PGPORT" kc_test ${extra_conf[@]+"${extra_conf[@]}"} ||
   ! kc_pg_start "$KC_TEST_TMP/main" "$PGPORT" kc_test ||
   ! kc_redis_start "$KC_TEST_TMP/redis" "$REDIS_PORT"; then
  echo "the test servers did not start"; echo "0 passed, 1 failed"; exit 1
fi

passed=0; failed=0
for suite in test/suites/*.sh; do
  name=$(basename "$suite" .sh)
  if [ $# -gt 0 ]; then
    match=0; for want in "$@"; do [[ $name == *$want* ]] && match=1; done
    [ $match = 1 ] || continue
  fi
  echo "== $name"
  start=$SECONDS
  out="$KC_TEST_TMP/$name.out"
  bash "$suite" 2>&1 | tee "$out"
  p=$(grep -cE '^ok( [0-9]+)?( - |$)' "$out")
  f=$(grep -cE '^not ok( [0-9]+)?( - |$)' "$out")
  if [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then
    echo "not ok - $name reported no result"; f=1
  fi
  echo "== $name: $p passed, $f failed ($((SECONDS - start)) s)"
  passed=$((passed + p)); failed=$((failed + f))
done

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
