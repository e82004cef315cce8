#!/usr/bin/env bash
# PPSTP over TLS next to plaintext, in one run: the same FIND-heavy workload from ppsp-loadgen
# against a one-worker ppsp-tracker pinned to one CPU, (1) over keep-alive pipelined
# connections in plaintext, (2) the same over TLS, (3) one request per new TLS connection
# (handshakes per second on one core). Prints replies/s and server CPU per reply of each, and
# the TLS/plaintext ratios.
#
#   benches/tls.sh                 # defaults below
#   DURATION=10 benches/tls.sh
#
# Needs release builds of ppsp-tracker and ppsp-loadgen, and openssl (test certificates).
# Every server is stopped by its own pid when the script exits.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOADGEN=${LOADGEN:-$ROOT/target/release/ppsp-loadgen}
TRACKER=${TRACKER:-$ROOT/target/release/ppsp-tracker}
SERVER_CPU=${SERVER_CPU:-1}
LOADGEN_CPU=${LOADGEN_CPU:-0}
DURATION=${DURATION:-5}
PORT=${PORT:-17300}
OUT=${OUT:-$(mktemp -d /tmp/ppsp-tls.XXXXXX)}

mkdir -p "$OUT"
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null || true; }
trap cleanup EXIT

cd "$OUT"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=bench-ca -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
  -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
  -extfile server.ext -out server.pem 2>/dev/null
chmod 600 server.key

start() { # $1: tls on/off
  local tls=()
  if [ "$1" = on ]; then
    tls=(--set ppstp.tls.enabled=true --set ppstp.tls.cert=server.pem --set ppstp.tls.key=server.key)
  fi
  taskset -c "$SERVER_CPU" "$TRACKER" serve --set server.workers=1 \
    --set ppstp.listen=127.0.0.1:$PORT --set admin.enabled=false --set bt_udp.enabled=false \
    --set bt_http.enabled=false --set log.level=warn "${tls[@]}" 2>"server-$1.log" &
  PID=$!
  sleep 1
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""; }
load() { # $1: name, rest: extra loadgen args
  local name=$1; shift
  taskset -c "$LOADGEN_CPU" "$LOADGEN" run --protocol ppstp --target 127.0.0.1:$PORT \
    --swarms 1000 --peers 10000 --mix find=8,keepalive=1,stat_report=1 --duration "$DURATION" \
    --server-pid "$PID" --no-progress --timeout-ms 10000 --json "$name.json" "$@" >"$name.txt"
}
field() { python3 -c "import json,sys; r=json.load(open('$1.json')); print(r['measure']['$2'] if '$2'!='cpu' else r['server']['cpu_us_per_reply'])"; }

start off
load plain --populate --connections 4 --pipeline 8
stop
start on
load tls --populate --connections 4 --pipeline 8 --tls --cacert ca.pem
load handshakes --assume-registered --no-keepalive --connections 8 --pipeline 1 --tls --cacert ca.pem
stop

printf '%-22s %12s %16s\n' run replies/s "server us/reply"
for run in plain tls handshakes; do
  printf '%-22s %12.0f %16.2f\n' "$run" "$(field $run replies_per_s)" "$(field $run cpu)"
done
python3 - <<PY
import json
p, t = (json.load(open(f"$OUT/{n}.json")) for n in ("plain", "tls"))
print(f"TLS/plain replies/s {t['measure']['replies_per_s']/p['measure']['replies_per_s']:.2f}, "
      f"server CPU per reply {t['server']['cpu_us_per_reply']/p['server']['cpu_us_per_reply']:.2f}")
PY
echo "reports in $OUT"
