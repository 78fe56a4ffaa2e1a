//! The event fields a rule reads: the fields of its selections (and of the filters applied to
//! it), and for a correlation its group-by, counted and aliased fields and the fields of the
//! rules it correlates. The console highlights them in an alert's evidence.

use std::collections::BTreeSet;

use super::parse::{DetectionSpec, RuleBody, RuleDoc, SelectionSpec};

/// The Sigma field names rule `rule` (an id or a name) reads, sorted; empty for an unknown rule.
pub fn referenced_fields(docs: &[RuleDoc], rule: &str) -> Vec<String> {
    let mut out = BTreeSet::new();
    let mut seen = BTreeSet::new();
    collect(docs, rule, &mut out, &mut seen);
    out.into_iter().collect()
}

fn named(d: &RuleDoc, rule: &str) -> bool {
    d.id == rule || d.name.as_deref() == Some(rule)
}

fn collect(docs: &[RuleDoc], rule: &str, out: &mut BTreeSet<String>, seen: &mut BTreeSet<String>) {
    if !seen.insert(rule.to_owned()) {
        return;
    }
    let Some(doc) = docs.iter().find(|d| named(d, rule)) else {
        return;
    };
    match &doc.body {
        RuleBody::Detection { detection, .. } => {
            selection_fields(detection, out);
            for d in docs {
                if let RuleBody::Filter { rules, detection } = &d.body
                    && rules
                        .iter()
                        .any(|r| r == &doc.id || Some(r) == doc.name.as_ref())
                {
                    selection_fields(detection, out);
                }
            }
        }
        RuleBody::Correlation(c) => {
            out.extend(c.group_by.iter().cloned());
            out.extend(c.field.iter().cloned());
            for per_rule in c.aliases.values() {
                out.extend(per_rule.values().cloned());
            }
            for r in &c.rules {
                collect(docs, r, out, seen);
            }
        }
        RuleBody::Filter { detection, .. } => selection_fields(detection, out),
    }
}

fn selection_fields(d: &DetectionSpec, out: &mut BTreeSet<String>) {
    for (_, sel) in &d.selections {
        if let SelectionSpec::Maps(maps) = sel {
            for f in maps.iter().flatten() {
                if !f.field.is_empty() {
                    out.insert(f.field.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigma::parse::parse_rules;

    #[test]
    fn a_correlation_reads_its_own_and_its_rules_fields() {
        let yaml = r#"
title: Failed sign-in
id: failed
name: failed_sign_in
logsource: {product: azure, service: signinlogs}
detection:
  selection:
    ResultType: 50126
    AppDisplayName|contains: Office
  keywords: [password]
  condition: selection
---
title: Not from the office
id: office-filter
filter:
  rules: [failed]
  selection:
    IPAddress|cidr: 10.0.0.0/8
  condition: not selection
---
title: Spray
id: spray
correlation:
  type: value_count
  rules: [failed_sign_in]
  group-by: [IPAddress]
  timespan: 10m
  condition: {field: UserPrincipalName, gte: 10}
"#;
        let docs: Vec<RuleDoc> = parse_rules("t.yml", yaml)
            .into_iter()
            .map(|d| d.expect("a valid rule"))
            .collect();
        assert_eq!(
            referenced_fields(&docs, "spray"),
            [
                "AppDisplayName",
                "IPAddress",
                "ResultType",
                "UserPrincipalName"
            ]
        );
        assert_eq!(
            referenced_fields(&docs, "failed"),
            ["AppDisplayName", "IPAddress", "ResultType"]
        );
        assert!(referenced_fields(&docs, "unknown").is_empty());
    }
}
