#!/usr/bin/env bash
# bench/run_all.sh (make bench): every benchmark in turn, each beside the limit it
# measures in the same run; the tables are printed together at the end and kept in
# bench/results-<time>.txt.  About 10 minutes on the 2-core development machine.
set -uo pipefail
KC_ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$KC_ROOT" || exit 1
out="bench/results-$(date -u +%Y%m%dT%H%MZ).txt"
: >"$out"
for b in pipeline system read_scale home ws; do
  echo "== bench/$b" | tee -a "$out"
  log=$(mktemp)
  if bash "bench/$b/run.sh" >"$log" 2>&1; then
    # each benchmark ends with its table and ratios
    tail -n "${KC_BENCH_TAIL:-24}" "$log" | tee -a "$out"
  else
    echo "bench/$b failed; its output:" | tee -a "$out"
    tail -20 "$log" | tee -a "$out"
  fi
  rm -f "$log"
  echo | tee -a "$out"
done
echo "kept in $out"
