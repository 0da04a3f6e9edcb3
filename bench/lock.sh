# bench/lock.sh: one benchmark at a time on this machine. Sourced at the top of a benchmark,
# bench_lock runs the benchmark again under flock(1) holding /tmp/kc_bench.lock, with the
# lock's descriptor closed in the benchmark itself (flock -o): the servers a benchmark starts
# do not inherit the lock, so one left running after a benchmark was killed cannot hold every
# later benchmark back.
#   usage, before the benchmark does anything:
#     . "$KC_ROOT/bench/lock.sh"; bench_lock "$KC_ROOT/bench/NAME/run.sh" "$@"
bench_lock() {
    local script=$1
    shift
    [ -n "${KC_BENCH_LOCKED:-}" ] && return 0
    echo "bench/$(basename "$(dirname "$script")"): waiting for the benchmark lock (/tmp/kc_bench.lock)..." >&2
    KC_BENCH_LOCKED=1 exec flock -o /tmp/kc_bench.lock bash "$script" "$@"
}
