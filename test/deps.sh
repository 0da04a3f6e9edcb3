#!/usr/bin/env bash
# test/deps.sh: installs the Debian packages the build and the tests need,
# when they are missing.  Safe to run again; needs root (or sudo) to install.
set -euo pipefail

packages=(
  build-essential postgresql-15 postgresql-client-15 postgresql-contrib postgresql-server-dev-15
  postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl
  redis-server redis-tools libmicrohttpd-dev libhiredis-dev libcjson-dev libpq-dev
  libwslay-dev libjwt-dev libssl-dev wrk curl procps python3 python3-psycopg2 python3-websockets
)
[ -n "${KC_EXTRA_PACKAGES:-}" ] && packages+=(${KC_EXTRA_PACKAGES})

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
