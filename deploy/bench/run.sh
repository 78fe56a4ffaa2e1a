#!/usr/bin/env bash
# End-to-end benchmark: a release `nmc node` against a local JetStream server, loaded by
# `nmc bench`. Runs two measurements in one go and prints their JSON reports:
#   1. live:    bench publishes while the node runs (throughput, event-to-alert latency, and the
#               publish-only rate of the same run as the baseline);
#   2. backlog: bench publishes with the node stopped, then the node drains the backlog (the
#               node's processing rate alone, compared with the publish rate of the same run).
#
#   deploy/bench/run.sh [EVENTS] [FORCES] [BATCH_SIZE]
set -euo pipefail
events=${1:-200000}
nforces=${2:-4}
batch=${3:-500}
# shellcheck source=deploy/bench/lib.sh
source "$(dirname "$0")/lib.sh"
forces=$(force_list "$nforces")

start_node() {
  NMC_HTTP_LISTEN=127.0.0.1:0 NMC_NODE_ID=bench NMC_DATA_DIR="$work/node-$1" NMC_FORCES="$forces" NMC_BATCH_SIZE="$batch" \
    NMC_RULES_DIRS="deploy/rules/identity,deploy/rules/bench" NMC_LOG=info \
    "$nmc" node >>"$work/node-$1.log" 2>&1 &
  node_pid=$!
  pids+=($node_pid)
  for _ in $(seq 100); do grep -q "node running" "$work/node-$1.log" && break; sleep 0.1; done
  grep -q "node running" "$work/node-$1.log" || { cat "$work/node-$1.log"; exit 1; }
}

# 1. live
start_nats live
start_node live
"$nmc" bench --forces "$forces" --events "$events"
kill "$node_pid"

# 2. backlog
start_nats backlog
start_node backlog
kill "$node_pid"; wait "$node_pid" 2>/dev/null || true
"$nmc" bench --phase publish --forces "$forces" --events "$events"
"$nmc" bench --phase drain --forces "$forces" --events "$events" &
drain=$!
start_node backlog
wait "$drain"
