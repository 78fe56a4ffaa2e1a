#!/usr/bin/env python3
"""Policy check of manifests rendered from helm/nmc (tests/helm/check.sh).

Every pod (StatefulSet, Job): non-root numeric user, read-only root file system, no privilege
escalation, all capabilities dropped, seccomp RuntimeDefault, resources with requests and
limits, probes on the nodes (/healthz, /readyz, scheme matching HTTP TLS), an image pinned by a
version tag or digest (never `latest`), no service-account token; no secret value anywhere (no
Secret object, no env `value` for a variable that carries a secret); the termination grace
period longer than the configuration's shutdown_grace_secs; the Job is a post-install and
post-upgrade hook.

Usage: policy.py RENDERED.yaml...   (exit 1 with one line per violation)
"""
import re
import sys
import tomllib

import yaml

SECRET_ENV = re.compile(r"(PASSWORD|TOKEN|SECRET|SEED)")


def pod_specs(doc):
    kind = doc.get("kind")
    if kind in ("StatefulSet", "Deployment", "DaemonSet", "Job"):
        return [doc["spec"]["template"]["spec"]]
    if kind == "Pod":
        return [doc["spec"]]
    return []


def check(path, docs, out):
    name = lambda d: f"{path}: {d['kind']}/{d['metadata']['name']}"
    toml_cfg = None
    for d in docs:
        if d["kind"] == "Secret":
            out.append(f"{name(d)}: the chart must not create Secrets (secrets are referenced)")
        if d["kind"] == "ConfigMap" and "nmc.toml" in d.get("data", {}):
            toml_cfg = tomllib.loads(d["data"]["nmc.toml"])
            for k in toml_cfg:
                if k in ("nats_password", "nats_token", "http_api_token"):
                    out.append(f"{name(d)}: nmc.toml holds the secret {k}")
    for d in docs:
        for spec in pod_specs(d):
            n = name(d)
            psc = spec.get("securityContext", {})
            if spec.get("automountServiceAccountToken") is not False:
                out.append(f"{n}: automountServiceAccountToken must be false")
            if d["kind"] == "Job":
                hooks = d["metadata"].get("annotations", {}).get("helm.sh/hook", "")
                if set(hooks.split(",")) != {"post-install", "post-upgrade"}:
                    out.append(f"{n}: the apply Job must be a post-install,post-upgrade hook")
            if d["kind"] == "StatefulSet" and toml_cfg is not None:
                grace = spec.get("terminationGracePeriodSeconds", 30)
                if grace <= toml_cfg["shutdown_grace_secs"]:
                    out.append(f"{n}: terminationGracePeriodSeconds {grace} <= shutdown_grace_secs")
            for c in spec.get("initContainers", []) + spec["containers"]:
                cn = f"{n} container {c['name']}"
                sc = {**psc, **c.get("securityContext", {})}
                if sc.get("runAsNonRoot") is not True:
                    out.append(f"{cn}: runAsNonRoot must be true")
                if not isinstance(sc.get("runAsUser"), int) or sc["runAsUser"] == 0:
                    out.append(f"{cn}: runAsUser must be a numeric non-root uid")
                if c.get("securityContext", {}).get("readOnlyRootFilesystem") is not True:
                    out.append(f"{cn}: readOnlyRootFilesystem must be true")
                if c.get("securityContext", {}).get("allowPrivilegeEscalation") is not False:
                    out.append(f"{cn}: allowPrivilegeEscalation must be false")
                if c.get("securityContext", {}).get("privileged"):
                    out.append(f"{cn}: privileged")
                if "ALL" not in c.get("securityContext", {}).get("capabilities", {}).get("drop", []):
                    out.append(f"{cn}: capabilities must drop ALL")
                if c.get("securityContext", {}).get("capabilities", {}).get("add"):
                    out.append(f"{cn}: adds capabilities")
                if sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                    out.append(f"{cn}: seccompProfile must be RuntimeDefault")
                res = c.get("resources", {})
                for part, keys in (("requests", ("cpu", "memory")), ("limits", ("memory",))):
                    for k in keys:
                        if k not in res.get(part, {}):
                            out.append(f"{cn}: resources.{part}.{k} missing")
                image = c["image"]
                if "@sha256:" not in image:
                    tag = image.rsplit("/", 1)[-1].partition(":")[2]
                    if not tag or tag == "latest":
                        out.append(f"{cn}: image {image} is not pinned to a version")
                for e in c.get("env", []):
                    if SECRET_ENV.search(e["name"]) and "value" in e:
                        out.append(f"{cn}: env {e['name']} carries a secret inline")
                if d["kind"] == "StatefulSet":
                    tls = any(e["name"] == "NMC_HTTP_TLS_CERT" for e in c.get("env", []))
                    want = "HTTPS" if tls else "HTTP"
                    for probe, path_ in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                        get = c.get(probe, {}).get("httpGet", {})
                        if get.get("path") != path_:
                            out.append(f"{cn}: {probe} must GET {path_}")
                        if get.get("scheme", "HTTP") != want:
                            out.append(f"{cn}: {probe} scheme {get.get('scheme')} but HTTP TLS is {'on' if tls else 'off'}")


def main():
    out = []
    for path in sys.argv[1:]:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        if not any(d["kind"] == "StatefulSet" for d in docs):
            out.append(f"{path}: no StatefulSet rendered")
        check(path, docs, out)
    for line in out:
        print(line)
    if out:
        sys.exit(1)
    print(f"policy: {len(sys.argv) - 1} rendering(s) pass")


if __name__ == "__main__":
    main()
