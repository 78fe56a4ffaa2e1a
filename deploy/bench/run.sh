#!/usr/bin/env bash
# End-to-end benchmark: a release `nmc node` against a local JetStream server, loaded by
# `nmc bench`. Prints the bench's JSON report (throughput, event-to-alert latency, and the
# publish-only rate of the same run as the baseline).
#
#   deploy/bench/run.sh [EVENTS] [FORCES] [BATCH_SIZE]
set -euo pipefail
events=${1:-200000}
nforces=${2:-4}
batch=${3:-500}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
.ci/install-tools >/dev/null
export PATH="$root/.ci/tools/venv/bin:$PATH"
cargo build --quiet --release --bin nmc
nmc="$root/target/release/nmc"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
forces=$(echo cumbria kent metropolitan west-midlands essex sussex gwent durham | tr ' ' '\n' | head -n "$nforces" | paste -sd,)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
nats-server -a 127.0.0.1 -p "$port" -js -sd "$work/nats" >"$work/nats.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
export NMC_NATS_URL="nats://127.0.0.1:$port"
NMC_NODE_ID=bench NMC_DATA_DIR="$work/node" NMC_FORCES="$forces" NMC_BATCH_SIZE="$batch" \
  NMC_RULES_DIRS="deploy/rules/identity,deploy/rules/bench" NMC_LOG=info \
  "$nmc" node >"$work/node.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "node running" "$work/node.log" && break; sleep 0.1; done
grep -q "node running" "$work/node.log" || { cat "$work/node.log"; exit 1; }
"$nmc" bench --forces "$forces" --events "$events"
