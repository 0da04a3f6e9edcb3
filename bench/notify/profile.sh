#!/usr/bin/env bash
# bench/notify/profile.sh: where a checkout backend's CPU goes. One session with the simple
# protocol runs N checkouts (the payment's INSERT, then `UPDATE kc_flow.payments SET status =
# 'succeeded'`), as bench/notify/cpu.sh's second kind; after a warm-up of 200, perf records
# its backend (2000 Hz, call graphs) until the last one. Its own Postgres (kc_flow preloaded,
# workers off). Writes FILE (perf report, inclusive share per symbol, from 0.1%) and
# FILE.data (the samples: perf report -i FILE.data).
#   usage: bash bench/notify/profile.sh FILE       KC_BENCH_CHECKOUTS (6000)
set -euo pipefail
KC_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$KC_ROOT/bench/lock.sh"; bench_lock "$KC_ROOT/bench/notify/profile.sh" "$@"
OUT=$(realpath -m "${1:?usage: bash bench/notify/profile.sh FILE}")
cd "$KC_ROOT"
source test/cluster.sh
bash test/deps.sh test >/dev/null
command -v perf >/dev/null || { echo "bench/notify/profile.sh: perf is missing (apt-get install linux-perf)" >&2; exit 1; }
make -s >/dev/null && make -s install >/dev/null
N=${KC_BENCH_CHECKOUTS:-6000}
WARM=200

source bench/notify/cluster.sh

for i in $(seq 1 "$N"); do
  echo "BEGIN;"
  echo "INSERT INTO kc_flow.payments (student_id, course_id, purchase_tier, time_slot, amount_cents)"
  echo "VALUES ('00000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-00000000c001', 10,"
  echo "        '{\"weekdays\":[1,3,5],\"start\":\"18:00\",\"timezone\":\"Asia/Kolkata\"}', 99900)"
  echo "RETURNING id AS pid \\gset"
  echo "UPDATE kc_flow.payments SET status = 'succeeded' WHERE id = :'pid';"
  echo "COMMIT;"
  if [ "$i" = "$WARM" ]; then
    echo "SELECT pg_backend_pid() AS bp \\gset"
    echo "\\setenv KC_BP :bp"
    echo "\\! perf record -q -F 2000 -g -p \$KC_BP -o $TMP/perf.data >/dev/null 2>&1 & echo \$! > $TMP/perf.pid; sleep 1"
  fi
done > "$TMP/run.sql"
echo "\\! kill -INT \$(cat $TMP/perf.pid); while kill -0 \$(cat $TMP/perf.pid) 2>/dev/null; do sleep 0.2; done" >> "$TMP/run.sql"
psql -q -X -v ON_ERROR_STOP=1 -f "$TMP/run.sql" >/dev/null
cp "$TMP/perf.data" "$OUT.data"
perf report -i "$OUT.data" --stdio --children -g none --percent-limit 0.1 2>/dev/null | grep -v '^$' > "$OUT"
echo "bench/notify/profile.sh: $(grep -m1 '^# Samples' "$OUT" | sed 's/^# //') of $((N - WARM)) checkouts; $OUT, $OUT.data"
