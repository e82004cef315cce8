#!/bin/sh
# One logical tracker on 1 node, then on a 3-node loopback cluster, under the same load: one
# load generator with one --target per node (each simulated peer sticks to one node, its
# connection tracker), PPSTP FIND-heavy mix. Prints, for each: aggregate replies/s and FIND
# p99 (with per-node lines from the load generator), the share of FINDs answered from the
# local copy, FINDs answered after an overlay timeout, and overlay messages per client
# request.
#
#   benches/cluster.sh                 # overlay.local_find_min=20 (mixed local/remote)
#   MIN=0 benches/cluster.sh           # every FIND local
#   MIN=1000000 benches/cluster.sh     # every FIND merged with a fetched (cached) list
#   ONLY3=1 benches/cluster.sh         # the 3-node cluster only
#
# Builds the release binaries once when missing (nice, one build at a time on a shared
# machine); B and L override the binaries. Ports 16084-16086, 17846-17848, 19846-19848.
set -eu
B=${B:-target/release/ppsp-tracker}
L=${L:-target/release/ppsp-loadgen}
MIN=${MIN:-20}
DUR=${DUR:-10}
OUT=${OUT:-/tmp/ppsp-cluster}
if [ ! -x "$B" ] || [ ! -x "$L" ]; then
  nice cargo build --release -p ppsp-tracker -p ppsp-loadgen
fi
mkdir -p "$OUT"
pids=""
trap 'kill $pids 2>/dev/null' EXIT

# start_nodes N: N nodes, node 0 founds the overlay, the others join through it.
start_nodes() {
  i=0
  while [ "$i" -lt "$1" ]; do
    boot=""
    [ "$i" -gt 0 ] && boot=127.0.0.1:16084
    "$B" serve --profile cluster-node --set overlay.listen=127.0.0.1:1608$((4 + i)) \
      --set overlay.bootstrap=$boot --set ppstp.listen=127.0.0.1:1784$((6 + i)) \
      --set admin.listen=127.0.0.1:1984$((6 + i)) --set bt_udp.enabled=false \
      --set bt_http.enabled=false --set overlay.local_find_min="$MIN" \
      --set server.workers=1 --set log.level=warn &
    pids="$pids $!"
    i=$((i + 1))
    sleep 1
  done
  sleep 4
}

stop_nodes() {
  # shellcheck disable=SC2086
  kill $pids 2>/dev/null || true
  # shellcheck disable=SC2086
  wait $pids 2>/dev/null || true
  pids=""
}

# run N: the load generator against nodes 0..N-1, then the nodes' metrics.
run() {
  n=$1
  targets=""
  i=0
  while [ "$i" -lt "$n" ]; do
    targets="$targets${targets:+,}127.0.0.1:1784$((6 + i))"
    i=$((i + 1))
  done
  "$L" run --target "$targets" --threads 3 --connections 6 --swarms 200 --peers 3000 \
    --populate --mix find=8,join=1,keepalive=1 --duration "$DUR" --seed 7 --no-progress \
    --json "$OUT/run-$n.json" >"$OUT/run-$n.txt"
  i=0
  rm -f "$OUT"/metrics-"$n"-*.txt
  while [ "$i" -lt "$n" ]; do
    curl -s 127.0.0.1:1984$((6 + i))/metrics >"$OUT/metrics-$n-$i.txt"
    i=$((i + 1))
  done
  sum() { cat "$OUT"/metrics-"$n"-*.txt | grep -E "^$1" | awk '{s += $NF} END {print s + 0}'; }
  local=$(sum 'ppsp_federation_finds_total\{answer="local"\}')
  remote=$(sum 'ppsp_federation_finds_total\{answer="remote"\}')
  tmo=$(sum 'ppsp_federation_finds_total\{answer="timeout"\}')
  requests=$(jq '.measure.sent + (.populate.sent // 0)' "$OUT/run-$n.json")
  overlay=$(sum 'ppsp_overlay_messages_sent_total')
  echo "== $n node(s), overlay.local_find_min=$MIN"
  echo "aggregate replies/s: $(jq '.measure.replies_per_s | floor' "$OUT/run-$n.json"), FIND p99 $(jq '.measure.per_type.find.latency.p99_us' "$OUT/run-$n.json") us"
  grep '^target ' "$OUT/run-$n.txt" || true
  if [ "$n" -gt 1 ]; then
    echo "FINDs: local $local, remote $remote, after an overlay timeout $tmo"
    echo "overlay messages per client request: $(echo "scale=3; $overlay / $requests" | bc)"
    echo "overlay requests timed out: $(sum ppsp_federation_overlay_request_timeouts_total)," \
      "Stores $(sum ppsp_federation_stores_total) carrying $(sum ppsp_federation_stored_values_total) values," \
      "flush latency max $(cat "$OUT"/metrics-"$n"-*.txt | grep -E '^ppsp_federation_flush_latency_ms_max' | awk '{if ($NF > m) m = $NF} END {print m + 0}') ms"
  fi
}

if [ -z "${ONLY3:-}" ]; then
  start_nodes 1
  run 1
  stop_nodes
fi
start_nodes 3
run 3
stop_nodes
