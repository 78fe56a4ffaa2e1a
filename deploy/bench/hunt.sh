#!/usr/bin/env bash
# `nmc hunt` on one thread against every core, over the same files, for two workloads:
# - windows: every SigmaHQ rule (rules/, rules-emerging-threats/, rules-threat-hunting/) over
#   the Windows events of SigmaHQ's regression data, repeated REPEAT times (detection-heavy:
#   what hunting over on-premise archives looks like);
# - cloud: the identity pack plus every SigmaHQ rule for Azure, Microsoft 365 and AWS over
#   generated Entra ID sign-ins of 10 forces, NORMAL each, with sprays, brute forces and legacy
#   sign-ins (correlation-heavy: every sign-in feeds the identity detectors, which stay on one
#   thread).
# Each setting runs RUNS times, alternating; the alerts must be the same bytes whatever the
# threads. Prints one JSON line per workload: median wall times, records/s and the speed-up.
#
#   deploy/bench/hunt.sh [REPEAT, default 1000] [NORMAL, default 20000] [RUNS, default 3]
set -euo pipefail
repeat=${1:-1000}
normal=${2:-20000}
runs=${3:-3}
# shellcheck source=deploy/bench/lib.sh
source "$(dirname "$0")/lib.sh"
sigma=../shared/datasets/sigma
[ -d "$sigma/regression_data" ] || { echo "hunt.sh: $sigma (SigmaHQ rules and regression data) is missing" >&2; exit 1; }
cores=$(nproc)

mkdir -p "$work/windows" "$work/cloud"
python3 - "$sigma/regression_data" "$work/windows/events.jsonl" "$repeat" <<'PY'
import glob, json, sys
src, out, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
events, dec = [], json.JSONDecoder()
for f in sorted(glob.glob(f"{src}/**/*.json", recursive=True)):
    text, i = open(f).read(), 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            break
        v, i = dec.raw_decode(text, i)
        events.append(json.dumps(v, separators=(",", ":")))
with open(out, "w") as o:
    for _ in range(repeat):
        o.write("\n".join(events) + "\n")
PY
forces=$(force_list 10)
"$nmc" generate --out "$work/cloud" --forces "$forces" --normal "$normal" --users 500 \
  --spray "$forces" --brute-force "$forces" --legacy "$forces" >/dev/null 2>&1

median() { printf '%s\n' "$@" | sort -g | sed -n "$(( ($# + 1) / 2 ))p"; }

# bench NAME RULES... : runs one thread and every core alternately over $work/NAME.
bench() {
  local name=$1 one=() all=() t0 t1 s t
  shift
  local rules=("$@")
  for _ in $(seq "$runs"); do
    for t in 1 "$cores"; do
      t0=$EPOCHREALTIME
      "$nmc" hunt --rules "${rules[@]}" --events "$work/$name" --threads "$t" \
        >"$work/$name-alerts-$t.jsonl" 2>"$work/$name-$t.log"
      t1=$EPOCHREALTIME
      s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }')
      if [ "$t" = 1 ]; then one+=("$s"); else all+=("$s"); fi
    done
  done
  cmp "$work/$name-alerts-1.jsonl" "$work/$name-alerts-$cores.jsonl" || {
    echo "hunt.sh: $cores threads raised different alerts than one ($name)" >&2
    exit 1
  }
  python3 - "$name" "$(median "${one[@]}")" "$(median "${all[@]}")" \
    "$(sed -n 's/^hunt: [0-9]* files, \([0-9]*\) records.*/\1/p' "$work/$name-1.log")" \
    "$(wc -l <"$work/$name-alerts-1.jsonl")" "$cores" <<'PY'
import json, sys
name, m1, mn, records, alerts, cores = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
print(json.dumps({"workload": name, "records": records, "alerts": alerts, "cores": cores,
                  "one_thread_s": round(m1, 2), "all_cores_s": round(mn, 2),
                  "one_thread_rps": round(records / m1), "all_cores_rps": round(records / mn),
                  "speedup": round(m1 / mn, 2)}))
PY
}

bench windows "$sigma/rules" "$sigma/rules-emerging-threats" "$sigma/rules-threat-hunting"
bench cloud deploy/rules/identity "$sigma/rules/cloud"
