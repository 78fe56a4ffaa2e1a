//! What the console shows of an evidence event: its fields flattened to dotted paths, each
//! marked when the alert's rule reads it. Fields are found through the source's mapping
//! ([`crate::mapping::lookup`]), as the engine finds them, so a Sigma `IPAddress` marks the
//! event's `properties.ipAddress` or `callerIpAddress`, whichever the event holds.

use serde::Serialize;
use serde_json::Value;

use crate::mapping::{CLASSES, classify, lookup};
use crate::source::SourceKind;

/// Most rows shown of one event (a very wide event is cut, and says so).
pub const MAX_ROWS: usize = 400;
/// Longest value shown, in characters.
pub const MAX_VALUE_CHARS: usize = 1_000;

/// One leaf of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldRow {
    /// Dotted path (`properties.status.errorCode`, `records[0].time`).
    pub path: String,
    /// The value as text (strings unquoted), clipped to [`MAX_VALUE_CHARS`].
    pub value: String,
    /// Whether one of the rule's fields resolves to it (or to an object holding it).
    pub matched: bool,
}

/// The rows of `body`, an event of `source`, marking what `fields` (Sigma field names) resolve
/// to; the second value says whether rows were left out after [`MAX_ROWS`].
pub fn rows(source: SourceKind, body: &Value, fields: &[String]) -> (Vec<FieldRow>, bool) {
    let class = &CLASSES.all[classify(source, body)];
    let hits: Vec<*const Value> = fields
        .iter()
        .filter_map(|f| lookup(class, body, f))
        .map(|v| v as *const Value)
        .collect();
    let mut out = Vec::new();
    let cut = !walk(body, String::new(), &hits, false, &mut out);
    (out, cut)
}

/// Appends the leaves under `v`; false once [`MAX_ROWS`] is reached.
fn walk(
    v: &Value,
    path: String,
    hits: &[*const Value],
    inherited: bool,
    out: &mut Vec<FieldRow>,
) -> bool {
    let matched = inherited || hits.contains(&(v as *const Value));
    let join = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    match v {
        Value::Object(m) if !m.is_empty() => m
            .iter()
            .all(|(k, child)| walk(child, join(k), hits, matched, out)),
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .enumerate()
            .all(|(i, child)| walk(child, format!("{path}[{i}]"), hits, matched, out)),
        leaf => {
            if out.len() >= MAX_ROWS {
                return false;
            }
            let mut value = match leaf {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if let Some((cut, _)) = value.char_indices().nth(MAX_VALUE_CHARS) {
                value.truncate(cut);
                value.push('…');
            }
            out.push(FieldRow {
                path: if path.is_empty() {
                    "(event)".into()
                } else {
                    path
                },
                value,
                matched,
            });
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_the_rule_reads_are_marked_through_the_mapping() {
        let body = json!({
            "time": "2026-11-30T10:00:00Z",
            "properties": {
                "userPrincipalName": "a@kent.example",
                "ipAddress": "203.0.113.9",
                "status": {"errorCode": 50126, "failureReason": "bad password"},
                "appliedPolicies": [],
            }
        });
        let fields = ["UserPrincipalName".to_owned(), "IPAddress".to_owned()];
        let (rows, cut) = rows(SourceKind::EntraSignin, &body, &fields);
        assert!(!cut);
        let marked: Vec<&str> = rows
            .iter()
            .filter(|r| r.matched)
            .map(|r| r.path.as_str())
            .collect();
        assert_eq!(
            marked,
            ["properties.ipAddress", "properties.userPrincipalName"]
        );
        let code = rows
            .iter()
            .find(|r| r.path == "properties.status.errorCode")
            .unwrap();
        assert_eq!((code.value.as_str(), code.matched), ("50126", false));
        assert!(rows.iter().any(|r| r.path == "properties.appliedPolicies"));
    }

    #[test]
    fn a_wide_event_is_cut_and_long_values_clipped() {
        let wide: serde_json::Map<String, Value> = (0..MAX_ROWS + 5)
            .map(|i| (format!("f{i:04}"), json!("x".repeat(MAX_VALUE_CHARS + 10))))
            .collect();
        let (rows, cut) = rows(SourceKind::Syslog, &Value::Object(wide), &[]);
        assert!(cut);
        assert_eq!(rows.len(), MAX_ROWS);
        assert_eq!(rows[0].value.chars().count(), MAX_VALUE_CHARS + 1);
    }
}
