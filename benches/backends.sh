#!/usr/bin/env bash
# Compares the two I/O back-ends on the BEP 15 (bt-udp) path, which is the hot one: system
# calls per reply (strace -c -f) and instructions per reply (valgrind --tool=callgrind), both
# repeatable counts rather than timings, so a busy machine does not change them much.
#
# Each back-end serves two bounded runs of the same workload (SMALL and LARGE requests); the
# figures per reply are (count(LARGE) - count(SMALL)) / (replies(LARGE) - replies(SMALL)), which
# removes start-up and shutdown. Needs release binaries (cargo build --release -p ppsp-tracker
# -p ppsp-loadgen), strace and valgrind.
#
#   benches/backends.sh                      # both back-ends, both tools
#   BACKENDS=io_uring TOOLS=strace benches/backends.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOADGEN=${LOADGEN:-$ROOT/target/release/ppsp-loadgen}
TRACKER=${TRACKER:-$ROOT/target/release/ppsp-tracker}
BACKENDS=${BACKENDS:-"epoll io_uring"}
TOOLS=${TOOLS:-"strace callgrind"}
SMALL=${SMALL:-10000}
LARGE=${LARGE:-60000}
SWARMS=${SWARMS:-10000}
PEERS=${PEERS:-100000}
CONNECTIONS=${CONNECTIONS:-8}
INFLIGHT=${INFLIGHT:-16}
PORT=${PORT:-17190}
OUT=${OUT:-$(mktemp -d /tmp/ppsp-backends.XXXXXX)}

for bin in "$LOADGEN" "$TRACKER"; do
    [ -x "$bin" ] || { echo "missing $bin (cargo build --release -p ppsp-tracker -p ppsp-loadgen)" >&2; exit 1; }
done
command -v strace >/dev/null || TOOLS=${TOOLS//strace/}
command -v valgrind >/dev/null || TOOLS=${TOOLS//callgrind/}

SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

wait_udp() { # wait until something listens on $PORT/udp (at most 60 s: valgrind starts slowly)
    for _ in $(seq 600); do
        kill -0 "$SERVER_PID" 2>/dev/null || return 1
        ss -Huln "sport = :$PORT" | grep -q . && return 0
        sleep 0.1
    done
    return 1
}

# run TOOL BACKEND REQUESTS: prints "replies count"
run() {
    local tool=$1 backend=$2 requests=$3 file="$OUT/$1-$2-$3"
    local serve=("$TRACKER" serve --set bt_udp.enabled=true --set "bt_udp.listen=127.0.0.1:$PORT"
                 --set bt_http.enabled=false --set server.workers=1 --set ppstp.listen=127.0.0.1:0
                 --set admin.enabled=false --set log.level=warn)
    case $tool in
        strace) PPSP_TRACKER_BACKEND=$backend strace -f -c -o "$file.strace" -- "${serve[@]}" >"$file.log" 2>&1 & ;;
        callgrind) PPSP_TRACKER_BACKEND=$backend valgrind --tool=callgrind --callgrind-out-file="$file.cg" \
                       -- "${serve[@]}" >"$file.log" 2>&1 & ;;
    esac
    SERVER_PID=$!
    wait_udp || { echo "server did not start (see $file.log)" >&2; exit 1; }
    sleep 1
    "$LOADGEN" run --protocol bt-udp --target "127.0.0.1:$PORT" --swarms "$SWARMS" --peers "$PEERS" \
        --connections "$CONNECTIONS" --inflight "$INFLIGHT" --max-requests "$requests" --duration 600 \
        --timeout-ms 5000 --no-progress >"$file.loadgen" 2>&1
    kill -INT "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    local replies count
    replies=$(sed -n 's/^measure: .* \([0-9]*\) replies,.*/\1/p' "$file.loadgen")
    case $tool in
        strace) count=$(awk '$NF == "total" { print $4 }' "$file.strace") ;;
        callgrind) count=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$file.cg") ;;
    esac
    echo "$replies $count"
}

printf '%-10s %-9s %14s\n' tool backend per-reply
for tool in $TOOLS; do
    for backend in $BACKENDS; do
        read -r r1 c1 < <(run "$tool" "$backend" "$SMALL")
        read -r r2 c2 < <(run "$tool" "$backend" "$LARGE")
        per=$(awk -v a="$c1" -v b="$c2" -v x="$r1" -v y="$r2" 'BEGIN { printf "%.3f", (b - a) / (y - x) }')
        unit=$([ "$tool" = strace ] && echo "syscalls" || echo "instructions")
        printf '%-10s %-9s %14s %s  (replies %s / %s)\n' "$tool" "$backend" "$per" "$unit" "$r1" "$r2"
        if [ "$tool" = strace ]; then
            echo "           busiest calls in the large run:"
            awk 'NR > 2 && $1 ~ /^[0-9.]+$/ && $NF != "total" { print "             " $NF, $4 }' \
                "$OUT/strace-$backend-$LARGE.strace" | sort -k2 -n -r | head -5
        fi
    done
done
echo "(raw files in $OUT)"
