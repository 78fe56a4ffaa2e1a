#!/usr/bin/env python3
"""Offline checks of deploy/observability that promtool does not make (CI runs this, .ci/run):

- dashboards: valid JSON, unique uids, schemaVersion, a `datasource` variable, every panel and
  query on the Prometheus data source `${datasource}`, unique panel ids and refIds, panels inside
  the 24-column grid and not overlapping;
- Grafana provisioning: the data source and dashboard provider files have what Grafana needs;
- alerting rules: every alert has `for`, a known severity, summary, description, runbook and
  dashboard annotations, and alerts_test.yml has a case where it fires and one where it does not;
- otel-collector.yaml: every component a pipeline names is defined, memory_limiter runs first and
  batch last, the OTLP receiver listens on 4317 (gRPC) and 4318 (HTTP);
- prometheus-kubernetes.yml: Debian's promtool is built without Kubernetes discovery, so its
  kubernetes_sd_configs are checked against the fields Prometheus documents, and the rest of the
  file with `promtool check config` on a copy where a static target stands in for discovery.

Python 3.11 and PyYAML (re-runs itself with .ci/tools/venv's python when PyYAML is missing).
Prints one line per problem and exits 1 if there is any.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

try:
    import yaml
except ImportError:  # pragma: no cover - depends on the machine
    venv_python = REPO / ".ci" / "tools" / "venv" / "bin" / "python3"
    if venv_python.exists() and os.environ.get("NMC_CHECK_REEXEC") != "1":
        os.environ["NMC_CHECK_REEXEC"] = "1"
        os.execv(str(venv_python), [str(venv_python), str(Path(__file__).resolve()), *sys.argv[1:]])
    sys.exit("check.py: PyYAML is missing: run .ci/install-tools (it installs it in .ci/tools/venv)")

PROBLEMS: list[str] = []
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def problem(where: object, what: str) -> None:
    PROBLEMS.append(f"{where}: {what}")


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def load_yaml(path: Path):
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        problem(rel(path), f"not readable YAML: {e}")
        return None


# ---------------------------------------------------------------------------------- dashboards

def check_dashboards() -> set[str]:
    uids: dict[str, str] = {}
    for path in sorted((HERE / "grafana" / "dashboards").glob("*.json")):
        where = rel(path)
        try:
            dash = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            problem(where, f"not valid JSON: {e}")
            continue
        uid = dash.get("uid")
        if not uid:
            problem(where, "no uid (provisioned dashboards need a stable one)")
        elif uid in uids:
            problem(where, f"uid {uid} also used by {uids[uid]}")
        else:
            uids[uid] = where
        if not dash.get("title"):
            problem(where, "no title")
        if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
            problem(where, "schemaVersion missing or older than 36")
        if dash.get("id") is not None:
            problem(where, "id must be null (Grafana assigns it)")
        variables = (dash.get("templating") or {}).get("list") or []
        ds_vars = [v for v in variables if v.get("name") == "datasource"]
        if not ds_vars or ds_vars[0].get("type") != "datasource" or ds_vars[0].get("query") != "prometheus":
            problem(where, "needs a variable `datasource` of type datasource, query prometheus")
        for v in variables:
            if v.get("type") == "query" and v.get("datasource") != DATASOURCE:
                problem(where, f"variable ${v.get('name')}: datasource must be {DATASOURCE}")
        check_panels(where, dash)
    return set(uids)


def check_panels(where: str, dash: dict) -> None:
    ids: set[int] = set()
    top_level = []

    def walk(panels: list[dict], nested: bool) -> None:
        for p in panels:
            title = p.get("title") or f"panel {p.get('id')}"
            at = f"{where}: panel {title!r}"
            pid = p.get("id")
            if not isinstance(pid, int):
                problem(at, "no integer id")
            elif pid in ids:
                problem(at, f"id {pid} used twice")
            else:
                ids.add(pid)
            g = p.get("gridPos") or {}
            if not all(isinstance(g.get(k), int) for k in ("h", "w", "x", "y")):
                problem(at, "gridPos needs integer h, w, x, y")
            elif g["x"] < 0 or g["w"] <= 0 or g["x"] + g["w"] > 24:
                problem(at, f"gridPos outside the 24 columns: {g}")
            elif not nested:
                top_level.append((at, g))
            if p.get("type") == "row":
                if p.get("collapsed"):
                    walk(p.get("panels") or [], True)
                elif p.get("panels"):
                    problem(at, "an expanded row must not hold panels (they follow it)")
                continue
            if not p.get("title"):
                problem(at, "no title")
            if p.get("datasource") != DATASOURCE:
                problem(at, f"datasource must be {DATASOURCE}")
            targets = p.get("targets") or []
            if not targets:
                problem(at, "no query")
            refs = [t.get("refId") for t in targets]
            if len(set(refs)) != len(refs) or None in refs:
                problem(at, f"refIds missing or repeated: {refs}")
            for t in targets:
                if t.get("datasource") != DATASOURCE:
                    problem(at, f"query {t.get('refId')}: datasource must be {DATASOURCE}")
                if not str(t.get("expr", "")).strip():
                    problem(at, f"query {t.get('refId')}: empty expr")

    walk(dash.get("panels") or [], False)
    for i, (a, ga) in enumerate(top_level):
        for b, gb in top_level[i + 1:]:
            if (ga["x"] < gb["x"] + gb["w"] and gb["x"] < ga["x"] + ga["w"]
                    and ga["y"] < gb["y"] + gb["h"] and gb["y"] < ga["y"] + ga["h"]):
                problem(a, f"overlaps {b.split(': ', 1)[1]}")


# -------------------------------------------------------------------------------- provisioning

def check_provisioning() -> None:
    path = HERE / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
    doc = load_yaml(path)
    if doc is not None:
        sources = doc.get("datasources") or []
        if doc.get("apiVersion") != 1 or not any(
                s.get("type") == "prometheus" and s.get("url") and s.get("uid") for s in sources):
            problem(rel(path), "needs apiVersion 1 and a prometheus data source with url and uid")
    path = HERE / "grafana" / "provisioning" / "dashboards" / "nmc.yaml"
    doc = load_yaml(path)
    if doc is not None:
        providers = doc.get("providers") or []
        if doc.get("apiVersion") != 1 or not any(
                p.get("type") == "file" and (p.get("options") or {}).get("path") for p in providers):
            problem(rel(path), "needs apiVersion 1 and a file provider with options.path")


# ------------------------------------------------------------------------------------ alerting

def check_alerts(dashboard_uids: set[str]) -> None:
    path = HERE / "prometheus" / "alerts.yml"
    doc = load_yaml(path) or {}
    alerts = {}
    for group in doc.get("groups") or []:
        for rule in group.get("rules") or []:
            name = rule.get("alert")
            if not name:
                continue
            at = f"{rel(path)}: {name}"
            if name in alerts:
                problem(at, "defined twice")
            alerts[name] = rule
            if "for" not in rule:
                problem(at, "no `for`")
            if (rule.get("labels") or {}).get("severity") not in ("critical", "warning"):
                problem(at, "labels.severity must be critical or warning")
            ann = rule.get("annotations") or {}
            for key in ("summary", "description", "runbook", "dashboard"):
                if not str(ann.get(key, "")).strip():
                    problem(at, f"no annotations.{key}")
            dash = str(ann.get("dashboard", ""))
            if dash.startswith("/d/") and dash[3:].split("?")[0] not in dashboard_uids:
                problem(at, f"annotations.dashboard names no dashboard: {dash}")
    tests_path = HERE / "prometheus" / "alerts_test.yml"
    tests = (load_yaml(tests_path) or {}).get("tests") or []
    fires, quiet = set(), set()
    for t in tests:
        for case in t.get("alert_rule_test") or []:
            (fires if case.get("exp_alerts") else quiet).add(case.get("alertname"))
    for name in alerts:
        if name not in fires:
            problem(rel(tests_path), f"no case where {name} fires")
        if name not in quiet:
            problem(rel(tests_path), f"no case where {name} must not fire")


# ---------------------------------------------------------------------------------- collector

def check_collector() -> None:
    path = HERE / "otel-collector.yaml"
    where = rel(path)
    doc = load_yaml(path)
    if doc is None:
        return
    service = doc.get("service") or {}
    for ext in service.get("extensions") or []:
        if ext not in (doc.get("extensions") or {}):
            problem(where, f"service.extensions names undefined {ext}")
    if "health_check" not in (service.get("extensions") or []):
        problem(where, "health_check extension not enabled")
    pipelines = service.get("pipelines") or {}
    for kind in ("metrics", "traces"):
        if kind not in pipelines:
            problem(where, f"no {kind} pipeline")
    for name, pipe in pipelines.items():
        for section in ("receivers", "processors", "exporters"):
            for comp in pipe.get(section) or []:
                if comp not in (doc.get(section) or {}):
                    problem(where, f"pipeline {name}: {section} names undefined {comp}")
        procs = pipe.get("processors") or []
        if not procs or procs[0] != "memory_limiter" or procs[-1] != "batch":
            problem(where, f"pipeline {name}: memory_limiter must come first and batch last")
    protocols = ((doc.get("receivers") or {}).get("otlp") or {}).get("protocols") or {}
    for proto, port in (("grpc", "4317"), ("http", "4318")):
        if not str((protocols.get(proto) or {}).get("endpoint", "")).endswith(":" + port):
            problem(where, f"otlp receiver: {proto} must listen on port {port}")


# ------------------------------------------------------------------------- kubernetes scrape

# Fields of kubernetes_sd_config (Prometheus 2.x documentation), and of its nested blocks.
K8S_SD_FIELDS = {"api_server", "role", "kubeconfig_file", "namespaces", "selectors",
                 "attach_metadata", "basic_auth", "authorization", "oauth2", "proxy_url",
                 "no_proxy", "proxy_from_environment", "proxy_connect_header",
                 "follow_redirects", "enable_http2", "tls_config", "bearer_token",
                 "bearer_token_file"}
K8S_ROLES = {"node", "service", "pod", "endpoints", "endpointslice", "ingress"}


def check_kubernetes_scrape() -> None:
    path = HERE / "prometheus" / "prometheus-kubernetes.yml"
    where = rel(path)
    doc = load_yaml(path)
    if doc is None:
        return
    jobs = doc.get("scrape_configs") or []
    if [j.get("job_name") for j in jobs] != ["nmc"]:
        problem(where, "must hold exactly one scrape job, named nmc")
    for job in jobs:
        sds = job.pop("kubernetes_sd_configs", None)
        if not sds:
            problem(where, "job nmc: no kubernetes_sd_configs")
            continue
        for sd in sds:
            unknown = set(sd) - K8S_SD_FIELDS
            if unknown:
                problem(where, f"kubernetes_sd_configs: unknown fields {sorted(unknown)}")
            if sd.get("role") not in K8S_ROLES:
                problem(where, f"kubernetes_sd_configs: role must be one of {sorted(K8S_ROLES)}")
            ns = sd.get("namespaces")
            if ns is not None and (set(ns) - {"names", "own_namespace"} or not isinstance(ns.get("names", []), list)):
                problem(where, "kubernetes_sd_configs.namespaces: only names (a list) and own_namespace")
            for sel in sd.get("selectors") or []:
                if set(sel) - {"role", "label", "field"} or sel.get("role") not in K8S_ROLES:
                    problem(where, f"kubernetes_sd_configs.selectors: bad selector {sel}")
        keeps = {(tuple(r.get("source_labels") or []), r.get("regex")) for r in job.get("relabel_configs") or []
                 if r.get("action") == "keep"}
        for need in ((("__meta_kubernetes_pod_label_app_kubernetes_io_name",), "nmc"),
                     (("__meta_kubernetes_pod_container_port_name",), "http")):
            if need not in keeps:
                problem(where, f"job nmc: no relabel keep of {need[0][0]} = {need[1]}")
        if job.get("metrics_path", "/metrics") != "/metrics":
            problem(where, "job nmc: metrics_path must be /metrics")
        # promtool checks everything else: a static target stands in for discovery
        job["static_configs"] = [{"targets": ["127.0.0.1:9464"]}]
    if shutil.which("promtool") is None:
        problem(where, "promtool not found: run .ci/install-tools")
        return
    with tempfile.TemporaryDirectory() as tmp:
        for rule_file in doc.get("rule_files") or []:
            shutil.copy(path.parent / rule_file, Path(tmp) / rule_file)
        stand_in = Path(tmp) / path.name
        stand_in.write_text(yaml.safe_dump(doc), encoding="utf-8")
        r = subprocess.run(["promtool", "check", "config", str(stand_in)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            problem(where, "promtool check config (discovery replaced by a static target): "
                    + (r.stdout + r.stderr).strip().replace("\n", " | "))


def main() -> int:
    uids = check_dashboards()
    check_provisioning()
    check_alerts(uids)
    check_collector()
    check_kubernetes_scrape()
    for p in PROBLEMS:
        print(f"check.py: {p}", file=sys.stderr)
    if not PROBLEMS:
        print("check.py: dashboards, provisioning, alerting rules, collector and Kubernetes scrape configuration OK")
    return 1 if PROBLEMS else 0


if __name__ == "__main__":
    sys.exit(main())
