#!/usr/bin/env bash
# test/suites/70_fuzz.sh - libFuzzer on kc-gateway's own parsing code (test/fuzz: router,
# query parameters, JWT claims, NOTIFY payloads, WebSocket handshake and messages), each
# for KC_FUZZ_SECONDS (default 20), then the gateway's unit tests under AddressSanitizer,
# LeakSanitizer and UndefinedBehaviorSanitizer. Needs neither Postgres nor Redis.
#
# Installs clang and the libFuzzer runtime when missing (Debian 12). Builds in a scratch
# directory; a crashing input is kept in test/fuzz/build/crashes/<target>/ and its path
# printed. Output: "ok - ..." / "not ok - ..." lines. Longer runs: docs/fuzzing.md.
set -u
KC_ROOT=${KC_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
if [ -z "${KC_TEST_TMP:-}" ]; then
    KC_TEST_TMP=$(mktemp -d)
    trap 'rm -rf "$KC_TEST_TMP"' EXIT
fi
SECONDS_EACH=${KC_FUZZ_SECONDS:-20}
FUZZ="$KC_ROOT/test/fuzz"
WORK="$KC_TEST_TMP/fuzz-suite.$$"
BUILD="$WORK/build"
CRASHES="$FUZZ/build/crashes"
TARGETS="fuzz_route fuzz_query fuzz_jwt fuzz_notify fuzz_ws"
mkdir -p "$WORK"

# clang with the libFuzzer and sanitizer runtimes
if ! bash "$KC_ROOT/test/deps.sh" test clang libclang-rt-14-dev >"$WORK/apt.log" 2>&1; then
    echo "not ok - fuzz: clang and libclang-rt-14-dev install"
    sed 's/^/# /' "$WORK/apt.log" | tail -10
    exit 0
fi

if nice make -s -C "$FUZZ" BUILD="$BUILD" all >"$WORK/build.log" 2>&1; then
    echo "ok - fuzz: the fuzzers and the sanitized unit tests build"
else
    echo "not ok - fuzz: the fuzzers and the sanitized unit tests build"
    sed 's/^/# /' "$WORK/build.log" | tail -20
    exit 0
fi
if grep -q 'warning:' "$WORK/build.log"; then
    echo "not ok - fuzz: the gateway and the fuzzers build without clang warnings"
    grep 'warning:' "$WORK/build.log" | sed 's/^/# /' | head
else
    echo "ok - fuzz: the gateway and the fuzzers build without clang warnings"
fi

# one fuzzer at a time (one core), new inputs in a scratch corpus, the committed seeds untouched
for t in $TARGETS; do
    mkdir -p "$WORK/corpus/$t" "$CRASHES/$t"
    log="$WORK/$t.log"
    nice "$BUILD/$t" -max_total_time="$SECONDS_EACH" -max_len=8192 -timeout=10 \
        -artifact_prefix="$CRASHES/$t/" "$WORK/corpus/$t" "$FUZZ/corpus/$t" >"$log" 2>&1
    rc=$?
    runs=$(sed -nE 's/^Done ([0-9]+) runs.*/\1/p' "$log" | tail -1)
    if [ $rc -eq 0 ] && [ -n "$runs" ]; then
        echo "ok - fuzz ${t#fuzz_}: $runs runs, 0 crashes"
    else
        input=$(sed -nE 's/.*Test unit written to (.*)$/\1/p' "$log" | tail -1)
        echo "not ok - fuzz ${t#fuzz_}: exit $rc, crashing input ${input:-(none written)}"
        { grep -E 'check failed|ERROR|runtime error|SUMMARY' "$log"
          grep -E '^ *#[0-9]+ .*/(gateway|test/fuzz)/' "$log"; } | head -20 | sed 's/^/# /'
        [ -n "$input" ] && echo "# replay: make -C test/fuzz && test/fuzz/build/$t $input"
    fi
done

# the unit tests of the gateway under ASan (with leak checks) and UBSan
ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=0 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$BUILD/test_unit" >"$WORK/unit.log" 2>&1
rc=$?
grep -E '^(not )?ok - ' "$WORK/unit.log" | sed -E 's/^(not ok|ok) - /\1 - asan+ubsan unit: /'
# a failing check has its own "not ok" line above; this one is about the sanitizers
if grep -q '^# unit: ' "$WORK/unit.log" && ! grep -qE 'ERROR: [A-Za-z]+Sanitizer|runtime error' "$WORK/unit.log"; then
    echo "ok - asan+ubsan unit: no memory error, leak or undefined behaviour"
else
    echo "not ok - asan+ubsan unit: no memory error, leak or undefined behaviour (exit $rc)"
    grep -vE '^(not )?ok - ' "$WORK/unit.log" | head -40 | sed 's/^/# /'
fi
