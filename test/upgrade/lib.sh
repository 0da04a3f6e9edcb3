#!/usr/bin/env bash
# test/upgrade/lib.sh - the few helpers the parts of the upgrade suite share
# (test/suites/27_upgrade.sh, test/upgrade/live.sh); sourced, it starts nothing.
# Servers come from test/cluster.sh, the one helper library for them.
#   sql DB [PSQL-ARG...]          psql on DB: quiet, unaligned, stops at the first error
#   check NAME EXPECTED ACTUAL    prints "ok - upgrade: NAME", or "not ok" with both values
#   wait_for DB SQL [SECONDS]     until SQL says t on DB (default at most 30 s); false if never

sql() { local db=$1; shift; psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }

check() {
  if [ "$2" = "$3" ]; then
    echo "ok - upgrade: $1"
  else
    echo "not ok - upgrade: $1"; echo "#   want: $2"; echo "#   got:  $3"
  fi
}

wait_for() {
  local tries=$(( ${3:-30} * 10 ))
  for _ in $(seq "$tries"); do [ "$(sql "$1" -c "$2")" = t ] && return 0; sleep 0.1; done
  return 1
}
