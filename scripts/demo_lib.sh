#!/usr/bin/env bash
# scripts/demo_lib.sh - what `make run` (scripts/run-demo.sh) and `make run-fleet`
# (scripts/run-fleet.sh) share: building and installing kc_flow, a work folder removed with
# everything the script started in it on exit or Ctrl-C, loading the demo data and the demo
# tokens. Source it from a script with `set -euo pipefail` after setting ROOT (the tree's
# root); it sources test/cluster.sh. Call each function directly (not inside $(...)): they
# set variables of the calling script.
#
#   demo_build DEPS
#       installs the Debian packages of `test/deps.sh DEPS` that are missing, builds kc_flow
#       and installs it (with sudo when not root).
#   demo_workdir NAME STOP
#       makes WORK, a new folder /tmp/kc-NAME.XXXXXX; on exit, Ctrl-C or SIGTERM, prints
#       "SCRIPT: stopping" (SCRIPT: the script's name without .sh), calls the function STOP (which stops what the script started in
#       WORK, whatever each step answers), removes WORK and exits (with 0 after Ctrl-C or
#       SIGTERM, else with the script's status).
#   demo_load PSQL...
#       loads scripts/demo_data.sql with the psql command PSQL... (run as postgres), waits
#       (at most 30 s) for the workers to process its payments, so that the first page shows
#       them, and refreshes the trending courses.
#   demo_tokens GATEWAY...
#       sets T1 and T3 (the demo students Asha and Chen, S1 and S3) and TA (an admin) to
#       tokens issued by the kc-gateway command GATEWAY... (with the secret it verifies).

. "$ROOT/test/cluster.sh"

DEMO_SCRIPT=$(basename "$0" .sh)

S1=11111111-1111-4111-8111-111111111111
S3=33333333-3333-4333-8333-333333333333

demo_build() {
    bash "$ROOT/test/deps.sh" "$1"
    make -s -C "$ROOT" >/dev/null
    if [ "$(id -u)" = 0 ]; then make -s -C "$ROOT" install >/dev/null; else sudo make -s -C "$ROOT" install >/dev/null; fi
}

demo_workdir() {
    _DEMO_STOP=$2
    WORK=$(mktemp -d "/tmp/kc-$1.XXXXXX")
    chmod 755 "$WORK"
    trap '_demo_cleanup $?' EXIT
    trap '_demo_cleanup 0' INT TERM
}

# _demo_cleanup STATUS: the end of demo_workdir's script
_demo_cleanup() {
    local status=$1
    trap - EXIT INT TERM
    set +e                  # stop everything, whatever each step answers
    echo
    echo "$DEMO_SCRIPT: stopping"
    "$_DEMO_STOP"
    rm -rf "$WORK"
    exit "$status"
}

demo_load() {
    kc_as_postgres "$@" -f "$ROOT/scripts/demo_data.sql" >/dev/null
    echo "$DEMO_SCRIPT: waiting for the workers to process the demo payments"
    for _ in $(seq 1 300); do
        [ "$(kc_as_postgres "$@" -c "SELECT count(*) FROM kc_flow.event_queue")" = 0 ] && break
        sleep 0.1
    done
    kc_as_postgres "$@" -c "SELECT kc_flow.refresh_trending()" >/dev/null
}

# shellcheck disable=SC2034  # T1, T3 and TA are the calling script's
demo_tokens() {
    T1=$("$@" --issue-token=$S1)
    T3=$("$@" --issue-token=$S3)
    TA=$("$@" --issue-token=ops --token-role=admin)
}
