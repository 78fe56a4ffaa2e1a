//! What a notification says: the view of an alert that templates and payloads are made from.
//!
//! Built from the alert record and, for evidence, only the allowlisted fields of up to
//! [`MAX_EVIDENCE_SHOWN`] evidence events fetched from `NMC_EVENTS_<force>` while retained
//! ([`nmc_shared::minimise`]): no raw event leaves the centre.

use nmc_shared::alert::Alert;
use nmc_shared::minimise;
use nmc_shared::{SourceKind, force};
use serde::Serialize;

/// Evidence events summarised in one message.
pub const MAX_EVIDENCE_SHOWN: usize = 5;

/// One alert as messages show it.
#[derive(Debug, Clone, Serialize)]
pub struct AlertView {
    /// Alert id.
    pub id: String,
    /// Force id.
    pub force: String,
    /// Force name from the registry.
    pub force_name: String,
    /// Level (`critical`, ...).
    pub level: String,
    /// Rule title.
    pub title: String,
    /// Rule id.
    pub rule_id: String,
    /// What the rule detects.
    pub description: String,
    /// What to do.
    pub mitigation: String,
    /// Rule kind (`detection`, `event_count`, ...).
    pub kind: String,
    /// ATT&CK and other tags, with a link when they name a technique.
    pub tags: Vec<Tag>,
    /// Group-by values of a correlation.
    pub group: Vec<Field>,
    /// Events counted.
    pub count: u64,
    /// Window start (RFC 3339).
    pub window_start: String,
    /// Window end (RFC 3339).
    pub window_end: String,
    /// Oldest event counted.
    pub first_seen: String,
    /// Newest event counted.
    pub last_seen: String,
    /// Distinct values counted (value_count rules).
    pub distinct: Option<u64>,
    /// Allowlisted fields of the first evidence events.
    pub evidence: Vec<EvidenceView>,
    /// Evidence events behind the alert in all.
    pub evidence_total: usize,
    /// Link to the alert in the console (empty without a console).
    pub link: String,
    /// Rule pack version.
    pub rule_pack: String,
}

/// A tag and where to read about it.
#[derive(Debug, Clone, Serialize)]
pub struct Tag {
    /// As in the rule (`attack.t1110.003`).
    pub name: String,
    /// MITRE ATT&CK page of a technique; empty for other tags.
    pub url: String,
}

/// A labelled value.
#[derive(Debug, Clone, Serialize)]
pub struct Field {
    /// Label.
    pub name: String,
    /// Value.
    pub value: String,
}

/// One evidence event, minimised.
#[derive(Debug, Clone, Serialize)]
pub struct EvidenceView {
    /// Event time.
    pub time: String,
    /// Source kind.
    pub source: String,
    /// The allowlisted fields present.
    pub fields: Vec<Field>,
}

/// An evidence event as fetched: its source and parsed body.
pub struct Fetched {
    /// Event time from the alert.
    pub time: String,
    /// Source, from its subject.
    pub source: SourceKind,
    /// The event.
    pub body: serde_json::Value,
}

impl AlertView {
    /// The view of `alert`, with the fetched evidence events (minimised here) and the
    /// console's base URL.
    pub fn new(alert: &Alert, evidence: &[Fetched], console_url: &str) -> AlertView {
        let force_name = force::lookup(alert.force.as_str())
            .map(|f| f.name.to_string())
            .unwrap_or_else(|| alert.force.to_string());
        let link = if console_url.is_empty() {
            String::new()
        } else {
            format!("{}/alerts/{}", console_url.trim_end_matches('/'), alert.id)
        };
        AlertView {
            id: alert.id.to_string(),
            force: alert.force.to_string(),
            force_name,
            level: alert.rule.level.as_str().into(),
            title: alert.rule.title.clone(),
            rule_id: alert.rule.id.clone(),
            description: alert.rule.description.clone(),
            mitigation: alert.rule.mitigation.clone(),
            kind: alert.rule.kind.clone(),
            tags: alert.rule.tags.iter().map(|t| tag(t)).collect(),
            group: alert
                .group
                .iter()
                .map(|(k, v)| Field {
                    name: minimise::clip(k),
                    value: minimise::clip(v),
                })
                .collect(),
            count: alert.count,
            window_start: alert.window_start.clone(),
            window_end: alert.window_end.clone(),
            first_seen: alert.first_seen.clone(),
            last_seen: alert.last_seen.clone(),
            distinct: alert.distinct,
            evidence: evidence
                .iter()
                .take(MAX_EVIDENCE_SHOWN)
                .map(|e| EvidenceView {
                    time: e.time.clone(),
                    source: e.source.as_str().into(),
                    fields: minimise::key_fields(e.source, &e.body)
                        .into_iter()
                        .map(|(name, value)| Field {
                            name: name.into(),
                            value,
                        })
                        .collect(),
                })
                .collect(),
            evidence_total: alert.evidence.len(),
            link,
            rule_pack: alert.rule_pack.clone(),
        }
    }
}

/// A tag with its ATT&CK link: `attack.t1110.003` → techniques/T1110/003.
fn tag(name: &str) -> Tag {
    let url = name
        .strip_prefix("attack.t")
        .filter(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        .map(|rest| {
            let path = rest.to_ascii_uppercase().replace('.', "/");
            format!("https://attack.mitre.org/techniques/T{path}/")
        })
        .unwrap_or_default();
    Tag {
        name: name.into(),
        url,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn technique_tags_link_to_attack() {
        assert_eq!(
            tag("attack.t1110.003").url,
            "https://attack.mitre.org/techniques/T1110/003/"
        );
        assert_eq!(tag("attack.credential_access").url, "");
        assert_eq!(tag("cve.2021-44228").url, "");
    }
}
