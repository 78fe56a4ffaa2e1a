#!/usr/bin/env bash
# Aggregate throughput of 1, 2 and 3 release `nmc node` processes on this machine, with the
# nodes' CPU per event. For each node count: publish EVENTS events over FORCES forces into a
# fresh JetStream (nodes stopped), then start the nodes together with `nmc bench --phase drain`,
# which times the drain of the whole backlog (every probe alert in). Prints one JSON line per
# node count: drain events/s, the publish rate of the same run (baseline), and CPU ms per
# 1,000 events summed over the nodes (from /proc/<pid>/stat).
#
#   deploy/bench/cluster.sh [EVENTS] [FORCES] [NODE COUNTS, default "1 2 3"]
set -euo pipefail
events=${1:-120000}
nforces=${2:-6}
counts=${3:-1 2 3}
# shellcheck source=deploy/bench/lib.sh
source "$(dirname "$0")/lib.sh"
forces=$(force_list "$nforces")
tick=$(getconf CLK_TCK)

cpu_ms() { awk -v t="$tick" '{ print ($14 + $15) * 1000 / t }' "/proc/$1/stat"; }

for n in $counts; do
  start_nats "$n"
  # One node to create streams and onboard the forces, stopped before the backlog is published.
  NMC_HTTP_LISTEN=127.0.0.1:0 NMC_NODE_ID=setup NMC_DATA_DIR="$work/setup-$n" NMC_FORCES="$forces" NMC_RULES_DIRS=deploy/rules/bench \
    "$nmc" node >"$work/setup-$n.log" 2>&1 &
  setup=$!
  for _ in $(seq 100); do grep -q "node running" "$work/setup-$n.log" && break; sleep 0.1; done
  kill -TERM "$setup"; wait "$setup" 2>/dev/null || true
  publish=$("$nmc" bench --phase publish --forces "$forces" --events "$events")
  "$nmc" bench --phase drain --forces "$forces" --events "$events" >"$work/drain-$n.json" &
  drain=$!
  node_pids=()
  for i in $(seq "$n"); do
    NMC_HTTP_LISTEN=127.0.0.1:0 NMC_NODE_ID="node-$i" NMC_DATA_DIR="$work/node-$n-$i" NMC_RULES_DIRS="deploy/rules/identity,deploy/rules/bench" \
      NMC_WORKERS=1 NMC_LOG=warn "$nmc" node >"$work/node-$n-$i.log" 2>&1 &
    node_pids+=($!); pids+=($!)
  done
  wait "$drain"
  cpus=""
  for p in "${node_pids[@]}"; do cpus="$cpus $(cpu_ms "$p")"; done
  python3 - "$n" "$events" "$cpus" "$publish" "$(cat "$work/drain-$n.json")" <<'PY'
import json, sys
n, events = int(sys.argv[1]), int(sys.argv[2])
cpu = sum(float(x) for x in sys.argv[3].split())
pub, drain = json.loads(sys.argv[4]), json.loads(sys.argv[5])
print(json.dumps({
    "nodes": n,
    "events": events,
    "drain_events_per_sec": round(drain["drain_events_per_sec"]),
    "publish_events_per_sec": round(pub["publish_events_per_sec"]),
    "ratio_to_publish_baseline": round(drain["drain_events_per_sec"] / pub["publish_events_per_sec"], 3),
    "node_cpu_ms_per_1000_events": round(cpu * 1000 / events, 1),
}))
PY
  for p in "${node_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  kill "$nats_pid" 2>/dev/null || true
  wait 2>/dev/null || true
done
