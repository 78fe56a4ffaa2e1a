#!/usr/bin/env bash
# One release `nmc node` on this machine, measured as the issue "A node at 100,000 events/s"
# asks: the identity pack plus every SigmaHQ rule for the cloud sources (and the bench probe
# rule), FORCES forces, a generated mix of Entra ID sign-ins, Microsoft 365 audit and AWS
# CloudTrail records (`nmc bench`'s default --mix: 50/30/20 percent of each force's events, a
# few suspicious records among them). Each measurement on a fresh JetStream:
#   1. drain, ROUNDS times (default 3): a backlog of EVENTS published with the node stopped, read
#      FLOOR_READS times (default 3) by a bare ordered consumer that only counts, each force's
#      stream after the other (`nmc bench --phase floor`: the JetStream floor), then drained by
#      the node (`--phase drain`); a round's ratio = its drain / the median of its floor reads,
#      both from the same backlog; drain, floor and ratio reported are the medians of the rounds;
#   2. live: EVENTS/2 published at 70% of the drain rate (LIVE_RATE events/s if set) while the
#      node runs; event-to-alert latency of the probes (p50, p99, p99.9), and the CPU of the
#      node, nats-server and the generator meanwhile;
#   3. recovery: the node SIGKILLed while it drains a backlog, then restarted; seconds from the
#      restart until it is past where it was when killed (restore plus replay);
#   4. idle forces: resident memory of a node holding FORCES idle forces against one holding
#      none, per force.
# The last line printed is one JSON object with the figures:
#   {"drain_eps", "floor_eps", "ratio", "p50_ms", "p99_ms", "p999_ms", "recovery_s", "idle_force_mib",
#    "force_floor_eps", "force_ratio"}
# where force_floor_eps is the same backlog read as a node reads it, one bare ordered consumer
# per force's stream, all at once (`nmc bench --phase force-floor`), and force_ratio = drain /
# force floor.
#
#   [ROUNDS=3] [FLOOR_READS=3] [LIVE_RATE=...] deploy/bench/node.sh [EVENTS, default 400000] [FORCES, default 43]
set -euo pipefail
events=${1:-400000}
nforces=${2:-43}
# shellcheck source=deploy/bench/lib.sh
source "$(dirname "$0")/lib.sh"
forces=$(territorial_forces "$nforces")
sigma=../shared/datasets/sigma/rules/cloud
[ -d "$sigma" ] || { echo "node.sh: $sigma (SigmaHQ's cloud rules) is missing" >&2; exit 1; }
rules="deploy/rules/identity,deploy/rules/bench,$sigma"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_node NAME FORCES: a node with its own data dir and HTTP port; sets node_pid, node_http.
start_node() {
  node_http="127.0.0.1:$(free_port)"
  NMC_HTTP_LISTEN="$node_http" NMC_NODE_ID="bench" NMC_DATA_DIR="$work/node-$1" NMC_FORCES="$2" \
    NMC_RULES_DIRS="$rules" NMC_LOG=warn "$nmc" node >>"$work/node-$1.log" 2>&1 &
  node_pid=$!
  pids+=($node_pid)
}

# status FIELD: from the node's /api/v1/status, `ready`, `held` (forces held), `cursor` (the sum
# of their cursors: last applied NMC_EVENTS_<force> sequences) or `lag` (the sum of the messages they
# have still to read); "-" while it does not answer.
status() {
  python3 - "$node_http" "$1" <<'PY' 2>/dev/null || echo -
import json, sys, urllib.request
s = json.load(urllib.request.urlopen(f"http://{sys.argv[1]}/api/v1/status", timeout=1))
print({"ready": int(bool(s["ready"])), "held": len(s["forces"]),
       "cursor": sum(f["cursor"] for f in s["forces"]),
       "lag": sum(f["lag"] for f in s["forces"])}[sys.argv[2]])
PY
}

# wait_held N: until the node is ready and holds N forces (60 s at most).
wait_held() {
  for _ in $(seq 600); do
    [ "$(status ready)" = 1 ] && [ "$(status held)" = "$1" ] && return 0
    sleep 0.1
  done
  echo "node.sh: the node did not become ready with $1 forces" >&2
  tail -20 "$work"/node-*.log >&2
  exit 1
}

# CPU seconds (user + system) process $1 has used so far.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f\n", ($14 + $15) / hz }' "/proc/$1/stat"; }
rss_mib() { awk '/^VmRSS:/ { printf "%.1f\n", $2 / 1024 }' "/proc/$1/status"; }
json_field() { python3 -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])[sys.argv[1]])' "$1"; }

# 0. Streams and buckets, forces onboarded: a node started once and stopped.
setup() {
  start_nats "$1"
  start_node "setup-$1" "$forces"
  wait_held "$nforces"
  kill -TERM "$node_pid"; wait "$node_pid" 2>/dev/null || true
}

# 1. drain against the floor, ROUNDS times (each on a fresh JetStream, the floor read FLOOR_READS
# times per round): the floor is a read of under a second on shared cores and swings by half
# from one read to the next, so each round's ratio is its drain over the median of its floor
# reads, and the figures reported are the medians over the rounds.
rounds=${ROUNDS:-3}
floor_reads=${FLOOR_READS:-3}
[ "$rounds" -ge 1 ] && [ "$floor_reads" -ge 1 ] || { echo "node.sh: ROUNDS and FLOOR_READS must be at least 1" >&2; exit 1; }
median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
drains=() floors=() force_floors=() ratios=()
for round in $(seq "$rounds"); do
  setup "drain-$round"
  "$nmc" bench --phase publish --forces "$forces" --events "$events" >"$work/publish.json"
  reads=() force_reads=()
  for _ in $(seq "$floor_reads"); do
    "$nmc" bench --phase floor --forces "$forces" >"$work/floor.json"
    reads+=("$(json_field floor_events_per_sec <"$work/floor.json")")
    "$nmc" bench --phase force-floor --forces "$forces" >"$work/force-floor.json"
    force_reads+=("$(json_field force_floor_events_per_sec <"$work/force-floor.json")")
  done
  nats_cpu0=$(cpu_s "$nats_pid")
  drain_t0=$EPOCHREALTIME
  "$nmc" bench --phase drain --forces "$forces" --events "$events" >"$work/drain.json" &
  drain=$!
  start_node "drain-$round" "$forces"
  wait "$drain"
  node_cpu=$(cpu_s "$node_pid")
  nats_cpu=$(awk -v a="$nats_cpu0" -v b="$(cpu_s "$nats_pid")" 'BEGIN { printf "%.2f", b - a }')
  drain_wall=$(awk -v a="$drain_t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
  kill -TERM "$node_pid"; wait "$node_pid" 2>/dev/null || true
  kill -TERM "$nats_pid"; wait "$nats_pid" 2>/dev/null || true
  drain_eps=$(json_field drain_events_per_sec <"$work/drain.json")
  floor_eps=$(median "${reads[@]}")
  force_floor_eps=$(median "${force_reads[@]}")
  drains+=("$drain_eps") floors+=("$floor_eps") force_floors+=("$force_floor_eps")
  ratios+=("$(python3 -c "print($drain_eps / $floor_eps)")")
  echo "round $round drain: $(cat "$work/drain.json")"
  echo "round $round floor reads (events/s): ${reads[*]}; force floor reads: ${force_reads[*]}"
  # Where the two cores went during the drain (start-up included): the node, and nats-server
  # serving its readers.
  echo "round $round drain cpu: node ${node_cpu} s, nats-server ${nats_cpu} s, in ${drain_wall} s"
done
drain_eps=$(median "${drains[@]}")
floor_eps=$(median "${floors[@]}")
force_floor_eps=$(median "${force_floors[@]}")
ratio=$(median "${ratios[@]}")
echo "drain (events/s) per round: ${drains[*]}; floor: ${floors[*]}; ratio: ${ratios[*]}"

# 2. live at 70% of the drain rate (or at LIVE_RATE events/s), with where the CPU went: the
# node, nats-server, and the generator (`nmc bench`, which also receives the alerts).
setup live
start_node live "$forces"
wait_held "$nforces"
rate=${LIVE_RATE:-$(python3 -c "print(int($drain_eps * 0.7))")}
node_cpu0=$(cpu_s "$node_pid")
nats_cpu0=$(cpu_s "$nats_pid")
live_t0=$EPOCHREALTIME
# A probe every 100 events per force: enough samples for the 99.9th percentile. The subshell's
# children's CPU (fields 16 and 17 of its stat) is the generator's once it is waited for.
bench_cpu=$(
  "$nmc" bench --forces "$forces" --events "$((events / 2))" --rate "$rate" --probe-every 100 \
    >"$work/live.json" || exit
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($16 + $17) / hz }' "/proc/$BASHPID/stat"
)
live_wall=$(awk -v a="$live_t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
node_cpu=$(awk -v a="$node_cpu0" -v b="$(cpu_s "$node_pid")" 'BEGIN { printf "%.2f", b - a }')
nats_cpu=$(awk -v a="$nats_cpu0" -v b="$(cpu_s "$nats_pid")" 'BEGIN { printf "%.2f", b - a }')
kill -TERM "$node_pid"; wait "$node_pid" 2>/dev/null || true
echo "live: $(cat "$work/live.json")"
echo "live cpu at $rate events/s asked: node ${node_cpu} s, nats-server ${nats_cpu} s, generator ${bench_cpu} s, in ${live_wall} s"

# 3. recovery after a SIGKILL mid-drain: killed a second after it started making progress,
# recovered when its cursors are past where they were at the kill (or nothing is left to read).
setup recovery
"$nmc" bench --phase publish --forces "$forces" --events "$events" >/dev/null
start_node recovery "$forces"
wait_held "$nforces"
for _ in $(seq 3000); do c=$(status cursor); [ "$c" != - ] && [ "$c" -gt 0 ] && break; sleep 0.02; done
sleep 1
at_kill=$(status cursor)
left=$(status lag)
kill -KILL "$node_pid"; wait "$node_pid" 2>/dev/null || true
restarted=$EPOCHREALTIME
start_node recovery "$forces"
recovery_s=
for _ in $(seq 6000); do
  c=$(status cursor)
  if [ "$c" != - ] && [ "$(status held)" = "$nforces" ] && { [ "$c" -gt "$at_kill" ] || [ "$(status lag)" = 0 ]; }; then
    recovery_s=$(awk -v a="$restarted" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f\n", b - a }')
    break
  fi
  sleep 0.02
done
kill -TERM "$node_pid"; wait "$node_pid" 2>/dev/null || true
echo "recovery: killed at cursor sum $at_kill with $left messages left, past it again ${recovery_s:-never} s after the restart"

# 4. idle forces: memory of a node holding the forces idle, against one holding none
start_nats idle0
start_node idle0 ""
wait_held 0
sleep 3
rss0=$(rss_mib "$node_pid")
kill -TERM "$node_pid"; wait "$node_pid" 2>/dev/null || true
start_nats idle
start_node idle "$forces"
wait_held "$nforces"
sleep 3
rssn=$(rss_mib "$node_pid")
kill -TERM "$node_pid"; wait "$node_pid" 2>/dev/null || true
echo "idle: $rss0 MiB with no force, $rssn MiB with $nforces idle forces"

python3 - "$drain_eps" "$floor_eps" "$work/live.json" "${recovery_s:-null}" "$rss0" "$rssn" "$nforces" "$force_floor_eps" "$ratio" <<'PY'
import json, sys
drain, floor, force_floor = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[8])
ratio = float(sys.argv[9])
live = json.loads(open(sys.argv[3]).read().strip().splitlines()[-1])
lat = live["latency_ms"]
rec = None if sys.argv[4] == "null" else float(sys.argv[4])
rss0, rssn, n = float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
print(json.dumps({
    "drain_eps": round(drain), "floor_eps": round(floor), "ratio": round(ratio, 3),
    "p50_ms": round(lat["p50"], 2), "p99_ms": round(lat["p99"], 2), "p999_ms": round(lat["p999"], 2),
    "recovery_s": rec, "idle_force_mib": round((rssn - rss0) / n, 3),
    "force_floor_eps": round(force_floor), "force_ratio": round(drain / force_floor, 3),
}))
PY
