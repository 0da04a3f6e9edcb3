#!/usr/bin/env bash
# The extension on a server that does not preload it (managed databases, tests).
set -u
cd "$KC_ROOT/test/pipeline" || exit 1
source "$KC_ROOT/test/cluster.sh"
dir="$KC_TEST_TMP/no_preload"
rm -rf "$dir"
trap 'kc_pg_stop "$dir"' EXIT
port=$(kc_free_port)
if ! kc_pg_init "$dir" "$port" kc_test "shared_preload_libraries = ''" ||
   ! sed -i '/^kc_flow\./d' "$dir/data/postgresql.conf" || ! kc_pg_start "$dir"; then
  echo "not ok - a cluster without shared_preload_libraries starts"
  exit 0
fi
psql -q -X -p "$port" -d postgres -c "CREATE DATABASE kc_test" >/dev/null
if psql -q -X -p "$port" -c "SET client_min_messages = warning" -c "CREATE EXTENSION kc_flow CASCADE" >/dev/null; then
  echo "ok - CREATE EXTENSION works without shared_preload_libraries"
  PGPORT="$port" /usr/bin/python3 no_preload.py || echo "not ok - no_preload.py exited with $?"
else
  echo "not ok - CREATE EXTENSION works without shared_preload_libraries"
fi
