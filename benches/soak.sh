#!/usr/bin/env bash
# Soak: BitTorrent UDP and PPSTP (plaintext HTTP keep-alive) at once against one tracker, for
# DURATION seconds at LOAD (default 70%) of what the tracker answers at its peak, with steady
# churn: BitTorrent peers start and stop and, as the track timer is short, idle ones expire
# and come back with their next announce; PPSTP peers leave and CONNECT again. Prints the
# server's RSS at the start and at the end (and every SAMPLE seconds into OUT/rss.log), the
# answered rate and the errors of each protocol, and the expiry figures from /metrics.
#
#   benches/soak.sh                                  # 10 minutes
#   DURATION=60 benches/soak.sh                      # a short run
#   PEAK_UDP=40000 PEAK_PPSTP=15000 benches/soak.sh  # skip the peak measurement
#
# "Peak" is each protocol's closed-loop answered rate measured on its own first (PEAK_SECS
# each); during the soak each protocol is offered LOAD x SHARE of its own peak (SHARE = 0.5:
# the two together use LOAD of the server's capacity). The PPSTP population is sized so that
# each peer is touched about every fortieth of the track timer: its registrations do not
# expire while the generator believes them registered, even when a busy host stalls the
# generator for seconds (a PPSTP peer that expired gets error 03 for every later request);
# the BitTorrent population (PEERS_UDP) is large enough that a share of it idles past the
# track timer and expires, and re-registers with its next announce.
#
# Needs optimised builds of both binaries (release or the `measure` profile). The server is
# stopped by its pid when the script exits. JSON reports and the RSS log stay in OUT.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
TRACKER=${TRACKER:-$ROOT/target/release/ppsp-tracker}
LOADGEN=${LOADGEN:-$ROOT/target/release/ppsp-loadgen}
DURATION=${DURATION:-600}
LOAD=${LOAD:-0.7}
SHARE=${SHARE:-0.5}
PEAK_SECS=${PEAK_SECS:-10}
TRACK_SECS=${TRACK_SECS:-20}
SWARMS_UDP=${SWARMS_UDP:-20000}
PEERS_UDP=${PEERS_UDP:-200000}
SWARMS_PPSTP=${SWARMS_PPSTP:-1000}
SAMPLE=${SAMPLE:-10}
SERVER_CPU=${SERVER_CPU:-1}
LOADGEN_CPU=${LOADGEN_CPU:-0}
PORT_BASE=${PORT_BASE:-17400}
OUT=${OUT:-$(mktemp -d /tmp/ppsp-soak.XXXXXX)}
PPSP_SETS=${PPSP_SETS:-}

mkdir -p "$OUT"
require_exec tracker "$TRACKER"
require_exec "load generator" "$LOADGEN"
pin_cpus
PIDS=()
cleanup() {
    stop_pids ${PIDS[@]+"${PIDS[@]}"}
}
trap cleanup EXIT

UDP=127.0.0.1:$PORT_BASE
PPSTP=127.0.0.1:$((PORT_BASE + 1))
ADMIN=127.0.0.1:$((PORT_BASE + 2))
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
field() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$1" "$2"; }
metric() { curl -s "http://$ADMIN/metrics" | awk -v m="$1" 'index($0, m) == 1 {s += $NF} END {printf "%d\n", s}'; }
# Requests the server answered so far, from its own counters: BEP 15 connects, announces and
# scrapes; PPSTP requests minus their error answers.
answered() {
    curl -s "http://$ADMIN/metrics" | awk '
        /^ppsp_bt_udp_requests_total\{outcome="(connect|announce|scrape)"\}/ {u += $NF}
        /^ppsp_requests_total\{/ {p += $NF}
        /^ppsp_errors_total\{/ {p -= $NF}
        END {printf "%d %d\n", u, p}'
}

# shellcheck disable=SC2086
"${PIN_SERVER[@]}" "$TRACKER" serve --profile loopback-bench --set server.workers=1 --set server.pin_cores=false \
    --set bt_udp.enabled=true --set "bt_udp.listen=[\"$UDP\"]" --set "ppstp.listen=$PPSTP" \
    --set "admin.listen=$ADMIN" --set "bt_http.listen=[\"127.0.0.1:0\"]" \
    --set "engine.track_timer_secs=$TRACK_SECS" --set log.level=warn $PPSP_SETS &
SERVER=$!
PIDS+=("$SERVER")
wait_admin "$ADMIN" "$SERVER" || exit 1

udp=(run --protocol bt-udp --target "$UDP" --swarms "$SWARMS_UDP" --peers "$PEERS_UDP"
     --source-addrs 4 --no-progress --timeout-ms 2000 --server-pid "$SERVER")
if [ -z "${PEAK_UDP:-}" ]; then
    "${PIN_LOADGEN[@]}" "$LOADGEN" "${udp[@]}" --populate --mix announce=9,scrape=1 \
        --connections 8 --inflight 16 --duration "$PEAK_SECS" --json "$OUT/peak-udp.json" >/dev/null
    PEAK_UDP=$(field "$OUT/peak-udp.json" 'int(r["measure"]["ok_per_s"])')
fi
if [ -z "${PEAK_PPSTP:-}" ]; then
    "${PIN_LOADGEN[@]}" "$LOADGEN" run --protocol ppstp --target "$PPSTP" --swarms 100 \
        --peers 2000 --populate --mix find=8,stat_query=1,keepalive=1 --no-progress \
        --connections 16 --pipeline 16 --duration "$PEAK_SECS" --seed 99 \
        --json "$OUT/peak-ppstp.json" >/dev/null
    PEAK_PPSTP=$(field "$OUT/peak-ppstp.json" 'int(r["measure"]["ok_per_s"])')
fi
RATE_UDP=$(python3 -c "print(max(1, int($LOAD * $SHARE * $PEAK_UDP)))")
RATE_PPSTP=$(python3 -c "print(max(1, int($LOAD * (1 - $SHARE) * $PEAK_PPSTP)))")
PEERS_PPSTP=${PEERS_PPSTP:-$(python3 -c "print(max(100, int($RATE_PPSTP * $TRACK_SECS / 40)))")}
echo "peak: bt-udp $PEAK_UDP/s, ppstp $PEAK_PPSTP/s; soak: bt-udp $RATE_UDP/s over $PEERS_UDP peers," \
     "ppstp $RATE_PPSTP/s over $PEERS_PPSTP peers, $DURATION s, track timer $TRACK_SECS s"

ppstp=(run --protocol ppstp --target "$PPSTP" --swarms "$SWARMS_PPSTP" --peers "$PEERS_PPSTP"
       --no-progress --timeout-ms 5000 --seed 7)
# Register the PPSTP population (light load), then start both at once.
"${PIN_LOADGEN[@]}" "$LOADGEN" "${ppstp[@]}" --populate --mix keepalive=1 --connections 4 \
    --pipeline 4 --duration 0.1 >/dev/null
expired0=$(metric ppsp_expired_peers_total)
rss_start=$(rss_kb "$SERVER")
"${PIN_LOADGEN[@]}" "$LOADGEN" "${udp[@]}" --assume-registered \
    --mix announce=7,started=1,stopped=1,scrape=1 --rate "$RATE_UDP" --connections 8 \
    --inflight 256 --duration "$DURATION" --json "$OUT/soak-udp.json" >/dev/null &
GEN_UDP=$!
PIDS+=("$GEN_UDP")
"${PIN_LOADGEN[@]}" "$LOADGEN" "${ppstp[@]}" --assume-registered \
    --mix find=6,connect=2,stat_query=1,keepalive=1 --rate "$RATE_PPSTP" --connections 16 \
    --pipeline 16 --duration "$DURATION" --json "$OUT/soak-ppstp.json" >/dev/null &
GEN_PPSTP=$!
PIDS+=("$GEN_PPSTP")
start=$(date +%s)
echo "seconds rss_kb peers swarms memberships expired_peers answered_bt_udp answered_ppstp" >"$OUT/rss.log"
while kill -0 "$GEN_UDP" 2>/dev/null || kill -0 "$GEN_PPSTP" 2>/dev/null; do
    echo "$(($(date +%s) - start)) $(rss_kb "$SERVER") $(metric 'ppsp_peers ') $(metric 'ppsp_swarms ') $(metric 'ppsp_memberships ') $(metric ppsp_expired_peers_total) $(answered)" >>"$OUT/rss.log"
    sleep "$SAMPLE"
done
wait "$GEN_UDP" || echo "the bt-udp generator failed" >&2
wait "$GEN_PPSTP" || echo "the PPSTP generator failed" >&2
rss_end=$(rss_kb "$SERVER")
rss_max=$(awk 'NR > 1 && $2 > m {m = $2} END {print m + 0}' "$OUT/rss.log")
expired=$(($(metric ppsp_expired_peers_total) - expired0))

# The server's answered rates over the soak (its counters, first to last sample of the
# window in which both generators ran its schedule), and each generator's errors.
python3 - "$OUT/rss.log" "$DURATION" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:] if l.strip()]
rows = [r for r in rows if float(r[0]) <= float(sys.argv[2])] or rows
a, b = rows[0], rows[-1]
secs = max(1.0, float(b[0]) - float(a[0]))
print(f"server answered over {secs:.0f} s: bt-udp {(int(b[6]) - int(a[6])) / secs:.0f}/s, "
      f"ppstp {(int(b[7]) - int(a[7])) / secs:.0f}/s")
PY
printf '%-7s %10s %12s %10s %s\n' proto offered/s answered/s p99_ms errors
for p in udp ppstp; do
    f=$OUT/soak-$p.json
    rate=RATE_$(echo "$p" | tr a-z A-Z)
    printf '%-7s %10s %12.0f %10.1f %s\n' "$p" "${!rate}" \
        "$(field "$f" 'r["measure"]["ok_per_s"]')" \
        "$(field "$f" 'r["measure"]["latency"]["p99_us"] / 1000')" \
        "$(field "$f" 'r["measure"]["errors"]')"
done
echo "server RSS: start ${rss_start} kB, end ${rss_end} kB, highest sample ${rss_max} kB"
echo "peers expired during the soak: $expired"
echo "reports and RSS log: $OUT"
