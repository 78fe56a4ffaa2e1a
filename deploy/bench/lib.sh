# Shared set-up of the benchmark scripts (sourced, not run): builds the release `nmc` (or uses
# the binary named by NMC_BENCH_BIN, to compare two builds with the same script), makes a work
# directory removed on exit with every process started through `pids`, and starts `nats-server`
# with JetStream on a free loopback port.
#
#   source "$(dirname "$0")/lib.sh"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
.ci/install-tools >/dev/null
export PATH="$root/.ci/tools/venv/bin:$PATH"
if [ -n "${NMC_BENCH_BIN:-}" ]; then
  nmc="$NMC_BENCH_BIN"
else
  cargo build --quiet --release --bin nmc
  nmc="$root/target/release/nmc"
fi
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# The first N forces of a fixed list, comma-separated.
force_list() {
  echo cumbria kent metropolitan west-midlands essex sussex gwent durham dorset surrey | tr ' ' '\n' | head -n "$1" | paste -sd,
}

# The first N of the 43 territorial forces of England and Wales (shared/src/force.rs),
# comma-separated.
territorial_forces() {
  grep -oE '^    t\("[a-z-]+"' shared/src/force.rs | sed 's/.*"\(.*\)"/\1/' | head -n "$1" | paste -sd,
}

# Starts a fresh nats-server (store in $work/nats-NAME); sets NMC_NATS_URL and nats_pid.
start_nats() {
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  nats-server -a 127.0.0.1 -p "$port" -js -sd "$work/nats-$1" >"$work/nats-$1.log" 2>&1 &
  nats_pid=$!
  pids+=($nats_pid)
  for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
  export NMC_NATS_URL="nats://127.0.0.1:$port"
}

# Starts three clustered nats-servers (stores in $work/nats-NAME-{0,1,2}); sets NMC_NATS_URL to
# all three and nats_pids; waits until JetStream has a meta leader.
start_nats_cluster() {
  local ports=() routes=() route_urls urls i
  for i in 0 1 2; do
    ports+=("$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')")
    routes+=("$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')")
  done
  route_urls=$(printf 'nats://127.0.0.1:%s,' "${routes[@]}"); route_urls=${route_urls%,}
  nats_pids=()
  for i in 0 1 2; do
    nats-server -a 127.0.0.1 -p "${ports[$i]}" -js -sd "$work/nats-$1-$i" -n "bench-$i" \
      --cluster_name bench --cluster "nats://127.0.0.1:${routes[$i]}" --routes "$route_urls" \
      >"$work/nats-$1-$i.log" 2>&1 &
    nats_pids+=($!); pids+=($!)
  done
  for i in 0 1 2; do
    for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"${ports[$i]}") 2>/dev/null && break; sleep 0.1; done
  done
  for _ in $(seq 100); do grep -q "JetStream cluster new metadata leader\|is the new metadata leader\|Self is new JetStream cluster metadata leader" "$work"/nats-"$1"-*.log && break; sleep 0.2; done
  urls=$(printf 'nats://127.0.0.1:%s,' "${ports[@]}")
  export NMC_NATS_URL=${urls%,}
}
