#!/usr/bin/env bash
# Where a bt-udp server's CPU per reply goes: user and system time from /proc/PID/stat over
# the measured phase, voluntary and involuntary context switches, and (PERF=1) a perf
# cpu-clock sample of the server with kernel symbols, summed into the parts that matter on
# loopback (the engine's table work, the wake-up of the client's socket, the rest of the
# kernel). Runs one server: compare.sh's defaults (100k peers, 10k swarms, Zipf 1,
# announce 9 : scrape 1), the server pinned to SERVER_CPU (1), the generator to LOADGEN_CPU (0).
#
#   benches/cpu_split.sh ppsp                       # ppsp-tracker (TRACKER=...), io_uring
#   PPSP_SETS="--set server.backend=epoll" benches/cpu_split.sh ppsp
#   benches/cpu_split.sh floor                      # the load generator's floor responder
#   PERF=1 PERFG=-g benches/cpu_split.sh ppsp       # with a call-graph sample in $OUT
#
# perf's cpu-clock event is a timer, not a hardware counter, so it works where counters are
# missing (virtual machines); samples taken while interrupts are off land on the instruction
# that turns them back on (`_raw_spin_unlock_irqrestore`): read those with PERFG=-g.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
LOADGEN=${LOADGEN:-$ROOT/target/release/ppsp-loadgen}
TRACKER=${TRACKER:-$ROOT/target/release/ppsp-tracker}
SERVER=${1:-ppsp}
PORT=${PORT:-17250}
DURATION=${DURATION:-10}
PPSP_SETS=${PPSP_SETS:-}
OUT=${OUT:-$(mktemp -d /tmp/ppsp-cpu-split.XXXXXX)}
mkdir -p "$OUT"
require_exec "load generator" "$LOADGEN"
pin_cpus

case "$SERVER" in
    ppsp)
        require_exec tracker "$TRACKER"
        sets=(--profile loopback-bench --set bt_udp.enabled=true --set "bt_udp.listen=127.0.0.1:$PORT"
              --set bt_http.enabled=false --set server.workers=1 --set server.pin_cores=false
              --set ppstp.listen=127.0.0.1:0 --set admin.listen=127.0.0.1:0
              --set engine.max_peers_per_source=4000000)
        # shellcheck disable=SC2206
        [ -n "$PPSP_SETS" ] && sets+=($PPSP_SETS)
        ${PIN_SERVER[@]+"${PIN_SERVER[@]}"} "$TRACKER" serve "${sets[@]}" >"$OUT/server.log" 2>&1 &
        ;;
    floor)
        ${PIN_SERVER[@]+"${PIN_SERVER[@]}"} "$LOADGEN" floor --listen "127.0.0.1:$PORT" >"$OUT/server.log" 2>&1 &
        ;;
    *) echo "server is ppsp or floor" >&2; exit 1 ;;
esac
PID=$!
trap 'stop_pids "$PID"' EXIT
for _ in $(seq 50); do
    ss -Huln "sport = :$PORT" | grep -q . && break
    sleep 0.1
done
sleep 1

common=(--protocol bt-udp --target "127.0.0.1:$PORT" --swarms 10000 --peers 100000 --popularity zipf:1
        --mix announce=9,scrape=1 --seed 1 --connections 8 --inflight 16 --source-addrs 4 --no-progress)
${PIN_LOADGEN[@]+"${PIN_LOADGEN[@]}"} "$LOADGEN" run "${common[@]}" --populate --populate-timeout 300 \
    --max-requests 1 --duration 30 >"$OUT/populate.txt"
stat_times() { awk '{print $14, $15}' "/proc/$PID/stat"; }
switches() { awk '/ctxt_switches/ {s += $2} END {print s}' /proc/"$PID"/task/*/status; }
read -r u0 s0 < <(stat_times)
c0=$(switches)
if [ -n "${PERF:-}" ]; then
    # shellcheck disable=SC2086
    (sleep 1; perf record -q -e cpu-clock -F 10000 ${PERFG:-} -p "$PID" -o "$OUT/perf.data" \
        -- sleep $((DURATION > 3 ? DURATION - 2 : 1)) >/dev/null 2>&1) &
    PERF_PID=$!
fi
${PIN_LOADGEN[@]+"${PIN_LOADGEN[@]}"} "$LOADGEN" run "${common[@]}" --assume-registered --duration "$DURATION" \
    --server-pid "$PID" --json "$OUT/measure.json" >"$OUT/measure.txt"
read -r u1 s1 < <(stat_times)
c1=$(switches)
[ -n "${PERF_PID:-}" ] && wait "$PERF_PID"
hz=$(getconf CLK_TCK)
python3 - "$OUT/measure.json" "$hz" "$u0" "$s0" "$u1" "$s1" "$c0" "$c1" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["measure"]
hz = int(sys.argv[2])
u0, s0, u1, s1, c0, c1 = map(int, sys.argv[3:])
r = max(m["replies"], 1)
us = lambda ticks: ticks / hz * 1e6 / r
print(f"replies {m['replies']} ({m['replies_per_s']:.0f}/s); per reply: user {us(u1 - u0):.3f} us, "
      f"system {us(s1 - s0):.3f} us, total {us(u1 - u0 + s1 - s0):.3f} us; "
      f"context switches {(c1 - c0) / r:.4f}")
PY
if [ -n "${PERF:-}" ] && [ -f "$OUT/perf.data" ]; then
    perf report -i "$OUT/perf.data" --stdio --no-children --sort dso,sym -g none \
        -F sample,dso,sym 2>/dev/null | grep -v '^#' | grep -v '^$' >"$OUT/flat.txt" || true
    python3 - "$OUT/flat.txt" <<'PY'
import sys
parts = {"engine (find, apply, announce_compact, write_sample)":
             ("BtShard::find", "Engine>::apply", "announce_compact", "write_sample"),
         "interrupts-off sections (mostly waking the client: PERFG=-g)": ("_raw_spin_unlock_irqrestore",)}
total = user = 0
sums = dict.fromkeys(parts, 0)
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) < 3 or not f[0].isdigit():
        continue
    n = int(f[0])
    total += n
    if "kernel" not in f[1]:
        user += n
    for name, keys in parts.items():
        if any(k in line for k in keys):
            sums[name] += n
total = max(total, 1)
print(f"perf samples {total}: user space {user / total:.1%}, kernel {(total - user) / total:.1%}")
for name, n in sums.items():
    print(f"  {name}: {n / total:.1%}")
PY
fi
echo "(reports in $OUT)"
