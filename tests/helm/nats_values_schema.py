#!/usr/bin/env python3
"""Writes tests/helm/nats-values.schema.json from the official NATS chart's values.yaml (fetch
nats-io/k8s, then: nats_values_schema.py helm/charts/nats/values.yaml tests/helm/nats-values.schema.json).
Only the key structure is kept; update the title's version and commit when moving to a new chart."""
import json, sys, yaml
src = yaml.safe_load(open(sys.argv[1]))
def node(v, path):
    if isinstance(v, dict):
        if not v:
            return {"type": "object"}
        return {"type": "object", "additionalProperties": False,
                "properties": {k: node(x, path + [k]) for k, x in v.items()}}
    if isinstance(v, bool): return {"type": "boolean"}
    if isinstance(v, int): return {"type": ["integer", "string"]}
    if isinstance(v, str): return {"type": ["string", "null"]}
    if isinstance(v, list): return {"type": "array"}
    return {}
s = node(src, [])
s["$schema"] = "http://json-schema.org/draft-07/schema#"
s["title"] = ("Keys of the official NATS chart's values.yaml (nats-io/k8s helm/charts/nats 2.14.2, "
  "commit 957650fba03e2e6ad8b5d54d66358f67a431157b): structure only, generated, so that a misspelt or "
  "misplaced key in deploy/nats/values.yaml fails CI; the chart ships no values schema of its own")
# The settings deploy/nats/values.yaml relies on.
s["allOf"] = [{"properties": {"config": {"required": ["cluster", "jetstream", "nats"], "properties": {
   "cluster": {"properties": {"enabled": {"const": True}, "replicas": {"minimum": 3}}},
   "jetstream": {"properties": {"enabled": {"const": True},
        "fileStore": {"properties": {"enabled": {"const": True}, "pvc": {"properties": {"enabled": {"const": True}}}}}}},
   "nats": {"properties": {"tls": {"properties": {"enabled": {"const": True}}}}},
   "merge": {"required": ["00-nmc-auth$include"]}}}}}]
json.dump(s, open(sys.argv[2], "w"), indent=1)
open(sys.argv[2], "a").write("\n")
