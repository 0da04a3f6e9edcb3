#!/usr/bin/env bash
# The pipeline with its background workers: the validation scenario, 500
# concurrent payments with duplicates, and, each on a cluster of its own,
# crashes and tables VACUUMed while empty.
set -u
cd "$KC_ROOT/test/pipeline" || exit 1
source "$KC_ROOT/test/cluster.sh"
PY=/usr/bin/python3

$PY validation.py || echo "not ok - validation.py exited with $?"
$PY concurrency.py || echo "not ok - concurrency.py exited with $?"
$PY worker_errors.py || echo "not ok - worker_errors.py exited with $?"
$PY wake_handoff.py || echo "not ok - wake_handoff.py exited with $?"

# the crash test gets its own cluster: it kills and restarts the server
crash_dir="$KC_TEST_TMP/crash"
stats_dir="$KC_TEST_TMP/stale_stats"
rm -rf "$crash_dir" "$stats_dir"
trap 'kc_pg_stop "$crash_dir"; kc_pg_stop "$stats_dir"' EXIT
crash_port=$(kc_free_port)
if kc_pg_init "$crash_dir" "$crash_port" kc_test "kc_flow.batch_size = 1" &&
   kc_pg_start "$crash_dir" "$crash_port" kc_test; then
  KC_CRASH_DIR="$crash_dir" PGPORT="$crash_port" $PY crash.py || echo "not ok - crash.py exited with $?"
else
  echo "not ok - crash test: a cluster of its own starts"
fi
kc_pg_stop "$crash_dir"

# empty tables VACUUMed, then traffic: autovacuum off, so only the workers may analyze them
stats_port=$(kc_free_port)
if kc_pg_init "$stats_dir" "$stats_port" kc_test "autovacuum = off" "${KC_PG_NO_FSYNC[@]}" &&
   kc_pg_start "$stats_dir" "$stats_port" kc_test; then
  PGPORT="$stats_port" $PY stale_stats.py || echo "not ok - stale_stats.py exited with $?"
else
  echo "not ok - stale stats test: a cluster of its own starts"
fi
