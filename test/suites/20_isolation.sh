#!/usr/bin/env bash
# Isolation specs (pg_isolation_regress): races between concurrent sessions.
set -u
cd "$KC_ROOT/test/isolation" || exit 1
ISO=$(dirname "$(pg_config --pgxs)")/../../src/test/isolation/pg_isolation_regress
specs=$(ls specs/*.spec | xargs -n1 basename | sed 's/\.spec$//')
"$ISO" --inputdir=. --outputdir="$KC_TEST_TMP/isolation" --bindir="$(pg_config --bindir)" \
  --host="$PGHOST" --port="$PGPORT" --user="$PGUSER" --dbname=kc_isolation $specs >"$KC_TEST_TMP/isolation.log" 2>&1
for s in $specs; do
  if grep -qE "^(test|permutation)? *$s +\.\.\. ok|^ok [0-9]+ +[-+] $s" "$KC_TEST_TMP/isolation.log" || grep -qE " $s +\.\.\. ok" "$KC_TEST_TMP/isolation.log"; then
    echo "ok - isolation $s"
  else
    echo "not ok - isolation $s"
    sed 's/^/# /' "$KC_TEST_TMP/isolation/regression.diffs" 2>/dev/null | head -60
  fi
done
