#!/usr/bin/env bash
# Overload: how many requests ppsp-tracker answers when offered more than it can take.
#
# Rates are the server's own (its /metrics counters over the middle of each run, wall clock),
# not the load generator's: an open-loop generator that falls behind its schedule on a busy
# host would otherwise report replies late and skew the figures.
#
# For each back-end (io_uring, epoll) and protocol (bt-udp, PPSTP over plaintext HTTP
# keep-alive), the script starts one tracker (one worker, pinned to SERVER_CPU, overload
# shedding on), registers the population, measures the peak answered rate, then offers
# FACTORS x that rate in open loop for DURATION seconds each, and prints answered requests per
# second relative to the peak, what was shed, and the server's RSS before the floods and after
# them.
#
# The peak is the most the server answers without being overloaded. BitTorrent UDP: closed
# loop with 16 sockets x 64 in flight (nothing shed). PPSTP: a closed loop deep enough to
# keep the worker busy already overloads it (it sheds), so that run is only an estimate
# (printed as `closed`); the peak is then the answered rate of the highest open-loop rate, in
# PEAK_STEPS fractions of the estimate (PEAK_STEP_DURATION seconds each, the floods' shape),
# that the server answers in full (at least PEAK_ANSWERED_SHARE of the offered rate, 0.95)
# while shedding at most PEAK_SHED_SHARE (0.002) of its answers.
#
#   benches/overload.sh                          # both back-ends, both protocols, 2x and 4x
#   BACKENDS=epoll PROTOCOLS=ppstp DURATION=5 benches/overload.sh
#   TRACKER=/work/tgt-release/measure/ppsp-tracker LOADGEN=... benches/overload.sh
#   CPU_QUOTA=0 benches/overload.sh              # no CPU quota: the server has a whole core
#   REPORTS=/tmp/overload benches/overload.sh    # keep the generator's reports there
#   PEAK_STEPS="1 0.9 0.8" benches/overload.sh   # the PPSTP peak search's fractions
#
# The server runs under a CPU quota (CPU_QUOTA, a fraction of one core; 0.2 by default) so
# that one generator core can offer several times what the server can answer: without it
# the generator, whose cost per request is higher than the server's, cannot reach 2x. The
# quota is a cgroup of the cpu controller (cgroup v1 cpu.cfs_quota_us / cpu.cfs_period_us,
# or cgroup v2 cpu.max) with a short period (QUOTA_PERIOD_US, 10 ms) so that throttling is
# smooth; it needs root. When neither hierarchy is writable the script says so and runs
# without a quota. The cpu% column is the server's CPU time over the quota, gen% the
# generator's over one core (a generator near 100% could not offer more), behind/s the
# server's event-loop turns per second that took at least the shedding delay
# (ppsp_worker_turns_behind_total: the server fell behind, whether or not it shed).
# cpu_ratio is the ratio per CPU second (answered/s over cpu%, relative to the peak's): on a
# shared host the server does not always get its whole quota, and cpu_ratio takes that out.
#
# Needs optimised builds of both binaries (release or the `measure` profile). Every server is
# stopped by its own pid when the script exits, and the cgroup removed.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
TRACKER=${TRACKER:-$ROOT/target/release/ppsp-tracker}
LOADGEN=${LOADGEN:-$ROOT/target/release/ppsp-loadgen}
BACKENDS=${BACKENDS:-"io_uring epoll"}
PROTOCOLS=${PROTOCOLS:-"bt-udp ppstp"}
FACTORS=${FACTORS:-"2 4"}
DURATION=${DURATION:-10}
PEAK_DURATION=${PEAK_DURATION:-$DURATION}
PEAK_STEPS=${PEAK_STEPS:-"1.3 1.2 1.1 1 0.9 0.8 0.7 0.6 0.5"}
PEAK_STEP_DURATION=${PEAK_STEP_DURATION:-5}
PEAK_SHED_SHARE=${PEAK_SHED_SHARE:-0.002}
PEAK_ANSWERED_SHARE=${PEAK_ANSWERED_SHARE:-0.95}
UDP_FLOOD_CONNECTIONS=${UDP_FLOOD_CONNECTIONS:-16}
UDP_FLOOD_INFLIGHT=${UDP_FLOOD_INFLIGHT:-1024}
SWARMS=${SWARMS:-10000}
PEERS=${PEERS:-100000}
SHED_AFTER_MS=${SHED_AFTER_MS:-50}
SERVER_CPU=${SERVER_CPU:-1}
LOADGEN_CPU=${LOADGEN_CPU:-0}
PORT_BASE=${PORT_BASE:-17300}
PPSP_SETS=${PPSP_SETS:-}
CPU_QUOTA=${CPU_QUOTA:-0.2}
# The generator's own report of each run (its errors, latency), one file per run.
REPORTS=${REPORTS:-$(mktemp -d /tmp/overload.XXXXXX)}
mkdir -p "$REPORTS"
LABEL=run
QUOTA_PERIOD_US=${QUOTA_PERIOD_US:-10000}

require_exec tracker "$TRACKER"
require_exec "load generator" "$LOADGEN"
pin_cpus
SERVER_PID=
CGROUP=
cleanup() {
    stop_pids "$SERVER_PID"
}
remove_cgroup() {
    cleanup
    [ -n "$CGROUP" ] && rmdir "$CGROUP" 2>/dev/null || true
}
trap remove_cgroup EXIT

# The CPU quota's cgroup: CGROUP is its directory, CGROUP_PROCS the file a pid is written to.
# cgroup v1 (a `cpu` hierarchy) first, then cgroup v2 (`cpu.max`, with the cpu controller
# enabled for the children of the root).
QUOTA_SHARE=1
if python3 -c "import sys; sys.exit(0 if float('$CPU_QUOTA') > 0 else 1)"; then
    quota_us=$(python3 -c "print(max(1000, int($CPU_QUOTA * $QUOTA_PERIOD_US)))")
    group=ppsp-overload-$$
    for v1 in /sys/fs/cgroup/cpu /sys/fs/cgroup/cpu,cpuacct; do
        if [ -w "$v1/cpu.cfs_quota_us" ] && mkdir "$v1/$group" 2>/dev/null; then
            if echo "$QUOTA_PERIOD_US" >"$v1/$group/cpu.cfs_period_us" &&
                echo "$quota_us" >"$v1/$group/cpu.cfs_quota_us"; then
                CGROUP=$v1/$group
            else
                rmdir "$v1/$group"
            fi
            break
        fi
    done
    v2=/sys/fs/cgroup
    if [ -z "$CGROUP" ] && [ -f "$v2/cgroup.controllers" ] && grep -qw cpu "$v2/cgroup.controllers"; then
        echo +cpu >"$v2/cgroup.subtree_control" 2>/dev/null || true
        if mkdir "$v2/$group" 2>/dev/null; then
            if echo "$quota_us $QUOTA_PERIOD_US" >"$v2/$group/cpu.max" 2>/dev/null; then
                CGROUP=$v2/$group
            else
                rmdir "$v2/$group"
            fi
        fi
    fi
    if [ -n "$CGROUP" ]; then
        QUOTA_SHARE=$(python3 -c "print($quota_us / $QUOTA_PERIOD_US)")
        echo "# server CPU quota: ${quota_us} us per ${QUOTA_PERIOD_US} us ($CGROUP)"
    else
        echo "# note: no writable cgroup cpu controller (v1 cpu.cfs_quota_us or v2 cpu.max):" \
            "running without a CPU quota, so the generator may not reach 2x the server's peak"
    fi
fi

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# "answered shed behind" so far, from the admin listener's /metrics (admin port = listener
# port + 100): answered = PPSTP requests served minus their error answers, or BEP 15 connects,
# announces and scrapes answered; shed = every ppsp_shed_total series; behind = the worker's
# event-loop turns that took at least the shedding delay (the server fell behind, whether or
# not it shed).
counters() {
    curl -s "http://127.0.0.1:$(($2 + 100))/metrics" | awk -v proto="$1" '
        proto == "ppstp" && /^ppsp_requests_total\{/ {a += $NF}
        proto == "ppstp" && /^ppsp_errors_total\{/ {a -= $NF}
        proto == "bt-udp" && /^ppsp_bt_udp_requests_total\{outcome="(connect|announce|scrape)"\}/ {a += $NF}
        /^ppsp_shed_total\{/ {s += $NF}
        /^ppsp_worker_turns_behind_total\{runtime="worker"\}/ {b += $NF}
        END {printf "%d %d %d\n", a, s, b}'
}

# CPU time of a process so far, in clock ticks (utime + stime).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Runs the load generator with the given arguments in the background and measures the
# server's answered and shed rates, its turns behind per second, its CPU use (over the quota)
# and the generator's (of one core) over the middle of the run (the first and last second
# left out): prints "answered/s shed/s behind/s server_cpu% generator_cpu%".
measure() {
    local proto=$1 port=$2 secs=$3
    shift 3
    "${PIN_LOADGEN[@]}" "$LOADGEN" "$@" >"$REPORTS/$LABEL.txt" &
    local gen=$!
    sleep 1
    local a0 s0 b0 t0 a1 s1 b1 t1 c0 c1 g0 g1
    read -r a0 s0 b0 < <(counters "$proto" "$port")
    c0=$(cpu_ticks "$SERVER_PID")
    g0=$(cpu_ticks "$gen")
    t0=$(date +%s.%N)
    sleep "$(python3 -c "print(max(0.5, $secs - 2))")"
    read -r a1 s1 b1 < <(counters "$proto" "$port")
    c1=$(cpu_ticks "$SERVER_PID")
    g1=$(cpu_ticks "$gen")
    t1=$(date +%s.%N)
    wait "$gen"
    python3 -c "import os; d = $t1 - $t0; hz = os.sysconf('SC_CLK_TCK'); print(f'{($a1 - $a0) / d:.0f} {($s1 - $s0) / d:.0f} {($b1 - $b0) / d:.1f} {100 * ($c1 - $c0) / hz / d / $QUOTA_SHARE:.0f} {100 * ($g1 - $g0) / hz / d:.0f}')"
}

FMT='%-9s %-7s %-6s %10s %10s %6s %9s %8s %8s %5s %5s %9s %9s\n'
# shellcheck disable=SC2059
echo "# the generator's reports: $REPORTS"
# shellcheck disable=SC2059
printf "$FMT" backend proto load offered/s answered/s ratio cpu_ratio shed/s behind/s cpu% gen% \
    rss_kb_0 rss_kb_1
port=$PORT_BASE
for backend in $BACKENDS; do
    for proto in $PROTOCOLS; do
        port=$((port + 1))
        target=127.0.0.1:$port
        sets=(--set server.workers=1 --set server.pin_cores=false --set "server.backend=$backend"
              --set "server.shed_after_ms=$SHED_AFTER_MS" --set log.level=warn
              --set "admin.listen=127.0.0.1:$((port + 100))" --set "bt_http.listen=[\"127.0.0.1:0\"]"
              --set ppstp.max_connections=4096 --set server.max_connections_per_source=4096)
        if [ "$proto" = bt-udp ]; then
            sets+=(--set bt_udp.enabled=true --set "bt_udp.listen=[\"$target\"]"
                   --set ppstp.listen=127.0.0.1:0)
            mix=announce=9,scrape=1
            closed=(--connections 16 --inflight 64 --source-addrs 4)
            populate=("${closed[@]}")
            # 16 x 1024 in flight caps the flood: at 2x the generator waits for free slots, so
            # the "flood" is a closed loop 16k deep (each request waits about 0.2 s in the
            # server). UDP_FLOOD_CONNECTIONS=64 UDP_FLOOD_INFLIGHT=4096 offers the rate for
            # real (more in flight than the rate times the 2 s timeout): the kernel then drops
            # the excess at the socket buffer.
            open=(--connections "$UDP_FLOOD_CONNECTIONS" --inflight "$UDP_FLOOD_INFLIGHT"
                  --source-addrs 4)
        else
            sets+=(--set "ppstp.listen=$target" --set "bt_udp.listen=[\"127.0.0.1:0\"]")
            # Reads and keep-alives only: a shed request changes nothing, so the generator's
            # idea of each peer's state stays right.
            mix=find=8,stat_query=1,keepalive=1
            # The peak estimate and search use the floods' connections and pipelining, so
            # that the ratio measures what overload costs and not what more connections
            # cost.
            open=(--connections 256 --pipeline 64)
            # The estimate overloads the server: its shed connections reconnect at once
            # rather than sit out Retry-After, so that it does not fall below capacity.
            closed=("${open[@]}" --max-retry-after-ms 0)
            populate=(--connections 16 --pipeline 4)
        fi
        # shellcheck disable=SC2086
        "${PIN_SERVER[@]}" "$TRACKER" serve --profile loopback-bench "${sets[@]}" $PPSP_SETS &
        SERVER_PID=$!
        # Into the quota's cgroup before it serves anything (every thread of the process).
        [ -n "$CGROUP" ] && echo "$SERVER_PID" >"$CGROUP/cgroup.procs"
        wait_admin "127.0.0.1:$((port + 100))" "$SERVER_PID" || exit 1
        common=(run --protocol "$proto" --target "$target" --swarms "$SWARMS" --peers "$PEERS"
                --mix "$mix" --no-progress --timeout-ms 2000)
        # Registration gently, so that nothing is shed: a peer whose CONNECT was shed stays
        # unregistered, and its FINDs would be answered error 03 in every run after.
        "${PIN_LOADGEN[@]}" "$LOADGEN" "${common[@]}" --populate "${populate[@]}" \
            --duration 0.1 >"$REPORTS/$backend-$proto-populate.txt"
        # Closed loop with enough requests in flight to keep the worker busy: the peak of
        # bt-udp, the estimate PPSTP's peak is searched from.
        LABEL=$backend-$proto-closed
        read -r peak shed behind cpu gcpu < <(measure "$proto" "$port" "$PEAK_DURATION" \
            "${common[@]}" --assume-registered "${closed[@]}" --duration "$PEAK_DURATION")
        peak_cpu=$cpu
        if [ "$peak" -le 0 ]; then
            echo "# $backend $proto: nothing answered in closed loop (reports in $REPORTS)" >&2
            exit 1
        fi
        if [ "$proto" = ppstp ]; then
            # shellcheck disable=SC2059
            printf "$FMT" "$backend" "$proto" closed - "$peak" - - "$shed" "$behind" "$cpu" \
                "$gcpu" - -
            estimate=$peak
            peak=
            for step in $PEAK_STEPS; do
                rate=$(python3 -c "print(int($step * $estimate))")
                LABEL=$backend-$proto-peak-$step
                read -r ok shed behind cpu gcpu < <(measure "$proto" "$port" \
                    "$PEAK_STEP_DURATION" "${common[@]}" --assume-registered "${open[@]}" \
                    --rate "$rate" --duration "$PEAK_STEP_DURATION")
                # shellcheck disable=SC2059
                printf "$FMT" "$backend" "$proto" "s$step" "$rate" "$ok" - - "$shed" "$behind" \
                    "$cpu" "$gcpu" - -
                if python3 -c "import sys; sys.exit(0 if $shed <= $PEAK_SHED_SHARE * $ok and $ok >= $PEAK_ANSWERED_SHARE * $rate else 1)"; then
                    peak=$ok
                    peak_cpu=$cpu
                    break
                fi
            done
            if [ -z "$peak" ]; then
                echo "# $backend $proto: no step of PEAK_STEPS answered in full without shedding;" \
                    "using the last step's answered rate" >&2
                peak=$ok
                peak_cpu=$cpu
            fi
        fi
        rss0=$(rss_kb "$SERVER_PID")
        # shellcheck disable=SC2059
        printf "$FMT" "$backend" "$proto" peak - "$peak" 1.00 1.00 "$shed" "$behind" "$cpu" \
            "$gcpu" "$rss0" -
        for f in $FACTORS; do
            rate=$(python3 -c "print(int($f * $peak))")
            LABEL=$backend-$proto-${f}x
            read -r ok shed behind cpu gcpu < <(measure "$proto" "$port" "$DURATION" \
                "${common[@]}" --assume-registered "${open[@]}" --rate "$rate" \
                --duration "$DURATION")
            # shellcheck disable=SC2059
            printf "$FMT" "$backend" "$proto" "${f}x" "$rate" "$ok" \
                "$(python3 -c "print(f'{$ok / max(1, $peak):.2f}')")" \
                "$(python3 -c "print(f'{($ok / max(1, $cpu)) / max(1e-9, $peak / max(1, $peak_cpu)):.2f}')")" \
                "$shed" "$behind" "$cpu" \
                "$gcpu" "$rss0" "$(rss_kb "$SERVER_PID")"
        done
        cleanup
        SERVER_PID=
    done
done
