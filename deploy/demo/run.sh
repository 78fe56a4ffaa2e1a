#!/usr/bin/env bash
# nmc quick start: installs what is missing (a pinned nats-server), starts NATS on loopback with
# JetStream, builds nmc, starts two nodes, publishes synthetic Entra ID sign-in telemetry for four
# forces (normal users, a password spray, a brute force, legacy-protocol sign-ins, plus some bad
# input), and prints the alerts and dead letters. Everything runs under .demo/ and stops at exit.
#   deploy/demo/run.sh              the demo, then exit
#   deploy/demo/run.sh --console    then the analyst console on the demo's alerts, until Ctrl-C
#                                   (NMC_DEMO_CONSOLE_PORT, default 8080)
set -euo pipefail
with_console=
if [ "${1:-}" = "--console" ]; then with_console=1; fi
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
.ci/install-tools >/dev/null
export PATH="$root/.ci/tools/venv/bin:$PATH"
echo "== building nmc"
cargo build --quiet --bin nmc
nmc="$root/target/debug/nmc"

work="$root/.demo"
rm -rf "$work"
mkdir -p "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
nats-server -a 127.0.0.1 -p "$port" -js -sd "$work/nats" >"$work/nats.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
export NMC_NATS_URL="nats://127.0.0.1:$port"
echo "== nats-server on $NMC_NATS_URL (JetStream in $work/nats)"

for n in a b; do
  "$nmc" node --config "deploy/demo/node-$n.toml" >"$work/node-$n.log" 2>&1 &
  pids+=($!)
done
for n in a b; do
  for _ in $(seq 100); do grep -q "node running" "$work/node-$n.log" && break; sleep 0.1; done
  grep -q "node running" "$work/node-$n.log" || { cat "$work/node-$n.log"; exit 1; }
done
sleep 2
echo "== nodes demo-a and demo-b running; the cluster shares the forces out:"
"$nmc" cluster status

"$nmc" generate --out "$work/events" --forces cumbria,kent,metropolitan,west-midlands \
  --normal 3000 --users 300 --spray kent --brute-force metropolitan --legacy cumbria
mkdir -p "$work/bad"
printf '{"time": "2026-11-02T09:00:00Z", "properties": \n' >"$work/bad/kent.entra_signin.jsonl"
printf '{"time": "2026-11-02T09:00:00Z", "resultType": "0"}\n' >"$work/bad/atlantis.entra_signin.jsonl"

echo "== publishing"
"$nmc" replay "$work/events" "$work/bad"

echo "== alerts (nmc alerts tail --all)"
"$nmc" alerts tail --all --idle 5 >"$work/alerts.jsonl"
python3 deploy/demo/show.py alerts <"$work/alerts.jsonl"
echo "== dead letters (nmc dlq tail --all)"
"$nmc" dlq tail --all --idle 2 | python3 deploy/demo/show.py dlq
echo "== cluster status"
"$nmc" cluster status
echo "== logs and data in $work"

if [ -n "$with_console" ]; then
  # Three local users with fresh passwords (argon2id hashes in the users file): the centre's
  # analyst, an administrator, and Kent's contact, who sees Kent only.
  users="$work/console-users.yaml"
  echo "users:" >"$users"
  creds=()
  for who in analyst:nmc-analyst admin:nmc-admin kent-soc:nmc-force-kent; do
    name=${who%%:*} group=${who#*:}
    pass=$(python3 -c 'import secrets; print(secrets.token_urlsafe(12))')
    hash=$(printf '%s\n' "$pass" | "$nmc" console hash-password)
    printf '  - name: %s\n    password_hash: "%s"\n    groups: [%s]\n' "$name" "$hash" "$group" >>"$users"
    creds+=("$name / $pass ($group)")
  done
  cport=${NMC_DEMO_CONSOLE_PORT:-8080}
  NMC_CONSOLE__LISTEN="127.0.0.1:$cport" NMC_CONSOLE__DATA_DIR="$work/console" \
    NMC_CONSOLE__USERS_FILE="$users" \
    NMC_CONSOLE__SESSION_KEY=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))') \
    "$nmc" console serve >"$work/console.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$cport") 2>/dev/null && break; sleep 0.1; done
  echo "== the analyst console: http://127.0.0.1:$cport/ (sign in as one of these; Ctrl-C stops everything)"
  printf '   %s\n' "${creds[@]}"
  wait
fi
