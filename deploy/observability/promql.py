#!/usr/bin/env python3
"""Prints every PromQL expression of the nmc dashboards and alerting rules, one JSON object a line:

    {"source": "nmc-force.json:Lag", "expr": "max(nmc_force_lag{force=\"kent\"} ...)", "kind": "panel"}

`source` is the file and the panel title (with the query's refId when a panel has several), the
variable name, or the alert / recording rule name. `kind` is "panel", "variable", "alert" or
"record". Grafana's variables are substituted so that Prometheus can evaluate the expression as
it is: $__rate_interval and $__interval by --rate-interval / --interval (1m), $__range by
--range (1h), $force by --force. A template variable query `label_values(metric, label)` becomes
`group by (label) (metric)`; `label_values(label)`, `metrics()` and `label_names()` (Grafana
functions with no PromQL equivalent worth evaluating) are skipped.

Used by CI (.ci/run) and by the integration test that evaluates every expression against a real
Prometheus scraping real nodes: panels and variables must return at least one series while nodes
process events; alert expressions must parse (they return series only while the alert is active).

Exits 1, naming the place, on a file it cannot read or a variable it does not know.

Python 3.11, standard library and PyYAML (.ci/install-tools puts PyYAML in .ci/tools/venv; this
script re-runs itself with that venv's python when the running one lacks it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

try:
    import yaml
except ImportError:  # pragma: no cover - depends on the machine
    venv_python = REPO / ".ci" / "tools" / "venv" / "bin" / "python3"
    if venv_python.exists() and os.environ.get("NMC_PROMQL_REEXEC") != "1":
        os.environ["NMC_PROMQL_REEXEC"] = "1"
        os.execv(str(venv_python), [str(venv_python), str(Path(__file__).resolve()), *sys.argv[1:]])
    sys.exit("promql.py: PyYAML is missing: run .ci/install-tools (it installs it in .ci/tools/venv)")

DASHBOARDS = sorted((HERE / "grafana" / "dashboards").glob("*.json"))
RULES = [HERE / "prometheus" / "alerts.yml"]

# $name, ${name}, ${name:format}, [[name]]; `$1` (label_replace) is not a variable.
VARIABLE = re.compile(r"\$\{([A-Za-z_]\w*)(?::[^}]*)?\}|\$([A-Za-z_]\w*)|\[\[([A-Za-z_]\w*)\]\]")
LABEL_VALUES = re.compile(r"^\s*label_values\s*\((.*)\)\s*$", re.S)
QUERY_RESULT = re.compile(r"^\s*query_result\s*\((.*)\)\s*$", re.S)
SKIPPED_FUNCTIONS = re.compile(r"^\s*(label_names|metrics)\s*\(")


class Failure(Exception):
    pass


def duration_seconds(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", text)
    if not m:
        raise Failure(f"not a Prometheus duration: {text!r}")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    return float(m.group(1)) * scale[m.group(2)]


def substitutions(args: argparse.Namespace) -> dict[str, str]:
    def num(x: float) -> str:
        return str(int(x)) if x == int(x) else str(x)

    return {
        "__rate_interval": args.rate_interval,
        "__interval": args.interval,
        "__interval_ms": num(duration_seconds(args.interval) * 1000),
        "__range": args.range,
        "__range_s": num(duration_seconds(args.range)),
        "__range_ms": num(duration_seconds(args.range) * 1000),
        "force": args.force,
    }


def substitute(expr: str, values: dict[str, str], where: str) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in values:
            raise Failure(f"{where}: unknown variable ${name} in {expr!r}")
        return values[name]

    return VARIABLE.sub(one, expr)


def split_args(text: str) -> list[str]:
    """Splits a function's arguments at top-level commas (not inside (), {}, [] or quotes)."""
    parts, depth, quote, current = [], 0, None, []
    for ch in text:
        if quote:
            current.append(ch)
            if ch == quote:
                quote = None
        elif ch in "\"'`":
            quote = ch
            current.append(ch)
        elif ch in "({[":
            depth += 1
            current.append(ch)
        elif ch in ")}]":
            depth -= 1
            current.append(ch)
        elif ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    parts.append("".join(current).strip())
    return parts


def variable_query(query: str) -> str | None:
    """The PromQL a Grafana Prometheus variable query stands for, or None to skip it."""
    m = LABEL_VALUES.match(query)
    if m:
        args = split_args(m.group(1))
        if len(args) == 2 and args[0] and args[1]:
            return f"group by ({args[1]}) ({args[0]})"
        return None  # label_values(label): every series; nothing to evaluate
    m = QUERY_RESULT.match(query)
    if m:
        return m.group(1).strip()
    if SKIPPED_FUNCTIONS.match(query):
        return None
    return query


def is_prometheus(datasource: object, default: bool) -> bool:
    if datasource is None:
        return default
    if isinstance(datasource, str):  # old dashboards name the data source
        return "prometheus" in datasource.lower() or datasource.startswith("$")
    if isinstance(datasource, dict):
        kind = datasource.get("type")
        if kind is None:
            return str(datasource.get("uid", "")).startswith("$") or default
        return kind == "prometheus"
    return default


def panels_of(container: dict) -> list[dict]:
    """Every panel, including those inside rows (collapsed rows keep them in `panels`) and
    the `rows` of very old dashboards."""
    out = []
    for panel in container.get("panels", []) or []:
        out.append(panel)
        out.extend(panels_of(panel))
    for row in container.get("rows", []) or []:
        out.extend(panels_of(row))
    return out


def from_dashboard(path: Path, values: dict[str, str]) -> list[dict]:
    try:
        dash = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise Failure(f"{path}: {e}") from e
    out = []
    for var in (dash.get("templating") or {}).get("list", []) or []:
        if var.get("type") != "query" or not is_prometheus(var.get("datasource"), True):
            continue
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if not query:
            continue
        expr = variable_query(query)
        if expr is None:
            continue
        where = f"{path.name}:${var.get('name')}"
        out.append({"source": where, "expr": substitute(expr, values, where), "kind": "variable"})
    for panel in panels_of(dash):
        targets = panel.get("targets") or []
        if not targets:
            continue
        panel_prometheus = is_prometheus(panel.get("datasource"), True)
        title = panel.get("title") or f"panel {panel.get('id')}"
        for target in targets:
            if not is_prometheus(target.get("datasource"), panel_prometheus):
                continue
            expr = target.get("expr")
            if not expr:
                raise Failure(f"{path.name}:{title}: a Prometheus query without expr")
            where = f"{path.name}:{title}"
            if len(targets) > 1:
                where += f" [{target.get('refId', '?')}]"
            out.append({"source": where, "expr": substitute(expr, values, where), "kind": "panel"})
    return out


def from_rules(path: Path, values: dict[str, str]) -> list[dict]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise Failure(f"{path}: {e}") from e
    out = []
    for group in (doc or {}).get("groups", []) or []:
        for rule in group.get("rules", []) or []:
            name = rule.get("alert") or rule.get("record")
            kind = "alert" if "alert" in rule else "record"
            where = f"{path.name}:{name}"
            expr = " ".join(str(rule.get("expr", "")).split())
            if not expr:
                raise Failure(f"{where}: no expr")
            out.append({"source": where, "expr": substitute(expr, values, where), "kind": kind})
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="*", type=Path,
                   help="dashboards (.json) and rule files (.yml); default: all of deploy/observability")
    p.add_argument("--force", default="kent", help="force id for $force (default: kent)")
    p.add_argument("--rate-interval", default="1m", help="$__rate_interval (default: 1m)")
    p.add_argument("--interval", default="1m", help="$__interval (default: 1m)")
    p.add_argument("--range", default="1h", help="$__range (default: 1h)")
    args = p.parse_args(argv)
    if not re.fullmatch(r"[a-z0-9_-]+", args.force):
        print(f"promql.py: --force {args.force!r} is not a force id", file=sys.stderr)
        return 2
    files = args.files or [*DASHBOARDS, *RULES]
    try:
        values = substitutions(args)
        found = []
        for f in files:
            found += from_dashboard(f, values) if f.suffix == ".json" else from_rules(f, values)
    except Failure as e:
        print(f"promql.py: {e}", file=sys.stderr)
        return 1
    if not found:
        print("promql.py: no expression found", file=sys.stderr)
        return 1
    for item in found:
        print(json.dumps(item, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
