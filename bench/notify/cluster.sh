# bench/notify/cluster.sh: the throwaway cluster of the checkout benchmarks (run.sh, cpu.sh,
# profile.sh), sourced after test/cluster.sh: kc_flow preloaded with its workers off,
# synchronous_commit on, bench/notify/setup.sql's students and courses. Sets TMP, PGPORT and
# the libpq variables, and stops the cluster and removes TMP when the script exits.
TMP=$(mktemp -d /tmp/kc_bench.XXXXXX)
chmod 755 "$TMP"; chown postgres:postgres "$TMP"
export PGHOST=127.0.0.1 PGUSER=postgres PGDATABASE=kc_test
PGPORT=$(kc_free_port)
export PGPORT
trap 'kc_pg_stop "$TMP/pg"; rm -rf "$TMP"' EXIT
kc_pg_init "$TMP/pg" "$PGPORT" kc_test "synchronous_commit = on" "kc_flow.workers = 0" >/dev/null
kc_pg_start "$TMP/pg" "$PGPORT" kc_test
psql -q -X -v ON_ERROR_STOP=1 -f bench/notify/setup.sql >/dev/null
