#!/usr/bin/env bash
# test/regress.sh: runs the pg_regress tests (sql/, expected/) against the
# server in PGHOST/PGPORT, in a fresh database kc_regress.  Used by the suite
# and handy alone:  PGPORT=... bash test/regress.sh [test...]
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
PGXS_DIR=$(dirname "$(pg_config --pgxs)")/../..
tests=("$@")
[ ${#tests[@]} -eq 0 ] && tests=($(ls sql/*.sql | xargs -n1 basename | sed 's/\.sql$//'))
"$PGXS_DIR/src/test/regress/pg_regress" --inputdir=. --bindir="$(pg_config --bindir)" \
  --host="${PGHOST:-127.0.0.1}" --port="${PGPORT:-5432}" --user="${PGUSER:-postgres}" \
  --dbname=kc_regress "${tests[@]}"
