#!/usr/bin/env bash
# test/deps.sh PROFILE [PACKAGE...] - the one list of the Debian 12 packages kc_flow needs,
# and the one way to install them: installs those of PROFILE, and each PACKAGE given (what a
# single suite needs beyond the list: chromium for the browser suite, clang for the fuzzers),
# that are not installed yet. Safe to run again; installing needs root, or sudo.
#   run   build the extension and the gateway, and run them: `make run` (scripts/run-demo.sh)
#   fleet `run`, plus the fleet's parts: `make run-fleet` (scripts/run-fleet.sh, test/fleet.sh:
#         pg_auto_failover, HAProxy, openssl for its certificate)
#   test  `fleet`, plus what the test suites and the benchmarks use (test/run.sh, bench/)
#   deb   `run`, plus what building and checking the Debian packages takes (debian/,
#         dpkg-buildpackage -b; test/suites/85_debian.sh)
set -euo pipefail

run_packages=(
  build-essential postgresql-15 postgresql-client-15 postgresql-contrib postgresql-server-dev-15 libpq-dev
  redis-server redis-tools
  libmicrohttpd-dev libhiredis-dev libcjson-dev libjwt-dev libwslay-dev libssl-dev
  curl procps python3
)
fleet_packages=(
  postgresql-15-auto-failover haproxy openssl
)
test_packages=(
  postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl wrk python3-psycopg2 python3-websockets
)
deb_packages=(
  dpkg-dev debhelper postgresql-server-dev-all help2man fakeroot lintian systemd
)

case "${1:-}" in
  run)  packages=("${run_packages[@]}") ;;
  fleet) packages=("${run_packages[@]}" "${fleet_packages[@]}") ;;
  test) packages=("${run_packages[@]}" "${fleet_packages[@]}" "${test_packages[@]}") ;;
  deb)  packages=("${run_packages[@]}" "${deb_packages[@]}") ;;
  *)    echo "usage: test/deps.sh run|fleet|test|deb [PACKAGE...]" >&2; exit 2 ;;
esac
shift
packages+=("$@")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null; then
    echo "deps: missing Debian packages: ${missing[*]} (install them as root: apt-get install ${missing[*]})" >&2
    exit 1
  fi
  SUDO=(sudo)
fi
echo "deps: installing ${missing[*]}"
# other runs on this machine may hold the apt locks for a while: wait for them
apt=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq -o DPkg::Lock::Timeout=300)
"${apt[@]}" update >/dev/null
"${apt[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null
