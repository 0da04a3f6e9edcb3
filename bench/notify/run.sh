#!/usr/bin/env bash
# bench/notify/run.sh: confirmations/s of the platform's own checkout transaction
# (insert a payment, confirm it: kc_flow's trigger writes the event) beside the same
# transaction plus one pg_notify (kc_flow 0.1.0 sent one from it: the control), in the
# same run, alternated ROUNDS times, pgbench -c CLIENTS, synchronous_commit on.  Its own
# Postgres (kc_flow preloaded, workers off: the application's commit path alone, the
# pipeline's work would be the same on both sides).  The last line is one JSON object.
#   KC_BENCH_CLIENTS (8)  KC_BENCH_DURATION (10 s per side per round)  KC_BENCH_ROUNDS (3)
set -euo pipefail
KC_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$KC_ROOT/bench/lock.sh"; bench_lock "$KC_ROOT/bench/notify/run.sh" "$@"
cd "$KC_ROOT"
source test/cluster.sh
bash test/deps.sh test >/dev/null
make -s >/dev/null && make -s install >/dev/null
CLIENTS=${KC_BENCH_CLIENTS:-8}
DURATION=${KC_BENCH_DURATION:-10}
ROUNDS=${KC_BENCH_ROUNDS:-3}

source bench/notify/cluster.sh

tps() {  # tps SCRIPT: one pgbench run, prints its tps
  pgbench -n -c "$CLIENTS" -j 2 -T "$DURATION" -f "bench/notify/$1" 2>&1 |
    sed -n 's/^tps = \([0-9.]*\) .*/\1/p'
}
plain=(); control=()
echo "checkout transactions/s, pgbench -c $CLIENTS -T $DURATION, synchronous_commit on, $ROUNDS rounds"
printf '%-6s %14s %24s\n' round "with trigger" "with trigger + pg_notify"
for r in $(seq 1 "$ROUNDS"); do
  a=$(tps confirm.sql); b=$(tps confirm_notify.sql)
  plain+=("$a"); control+=("$b")
  printf '%-6s %14s %24s\n' "$r" "$a" "$b"
done
python3 - "${plain[*]}" "${control[*]}" "$CLIENTS" "$DURATION" <<'PY'
import json, statistics, sys
plain = [float(x) for x in sys.argv[1].split()]
control = [float(x) for x in sys.argv[2].split()]
mp, mc = statistics.median(plain), statistics.median(control)
print("median: %.0f/s with the trigger, %.0f/s with the trigger + pg_notify: x%.2f" % (mp, mc, mp / mc))
print(json.dumps({"bench": "notify", "clients": int(sys.argv[3]), "duration_s": int(sys.argv[4]),
                  "confirm_tps": plain, "confirm_notify_tps": control,
                  "confirm_tps_median": round(mp, 1), "confirm_notify_tps_median": round(mc, 1),
                  "ratio": round(mp / mc, 2)}))
PY
