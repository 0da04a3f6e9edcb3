#!/usr/bin/env bash
# pgTAP tests (pg_prove), in a database of their own where the workers do not run.
# Each file is proved on its own, so that a file which dies before or between its
# assertions (pg_prove's "Dubious" or a plan that was not met) is reported as a
# failure even when it printed no "not ok" line.
set -u
cd "$KC_ROOT" || exit 1
psql -q -X -d postgres -c "DROP DATABASE IF EXISTS kc_pgtap" -c "CREATE DATABASE kc_pgtap" >/dev/null &&
  psql -q -X -d kc_pgtap -c "CREATE EXTENSION kc_flow CASCADE" >/dev/null 2>&1
for f in test/pgtap/*.sql; do
  out=$(pg_prove --verbose -d kc_pgtap "$f" 2>&1)
  rc=$?
  printf '%s\n' "$out" | grep -vE '^(All tests|Files=|Result:)' | sed -E 's/^ +//'
  if [ "$rc" -ne 0 ] && ! printf '%s\n' "$out" | grep -qE '^ *not ok'; then
    echo "not ok - pgtap: $f did not run to its plan (pg_prove exit $rc)"
  fi
done
