//! The sample alert that templates are checked against and that `nmc contacts test` sends.

use serde::Serialize;

use super::message::{AlertView, EvidenceView, Field, Tag};

/// Who a message is for, as templates see it.
#[derive(Debug, Clone, Serialize)]
pub struct ContactView {
    /// Contact name.
    pub name: String,
    /// Their role.
    pub role: String,
}

/// A contact for checks.
pub fn contact() -> ContactView {
    ContactView {
        name: "soc-lead".into(),
        role: "SOC lead".into(),
    }
}

/// A test alert: plainly marked as a test in its title, id and rule.
pub fn alert_view() -> AlertView {
    let field = |n: &str, v: &str| Field {
        name: n.into(),
        value: v.into(),
    };
    AlertView {
        id: "00000000-0000-0000-0000-000000000000".into(),
        force: "kent".into(),
        force_name: "Kent Police".into(),
        level: "high".into(),
        title: "TEST: nmc notification test (no action needed)".into(),
        rule_id: "nmc-test".into(),
        description: "A test message sent by `nmc contacts test` to check this channel.".into(),
        mitigation: "None: this is a test.".into(),
        kind: "event_count".into(),
        tags: vec![Tag {
            name: "attack.t1110.003".into(),
            url: "https://attack.mitre.org/techniques/T1110/003/".into(),
        }],
        group: vec![field("IPAddress", "203.0.113.7")],
        count: 12,
        window_start: "2026-11-30T10:00:00Z".into(),
        window_end: "2026-11-30T10:10:00Z".into(),
        first_seen: "2026-11-30T10:00:05Z".into(),
        last_seen: "2026-11-30T10:09:58Z".into(),
        distinct: Some(12),
        evidence: vec![EvidenceView {
            time: "2026-11-30T10:00:05Z".into(),
            source: "entra_signin".into(),
            fields: vec![
                field("user", "test.user@example.invalid"),
                field("source_ip", "203.0.113.7"),
            ],
        }],
        evidence_total: 12,
        link: String::new(),
        rule_pack: "test".into(),
    }
}
