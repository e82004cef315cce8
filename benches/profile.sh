#!/usr/bin/env bash
# Instruction counts per reply of ppsp-tracker's hot path, measured with valgrind's callgrind
# (repeatable, unlike timings on a shared machine), and the functions that spend them.
#
#   benches/profile.sh bt-udp        # BEP 15 announce 9 : scrape 1 (compare.sh's mix)
#   benches/profile.sh ppstp         # PPSTP FIND 9 : CONNECT 1, 30 peers wanted
#   MIX=join=1,leave=1 benches/profile.sh ppstp   # another request mix (JOIN-heavy here)
#   CALLGRIND_ARGS=--cache-sim=yes benches/profile.sh ppstp   # also D1 and LL misses per reply
#
# The tracker runs under callgrind with collection off while the load generator registers the
# population (--populate), then instrumentation is switched on for REQUESTS requests at a rate the
# instrumented server keeps up with, and the counts are dumped. Prints user-space
# instructions per reply (kernel work is not counted) and the top functions by inclusive and
# exclusive cost. Needs release builds of ppsp-tracker and ppsp-loadgen and valgrind.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOADGEN=${LOADGEN:-$ROOT/target/release/ppsp-loadgen}
TRACKER=${TRACKER:-$ROOT/target/release/ppsp-tracker}
WORKLOAD=${1:-bt-udp}
SWARMS=${SWARMS:-1000}
PEERS=${PEERS:-10000}
REQUESTS=${REQUESTS:-20000}
RATE=${RATE:-3000}
PORT=${PORT:-17290}
SEED=${SEED:-1}
TOP=${TOP:-25}
OUT=${OUT:-$(mktemp -d /tmp/ppsp-profile.XXXXXX)}
mkdir -p "$OUT"
rm -f "$OUT"/callgrind.out*

command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
[ -x "$TRACKER" ] || { echo "no tracker at $TRACKER" >&2; exit 1; }
[ -x "$LOADGEN" ] || { echo "no load generator at $LOADGEN" >&2; exit 1; }

# valgrind does not run io_uring system calls: the profiled server uses the epoll back-end.
sets=(--profile loopback-bench --set server.workers=1 --set server.pin_cores=false
      --set server.backend=epoll
      --set admin.listen=127.0.0.1:0 --set bt_http.enabled=false
      --set engine.max_peers_per_source=4000000)
# PPSP_SETS: more `--set key=value` words.
# shellcheck disable=SC2206
[ -n "${PPSP_SETS:-}" ] && sets+=($PPSP_SETS)
case "$WORKLOAD" in
    bt-udp)
        sets+=(--set bt_udp.enabled=true --set "bt_udp.listen=127.0.0.1:$PORT" --set ppstp.listen=127.0.0.1:0)
        load=(--protocol bt-udp --mix "${MIX:-announce=9,scrape=1}" --connections 8 --inflight 4 --source-addrs 4)
        ;;
    ppstp)
        sets+=(--set bt_udp.enabled=false --set "ppstp.listen=127.0.0.1:$PORT")
        load=(--protocol ppstp --peers-wanted 30 --mix "${MIX:-find=9,connect=1}" --connections 16 --pipeline 4)
        ;;
    *) echo "workload is bt-udp or ppstp" >&2; exit 1 ;;
esac
common=(--target "127.0.0.1:$PORT" --swarms "$SWARMS" --peers "$PEERS" --seed "$SEED" --no-progress)

# CALLGRIND_ARGS: more callgrind options (--cache-sim=yes adds simulated cache misses).
# shellcheck disable=SC2206
extra=(${CALLGRIND_ARGS:-})
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out" \
    ${extra[@]+"${extra[@]}"} "$TRACKER" serve "${sets[@]}" >"$OUT/tracker.log" 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true' EXIT
for _ in $(seq 300); do
    grep -q "listening\|serving\|started" "$OUT/tracker.log" 2>/dev/null && break
    sleep 0.2
done
sleep 2

# Register the population, uninstrumented (one request to end the run).
"$LOADGEN" run "${load[@]}" "${common[@]}" --populate --populate-timeout 600 --max-requests 1 \
    --duration 30 --timeout-ms 5000 >"$OUT/populate.txt"
callgrind_control -i on "$PID" >/dev/null
"$LOADGEN" run "${load[@]}" "${common[@]}" --assume-registered --max-requests "$REQUESTS" \
    --rate "$RATE" --duration 600 --timeout-ms 5000 --json "$OUT/measure.json" >"$OUT/measure.txt"
callgrind_control -i off "$PID" >/dev/null
callgrind_control -d "$PID" >/dev/null
sleep 1
kill "$PID" 2>/dev/null || true
wait "$PID" 2>/dev/null || true
trap - EXIT

# The dump made on request (the file written at exit holds nothing: instrumentation was off).
dump=$(ls -S "$OUT"/callgrind.out* | head -1)
replies=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["measure"]["replies"])' "$OUT/measure.json")
total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ && !t { gsub(",", "", $1); print $1; t = 1 }')
echo "== $WORKLOAD: $replies replies, $total instructions, $((total / replies)) instructions per reply (callgrind, user space)"
if [ -n "${CALLGRIND_ARGS:-}" ]; then
    # With --cache-sim=yes: the events' totals (Ir I1mr ILmr Dr D1mr DLmr Dw D1mw DLmw).
    callgrind_annotate "$dump" 2>/dev/null | grep -B2 'PROGRAM TOTALS' | head -3
fi
echo "== top $TOP by inclusive cost"
callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | awk '/^Ir/ { n++ } n >= 2' | sed -n "3,$((TOP + 2))p" || true
echo "== top $TOP by exclusive cost"
callgrind_annotate "$dump" 2>/dev/null | awk '/^Ir/ { n++ } n >= 2' | sed -n "3,$((TOP + 2))p" || true
echo "(dump in $dump)"
