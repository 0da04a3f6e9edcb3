#!/usr/bin/env bash
# test/fleet.sh - the fleet on one machine, for `make run-fleet` (scripts/run-fleet.sh) and
# the fleet suite (test/suites/55_fleet.sh): a pg_auto_failover monitor, two Postgres data
# nodes (a primary and a synchronous standby, kc_flow preloaded on both), Redis, three
# kc-gateway processes and HAProxy in front of them, TLS terminated there. Source it after
# test/cluster.sh, whose helpers it uses; it starts nothing by itself. docs/scaling.md says
# why pg_auto_failover and what each part holds.
#
# Every daemon runs as the postgres user on a free 127.0.0.1 port, in a session of its own,
# under the fleet's directory FLEET; each is stopped by the pid it wrote there, never by
# name. Every function returns non-zero on failure, with the reason on stderr.
#
#   kc_fleet_start FLEET DB [NAME=VALUE...]
#       starts the whole fleet under FLEET (created), the kc_flow database DB on the
#       primary, the gateways with the NAME=VALUE settings added (KC_JWT_SECRET,
#       KC_DEMO, ...). Writes FLEET/fleet.env (sourceable): MONITOR_URI, DATABASE_URL
#       (libpq multi-host, target_session_attrs=read-write), NODE1_PORT, NODE2_PORT,
#       REDIS_PORT, GW1_PORT..GW3_PORT, HAPROXY_PORT (KC_FLEET_PORT when set, else a free
#       one), CA_FILE (the self-signed certificate).
#   kc_fleet_stop FLEET
#       stops everything kc_fleet_start started (HAProxy, gateways, Redis, the nodes and
#       the monitor); safe to call twice, and on a fleet that started part-way.
#   kc_fleet_node_kill FLEET NODE
#       the machine of NODE (node1|node2) dies: SIGKILL at once to its pg_autoctl (whose
#       keeper would otherwise restart Postgres in place), its postmaster and its backends.
#   kc_fleet_node_start FLEET NODE
#       starts NODE's pg_autoctl again (it rejoins: an old primary comes back as a standby).
#   kc_fleet_state FLEET
#       prints "NODE STATE" per line from the monitor (primary, secondary, wait_primary, ...).
#   kc_fleet_wait FLEET SECONDS NODE=STATE...
#       waits until every NODE has reached STATE on the monitor, at most SECONDS.
#   kc_fleet_gateway_kill FLEET N / kc_fleet_gateway_start FLEET N
#       SIGKILL gateway N (1..3) / start it again on its port.
#   kc_fleet_redis_stop FLEET / kc_fleet_redis_start FLEET
#       stop / start the fleet's Redis (on its port).
#   kc_fleet_standby_stall FLEET NODE SECONDS
#       standby NODE stops taking WAL for SECONDS (its walreceiver is stopped with SIGSTOP,
#       then continued), as when a standby's disk or network stalls: meanwhile every commit
#       on the primary waits for its synchronous standby, and the clients' answers with it.
#
# Failover timing: the monitor's health checks are tightened (a check a second) and
# primary_demote_timeout (8 s) stays above each keeper's network_partition_timeout (5 s), so
# an isolated primary has demoted itself before the monitor promotes the standby.

# the monitor's Postgres: the Debian one, where postgresql-15-auto-failover put its extension
# (the data nodes use PG_BIN, where kc_flow is installed; on a CI machine both are the same)
KC_FLEET_MONITOR_PG_BIN=${KC_FLEET_MONITOR_PG_BIN:-/usr/lib/postgresql/15/bin}
# runs a command as postgres in the same process (exec, unlike runuser), so its pid is known
KC_FLEET_AS=()
[ "$(id -u)" = 0 ] && KC_FLEET_AS=(setpriv --reuid=postgres --regid=postgres --init-groups --)
# pg_autoctl connects to its nodes with libpq: the caller's PG* defaults (a test harness's
# database, port) must not leak into those connections
KC_FLEET_CLEAN_ENV=(-u PGHOST -u PGPORT -u PGDATABASE -u PGUSER -u PGDATA -u PGSERVICE)

# _kc_fleet_autoctl FLEET ARG...: pg_autoctl as postgres, its files under FLEET/autoctl
_kc_fleet_autoctl() {
    local fleet=$1
    shift
    kc_as_postgres env "${KC_FLEET_CLEAN_ENV[@]}" XDG_CONFIG_HOME="$fleet/autoctl/config" \
        XDG_DATA_HOME="$fleet/autoctl/data" XDG_RUNTIME_DIR="$fleet/autoctl/run" pg_autoctl "$@"
}

# _kc_fleet_run FLEET NAME: starts `pg_autoctl run` of FLEET/NAME in a session of its own;
# its pid in FLEET/NAME/autoctl.pid, its log in FLEET/NAME/autoctl.log
_kc_fleet_run() {
    local fleet=$1 name=$2
    (cd "$fleet" && exec "${KC_FLEET_AS[@]}" env "${KC_FLEET_CLEAN_ENV[@]}" XDG_CONFIG_HOME="$fleet/autoctl/config" \
        XDG_DATA_HOME="$fleet/autoctl/data" XDG_RUNTIME_DIR="$fleet/autoctl/run" \
        setsid pg_autoctl run --pgdata "$fleet/$name/data") </dev/null >>"$fleet/$name/autoctl.log" 2>&1 &
    echo $! >"$fleet/$name/autoctl.pid"
    disown $!               # stopped by its pid, and killed on purpose: no job report
}

# _kc_fleet_get FLEET NAME: prints the value of NAME in FLEET/fleet.env
_kc_fleet_get() {
    (. "$1/fleet.env" && eval "echo \"\${$2}\"")
}

kc_fleet_state() {
    _kc_usage 1 "kc_fleet_state FLEET" "$@" || return
    kc_as_postgres "$PG_BIN/psql" -X -Atq -F ' ' -d "$(_kc_fleet_get "$1" MONITOR_URI)" \
        -c "SELECT nodename, reportedstate FROM pgautofailover.node ORDER BY nodename" 2>/dev/null
}

kc_fleet_wait() {
    _kc_usage 3 "kc_fleet_wait FLEET SECONDS NODE=STATE..." "$@" || return
    local fleet=$1 seconds=$2 state want ok
    shift 2
    for _ in $(seq 1 $((seconds * 4))); do
        state=$(kc_fleet_state "$fleet")
        ok=1
        for want in "$@"; do
            grep -qx "${want%%=*} ${want#*=}" <<<"$state" || ok=0
        done
        [ $ok = 1 ] && return 0
        sleep 0.25
    done
    echo "kc_fleet_wait: after $seconds s the monitor says: $(paste -sd, <<<"$state") (wanted $*)" >&2
    return 1
}

# _kc_fleet_node FLEET NAME PORT DB: registers data node NAME with the monitor and runs it;
# node1 is made by kc_pg_init (kc_flow preloaded) and registered as the primary, node2 is
# made by pg_autoctl from a base backup of the primary (its configuration comes with it)
_kc_fleet_node() {
    local fleet=$1 name=$2 port=$3 db=$4 monitor
    monitor=$(_kc_fleet_get "$fleet" MONITOR_URI)
    if [ "$name" = node1 ]; then
        # Postgres's own durability (pg_rewind needs full_page_writes), a socket directory
        # both nodes can share (the standby's configuration is a copy)
        kc_pg_init "$fleet/$name" "$port" "$db" "unix_socket_directories = '$fleet/sock'" \
            "wal_keep_size = '256MB'" || return 1
    else
        _kc_own_dir "$fleet/$name" || return 1
    fi
    _kc_fleet_autoctl "$fleet" create postgres --pgdata "$fleet/$name/data" --pgctl "$PG_BIN/pg_ctl" \
        --pghost 127.0.0.1 --pgport "$port" --listen 127.0.0.1 --hostname 127.0.0.1 --name "$name" \
        --dbname "$db" --auth trust --no-ssl --monitor "$monitor" >"$fleet/$name/create.log" 2>&1 || {
        echo "kc_fleet_start: pg_autoctl create postgres $name failed:" >&2
        tail -15 "$fleet/$name/create.log" >&2; return 1; }
    _kc_fleet_autoctl "$fleet" config set --pgdata "$fleet/$name/data" \
        timeout.network_partition_timeout 5 >/dev/null || return 1
    _kc_fleet_run "$fleet" "$name"
}

# _kc_fleet_haproxy FLEET: the certificate and the configuration, then HAProxy
_kc_fleet_haproxy() {
    local fleet=$1 dir=$1/haproxy n
    . "$fleet/fleet.env"
    _kc_own_dir "$dir" || return 1
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=kc_flow fleet" \
        -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
        -keyout "$dir/key.pem" -out "$dir/cert.pem" >"$dir/openssl.log" 2>&1 || {
        echo "kc_fleet_start: openssl could not make the certificate:" >&2; cat "$dir/openssl.log" >&2; return 1; }
    cat "$dir/cert.pem" "$dir/key.pem" >"$dir/site.pem"
    {
        echo "# made by test/fleet.sh: HTTPS and WSS in front of the fleet's gateways"
        echo "global"
        echo "    log stderr format raw local0 info"
        echo "    stats socket $dir/admin.sock mode 600 level admin"
        echo "defaults"
        echo "    mode http"
        echo "    log global"
        echo "    option httplog"
        echo "    timeout connect 2s"
        echo "    timeout client 60s"
        echo "    timeout server 60s"
        echo "    # an upgraded WebSocket is a tunnel: quiet for up to the gateway's ping interval (30 s)"
        echo "    timeout tunnel 1h"
        echo "    timeout client-fin 5s"
        echo "frontend https"
        echo "    bind 127.0.0.1:$HAPROXY_PORT ssl crt $dir/site.pem alpn http/1.1"
        echo "    http-request set-header X-Forwarded-Proto https"
        echo "    default_backend gateways"
        echo "backend gateways"
        echo "    balance roundrobin"
        echo "    option httpchk GET /readyz"
        echo "    http-check expect status 200"
        echo "    # which gateway answered, for the tests and for operators"
        echo "    http-response set-header X-KC-Gateway %[srv_name]"
        echo "    default-server inter 1s fastinter 500ms fall 2 rise 2 on-marked-down shutdown-sessions"
        for n in 1 2 3; do
            eval "echo \"    server gw$n 127.0.0.1:\$GW${n}_PORT check\""
        done
    } >"$dir/haproxy.cfg"
    chown -R postgres:postgres "$dir" 2>/dev/null
    haproxy -c -q -f "$dir/haproxy.cfg" || { echo "kc_fleet_start: haproxy.cfg does not check" >&2; return 1; }
    # in the foreground of its own session, logging to haproxy.log (with its maximum
    # connections derived from the open-files limit it inherits)
    (cd "$dir" && exec "${KC_FLEET_AS[@]}" setsid haproxy -db -f "$dir/haproxy.cfg") </dev/null \
        >"$dir/haproxy.log" 2>&1 &
    echo $! >"$dir/haproxy.pid"
    disown $!
    for _ in $(seq 1 100); do
        curl -sf --cacert "$dir/cert.pem" -o /dev/null "https://127.0.0.1:$HAPROXY_PORT/readyz" && return 0
        sleep 0.1
    done
    echo "kc_fleet_start: HAProxy does not answer /readyz on $HAPROXY_PORT:" >&2
    tail -5 "$dir/haproxy.log" >&2
    return 1
}

# _kc_fleet_gateway_bin FLEET: a kc-gateway that drops to the postgres user (same pid,
# through exec, so that kc_gateway_start/stop see a kc-gateway)
_kc_fleet_gateway_bin() {
    local bin=${KC_GATEWAY_BIN:-$KC_LIB_ROOT/gateway/kc-gateway}
    if [ "$(id -u)" != 0 ]; then echo "$bin"; return 0; fi
    printf '#!/bin/sh\nexec %s %s "$@"\n' "${KC_FLEET_AS[*]}" "$bin" >"$1/kc-gateway-as-postgres"
    chmod 755 "$1/kc-gateway-as-postgres"
    echo "$1/kc-gateway-as-postgres"
}

kc_fleet_gateway_start() {
    _kc_usage 2 "kc_fleet_gateway_start FLEET N" "$@" || return
    local fleet=$1 n=$2 port settings=()
    port=$(_kc_fleet_get "$fleet" "GW${n}_PORT")
    mapfile -t settings <"$fleet/gateway.settings"
    _kc_own_dir "$fleet/gw$n" || return 1
    KC_GATEWAY_BIN=$(_kc_fleet_gateway_bin "$fleet") \
        kc_gateway_start "$fleet/gw$n" "127.0.0.1:$port" "${settings[@]}"
}

kc_fleet_gateway_kill() {
    _kc_usage 2 "kc_fleet_gateway_kill FLEET N" "$@" || return
    local pid
    kc_gateway_running "$1/gw$2" || return 0
    pid=$(cat "$1/gw$2/gateway.pid")
    kill -KILL "$pid"
    for _ in $(seq 1 50); do _kc_alive "$pid" kc-gateway || break; sleep 0.1; done
    wait "$pid" 2>/dev/null
    rm -f "$1/gw$2/gateway.pid"
}

kc_fleet_redis_start() {
    _kc_usage 1 "kc_fleet_redis_start FLEET" "$@" || return
    kc_redis_start "$1/redis" "$(_kc_fleet_get "$1" REDIS_PORT)"
}

kc_fleet_redis_stop() {
    _kc_usage 1 "kc_fleet_redis_stop FLEET" "$@" || return
    kc_redis_stop "$1/redis"
}

kc_fleet_standby_stall() {
    _kc_usage 3 "kc_fleet_standby_stall FLEET NODE SECONDS" "$@" || return
    local pm wr
    pm=$(_kc_pg_pid "$1/$2")
    [ -n "$pm" ] && wr=$(ps -o pid=,args= --ppid "$pm" | awk '/walreceiver/ {print $1; exit}')
    if [ -z "$wr" ]; then
        echo "kc_fleet_standby_stall: $2 has no walreceiver (not a standby, or not running)" >&2; return 1
    fi
    # continued however this ends, a signal included
    (trap 'kill -CONT "$wr" 2>/dev/null' EXIT; trap 'exit 1' INT TERM HUP
     kill -STOP "$wr" && { sleep "$3" & wait $!; })
}

kc_fleet_node_kill() {
    _kc_usage 2 "kc_fleet_node_kill FLEET NODE" "$@" || return
    local pid pm kids=()
    pid=$(cat "$1/$2/autoctl.pid" 2>/dev/null) || return 0
    # pg_autoctl's process group (setsid) holds its services and the postmaster; each
    # Postgres backend has a session of its own: the postmaster's children, by parent pid
    pm=$(_kc_pg_pid "$1/$2")
    [ -n "$pm" ] && mapfile -t kids < <(ps -o pid= --ppid "$pm")
    [ "$(ps -o sid= -p "$pid" 2>/dev/null | tr -d ' ')" = "$pid" ] && kill -KILL -- "-$pid" 2>/dev/null
    [ ${#kids[@]} -gt 0 ] && kill -KILL "${kids[@]}" 2>/dev/null
    for _ in $(seq 1 50); do
        [ -z "$(ps -o pid= -s "$pid" 2>/dev/null)" ] &&
            [ -z "$(ps -o pid= -p "$(IFS=,; echo "${kids[*]:-$pid}")" 2>/dev/null)" ] && break
        sleep 0.1
    done
    rm -f "$1/$2/autoctl.pid"
}

kc_fleet_node_start() {
    _kc_usage 2 "kc_fleet_node_start FLEET NODE" "$@" || return
    _kc_fleet_run "$1" "$2"
}

kc_fleet_start() {
    _kc_usage 2 "kc_fleet_start FLEET DB [NAME=VALUE...]" "$@" || return
    local fleet=$1 db=$2 n mport
    shift 2
    _kc_own_dir "$fleet" || return 1
    chmod 755 "$fleet"
    for n in autoctl autoctl/config autoctl/data autoctl/run monitor sock; do _kc_own_dir "$fleet/$n" || return 1; done
    chmod 700 "$fleet/autoctl/run"
    mport=$(kc_free_port)
    {
        echo "MONITOR_URI='postgres://autoctl_node@127.0.0.1:$mport/pg_auto_failover?sslmode=disable'"
        echo "NODE1_PORT=$(kc_free_port)"
        echo "NODE2_PORT=$(kc_free_port)"
        echo "REDIS_PORT=$(kc_free_port)"
        for n in 1 2 3; do echo "GW${n}_PORT=$(kc_free_port)"; done
        echo "HAPROXY_PORT=${KC_FLEET_PORT:-$(kc_free_port)}"
        echo "CA_FILE=$fleet/haproxy/cert.pem"
    } >"$fleet/fleet.env"
    . "$fleet/fleet.env"
    echo "DATABASE_URL='postgresql://postgres@127.0.0.1:$NODE1_PORT,127.0.0.1:$NODE2_PORT/$db?target_session_attrs=read-write&connect_timeout=2'" >>"$fleet/fleet.env"
    . "$fleet/fleet.env"

    # the monitor: health checks once a second, a node unhealthy after 3 s of silence
    _kc_fleet_autoctl "$fleet" create monitor --pgdata "$fleet/monitor/data" \
        --pgctl "$KC_FLEET_MONITOR_PG_BIN/pg_ctl" --pgport "$mport" --hostname 127.0.0.1 \
        --auth trust --no-ssl >"$fleet/monitor/create.log" 2>&1 || {
        echo "kc_fleet_start: pg_autoctl create monitor failed:" >&2; tail -15 "$fleet/monitor/create.log" >&2; return 1; }
    _kc_fleet_autoctl "$fleet" config set --pgdata "$fleet/monitor/data" postgresql.listen_addresses 127.0.0.1 \
        >/dev/null || return 1
    printf '%s\n' "# test/fleet.sh" "unix_socket_directories = '$fleet/sock'" \
        "pgautofailover.health_check_period = 1000" "pgautofailover.health_check_timeout = 1000" \
        "pgautofailover.health_check_max_retries = 1" "pgautofailover.health_check_retry_delay = 500" \
        "pgautofailover.node_considered_unhealthy_timeout = 3000" \
        "pgautofailover.primary_demote_timeout = 8000" |
        kc_as_postgres tee -a "$fleet/monitor/data/postgresql.conf" >/dev/null
    _kc_fleet_run "$fleet" monitor
    for _ in $(seq 1 120); do
        kc_as_postgres "$PG_BIN/psql" -X -Atq -d "$MONITOR_URI" -c "SELECT 1" >/dev/null 2>&1 && break
        sleep 0.25
    done

    _kc_fleet_node "$fleet" node1 "$NODE1_PORT" "$db" || return 1
    kc_fleet_wait "$fleet" 60 node1=single || return 1
    for _ in $(seq 1 240); do
        "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$NODE1_PORT" && break
        sleep 0.25
    done
    kc_as_postgres "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$NODE1_PORT" -d "$db" -v ON_ERROR_STOP=1 \
        -c "SET client_min_messages = warning" -c "CREATE EXTENSION IF NOT EXISTS kc_flow CASCADE" || {
        echo "kc_fleet_start: CREATE EXTENSION kc_flow on node1 failed" >&2; return 1; }
    _kc_fleet_node "$fleet" node2 "$NODE2_PORT" "$db" || return 1
    kc_fleet_wait "$fleet" 120 node1=primary node2=secondary || return 1

    kc_redis_start "$fleet/redis" "$REDIS_PORT" || return 1
    printf '%s\n' "KC_DATABASE_URL=$DATABASE_URL" "KC_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0" \
        "KC_STATIC_DIR=$KC_LIB_ROOT/gateway/static" "$@" >"$fleet/gateway.settings"
    for n in 1 2 3; do kc_fleet_gateway_start "$fleet" "$n" || return 1; done
    _kc_fleet_haproxy "$fleet"
}

kc_fleet_stop() {
    _kc_usage 1 "kc_fleet_stop FLEET" "$@" || return
    local fleet=$1 pid n node
    pid=$(cat "$fleet/haproxy/haproxy.pid" 2>/dev/null)
    if [ -n "$pid" ] && _kc_alive "$pid" haproxy; then
        kill "$pid" 2>/dev/null
        for _ in $(seq 1 50); do _kc_alive "$pid" haproxy || break; sleep 0.1; done
    fi
    rm -f "$fleet/haproxy/haproxy.pid"
    for n in 1 2 3; do kc_gateway_stop "$fleet/gw$n" 2>/dev/null; done
    kc_redis_stop "$fleet/redis"
    # the data nodes first (their keepers would otherwise wait on the monitor), then it
    for node in node1 node2 monitor; do
        pid=$(cat "$fleet/$node/autoctl.pid" 2>/dev/null) || continue
        if _kc_alive "$pid"; then
            kill -TERM "$pid" 2>/dev/null
            for _ in $(seq 1 200); do _kc_alive "$pid" || break; sleep 0.1; done
        fi
        # what survived a stop (or was left by a killed pg_autoctl): its Postgres, by data dir
        kc_pg_stop "$fleet/$node" immediate
        kc_fleet_node_kill "$fleet" "$node"
    done
    return 0
}
