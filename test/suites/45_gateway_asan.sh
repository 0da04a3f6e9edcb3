#!/usr/bin/env bash
# The gateway's integration tests again, against a build of kc-gateway with
# AddressSanitizer and UndefinedBehaviorSanitizer: any report aborts the gateway
# (and so fails a check), and the logs are searched for reports afterwards. A failed
# check keeps its diagnostic lines; the passing checks' comments are left out.
set -u
cd "$KC_ROOT" || exit 1
build="$KC_TEST_TMP/gateway-asan"
rm -rf "$build"; mkdir -p "$build"
cp gateway/*.c gateway/*.h gateway/Makefile "$build/"
# from the environment, so that the Makefile's own flags are added to them
if CFLAGS="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
   LDFLAGS="-fsanitize=address,undefined" make -s -C "$build" kc-gateway >"$build/build.log" 2>&1; then
  echo "ok - asan: kc-gateway builds with -fsanitize=address,undefined"
else
  echo "not ok - asan: kc-gateway builds with -fsanitize=address,undefined"
  sed 's/^/# /' "$build/build.log" | tail -20
  exit 0
fi
mkdir -p "$build/static" && cp -r gateway/static/. "$build/static/"

# leaks of the libraries at exit are not the point here; memory errors and UB are
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$build/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$build/ubsan"
KC_TEST_TMP="$build" KC_GATEWAY_BIN="$build/kc-gateway" bash test/suites/40_gateway.sh 2>&1 |
  awk '/^(ok|not ok) - /{failed = /^not ok/; print; next} failed && /^#/' |
  grep -vE ' - (gateway: kc-gateway and its test programs build|gateway: builds without compiler warnings)' |
  sed -E 's/^(ok|not ok) - /\1 - asan: /'
reports=$(ls "$build"/asan.* "$build"/ubsan.* 2>/dev/null | wc -l)
if [ "$reports" -eq 0 ]; then
  echo "ok - asan: no AddressSanitizer or UndefinedBehaviorSanitizer report during the integration tests"
else
  echo "not ok - asan: $reports sanitizer report(s) during the integration tests"
  cat "$build"/asan.* "$build"/ubsan.* 2>/dev/null | head -40 | sed 's/^/# /'
fi
