#!/usr/bin/env bash
# bench/run_all.sh (make bench): every benchmark in turn, each beside the limit it
# measures in the same run. The tables are printed together and kept in
# bench/results-<time>.txt; the one line of JSON each benchmark ends with is gathered,
# with the load average before each, in bench/results-<time>.json, so that runs can be
# compared by a script. About 12 minutes on the 2-core development machine.
set -uo pipefail
KC_ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$KC_ROOT"
stamp=$(date -u +%Y%m%dT%H%MZ)
out="bench/results-$stamp.txt"
json="bench/results-$stamp.json"
: >"$out"
lines=()
for b in pipeline system read_scale home ws browser; do
  echo "== bench/$b" | tee -a "$out"
  load=$(cut -d' ' -f1 /proc/loadavg)
  log=$(mktemp)
  if bash "bench/$b/run.sh" >"$log" 2>&1; then
    # each benchmark ends with its table, its ratios and one line of JSON
    tail -n "${KC_BENCH_TAIL:-24}" "$log" | tee -a "$out"
    figures=$(grep -E '^\{"bench":' "$log" | tail -1)
  else
    echo "bench/$b failed; its output:" | tee -a "$out"
    tail -20 "$log" | tee -a "$out"
    figures=""
  fi
  [ -n "$figures" ] || figures="{\"bench\":\"$b\",\"failed\":true}"
  lines+=("{\"load_before\":$load,\"figures\":$figures}")
  rm -f "$log"
  echo | tee -a "$out"
done
{
  printf '{"time":"%s","host_cores":%d,"commit":"%s","runs":[\n' "$stamp" "$(nproc)" \
    "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  for i in "${!lines[@]}"; do
    [ "$i" -gt 0 ] && printf ',\n'
    printf '  %s' "${lines[$i]}"
  done
  printf '\n]}\n'
} >"$json"
python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$json" || echo "warning: $json is not valid JSON"
echo "kept in $out and $json"
