#!/usr/bin/env bash
# pgTAP tests (pg_prove), in a database of their own where the workers do not run.
set -u
cd "$KC_ROOT" || exit 1
psql -q -X -d postgres -c "DROP DATABASE IF EXISTS kc_pgtap" -c "CREATE DATABASE kc_pgtap" >/dev/null &&
  psql -q -X -d kc_pgtap -c "CREATE EXTENSION kc_flow CASCADE" >/dev/null 2>&1
pg_prove --verbose -d kc_pgtap test/pgtap/*.sql 2>&1 | grep -vE '^(All tests|Files=|Result:)' |
  sed -E 's/^ +//'
