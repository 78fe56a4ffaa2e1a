"""Prints nmc alert JSON lines (stdin) as a table for people."""
import json
import sys

rows = [json.loads(line) for line in sys.stdin if line.strip()]
rows.sort(key=lambda a: (a["force"], a["window_start"]))
for a in rows:
    group = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in a["group"].items()) or "-"
    print(f"{a['force']:<14} {a['rule']['level']:<8} {a['rule']['title']:<52} "
          f"count={a['count']:<3} {a['first_seen']} .. {a['last_seen']}  [{group}]  node={a['node']}")
print(f"{len(rows)} alerts")
