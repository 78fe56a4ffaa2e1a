#!/usr/bin/env bash
# Two or more variants of one release `nmc node` (other builds, or environment settings)
# drained in turn, REPS rounds: a node's CPU per event is noisy on shared cores (it moved by a
# third between runs an hour apart), so variants alternate within each round and their spread
# is what to compare. Each drain: a fresh JetStream, the forces onboarded, EVENTS events of
# node.sh's mix over the 43 territorial forces published with the node stopped, then the
# variant's node started with `nmc bench --phase drain`. Prints one line per drain: the drain
# rate, the node's CPU per event, its page faults, its peak memory, the bytes it wrote and the
# blob files sled holds at the end.
#
# A variant is NAME=BINARY or NAME=BINARY:ENV=VALUE[,ENV=VALUE...], e.g.
#   deploy/bench/drain-ab.sh 400000 3 before=/tmp/nmc-before after=target/release/nmc \
#     "nothp=target/release/nmc:MIMALLOC_ALLOW_THP=0"
#
#   deploy/bench/drain-ab.sh EVENTS REPS VARIANT...
set -euo pipefail
[ $# -ge 3 ] || { sed -n '2,16p' "$0" >&2; exit 1; }
events=$1 reps=$2
shift 2
variants=("$@")
# The generator is the first variant's binary (the same for every variant).
first=${variants[0]#*=}
export NMC_BENCH_BIN=${first%%:*}
# shellcheck source=deploy/bench/lib.sh
source "$(dirname "$0")/lib.sh"
forces=$(territorial_forces 43)
rules="deploy/rules/identity,deploy/rules/bench,../shared/datasets/sigma/rules/cloud"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
held() {
  python3 -c "import json,urllib.request; s=json.load(urllib.request.urlopen('http://$node_http/api/v1/status', timeout=1)); print(len(s['forces']) if s['ready'] else -1)" 2>/dev/null || echo -1
}
# run_node BINARY DATA_DIR [ENV=VALUE...]: sets node_pid, node_http.
run_node() {
  local bin=$1 data=$2
  shift 2
  node_http="127.0.0.1:$(free_port)"
  env NMC_HTTP_LISTEN="$node_http" NMC_NODE_ID=bench NMC_DATA_DIR="$data" NMC_FORCES="$forces" \
    NMC_RULES_DIRS="$rules" NMC_LOG=warn "$@" "$bin" node >>"$work/node.log" 2>&1 &
  node_pid=$!
  pids+=($node_pid)
}
wait_held() {
  for _ in $(seq 600); do [ "$(held)" = 43 ] && return 0; sleep 0.1; done
  echo "drain-ab.sh: the node did not become ready" >&2; tail -20 "$work/node.log" >&2; exit 1
}
n=0
for rep in $(seq "$reps"); do
  for v in "${variants[@]}"; do
    name=${v%%=*} spec=${v#*=}
    bin=${spec%%:*} envs=()
    [ "$spec" != "$bin" ] && IFS=, read -ra envs <<<"${spec#*:}"
    n=$((n + 1))
    data="$work/data-$n"
    start_nats "d$n"
    run_node "$bin" "$data"
    wait_held
    kill -TERM "$node_pid"; wait "$node_pid" 2>/dev/null || true
    "$nmc" bench --phase publish --forces "$forces" --events "$events" >/dev/null
    "$nmc" bench --phase drain --forces "$forces" --events "$events" >"$work/drain.json" &
    drain=$!
    run_node "$bin" "$data" "${envs[@]}"
    wait "$drain"
    python3 - "$name" "$rep" "$events" "$work/drain.json" "$node_pid" "$data/sled/blobs" <<'PY'
import json, os, sys
name, rep, events, drain, pid, blobs = sys.argv[1:]
hz = os.sysconf("SC_CLK_TCK")
stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
cpu = (int(stat[11]) + int(stat[12])) / hz
faults = int(stat[7])
status = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status"))
hwm = int(status["VmHWM"].split()[0]) // 1024
io = dict(l.split(": ") for l in open(f"/proc/{pid}/io").read().splitlines())
written = int(io["write_bytes"]) >> 20
nblobs = len(os.listdir(blobs)) if os.path.isdir(blobs) else 0
eps = json.load(open(drain))["drain_events_per_sec"]
print(f"{name} round {rep}: drain {eps:,.0f} events/s, node {cpu:.2f} s CPU = "
      f"{cpu * 1e6 / int(events):.2f} us/event, {faults} page faults, peak {hwm} MiB, "
      f"wrote {written} MiB, {nblobs} blob files")
PY
    kill -TERM "$node_pid"; wait "$node_pid" 2>/dev/null || true
    kill -TERM "$nats_pid"; wait "$nats_pid" 2>/dev/null || true
    rm -rf "$data" "$work/nats-d$n"
  done
done
