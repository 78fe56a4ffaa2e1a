#!/usr/bin/env python3
"""The values table of helm/nmc/README.md, generated from the `# --` comments of values.yaml.

values_table.py            print the table
values_table.py --check    exit 1 if README.md's table (between the markers) differs, or if a
                           leaf value of values.yaml has no `# --` comment
"""
import json
import re
import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parents[2] / "helm" / "nmc"
BEGIN, END = "<!-- values-table:begin -->", "<!-- values-table:end -->"


def documented(text):
    """(dotted key, description) for each key preceded by a `# --` comment block."""
    rows, stack, comment = [], [], None
    for line in text.splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if stripped.startswith("# --"):
            comment = [stripped[4:].strip()]
            continue
        if stripped.startswith("#") and comment is not None:
            comment.append(stripped[1:].strip())
            continue
        m = re.match(r"^( *)([A-Za-z_][\w.-]*):", line)
        if not m:
            if stripped and not stripped.startswith("#") and not stripped.startswith("-"):
                comment = None
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = ".".join([k for _, k in stack] + [m.group(2)])
        stack.append((indent, m.group(2)))
        if comment is not None:
            rows.append((key, " ".join(comment)))
            comment = None
    return rows


def lookup(values, key):
    for part in key.split("."):
        values = values[part]
    return values


def leaves(values, prefix=""):
    for k, v in values.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            yield from leaves(v, key + ".")
        else:
            yield key


def table():
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    rows = documented(text)
    keys = {k for k, _ in rows}
    missing = [k for k in leaves(values) if not any(k == d or k.startswith(d + ".") for d in keys)]
    lines = ["| key | default | description |", "|---|---|---|"]
    for key, desc in rows:
        default = json.dumps(lookup(values, key))
        desc = desc.replace("|", "\\|")
        lines.append(f"| `{key}` | `{default}` | {desc} |")
    return "\n".join(lines) + "\n", missing


def main():
    body, missing = table()
    if "--check" not in sys.argv:
        print(body, end="")
        return
    readme = (CHART / "README.md").read_text()
    current = readme.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"
    errors = [f"values.yaml: `{k}` has no `# --` description" for k in missing]
    if current != body:
        errors.append("helm/nmc/README.md: the values table is stale: run "
                      "tests/helm/values_table.py and paste it between the markers")
    for e in errors:
        print(e)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
