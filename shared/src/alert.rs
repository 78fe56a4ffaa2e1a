//! The alert record: what a rule firing produces, and its deterministic id.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::force::ForceId;

/// Namespace of nmc alert ids (UUIDv5): fixed forever, changing it would re-key every alert.
pub const ALERT_NAMESPACE: Uuid = Uuid::from_u128(0x6e6d_6300_a1e7_5e1d_9b2c_0c5a_f0a1_e7ed);

/// Sigma rule level; also the last token of the alert subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Informational: no action expected.
    Informational,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical: act now.
    Critical,
}

impl Level {
    /// The lowercase name, as in Sigma and in subjects.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Informational => "informational",
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
            Level::Critical => "critical",
        }
    }
}

impl FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "informational" => Level::Informational,
            "low" => Level::Low,
            "medium" => Level::Medium,
            "high" => Level::High,
            "critical" => Level::Critical,
            other => {
                return Err(format!(
                    "unknown level `{other}`; use informational, low, medium, high or critical"
                ));
            }
        })
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rule that fired, copied into the alert so that the alert stands on its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRef {
    /// Sigma rule id.
    pub id: String,
    /// Sigma rule title.
    pub title: String,
    /// Severity.
    pub level: Level,
    /// ATT&CK and other tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// `detection` for single-event rules, else the correlation type (`event_count`, ...).
    pub kind: String,
    /// What the rule detects.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// What the force should do (nmc rule field `mitigation`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mitigation: String,
    /// Known benign causes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub falsepositives: Vec<String>,
    /// Further reading.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<String>,
}

/// One event behind an alert: its stream sequence (or input file and line) and event time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceRef {
    /// Sequence of the event in the `NMC_EVENTS_<force>` stream (0 when not from the stream).
    pub seq: u64,
    /// Event time (RFC 3339, UTC).
    pub time: String,
    /// Input file (offline `nmc hunt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// 1-based line (JSON lines) or record number (JSON arrays) in `file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
}

/// A rule firing: the record published to `nmc.alerts.<force>.<level>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Deterministic id (see [`alert_id`]); the `Nats-Msg-Id` of the published alert.
    pub id: Uuid,
    /// The force the events came from.
    pub force: ForceId,
    /// The rule that fired.
    pub rule: RuleRef,
    /// Group-by field values of a correlation (empty for single-event rules).
    pub group: BTreeMap<String, String>,
    /// Start of the rule's window (`window_end` minus the rule's timespan).
    pub window_start: String,
    /// End of the rule's window: event time of the newest event counted.
    pub window_end: String,
    /// Number of events counted in the window.
    pub count: u64,
    /// Event time of the oldest event counted.
    pub first_seen: String,
    /// Event time of the newest event counted.
    pub last_seen: String,
    /// Distinct values counted (for `value_count` rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distinct: Option<u64>,
    /// The measured value of `value_sum`, `value_avg` and `value_percentile` rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured: Option<f64>,
    /// Matching events of this group while it was suppressed after its previous alert.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub suppressed: u64,
    /// Events behind the alert, oldest first, at most [`MAX_EVIDENCE`].
    pub evidence: Vec<EvidenceRef>,
    /// Node that raised the alert (filled in by the runtime).
    pub node: String,
    /// Lease epoch (fencing token) the node held for the force when it raised the alert.
    pub epoch: u64,
    /// Version of the rule pack that raised it (filled in by the runtime; empty offline).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rule_pack: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Most evidence references carried by one alert; `count` still says how many events there were.
pub const MAX_EVIDENCE: usize = 100;

/// Computes the alert id: UUIDv5 of rule id, force, group key, window and a discriminator (the
/// first evidence sequence), so the same input always yields the same id on any node.
pub fn alert_id(
    rule_id: &str,
    force: &ForceId,
    group_key: &str,
    window_start_ms: i64,
    window_end_ms: i64,
    discriminator: u64,
) -> Uuid {
    let material = format!(
        "{rule_id}\u{1f}{force}\u{1f}{group_key}\u{1f}{window_start_ms}\u{1f}{window_end_ms}\u{1f}{discriminator}"
    );
    Uuid::new_v5(&ALERT_NAMESPACE, material.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_sensitive() {
        let kent = ForceId::new("kent").unwrap();
        let a = alert_id("r1", &kent, "user=bob", 1, 2, 7);
        assert_eq!(a, alert_id("r1", &kent, "user=bob", 1, 2, 7));
        assert_eq!(a.get_version_num(), 5);
        let essex = ForceId::new("essex").unwrap();
        for other in [
            alert_id("r2", &kent, "user=bob", 1, 2, 7),
            alert_id("r1", &essex, "user=bob", 1, 2, 7),
            alert_id("r1", &kent, "user=eve", 1, 2, 7),
            alert_id("r1", &kent, "user=bob", 0, 2, 7),
            alert_id("r1", &kent, "user=bob", 1, 3, 7),
            alert_id("r1", &kent, "user=bob", 1, 2, 8),
        ] {
            assert_ne!(a, other);
        }
        // Pinned: a change here re-keys every alert and breaks de-duplication across upgrades.
        assert_eq!(a.to_string(), "3b92467a-a94b-553e-84d6-17dfd8055aae");
    }

    #[test]
    fn levels() {
        assert_eq!("HIGH".parse::<Level>().unwrap(), Level::High);
        assert!("severe".parse::<Level>().is_err());
        assert!(Level::Critical > Level::Low);
    }
}
