#!/bin/sh
# A 3-node loopback cluster under the load generator: one load generator per node (the same
# population at every node), PPSTP FIND-heavy mix. Prints aggregate replies/s, the share of
# FINDs answered from the local copy, the p99 of FIND, and overlay messages per client request.
#
#   benches/cluster.sh                 # overlay.local_find_min=20 (mixed local/remote)
#   MIN=0 benches/cluster.sh           # every FIND local
#   MIN=1000000 benches/cluster.sh     # every FIND merged with a fetched (cached) list
#
# Uses target/release binaries (B, L to override); ports 16084-16086, 17846-17848, 19846-19848.
set -eu
B=${B:-target/release/ppsp-tracker}
L=${L:-target/release/ppsp-loadgen}
MIN=${MIN:-20}
DUR=${DUR:-10}
OUT=${OUT:-/tmp/ppsp-cluster}
mkdir -p "$OUT"
pids=""
trap 'kill $pids 2>/dev/null' EXIT
for i in 0 1 2; do
  boot=""
  [ "$i" -gt 0 ] && boot=127.0.0.1:16084
  "$B" serve --profile cluster-node --set overlay.listen=127.0.0.1:1608$((4 + i)) \
    --set overlay.bootstrap=$boot --set ppstp.listen=127.0.0.1:1784$((6 + i)) \
    --set admin.listen=127.0.0.1:1984$((6 + i)) --set bt_udp.enabled=false \
    --set bt_http.enabled=false --set overlay.local_find_min="$MIN" \
    --set server.workers=1 --set log.level=warn &
  pids="$pids $!"
  sleep 1
done
sleep 4
lg=""
for i in 0 1 2; do
  "$L" run --target 127.0.0.1:1784$((6 + i)) --swarms 200 --peers 3000 --populate \
    --mix find=8,join=1,keepalive=1 --duration "$DUR" --seed 7 --no-progress \
    --json "$OUT/node-$i.json" >"$OUT/node-$i.txt" &
  lg="$lg $!"
done
# shellcheck disable=SC2086
wait $lg
replies=0
for i in 0 1 2; do
  r=$(jq '.measure.replies_per_s' "$OUT/node-$i.json")
  p99=$(jq '.measure.per_type.find.latency.p99_us // .measure.latency.p99_us' "$OUT/node-$i.json")
  echo "node $i: replies/s $r, FIND p99 ${p99} us"
  replies=$(echo "$replies + $r" | bc)
  curl -s 127.0.0.1:1984$((6 + i))/metrics >"$OUT/metrics-$i.txt"
done
echo "aggregate replies/s: $replies"
sum() { cat "$OUT"/metrics-*.txt | grep -E "^$1" | awk '{s += $NF} END {print s + 0}'; }
local=$(sum 'ppsp_federation_finds_total\{answer="local"\}')
remote=$(sum 'ppsp_federation_finds_total\{answer="remote"\}')
timeout=$(sum 'ppsp_federation_finds_total\{answer="timeout"\}')
requests=$(sum 'ppsp_requests_total')
overlay=$(sum 'ppsp_overlay_messages_sent_total')
echo "FINDs: local $local, remote $remote, overlay timeout $timeout"
echo "client requests $requests, overlay messages sent $overlay"
