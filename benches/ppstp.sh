#!/usr/bin/env bash
# The PPSTP FIND-heavy end-to-end run (FIND 9 : CONNECT 1 unless MIX says otherwise, 30 peers wanted, keep-alive
# connections pipelining requests) against one or two ppsp-tracker builds, one after the
# other in one session, and a table of replies/s, server CPU per reply and RSS per
# registered peer with ratios:
#
#   benches/ppstp.sh                                    # this build
#   TRACKER_BEFORE=/path/to/old/ppsp-tracker benches/ppstp.sh   # an older build as "before"
#   MIX=join=1,leave=1 SWARMS=1000000 PEERS=1000000 benches/ppstp.sh   # JOIN-heavy, 1M swarms
#
# Each tracker runs one worker pinned to CPU 1 (SERVER_CPU) on its default I/O back-end
# (BACKEND to choose), the generator on CPU 0 (LOADGEN_CPU); the generator registers the
# population (--populate, every peer CONNECTs once), then measures DURATION seconds, sampling
# the server's CPU time and RSS. Needs release (or `measure` profile) builds of ppsp-tracker
# and ppsp-loadgen.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
LOADGEN=${LOADGEN:-$ROOT/target/release/ppsp-loadgen}
TRACKER=${TRACKER:-$ROOT/target/release/ppsp-tracker}
TRACKER_BEFORE=${TRACKER_BEFORE:-}
BACKEND=${BACKEND:-auto}
SWARMS=${SWARMS:-10000}
PEERS=${PEERS:-100000}
CONNS=${CONNS:-16}
PIPELINE=${PIPELINE:-16}
DURATION=${DURATION:-10}
# The request mix after populating (loadgen --mix); join=1,leave=1 is JOIN-heavy: every
# peer is in its swarm after populating, so each JOIN drawn then takes turns with a LEAVE.
MIX=${MIX:-find=9,connect=1}
SERVER_CPU=${SERVER_CPU:-1}
LOADGEN_CPU=${LOADGEN_CPU:-0}
PORT=${PORT:-17490}
OUT=${OUT:-$(mktemp -d /tmp/ppsp-ppstp.XXXXXX)}
mkdir -p "$OUT"

require_exec tracker "$TRACKER"
require_exec "load generator" "$LOADGEN"
pin_cpus

PID=
stop_tracker() {
    stop_pids "$PID"
    PID=
}
trap stop_tracker EXIT

reports=()
builds=()
[ -n "$TRACKER_BEFORE" ] && builds+=("before=$TRACKER_BEFORE")
builds+=("ppsp=$TRACKER")
for build in "${builds[@]}"; do
    name=${build%%=*}
    binary=${build#*=}
    PORT=$((PORT + 1))
    PPSP_TRACKER_BACKEND=$BACKEND ${PIN_SERVER[@]+"${PIN_SERVER[@]}"} "$binary" serve \
        --profile loopback-bench --set server.workers=1 --set server.pin_cores=false \
        --set admin.listen=127.0.0.1:0 --set bt_http.enabled=false --set bt_udp.enabled=false \
        --set "ppstp.listen=127.0.0.1:$PORT" --set engine.max_peers_per_source=4000000 \
        >"$OUT/$name.log" 2>&1 &
    PID=$!
    wait_serving "$OUT/$name.log" "$PID" || exit 1
    echo "== $name ($binary, pid $PID, $(grep -o 'I/O back-end: [a-z_]*' "$OUT/$name.log" | head -1))"
    ${PIN_LOADGEN[@]+"${PIN_LOADGEN[@]}"} "$LOADGEN" run --protocol ppstp \
        --target "127.0.0.1:$PORT" --populate --swarms "$SWARMS" --peers "$PEERS" \
        --peers-wanted 30 --mix "$MIX" --connections "$CONNS" --pipeline "$PIPELINE" \
        --duration "$DURATION" --server-pid "$PID" --label "$name" --no-progress \
        --json "$OUT/$name.json" | tee "$OUT/$name.txt"
    reports+=("$OUT/$name.json")
    stop_tracker
done
echo "== comparison (reports in $OUT)"
"$LOADGEN" table --baseline "$(basename "${reports[0]}" .json)" "${reports[@]}"
