#!/usr/bin/env bash
# pg_regress tests: sql/*.sql against expected/*.out, one result line per test.
set -u
cd "$KC_ROOT" || exit 1
bash test/regress.sh >"$KC_TEST_TMP/regress.log" 2>&1
grep -E '^(test |     |ok |not ok )' "$KC_TEST_TMP/regress.log" | grep -E '\.\.\. |^(not )?ok ' |
while read -r line; do
  name=$(echo "$line" | sed -E 's/^(test +|ok +[0-9]+ +[-+] +|not ok +[0-9]+ +[-+] +)?//; s/ +\.\.\..*//; s/ +[0-9]+ ms$//')
  if echo "$line" | grep -qE '\.\.\. ok|^ok '; then echo "ok - regress $name"; else echo "not ok - regress $name"; fi
done
if grep -q FAILED "$KC_TEST_TMP/regress.log"; then
  sed 's/^/# /' regression.diffs | head -80
fi
