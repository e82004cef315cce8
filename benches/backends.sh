#!/usr/bin/env bash
# PPSTP keep-alive pipelined load on the epoll and the io_uring back-end, in one session:
#
#   benches/backends.sh              # both back-ends, one after the other
#
# For each back-end the tracker (one worker, pinned to CPU 1; the load generator on CPU 0)
# registers the population (--populate), then three runs of the same workload (FIND 9 :
# CONNECT 1, 30 peers wanted, CONNS connections pipelining PIPELINE requests each):
#   1. DURATION seconds with --server-pid: replies/s and server CPU per reply;
#   2. STRACE_REQUESTS requests under `strace -c -f` attached to the server: system calls per
#      reply (strace slows the server; only the counts are used);
#   3. CALLGRIND_REQUESTS requests with the tracker under callgrind (instrumentation switched
#      on for this run only): user-space instructions per reply.
# Prints one table; the ratios within the run are what to compare on a shared machine. Needs
# release (or `measure` profile) builds of ppsp-tracker and ppsp-loadgen, strace and valgrind.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
LOADGEN=${LOADGEN:-$ROOT/target/release/ppsp-loadgen}
TRACKER=${TRACKER:-$ROOT/target/release/ppsp-tracker}
BACKENDS=${BACKENDS:-epoll io_uring}
SWARMS=${SWARMS:-1000}
PEERS=${PEERS:-10000}
CONNS=${CONNS:-16}
PIPELINE=${PIPELINE:-16}
DURATION=${DURATION:-10}
STRACE_REQUESTS=${STRACE_REQUESTS:-100000}
CALLGRIND_REQUESTS=${CALLGRIND_REQUESTS:-20000}
CALLGRIND_RATE=${CALLGRIND_RATE:-3000}
# CALLGRIND=0 skips the callgrind runs (for a quick look at system calls and CPU).
CALLGRIND=${CALLGRIND:-1}
PORT=${PORT:-17390}
OUT=${OUT:-$(mktemp -d /tmp/ppsp-backends.XXXXXX)}
mkdir -p "$OUT"

for tool in strace valgrind callgrind_control python3 taskset; do
    command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done
require_exec tracker "$TRACKER"
require_exec "load generator" "$LOADGEN"

sets=(--profile loopback-bench --set server.workers=1 --set server.pin_cores=false
      --set admin.listen=127.0.0.1:0 --set bt_http.enabled=false --set bt_udp.enabled=false
      --set "ppstp.listen=127.0.0.1:$PORT" --set engine.max_peers_per_source=4000000)
load=(--protocol ppstp --target "127.0.0.1:$PORT" --swarms "$SWARMS" --peers "$PEERS" --seed 1
      --peers-wanted 30 --mix find=9,connect=1 --connections "$CONNS" --pipeline "$PIPELINE"
      --no-progress --timeout-ms 5000)

PID=
stop_tracker() {
    stop_pids "$PID"
    PID=
}
trap stop_tracker EXIT

# Starts the tracker (args: back-end, log, command prefix...) and waits until it serves.
start_tracker() {
    local backend=$1 log=$2
    shift 2
    PPSP_TRACKER_BACKEND=$backend "$@" "$TRACKER" serve "${sets[@]}" >"$log" 2>&1 &
    PID=$!
    # Under valgrind the start takes a while; the load must not begin before it serves.
    wait_serving "$log" "$PID" 3000 0.2 || exit 1
    grep -q "I/O back-end: $backend" "$log" ||
        { echo "tracker did not start on $backend:" >&2; cat "$log" >&2; exit 1; }
    sleep 1
}

populate() {
    taskset -c 0 "$LOADGEN" run "${load[@]}" --populate --populate-timeout 600 --max-requests 1 \
        --duration 30 >"$1"
}

replies_of() {
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["measure"]["replies"])' "$1"
}

declare -A RPS CPU SYS INSTR
for backend in $BACKENDS; do
    dir=$OUT/$backend
    mkdir -p "$dir"
    # 1 and 2: the tracker on its own core.
    start_tracker "$backend" "$dir/tracker.log" taskset -c 1
    populate "$dir/populate.txt"
    taskset -c 0 "$LOADGEN" run "${load[@]}" --assume-registered --duration "$DURATION" \
        --server-pid "$PID" --json "$dir/cpu.json" >"$dir/cpu.txt"
    read -r RPS[$backend] CPU[$backend] < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
m = r["measure"]
print(round(m["replies_per_s"]), round(r["server"]["cpu_us_per_reply"], 2))' "$dir/cpu.json" 2>/dev/null || echo "? ?")
    strace -c -f -p "$PID" -o "$dir/strace.txt" &
    SPID=$!
    sleep 1
    taskset -c 0 "$LOADGEN" run "${load[@]}" --assume-registered --max-requests "$STRACE_REQUESTS" \
        --duration 600 --json "$dir/strace.json" >"$dir/strace-run.txt"
    kill -INT "$SPID"
    wait "$SPID" 2>/dev/null || true
    calls=$(awk '/^-+ -+/ { t = 1; next } t && /total/ { print $4; exit }' "$dir/strace.txt")
    replies=$(replies_of "$dir/strace.json")
    SYS[$backend]=$(python3 -c "print(f'{$calls / $replies:.3f}')")
    stop_tracker

    # 3: callgrind, instrumentation on for the measured requests only.
    if [ "$CALLGRIND" = 0 ]; then
        INSTR[$backend]=-
        continue
    fi
    start_tracker "$backend" "$dir/callgrind-tracker.log" valgrind --tool=callgrind \
        --instr-atstart=no --callgrind-out-file="$dir/callgrind.out"
    populate "$dir/callgrind-populate.txt"
    callgrind_control -i on "$PID" >/dev/null
    "$LOADGEN" run "${load[@]}" --assume-registered --max-requests "$CALLGRIND_REQUESTS" \
        --rate "$CALLGRIND_RATE" --duration 600 --json "$dir/callgrind.json" >"$dir/callgrind-run.txt"
    callgrind_control -i off "$PID" >/dev/null
    callgrind_control -d "$PID" >/dev/null
    sleep 1
    stop_tracker
    dump=$(ls -S "$dir"/callgrind.out* | head -1)
    total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ && !t { gsub(",", "", $1); print $1; t = 1 }')
    INSTR[$backend]=$((total / $(replies_of "$dir/callgrind.json")))
done

printf '\n%-10s %12s %18s %18s %22s\n' back-end replies/s "cpu us/reply" "syscalls/reply" "instructions/reply"
for backend in $BACKENDS; do
    printf '%-10s %12s %18s %18s %22s\n' "$backend" "${RPS[$backend]}" "${CPU[$backend]}" \
        "${SYS[$backend]}" "${INSTR[$backend]}"
done
echo "(runs, strace tables and callgrind dumps in $OUT)"
for backend in $BACKENDS; do
    echo "== $backend: system calls (strace -c -f, $STRACE_REQUESTS requests)"
    head -20 "$OUT/$backend/strace.txt"
done
