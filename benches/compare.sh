#!/usr/bin/env bash
# Runs one BEP 15 (bt-udp) workload against ppsp-tracker, opentracker and ppsp-loadgen's floor
# responder, each pinned to the same CPU (the load generator to another), and prints replies
# per second, server CPU per reply and RSS per registered peer side by side, with ratios to
# opentracker.
#
#   benches/compare.sh                      # all three, defaults below
#   SERVERS="floor opentracker" DURATION=5 benches/compare.sh
#   AQUATIC_UDP=/path/to/aquatic_udp benches/compare.sh   # aquatic_udp as a fourth server
#   SCALE=1 benches/compare.sh              # 2M peers / 1M swarms (headtail): RSS per peer
#   SCALE=10m benches/compare.sh            # 20M peers / 10M swarms (headtail)
#   SCALE=rss benches/compare.sh            # 20M peers / 5M swarms (headtail)
#   TRACKER_BEFORE=/path/to/old/ppsp-tracker benches/compare.sh   # an older build as "before"
#
# TRACKER_BEFORE names another ppsp-tracker build, run as the server "before" with the same
# settings (so one run compares two builds); PPSP_SETS adds `--set key=value` words to both
# ppsp-tracker runs.
#
# AQUATIC_UDP names an aquatic_udp binary built by hand (this script never builds it); its
# configuration is its own printed default (`aquatic_udp -p`) with one socket worker (and one
# swarm worker where the version has them) listening on 127.0.0.1. SCALE=1 changes the
# defaults to SWARMS=1000000 PEERS=2000000 POPULARITY=headtail DURATION=3 (SCALE=10m: 10M
# swarms and 20M peers; SCALE=rss: 5M swarms and 20M peers), with enough source addresses
# (SOURCE_ADDRS, and CONNECTIONS at least as many: one socket per address) that peers have
# distinct (address, port) identities and a populate phase of at most POPULATE_TIMEOUT seconds (1200): every server is populated (each
# peer announced once) and the table's "RSS/peer" column is what it costs. ppsp-tracker's
# table limits (engine.max_swarms, max_peers, max_peers_per_swarm) are raised to the run's
# population so that no announce is refused for capacity.
#
# Needs release builds (cargo build --release -p ppsp-loadgen --bin ppsp-loadgen and
# --bin ppsp-tracker) and, for opentracker, Debian's `opentracker` package. A server that is
# missing or cannot serve BEP 15 (a ppsp-tracker without `[bt_udp] listen`) is skipped
# with a note. ppsp-tracker runs with one worker, like opentracker with one UDP thread. Every server is stopped by its own pid when the script exits.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
LOADGEN=${LOADGEN:-$ROOT/target/release/ppsp-loadgen}
TRACKER=${TRACKER:-$ROOT/target/release/ppsp-tracker}
AQUATIC_UDP=${AQUATIC_UDP:-}
TRACKER_BEFORE=${TRACKER_BEFORE:-}
PPSP_SETS=${PPSP_SETS:-}
default_servers="floor opentracker ppsp"
[ -n "$TRACKER_BEFORE" ] && default_servers="floor opentracker before ppsp"
[ -n "$AQUATIC_UDP" ] && default_servers="$default_servers aquatic"
SERVERS=${SERVERS:-$default_servers}
case "${SCALE:-0}" in
    1)
        SWARMS=${SWARMS:-1000000}
        PEERS=${PEERS:-2000000}
        ;;
    10m)
        SWARMS=${SWARMS:-10000000}
        PEERS=${PEERS:-20000000}
        ;;
    rss)
        SWARMS=${SWARMS:-5000000}
        PEERS=${PEERS:-20000000}
        ;;
esac
if [ "${SCALE:-0}" != 0 ]; then
    POPULARITY=${POPULARITY:-headtail}
    DURATION=${DURATION:-3}
    SETTLE=${SETTLE:-3}
    # Every peer a distinct (address, port) identity: 64000 ports per source address. The
    # sockets and requests in flight are the defaults' (8 x 16): with more addresses than
    # sockets, each socket sends from several (the generator names each datagram's source),
    # so the server sees the same traffic shape as with the defaults and only the table
    # differs. (One socket per address, 313 x 1 in flight, left both sides idle part of the
    # time; see benches/README.md, "10M swarms".)
    SOURCE_ADDRS=${SOURCE_ADDRS:-$(( (PEERS + 63999) / 64000 ))}
    CONNECTIONS=${CONNECTIONS:-8}
    INFLIGHT=${INFLIGHT:-16}
    POPULATE_TIMEOUT=${POPULATE_TIMEOUT:-1200}
fi
SERVER_CPU=${SERVER_CPU:-1}
LOADGEN_CPU=${LOADGEN_CPU:-0}
DURATION=${DURATION:-10}
SWARMS=${SWARMS:-10000}
PEERS=${PEERS:-100000}
POPULARITY=${POPULARITY:-zipf:1}
MIX=${MIX:-announce=9,scrape=1}
CONNECTIONS=${CONNECTIONS:-8}
INFLIGHT=${INFLIGHT:-16}
SOURCE_ADDRS=${SOURCE_ADDRS:-4}
POPULATE_TIMEOUT=${POPULATE_TIMEOUT:-300}
SEED=${SEED:-1}
RATE=${RATE:-}
PORT_BASE=${PORT_BASE:-17100}
OUT=${OUT:-$(mktemp -d /tmp/ppsp-compare.XXXXXX)}
EXTRA=${EXTRA:-}

mkdir -p "$OUT"
PIDS=()
cleanup() {
    stop_pids ${PIDS[@]+"${PIDS[@]}"}
}
trap cleanup EXIT

[ -x "$LOADGEN" ] || { echo "no load generator at $LOADGEN (cargo build --release -p ppsp-loadgen)" >&2; exit 1; }
# Command prefixes that pin the servers and the load generator (`$!` of a backgrounded
# "${PIN_SERVER[@]}" command is the server's own pid, what --server-pid must sample).
pin_cpus

# The whitelist opentracker needs: the population's swarm ids (they depend only on the seed).
"$LOADGEN" run --protocol bt-udp --swarms "$SWARMS" --peers "$PEERS" --seed "$SEED" \
    --popularity "$POPULARITY" --connections "$CONNECTIONS" --source-addrs "$SOURCE_ADDRS" --dry-run --write-swarm-ids "$OUT/whitelist.txt" --no-progress >/dev/null

wait_udp() { # port pid: wait until something listens on the UDP port (at most 5 s)
    for _ in $(seq 50); do
        kill -0 "$2" 2>/dev/null || return 1
        if command -v ss >/dev/null; then
            ss -Huln "sport = :$1" | grep -q . && return 0
        fi
        sleep 0.1
    done
    command -v ss >/dev/null && return 1
    return 0
}

# Each start_* function starts one server in the background (as a child of this shell, so it
# can be waited for) and sets SERVER_PID, or returns 1 when the server is unavailable.
start_floor() { # port
    ${PIN_SERVER[@]+"${PIN_SERVER[@]}"} "$LOADGEN" floor --listen "127.0.0.1:$1" >"$OUT/floor.log" 2>&1 &
    SERVER_PID=$!
}

start_opentracker() { # port
    command -v opentracker >/dev/null || { echo "opentracker is not installed (apt-get install -y opentracker)" >&2; return 1; }
    local dir="$OUT/opentracker"
    mkdir -p "$dir"
    cp "$OUT/whitelist.txt" "$dir/whitelist.txt"
    local priv=()
    if [ "$(id -u)" = 0 ]; then
        # As root, opentracker insists on dropping to a user and chroots into -d: the
        # whitelist path is then relative to the chroot.
        chmod 755 "$dir"; chmod 644 "$dir/whitelist.txt"
        printf 'access.whitelist /whitelist.txt\nlisten.udp.workers 1\n' >"$dir/opentracker.conf"
        priv=(-u nobody -d "$dir")
    else
        printf 'access.whitelist %s\nlisten.udp.workers 1\n' "$dir/whitelist.txt" >"$dir/opentracker.conf"
    fi
    ${PIN_SERVER[@]+"${PIN_SERVER[@]}"} opentracker -f "$dir/opentracker.conf" -i 127.0.0.1 -P "$1" -p "$1" \
        "${priv[@]}" >"$OUT/opentracker.log" 2>&1 &
    SERVER_PID=$!
}

start_aquatic() { # port
    [ -n "$AQUATIC_UDP" ] && [ -x "$AQUATIC_UDP" ] || { echo "AQUATIC_UDP does not name an aquatic_udp binary" >&2; return 1; }
    local dir="$OUT/aquatic"
    mkdir -p "$dir"
    "$AQUATIC_UDP" -p >"$dir/config.toml"
    # One worker of each kind, IPv4 on loopback; key names differ between versions.
    sed -i -E -e 's/^(socket_workers|swarm_workers) = .*/\1 = 1/' \
        -e "s/^(address_ipv4|address) = .*/\\1 = \"127.0.0.1:$1\"/" \
        -e 's/^use_ipv6 = .*/use_ipv6 = false/' "$dir/config.toml"
    ${PIN_SERVER[@]+"${PIN_SERVER[@]}"} "$AQUATIC_UDP" -c "$dir/config.toml" >"$OUT/aquatic.log" 2>&1 &
    SERVER_PID=$!
}

start_tracker() { # binary name port
    [ -x "$1" ] || { echo "no tracker at $1 (cargo build --release --bin ppsp-tracker)" >&2; return 1; }
    local sets=(--profile loopback-bench --set bt_udp.enabled=true --set "bt_udp.listen=127.0.0.1:$3" --set bt_http.enabled=false
                --set server.workers=1 --set server.pin_cores=false
                --set ppstp.listen=127.0.0.1:0 --set admin.listen=127.0.0.1:0
                --set engine.max_peers_per_source=4000000
                --set "engine.max_swarms=$((SWARMS > 2000000 ? SWARMS : 2000000))"
                --set "engine.max_peers=$((PEERS > 4000000 ? PEERS : 4000000))"
                --set "engine.max_peers_per_swarm=$((PEERS > 100000 ? PEERS : 100000))")
    # shellcheck disable=SC2206
    [ -n "$PPSP_SETS" ] && sets+=($PPSP_SETS)
    if ! "$1" print-config "${sets[@]}" >/dev/null 2>"$OUT/$2-config.err"; then
        echo "ppsp-tracker cannot serve BEP 15 yet: $(head -1 "$OUT/$2-config.err")" >&2
        return 1
    fi
    ${PIN_SERVER[@]+"${PIN_SERVER[@]}"} "$1" serve "${sets[@]}" >"$OUT/$2.log" 2>&1 &
    SERVER_PID=$!
}

start_ppsp() { # port
    start_tracker "$TRACKER" ppsp "$1"
}

start_before() { # port
    start_tracker "$TRACKER_BEFORE" before "$1"
}

port=$PORT_BASE
reports=()
for server in $SERVERS; do
    port=$((port + 1))
    SERVER_PID=""
    # SO_REUSEPORT would let a leftover server on the port take part of the traffic.
    if command -v ss >/dev/null && ss -Huln "sport = :$port" | grep -q .; then
        echo "== $server: UDP port $port is already in use; set PORT_BASE to a free range" >&2
        continue
    fi
    if ! "start_$server" "$port"; then
        echo "== $server: skipped" >&2
        continue
    fi
    pid=$SERVER_PID
    PIDS+=("$pid")
    if ! wait_udp "$port" "$pid"; then
        echo "== $server: did not start (see $OUT/$server.log)" >&2
        continue
    fi
    # Let the server settle: opentracker loads its whitelist in the background and answers
    # announces for hashes it has not loaded yet with 8-byte replies. Probe with announces
    # until they are all answered in full (at most 20 tries).
    sleep "${SETTLE:-1}"
    if [ "$server" = opentracker ]; then
        for _ in $(seq 20); do
            "$LOADGEN" run --protocol bt-udp --target "127.0.0.1:$port" --swarms "$SWARMS" \
                --peers 2000 --seed "$SEED" --popularity "$POPULARITY" --mix started=1 \
                --max-requests 2000 --duration 2 --connections 1 --no-progress \
                | grep -q '^errors:' || break
            echo "   ($server not ready yet)"
            sleep 0.5
        done
    fi
    echo "== $server (pid $pid, UDP port $port, server CPU $SERVER_CPU, load generator CPU $LOADGEN_CPU)"
    args=(run --protocol bt-udp --target "127.0.0.1:$port" --swarms "$SWARMS" --peers "$PEERS"
          --popularity "$POPULARITY" --mix "$MIX" --seed "$SEED" --populate --populate-timeout "$POPULATE_TIMEOUT"
          --connections "$CONNECTIONS" --inflight "$INFLIGHT" --source-addrs "$SOURCE_ADDRS"
          --duration "$DURATION" --server-pid "$pid" --label "$server" --no-progress
          --json "$OUT/$server.json" --hgrm "$OUT/$server.hgrm" --plot "$OUT/$server.svg")
    [ -n "$RATE" ] && args+=(--rate "$RATE")
    # shellcheck disable=SC2206
    [ -n "$EXTRA" ] && args+=($EXTRA)
    ${PIN_LOADGEN[@]+"${PIN_LOADGEN[@]}"} "$LOADGEN" "${args[@]}" | tee "$OUT/$server.txt"
    reports+=("$OUT/$server.json")
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
done

if [ "${#reports[@]}" -gt 0 ]; then
    echo "== comparison (reports in $OUT)"
    baseline=opentracker
    [ -f "$OUT/opentracker.json" ] || baseline=$(basename "${reports[0]}" .json)
    "$LOADGEN" table --baseline "$baseline" "${reports[@]}"
fi
