#!/usr/bin/env bash
# bench/notify/cpu.sh: the backend's own CPU time per checkout, the figure that a
# throughput run on a shared machine cannot give. One session with the simple protocol
# (as the platform sends it) runs N checkouts of each kind: the payment's INSERT alone,
# INSERT + `UPDATE kc_flow.payments SET status = 'succeeded'`, INSERT + confirm_payment();
# the CPU is utime + stime of its backend (/proc/PID/stat, 10 ms ticks) over the N.
# The UPDATE's own cost is the second kind less the first. Its own Postgres (kc_flow
# preloaded, workers off), ROUNDS rounds; the last line is one JSON object.
#   KC_BENCH_CHECKOUTS (1000)  KC_BENCH_ROUNDS (3)
set -euo pipefail
KC_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$KC_ROOT/bench/lock.sh"; bench_lock "$KC_ROOT/bench/notify/cpu.sh" "$@"
cd "$KC_ROOT"
source test/cluster.sh
bash test/deps.sh test >/dev/null
make -s >/dev/null && make -s install >/dev/null
N=${KC_BENCH_CHECKOUTS:-1000}
ROUNDS=${KC_BENCH_ROUNDS:-3}

source bench/notify/cluster.sh

checkouts() {  # checkouts KIND: N checkout transactions of KIND as one psql script
  local _
  for _ in $(seq 1 "$N"); do
    echo "BEGIN;"
    echo "INSERT INTO kc_flow.payments (student_id, course_id, purchase_tier, time_slot, amount_cents)"
    echo "VALUES ('00000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-00000000c001', 10,"
    echo "        '{\"weekdays\":[1,3,5],\"start\":\"18:00\",\"timezone\":\"Asia/Kolkata\"}', 99900)"
    echo "RETURNING id AS pid \\gset"
    case $1 in
      update) echo "UPDATE kc_flow.payments SET status = 'succeeded' WHERE id = :'pid';" ;;
      confirm) echo "SELECT kc_flow.confirm_payment(:'pid');" ;;
    esac
    echo "COMMIT;"
  done
}
cpu_us() {  # cpu_us KIND: backend CPU in us per checkout of KIND
  checkouts "$1" > "$TMP/$1.sql"
  {
    echo "SELECT pg_backend_pid() AS bp \\gset"
    echo "\\setenv KC_BP :bp"
    echo "\\! awk '{print \$14 + \$15}' /proc/\$KC_BP/stat > $TMP/ticks0"
    echo "\\i $TMP/$1.sql"
    echo "\\! awk '{print \$14 + \$15}' /proc/\$KC_BP/stat > $TMP/ticks1"
  } > "$TMP/run.sql"
  psql -q -X -v ON_ERROR_STOP=1 -f "$TMP/run.sql" >/dev/null
  echo $(( ($(cat "$TMP/ticks1") - $(cat "$TMP/ticks0")) * 1000000 / $(getconf CLK_TCK) / N ))
}
ins=(); upd=(); cnf=()
echo "backend CPU per checkout (us), $N checkouts per kind, one session, $ROUNDS rounds"
printf '%-6s %8s %17s %26s\n' round insert "insert + UPDATE" "insert + confirm_payment()"
for r in $(seq 1 "$ROUNDS"); do
  a=$(cpu_us insert); b=$(cpu_us update); c=$(cpu_us confirm)
  ins+=("$a"); upd+=("$b"); cnf+=("$c")
  printf '%-6s %8s %17s %26s\n' "$r" "$a" "$b" "$c"
done
python3 - "${ins[*]}" "${upd[*]}" "${cnf[*]}" "$N" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import json, statistics, sys
ins, upd, cnf = ([int(x) for x in a.split()] for a in sys.argv[1:4])
mi, mu, mc = statistics.median(ins), statistics.median(upd), statistics.median(cnf)
print("median: insert %d us, insert + UPDATE %d us (UPDATE %d), insert + confirm_payment() %d us (confirm %d)"
      % (mi, mu, mu - mi, mc, mc - mi))
print(json.dumps({"bench": "notify_cpu", "checkouts": int(sys.argv[4]), "insert_us": ins,
                  "insert_update_us": upd, "insert_confirm_us": cnf, "update_us_median": mu - mi,
                  "confirm_us_median": mc - mi, "load": sys.argv[5].split()}))
PY
