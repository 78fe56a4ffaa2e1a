"""Prints `nmc alerts tail` or `nmc dlq tail` JSON lines (stdin) as a table for people.

usage: python3 show.py alerts|dlq < lines.jsonl
"""
import json
import sys

kind = sys.argv[1] if len(sys.argv) > 1 else "alerts"
rows = [json.loads(line) for line in sys.stdin if line.strip()]
if kind == "alerts":
    rows.sort(key=lambda a: (a["force"], a["first_seen"]))
    for a in rows:
        group = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in a["group"].items()) or "-"
        print(f"{a['force']:<14} {a['rule']['level']:<8} {a['rule']['title']:<54} "
              f"count={a['count']:<3} {a['first_seen']} .. {a['last_seen']}  [{group}]  node={a['node']}")
    print(f"{len(rows)} alerts")
else:
    for d in rows:
        print(f"{d['subject']:<18} {d['reason']:<20} seq={d['seq']:<6} {d['error']}")
    print(f"{len(rows)} dead letters")
