#!/usr/bin/env bash
# One node on a single nats-server (R1 streams and buckets) against the same node on a
# three-server JetStream cluster (R3, the node given all three URLs), side by side, alternating
# for ROUNDS rounds: live throughput and event-to-alert latency from `nmc bench` (and its
# publish-only rate of the same run as the baseline). One JSON line per run, with "nats".
#
#   deploy/bench/replicated.sh [EVENTS] [FORCES] [ROUNDS]
set -euo pipefail
events=${1:-100000}
nforces=${2:-4}
rounds=${3:-3}
# shellcheck source=deploy/bench/lib.sh
source "$(dirname "$0")/lib.sh"
forces=$(force_list "$nforces")

run() { # $1: single|r3, $2: round
  local name="$1-$2" replicas=1 node
  if [ "$1" = r3 ]; then start_nats_cluster "$name"; replicas=3; else start_nats "$name"; fi
  NMC_HTTP_LISTEN=127.0.0.1:0 NMC_NODE_ID=bench NMC_DATA_DIR="$work/node-$name" NMC_FORCES="$forces" \
    NMC_STREAM_REPLICAS=$replicas NMC_RULES_DIRS="deploy/rules/identity,deploy/rules/bench" NMC_LOG=info \
    "$nmc" node >>"$work/node-$name.log" 2>&1 &
  node=$!
  pids+=($node)
  for _ in $(seq 300); do grep -q "node running" "$work/node-$name.log" && break; sleep 0.1; done
  grep -q "node running" "$work/node-$name.log" || { cat "$work/node-$name.log"; exit 1; }
  "$nmc" bench --forces "$forces" --events "$events" |
    python3 -c 'import json,sys; r=json.load(sys.stdin); r["nats"]=sys.argv[1]; print(json.dumps(r))' "$1"
  kill "$node"; wait "$node" 2>/dev/null || true
  if [ "$1" = r3 ]; then kill "${nats_pids[@]}"; else kill "$nats_pid"; fi
  wait 2>/dev/null || true
}

for round in $(seq "$rounds"); do
  run single "$round"
  run r3 "$round"
done
