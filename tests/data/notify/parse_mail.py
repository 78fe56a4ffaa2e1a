#!/usr/bin/env python3
"""Parses one e-mail file with Python's email package (the standard library's MIME parser) and
prints it as JSON for the tests: {"headers": {name: [values]}, "parts": [{"content_type",
"text"}]} with every non-multipart part decoded (quoted-printable, base64) to text.

Usage: parse_mail.py FILE.eml
"""
import json
import sys
from email import policy
from email.parser import BytesParser

with open(sys.argv[1], "rb") as f:
    msg = BytesParser(policy=policy.default).parse(f)
headers = {}
for k, v in msg.items():
    headers.setdefault(k.lower(), []).append(str(v))
parts = [
    {"content_type": p.get_content_type(), "text": p.get_content()}
    for p in msg.walk()
    if not p.is_multipart()
]
print(json.dumps({"headers": headers, "parts": parts}))
