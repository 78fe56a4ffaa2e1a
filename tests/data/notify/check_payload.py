#!/usr/bin/env python3
"""Checks a notification payload against one of the JSON Schemas beside this file.

  check_payload.py SCHEMA FILE   exit 0 if FILE is valid; else 1, with one line per error:
                                 "<JSON path>: <message>" (e.g. "$.blocks[0].text.text: ...")
  check_payload.py --self-test   the example payloads must pass, and variants of them, built
                                 below, must pass or fail as each says; exit 0 if all did

Needs the `jsonschema` package (in the venv of .ci/install-tools, as a dependency of
check-jsonschema). The schemas are draft 2020-12; the validator follows their "$schema".
"""
import copy
import json
import os
import sys

import jsonschema
from jsonschema.exceptions import best_match

HERE = os.path.dirname(os.path.abspath(__file__))


def describe(e):
    """The error's message, short: jsonschema's own repeats the whole (maybe long) instance."""
    v, n = e.validator_value, len(e.instance) if isinstance(e.instance, (str, list)) else None
    unit = "characters" if isinstance(e.instance, str) else "items"
    if e.validator in ("maxLength", "maxItems"):
        return f"{n} {unit}, more than the {v} allowed"
    if e.validator in ("minLength", "minItems"):
        return f"{n} {unit}, fewer than the {v} required"
    if e.validator == "pattern" and "$comment" in e.schema:  # the enums matched in any case
        return f"{e.instance!r} is not {e.schema['$comment']}"
    return e.message if len(e.message) <= 300 else e.message[:300] + "..."


def errors(schema, doc):
    """["<JSON path>: <message>", ...] for every error, in document order; [] if valid."""
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    out = []
    for e in sorted(cls(schema).iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path]):
        # anyOf/oneOf errors only say "not valid under any of the given schemas": add the
        # most relevant reason from their context.
        reason = best_match(e.context) if e.context else None
        line = f"{e.json_path}: {describe(e)}"
        if reason is not None:
            line += f" (best match: {reason.json_path}: {describe(reason)})"
        out.append(line)
    return out


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def variant(doc, change):
    doc = copy.deepcopy(doc)
    change(doc)
    return doc


def self_test():
    teams_schema = load(os.path.join(HERE, "teams-message.schema.json"))
    slack_schema = load(os.path.join(HERE, "slack-message.schema.json"))
    teams = load(os.path.join(HERE, "example-teams.json"))
    slack = load(os.path.join(HERE, "example-slack.json"))

    def card(d):
        return d["attachments"][0]["content"]

    def set_(path, value):
        """A change that sets doc[path...] = value (path: keys and indexes)."""
        def change(d):
            for key in path[:-1]:
                d = d[key]
            d[path[-1]] = value
        return change

    # (name, schema, document, the JSON path an error must name, or None if it must be valid)
    cases = [
        ("teams example", teams_schema, teams, None),
        ("teams: lower-case enum values and no contentUrl", teams_schema, variant(teams, lambda d: (
            card(d)["body"][0].update(weight="bolder", size="medium"),
            d["attachments"][0].pop("contentUrl"))), None),
        ("teams: Container and ColumnSet", teams_schema, variant(teams, lambda d: card(d)["body"].append({
            "type": "Container", "style": "emphasis", "items": [{
                "type": "ColumnSet", "columns": [
                    {"type": "Column", "width": "auto", "items": [{"type": "TextBlock", "text": "a"}]},
                    {"type": "Column", "width": 2, "items": [{"type": "TextBlock", "text": "b"}]}]}]})),
         None),
        ("teams: misspelt TextBlock property (txt)", teams_schema, variant(teams, lambda d: card(d)["body"][1].update(
            txt=card(d)["body"][1].pop("text"))), "$.attachments[0].content.body[1]"),
        ("teams: a fact value that is a number", teams_schema,
         variant(teams, lambda d: set_(["facts", 2, "value"], 3)(card(d)["body"][2])),
         "$.attachments[0].content.body[2].facts[2].value"),
        ("teams: wrong contentType", teams_schema,
         variant(teams, set_(["attachments", 0, "contentType"], "application/json")),
         "$.attachments[0].contentType"),
        ("teams: Action.OpenUrl without a title", teams_schema,
         variant(teams, lambda d: card(d)["actions"][0].pop("title")), "$.attachments[0].content.actions[0]"),
        ("teams: unknown weight", teams_schema,
         variant(teams, lambda d: card(d)["body"][0].update(weight="Bold")),
         "$.attachments[0].content.body[0].weight"),
        ("slack example", slack_schema, slack, None),
        ("slack: no blocks, text only", slack_schema, {"text": "nmc: 1 new alert"}, None),
        ("slack: header of 151 characters", slack_schema,
         variant(slack, set_(["blocks", 0, "text", "text"], "x" * 151)), "$.blocks[0].text.text"),
        ("slack: header in mrkdwn", slack_schema,
         variant(slack, set_(["blocks", 0, "text"], {"type": "mrkdwn", "text": "*nmc*"})),
         "$.blocks[0].text.type"),
        ("slack: 11 section fields", slack_schema,
         variant(slack, set_(["blocks", 2, "fields"], [{"type": "mrkdwn", "text": "f"}] * 11)),
         "$.blocks[2].fields"),
        ("slack: no top-level text", slack_schema, variant(slack, lambda d: d.pop("text")), "$"),
        ("slack: emoji on a mrkdwn text object", slack_schema,
         variant(slack, lambda d: d["blocks"][3]["elements"][0].update(emoji=True)),
         "$.blocks[3].elements[0]"),
        ("slack: 51 blocks", slack_schema,
         variant(slack, set_(["blocks"], [{"type": "divider"}] * 51)), "$.blocks"),
    ]
    failed = 0
    for name, schema, doc, bad_path in cases:
        found = errors(schema, doc)
        if bad_path is None:
            ok = not found
        else:  # invalid, and for the reason meant: an error at that path
            ok = any(line.startswith(bad_path + ":") for line in found)
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
        for line in found if not ok or bad_path is not None else []:
            print(f"       {line}")
    print(f"check_payload self-test: {len(cases) - failed} passed, {failed} failed")
    return 1 if failed else 0


def main(argv):
    if argv == ["--self-test"]:
        return self_test()
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    schema_path, doc_path = argv
    found = errors(load(schema_path), load(doc_path))
    if not found:
        print(f"{doc_path}: valid against {os.path.basename(schema_path)}")
        return 0
    print(f"{doc_path}: invalid against {os.path.basename(schema_path)}")
    for line in found:
        print(f"  {line}")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
