//! Every alert the force state raises is made here, from a [`Firing`]: detection matches, group
//! firings, silences and rate drops. The id is a UUIDv5 of rule id, force, group key, window and
//! the firing's discriminator (see [`alert_id`]), so a replay raises the same id.

use std::collections::BTreeMap;

use super::kind::Firing;
use crate::alert::{Alert, EvidenceRef, RuleRef, alert_id};
use crate::force::ForceId;
use crate::time::format_ms;

/// The alert of `rule` for `force` that `f` describes, for the group of canonical key `key`
/// (empty: no group) and group-by values `group`.
pub(crate) fn alert(
    rule: &RuleRef,
    force: &ForceId,
    key: &str,
    group: BTreeMap<String, String>,
    f: &Firing,
) -> Alert {
    Alert {
        id: alert_id(&rule.id, force, key, f.start, f.end, f.discriminator),
        force: force.clone(),
        rule: rule.clone(),
        group,
        window_start: format_ms(f.start),
        window_end: format_ms(f.end),
        count: f.count,
        first_seen: format_ms(f.first_seen),
        last_seen: format_ms(f.last_seen),
        distinct: f.distinct,
        measured: f.measured,
        suppressed: f.suppressed,
        evidence: f
            .evidence
            .iter()
            .map(|e| EvidenceRef {
                seq: e.seq,
                time: format_ms(e.t),
                file: None,
                line: None,
            })
            .collect(),
        node: String::new(),
        epoch: 0,
        rule_pack: String::new(),
    }
}
