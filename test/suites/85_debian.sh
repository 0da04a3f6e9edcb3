#!/usr/bin/env bash
# test/suites/85_debian.sh - the Debian packages (debian/): built with dpkg-buildpackage -b
# from a copy of the tree, checked with lintian, installed with dpkg -i, their files listed
# with dpkg -L, the unit checked with systemd-analyze verify (systemd is not PID 1 here, so
# the unit itself is never started), then a cluster of its own that loads the INSTALLED
# extension runs the validation scenario, and the INSTALLED /usr/bin/kc-gateway, as the
# kc-gateway user with /etc/default/kc-gateway's settings, serves that student's home with
# the sessions and the installed demo page.
# Installing the package puts the extension where `make install` does: the suite ends with
# `make install` of this tree, so the suites after it test the tree's own build.
set -u
cd "$KC_ROOT" || exit 1
source test/cluster.sh

dir="$KC_TEST_TMP/debian"
ext=postgresql-15-kc-flow
gw=kc-gateway
check() {  # check NAME COMMAND...: ok when COMMAND succeeds
  local name=$1; shift
  if "$@"; then echo "ok - debian: $name"; else echo "not ok - debian: $name"; fi
}

cleanup() {
  kc_gateway_stop "$dir/gw" >/dev/null 2>&1
  kc_redis_stop "$dir/redis"
  kc_pg_stop "$dir/pg"
  make -s install >/dev/null 2>&1 || echo "not ok - debian: make install of the tree again after the packages"
}
trap cleanup EXIT
rm -rf "$dir" && mkdir -p "$dir/src" || exit 1

if ! bash test/deps.sh deb >"$dir/deps.log" 2>&1; then
  echo "not ok - debian: the packaging tools install (test/deps.sh deb)"; sed 's/^/# /' "$dir/deps.log"; exit 0
fi

# a copy of the tree without its build outputs: what git would commit, plus untracked files
if ! git ls-files -co --exclude-standard -z | tar -c --null -T - -f - | tar -x -C "$dir/src" -f -; then
  echo "not ok - debian: a copy of the tree (git ls-files: $KC_ROOT must be a git work tree)"; exit 0
fi
start=$SECONDS
if (cd "$dir/src" && dpkg-buildpackage -us -uc -b -j2) >"$dir/build.log" 2>&1; then
  echo "ok - debian: dpkg-buildpackage -us -uc -b builds from a clean copy ($((SECONDS - start)) s)"
else
  echo "not ok - debian: dpkg-buildpackage -us -uc -b builds from a clean copy"
  tail -30 "$dir/build.log" | sed 's/^/# /'; exit 0
fi
version=$(cd "$dir/src" && dpkg-parsechangelog -S Version)
arch=$(dpkg --print-architecture)
debs=("$dir/${ext}_${version}_$arch.deb" "$dir/${gw}_${version}_$arch.deb")
check "both packages are built ($ext, $gw $version)" test -f "${debs[0]}" -a -f "${debs[1]}"

if lintian --fail-on error,warning "$dir/kc-flow_${version}_$arch.changes" >"$dir/lintian.log" 2>&1; then
  echo "ok - debian: lintian: no error or warning (overrides: debian/*.lintian-overrides)"
else
  echo "not ok - debian: lintian: no error or warning"; sed 's/^/# /' "$dir/lintian.log"
fi

# dpkg -i over an installed version works too (a second run of this suite); another run's
# apt may hold dpkg's lock for a while: wait for it, as test/deps.sh does; a conffile the
# administrator changed is kept, without a question
for _ in $(seq 1 60); do
  dpkg -i --force-confdef --force-confold "${debs[@]}" >"$dir/install.log" 2>&1 && break
  if ! grep -q 'lock' "$dir/install.log"; then
    DEBIAN_FRONTEND=noninteractive apt-get -qq -o DPkg::Lock::Timeout=300 -f install -y >>"$dir/install.log" 2>&1
    break
  fi
  sleep 5
done
check "dpkg -i installs both" test "$(dpkg-query -W -f='${db:Status-Status} ${Version}\n' $ext $gw | sort -u)" = "installed $version"

listed() {  # listed PACKAGE PATH...: dpkg -L PACKAGE lists every PATH
  local pkg=$1 p; shift
  for p in "$@"; do dpkg -L "$pkg" | grep -qx "$p" || { echo "# $pkg lacks $p"; return 1; }; done
}
share=/usr/share/postgresql/15/extension
check "$ext holds the library, the control file and every SQL script" listed $ext \
  /usr/lib/postgresql/15/lib/kc_flow.so $share/kc_flow.control \
  $share/kc_flow--0.1.0.sql $share/kc_flow--0.2.0.sql $share/kc_flow--0.1.0--0.2.0.sql
check "$gw holds the daemon, its unit, its configuration and the demo page" listed $gw \
  /usr/bin/kc-gateway /lib/systemd/system/kc-gateway.service /etc/default/kc-gateway \
  /usr/share/kc-gateway/static/index.html /usr/share/kc-gateway/static/admin.html /usr/share/man/man8/kc-gateway.8.gz
check "/etc/default/kc-gateway is a conffile readable by root only" \
  test "$(dpkg-query -W -f='${Conffiles}' $gw | awk '{print $1}' | xargs):$(stat -c %a /etc/default/kc-gateway)" \
       = "/etc/default/kc-gateway:600"
check "postinst made the system user kc-gateway (no login shell)" \
  test "$(getent passwd kc-gateway | awk -F: '$3 < 1000 {print $7}')" = /usr/sbin/nologin

unit=/lib/systemd/system/kc-gateway.service
if systemd-analyze verify "$unit" >"$dir/verify.log" 2>&1 && [ ! -s "$dir/verify.log" ]; then
  echo "ok - debian: systemd-analyze verify kc-gateway.service: no error, no warning (not started: systemd is not PID 1 here)"
else
  echo "not ok - debian: systemd-analyze verify kc-gateway.service"; sed 's/^/# /' "$dir/verify.log"
fi
for line in User=kc-gateway EnvironmentFile=/etc/default/kc-gateway ExecStart=/usr/bin/kc-gateway \
            Restart=on-failure NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes \
            CapabilityBoundingSet= RestrictAddressFamilies='AF_UNIX AF_INET AF_INET6'; do
  grep -qx "$line" "$unit" || echo "the unit lacks $line"
done >"$dir/unit.log"
check "the unit runs as kc-gateway with /etc/default/kc-gateway, restarts on failure, hardened" \
  test ! -s "$dir/unit.log"
sed 's/^/# /' "$dir/unit.log"

# a cluster of its own: it loads /usr/lib/postgresql/15/lib/kc_flow.so as the package left it
check "the installed extension files are the package's (dpkg --verify $ext)" \
  test -z "$(dpkg --verify $ext 2>&1)"
pg_port=$(kc_free_port) && redis_port=$(kc_free_port) && gw_port=$(kc_free_port) || exit 1
if ! kc_pg_init "$dir/pg" "$pg_port" kc_test || ! kc_pg_start "$dir/pg" "$pg_port" kc_test ||
   ! kc_redis_start "$dir/redis" "$redis_port"; then
  echo "not ok - debian: a cluster and a Redis of its own start"; exit 0
fi
psql_deb() { psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres "$@"; }
check "CREATE EXTENSION from the package installs $(sed -n "s/^default_version = '\(.*\)'/\1/p" kc_flow.control)" \
  test "$(psql_deb -d kc_test -c "SELECT extversion FROM pg_extension WHERE extname = 'kc_flow'")" = \
       "$(sed -n "s/^default_version = '\(.*\)'/\1/p" kc_flow.control)"
PGOPTIONS="-c client_min_messages=warning" psql_deb -d postgres -c "DROP DATABASE IF EXISTS kc_deb_upgrade" -c "CREATE DATABASE kc_deb_upgrade" >/dev/null
check "the package's 0.1.0 script and its upgrade script: 0.1.0, then ALTER EXTENSION UPDATE" \
  test "$(psql_deb -d kc_deb_upgrade -c "SET client_min_messages = warning" \
            -c "CREATE EXTENSION kc_flow VERSION '0.1.0' CASCADE" \
            -c "SELECT extversion FROM pg_extension WHERE extname = 'kc_flow'" \
            -c "ALTER EXTENSION kc_flow UPDATE" \
            -c "SELECT extversion FROM pg_extension WHERE extname = 'kc_flow'" | xargs)" = "0.1.0 0.2.0"

(cd test/pipeline && PGPORT=$pg_port PGDATABASE=kc_test /usr/bin/python3 validation.py) 2>&1 |
  sed -E 's/^(not )?ok - /&installed package: /'
rc=${PIPESTATUS[0]}
[ "$rc" = 0 ] || echo "not ok - debian: validation.py on the installed package exited with $rc"
check "the background workers are the package's library (dpkg --verify $ext after the scenario)" \
  test -z "$(dpkg --verify $ext 2>&1)"

# the installed gateway: the configuration file's settings (as systemd reads it, as root),
# the test servers instead of its defaults, run as kc-gateway without new privileges
secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '#!/bin/sh\nexec setpriv --reuid=kc-gateway --regid=kc-gateway --init-groups --no-new-privs /usr/bin/kc-gateway "$@"\n' \
  >"$dir/kc-gateway-as-user"
chmod 755 "$dir/kc-gateway-as-user"
mapfile -t conf < <(grep -E '^KC_[A-Z_]+=' /etc/default/kc-gateway)
if ! KC_GATEWAY_BIN="$dir/kc-gateway-as-user" kc_gateway_start "$dir/gw" "127.0.0.1:$gw_port" "${conf[@]}" \
     KC_DATABASE_URL="postgresql://postgres@127.0.0.1:$pg_port/kc_test" \
     KC_REDIS_URL="redis://127.0.0.1:$redis_port/0" KC_JWT_SECRET="$secret"; then
  echo "not ok - debian: the installed kc-gateway starts as kc-gateway"; exit 0
fi
check "the installed gateway runs as the kc-gateway user" \
  test "$(stat -c %U "/proc/$(cat "$dir/gw/gateway.pid")")" = kc-gateway
student=$(psql_deb -d kc_test -c "SELECT student_id FROM kc_flow.tutoring_sessions GROUP BY 1 HAVING count(*) = 30 LIMIT 1")
token=$(KC_JWT_SECRET=$secret /usr/bin/kc-gateway --issue-token "$student")
curl -s -D "$dir/home.headers" -o "$dir/home.json" -H "Authorization: Bearer $token" \
  "http://127.0.0.1:$gw_port/api/v1/students/$student/home"
check "GET home through the installed gateway shows the scenario's 30 sessions" python3 -c '
import json, sys
h = json.load(open(sys.argv[1]))
sys.exit(not (h["student_id"] == sys.argv[2] and h["overview"]["upcoming_sessions"] == 30
              and len(h["upcoming_sessions"]) > 0))' "$dir/home.json" "$student"
check "a second GET is a cache HIT in its own Redis" test "$(curl -s -o /dev/null -D - \
  -H "Authorization: Bearer $token" "http://127.0.0.1:$gw_port/api/v1/students/$student/home" |
  tr -d '\r' | sed -n 's/^X-Cache: //Ip')" = HIT
curl -s -o "$dir/index.html" "http://127.0.0.1:$gw_port/"
check "GET / serves the demo page from /usr/share/kc-gateway/static (KC_STATIC_DIR)" \
  cmp -s "$dir/index.html" /usr/share/kc-gateway/static/index.html
curl -s -o "$dir/admin.html" "http://127.0.0.1:$gw_port/admin"
check "GET /admin serves the operator console from /usr/share/kc-gateway/static" \
  cmp -s "$dir/admin.html" /usr/share/kc-gateway/static/admin.html
check "the installed gateway stops cleanly on SIGTERM" kc_gateway_stop "$dir/gw"
