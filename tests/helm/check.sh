#!/usr/bin/env bash
# Checks of the image and the Helm chart, offline, with the real tools (.ci/install-tools puts
# helm in .ci/tools/bin and the Python tools in .ci/tools/venv):
# - hadolint on deploy/docker/Dockerfile;
# - helm/nmc/files/alerts.yml equals deploy/observability/prometheus/alerts.yml;
# - the values table of helm/nmc/README.md is generated from values.yaml;
# - `helm lint --strict` for each values set of tests/helm/values/;
# - `helm template` of each set, validated against the Kubernetes 1.30 schemas
#   (kubernetes-validate --strict) and the policy of tests/helm/policy.py; the PrometheusRule's
#   groups checked by promtool;
# - each file of tests/helm/refused/ must make helm fail with the message its first line names;
# - deploy/nats/values.yaml: yamllint and the keys the official NATS chart reads.
set -euo pipefail
cd "$(dirname "$0")/../.."
helm=.ci/tools/bin/helm
venv=.ci/tools/venv/bin
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

"$venv/hadolint" deploy/docker/Dockerfile
cmp deploy/observability/prometheus/alerts.yml helm/nmc/files/alerts.yml || {
  echo "helm/nmc/files/alerts.yml differs from deploy/observability/prometheus/alerts.yml:" >&2
  echo "  cp deploy/observability/prometheus/alerts.yml helm/nmc/files/alerts.yml" >&2
  exit 1
}
"$venv/python" tests/helm/values_table.py --check

rendered=()
for values in tests/helm/values/*.yaml; do
  name=$(basename "$values" .yaml)
  "$helm" lint --strict --quiet helm/nmc -f "$values" >/dev/null
  "$helm" template nmc helm/nmc --namespace nmc -f "$values" >"$out/$name.yaml"
  "$venv/kubernetes-validate" --strict --quiet -k 1.30.0 "$out/$name.yaml"
  rendered+=("$out/$name.yaml")
done
"$venv/python" tests/helm/policy.py "${rendered[@]}"

# The policy check itself must catch a violation (a writable root file system, an inline secret).
sed 's/readOnlyRootFilesystem: true/readOnlyRootFilesystem: false/' "$out/defaults.yaml" >"$out/bad1.yaml"
sed 's/image: registry.example.org\/nmc:0.1.0/image: registry.example.org\/nmc:latest/' \
  "$out/defaults.yaml" >"$out/bad2.yaml"
for bad in "$out/bad1.yaml" "$out/bad2.yaml"; do
  if "$venv/python" tests/helm/policy.py "$bad" >/dev/null; then
    echo "policy.py accepted $bad" >&2
    exit 1
  fi
done

# The PrometheusRule carries every alerting rule, loadable by Prometheus.
"$venv/python" - "$out/observability.yaml" "$out/rules.yml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
(rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
source = yaml.safe_load(open("deploy/observability/prometheus/alerts.yml"))
assert rule["spec"]["groups"] == source["groups"], "PrometheusRule groups differ from alerts.yml"
(sm,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
assert sm["spec"]["endpoints"][0]["port"] == "http" and sm["spec"]["jobLabel"] == "app.kubernetes.io/name"
yaml.safe_dump({"groups": rule["spec"]["groups"]}, open(sys.argv[2], "w"))
PY
promtool check rules "$out/rules.yml" >/dev/null

for values in tests/helm/refused/*.yaml; do
  expect=$(sed -n '1s/^# expect: //p' "$values")
  if [ -z "$expect" ]; then
    echo "$values: the first line must be '# expect: <message>'" >&2
    exit 1
  fi
  if "$helm" template nmc helm/nmc -f "$values" >/dev/null 2>"$out/err"; then
    echo "$values: helm accepted values the chart must refuse" >&2
    exit 1
  fi
  if ! grep -qF -- "$expect" "$out/err"; then
    echo "$values: helm failed, but not with '$expect':" >&2
    cat "$out/err" >&2
    exit 1
  fi
done

"$venv/yamllint" --strict -c deploy/observability/.yamllint.yml deploy/nats
"$venv/check-jsonschema" --schemafile tests/helm/nats-values.schema.json deploy/nats/values.yaml
echo "helm checks: ${#rendered[@]} values sets rendered and valid, $(ls tests/helm/refused/*.yaml | wc -l) refused as expected"
