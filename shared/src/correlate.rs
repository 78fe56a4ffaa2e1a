//! Per-force correlation: detection matches feed sliding event-time windows per (rule, group).
//!
//! [`ForceState`] is the whole mutable state of one force. It is a pure function of the rule set
//! and the events applied in stream order: the runtime persists [`ForceState::take_changes`] in the
//! same atomic batch as the stream cursor, so a crash replays to exactly the same state and alerts.
//!
//! Semantics (this spine's subset; the stateful correlation work extends them):
//! - Windows slide on event time: a group counts the events with time in `[t - timespan, t]`,
//!   where `t` is the newest event time seen in the group. The alert's window is that interval;
//!   `first_seen`/`last_seen` are the times of the oldest and newest events counted.
//! - After a correlation fires, its group's window is cleared, so the next alert needs a fresh
//!   set of events that meets the condition again.
//! - Events missing a group-by field (or the counted field of `value_count`) are not counted.
//! - Groups with no event newer than `watermark - timespan` are removed.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::alert::{Alert, EvidenceRef, MAX_EVIDENCE, alert_id};
use crate::event::Event;
use crate::force::ForceId;
use crate::sigma::parse::CorrelationKind;
use crate::sigma::{CompiledCorrelation, RuleSet};
use crate::state::{self, StateError};
use crate::time::format_ms;

/// One counted event in a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    t: i64,
    seq: u64,
    value: Option<String>,
}

/// The window of one (correlation, group) pair.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct GroupWindow {
    entries: VecDeque<Entry>,
}

/// Identifies one group: correlation rule id and canonical group key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct GroupId {
    rule: String,
    key: String,
}

impl GroupId {
    fn encode(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.rule.len() + 1 + self.key.len());
        k.extend_from_slice(self.rule.as_bytes());
        k.push(0);
        k.extend_from_slice(self.key.as_bytes());
        k
    }

    fn decode(bytes: &[u8]) -> Option<GroupId> {
        let zero = bytes.iter().position(|&b| b == 0)?;
        Some(GroupId {
            rule: String::from_utf8(bytes[..zero].to_vec()).ok()?,
            key: String::from_utf8(bytes[zero + 1..].to_vec()).ok()?,
        })
    }
}

/// A change to persist: key and new value, or `None` to delete.
pub type StateChange = (Vec<u8>, Option<Vec<u8>>);

/// The correlation state of one force.
#[derive(Debug, Default)]
pub struct ForceState {
    groups: HashMap<GroupId, GroupWindow>,
    dirty: BTreeSet<GroupId>,
    watermark_ms: i64,
    last_sweep_ms: i64,
}

/// How far the watermark must advance between two sweeps of expired groups.
const SWEEP_EVERY_MS: i64 = 60_000;

impl ForceState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds state from persisted entries (as written from [`ForceState::take_changes`]).
    /// Groups of rules no longer loaded are dropped and reported as deletions on the next
    /// [`ForceState::take_changes`].
    pub fn load<'a>(
        rules: &RuleSet,
        watermark_ms: i64,
        entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Result<Self, StateError> {
        let mut s = ForceState {
            watermark_ms,
            last_sweep_ms: watermark_ms,
            ..Default::default()
        };
        for (k, v) in entries {
            let Some(id) = GroupId::decode(k) else {
                return Err(StateError::Decode("malformed group key".into()));
            };
            if rules.correlations().iter().any(|c| c.meta.id == id.rule) {
                s.groups.insert(id, state::decode(v)?);
            } else {
                s.dirty.insert(id);
            }
        }
        Ok(s)
    }

    /// Newest event time applied so far.
    pub fn watermark_ms(&self) -> i64 {
        self.watermark_ms
    }

    /// Number of live groups.
    pub fn live_groups(&self) -> usize {
        self.groups.len()
    }

    /// Applies one event (stream sequence `seq`) and appends any alerts it raises to `out`.
    pub fn apply(
        &mut self,
        rules: &RuleSet,
        force: &ForceId,
        seq: u64,
        ev: &Event,
        out: &mut Vec<Alert>,
    ) {
        self.watermark_ms = self.watermark_ms.max(ev.time_ms);
        let mut corrs: Vec<usize> = Vec::new();
        for r in rules.matching(ev) {
            let rule = &rules.rules()[r];
            if rule.emits {
                out.push(detection_alert(rule.meta.clone(), force, seq, ev.time_ms));
            }
            corrs.extend_from_slice(rules.correlations_of(r));
        }
        corrs.sort_unstable();
        corrs.dedup();
        for c in corrs {
            self.count(&rules.correlations()[c], force, seq, ev, out);
        }
        if self.watermark_ms - self.last_sweep_ms >= SWEEP_EVERY_MS {
            self.expire(rules);
        }
    }

    fn count(
        &mut self,
        corr: &CompiledCorrelation,
        force: &ForceId,
        seq: u64,
        ev: &Event,
        out: &mut Vec<Alert>,
    ) {
        let mut group = BTreeMap::new();
        for f in &corr.group_by {
            match ev.field(f).and_then(value_text) {
                Some(v) => group.insert(f.clone(), v),
                None => return,
            };
        }
        let value = match (&corr.kind, &corr.field) {
            (CorrelationKind::ValueCount, Some(f)) => match ev.field(f).and_then(value_text) {
                Some(v) => Some(v),
                None => return,
            },
            _ => None,
        };
        let key = group_key(&group);
        let id = GroupId {
            rule: corr.meta.id.clone(),
            key,
        };
        let win = self.groups.entry(id.clone()).or_default();
        // Insert in event-time order (stable for equal times: stream order).
        let pos = win
            .entries
            .iter()
            .rposition(|e| e.t <= ev.time_ms)
            .map_or(0, |p| p + 1);
        win.entries.insert(
            pos,
            Entry {
                t: ev.time_ms,
                seq,
                value,
            },
        );
        let newest = win.entries.back().map_or(ev.time_ms, |e| e.t);
        while win
            .entries
            .front()
            .is_some_and(|e| e.t < newest - corr.timespan_ms)
        {
            win.entries.pop_front();
        }
        let events = win.entries.len() as u64;
        let distinct = match corr.kind {
            CorrelationKind::EventCount => None,
            CorrelationKind::ValueCount => Some(
                win.entries
                    .iter()
                    .filter_map(|e| e.value.as_deref())
                    .collect::<BTreeSet<_>>()
                    .len() as u64,
            ),
        };
        let measured = distinct.unwrap_or(events);
        if corr.holds(measured as f64) {
            let first = win.entries.front().map_or(ev.time_ms, |e| e.t);
            let start = newest - corr.timespan_ms;
            let first_seq = win.entries.front().map_or(seq, |e| e.seq);
            let skip = win.entries.len().saturating_sub(MAX_EVIDENCE);
            let evidence = win
                .entries
                .iter()
                .skip(skip)
                .map(|e| EvidenceRef {
                    seq: e.seq,
                    time: format_ms(e.t),
                    file: None,
                    line: None,
                })
                .collect();
            out.push(Alert {
                id: alert_id(&corr.meta.id, force, &id.key, start, newest, first_seq),
                force: force.clone(),
                rule: corr.meta.clone(),
                group,
                window_start: format_ms(start),
                window_end: format_ms(newest),
                count: events,
                first_seen: format_ms(first),
                last_seen: format_ms(newest),
                distinct,
                evidence,
                node: String::new(),
                epoch: 0,
            });
            win.entries.clear();
        }
        if win.entries.is_empty() {
            self.groups.remove(&id);
        }
        self.dirty.insert(id);
    }

    /// Removes groups whose newest event is older than their rule's timespan before the watermark.
    pub fn expire(&mut self, rules: &RuleSet) {
        self.last_sweep_ms = self.watermark_ms;
        let spans: HashMap<&str, i64> = rules
            .correlations()
            .iter()
            .map(|c| (c.meta.id.as_str(), c.timespan_ms))
            .collect();
        let wm = self.watermark_ms;
        let dirty = &mut self.dirty;
        self.groups.retain(|id, win| {
            let span = spans.get(id.rule.as_str()).copied().unwrap_or(0);
            let keep = win.entries.back().is_some_and(|e| e.t >= wm - span);
            if !keep {
                dirty.insert(id.clone());
            }
            keep
        });
    }

    /// Changes since the last call, to persist atomically with the stream cursor.
    pub fn take_changes(&mut self) -> Vec<StateChange> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|id| {
                let v = self.groups.get(&id).map(state::encode);
                (id.encode(), v)
            })
            .collect()
    }
}

/// Text of a field value for grouping and distinct counting.
fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Canonical group key: `field=value` pairs in field order, separated by U+001F.
fn group_key(group: &BTreeMap<String, String>) -> String {
    let mut k = String::new();
    for (i, (f, v)) in group.iter().enumerate() {
        if i > 0 {
            k.push('\u{1f}');
        }
        k.push_str(f);
        k.push('=');
        k.push_str(v);
    }
    k
}

fn detection_alert(rule: crate::alert::RuleRef, force: &ForceId, seq: u64, t: i64) -> Alert {
    Alert {
        id: alert_id(&rule.id, force, "", t, t, seq),
        force: force.clone(),
        rule,
        group: BTreeMap::new(),
        window_start: format_ms(t),
        window_end: format_ms(t),
        count: 1,
        first_seen: format_ms(t),
        last_seen: format_ms(t),
        distinct: None,
        evidence: vec![EvidenceRef {
            seq,
            time: format_ms(t),
            file: None,
            line: None,
        }],
        node: String::new(),
        epoch: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigma::parse_rules;
    use crate::source::SourceKind;
    use serde_json::json;

    const RULES: &str = r#"
title: failed
id: failed
logsource: {product: azure, service: signinlogs}
detection: {s: {resultType: 50126}, condition: s}
---
title: brute force
id: brute
correlation: {type: event_count, rules: failed, group-by: [user], timespan: 10m, condition: {gte: 5}}
level: high
---
title: spray
id: spray
correlation: {type: value_count, rules: failed, group-by: [ip], timespan: 30m, condition: {gte: 4, field: user}}
level: high
---
title: legacy
id: legacy
logsource: {product: azure, service: signinlogs}
detection: {s: {client: IMAP4}, condition: s}
level: medium
"#;

    fn rules() -> RuleSet {
        let docs = parse_rules("t.yml", RULES)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let (rs, errs) = RuleSet::compile(docs);
        assert!(errs.is_empty(), "{errs:?}");
        rs
    }

    const T0: i64 = 1_709_287_200_000;

    fn fail(user: &str, ip: &str, t: i64) -> Event {
        Event::with_time(
            SourceKind::EntraSignin,
            t,
            json!({"resultType": "50126", "user": user, "ip": ip}),
        )
    }

    fn run(rs: &RuleSet, evs: &[Event]) -> Vec<Alert> {
        let kent = ForceId::new("kent").unwrap();
        let mut st = ForceState::new();
        let mut out = Vec::new();
        for (i, e) in evs.iter().enumerate() {
            st.apply(rs, &kent, i as u64 + 1, e, &mut out);
        }
        out
    }

    #[test]
    fn brute_force_fires_once_per_window_fill() {
        let rs = rules();
        let evs: Vec<_> = (0..12)
            .map(|i| fail("bob", "1.1.1.1", T0 + i * 10_000))
            .collect();
        let alerts = run(&rs, &evs);
        let brute: Vec<_> = alerts.iter().filter(|a| a.rule.id == "brute").collect();
        assert_eq!(brute.len(), 2, "12 failures fire at the 5th and 10th");
        assert_eq!(brute[0].count, 5);
        assert_eq!(brute[0].group.get("user").unwrap(), "bob");
        assert_eq!(
            brute[0].evidence.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        assert_ne!(brute[0].id, brute[1].id);
        assert!(
            alerts.iter().all(|a| a.rule.id != "failed"),
            "referenced rule is silent"
        );
    }

    #[test]
    fn slow_failures_do_not_fire() {
        let rs = rules();
        let evs: Vec<_> = (0..20)
            .map(|i| fail("bob", "1.1.1.1", T0 + i * 3_600_000))
            .collect();
        assert!(run(&rs, &evs).iter().all(|a| a.rule.id != "brute"));
    }

    #[test]
    fn spray_counts_distinct_users() {
        let rs = rules();
        let mut evs: Vec<_> = (0..3).map(|i| fail("same", "9.9.9.9", T0 + i)).collect();
        assert!(run(&rs, &evs).iter().all(|a| a.rule.id != "spray"));
        evs.extend((0..4).map(|i| fail(&format!("u{i}"), "9.9.9.9", T0 + 100 + i)));
        let spray: Vec<_> = run(&rs, &evs)
            .into_iter()
            .filter(|a| a.rule.id == "spray")
            .collect();
        assert_eq!(spray.len(), 1);
        assert_eq!(spray[0].distinct, Some(4));
    }

    #[test]
    fn detections_alert_per_event_and_missing_group_fields_are_skipped() {
        let rs = rules();
        let e = Event::with_time(
            SourceKind::EntraSignin,
            T0,
            json!({"client": "imap4", "resultType": 50126}),
        );
        let alerts = run(&rs, &[e.clone(), e]);
        assert_eq!(alerts.len(), 2);
        assert!(alerts.iter().all(|a| a.rule.id == "legacy"));
        assert_ne!(
            alerts[0].id, alerts[1].id,
            "distinct events give distinct ids"
        );
    }

    #[test]
    fn persisted_state_resumes_identically() {
        let rs = rules();
        let kent = ForceId::new("kent").unwrap();
        let evs: Vec<_> = (0..9)
            .map(|i| fail("bob", "1.1.1.1", T0 + i * 1000))
            .collect();
        let whole = run(&rs, &evs);
        // Apply the first 3, persist, reload, apply the rest.
        let mut st = ForceState::new();
        let mut out = Vec::new();
        let mut store: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for (i, e) in evs.iter().enumerate().take(3) {
            st.apply(&rs, &kent, i as u64 + 1, e, &mut out);
        }
        for (k, v) in st.take_changes() {
            match v {
                Some(v) => store.insert(k, v),
                None => store.remove(&k),
            };
        }
        let mut st = ForceState::load(
            &rs,
            st.watermark_ms(),
            store.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
        )
        .unwrap();
        for (i, e) in evs.iter().enumerate().skip(3) {
            st.apply(&rs, &kent, i as u64 + 1, e, &mut out);
        }
        assert_eq!(out, whole);
    }

    #[test]
    fn expired_groups_are_removed() {
        let rs = rules();
        let kent = ForceId::new("kent").unwrap();
        let mut st = ForceState::new();
        let mut out = Vec::new();
        st.apply(&rs, &kent, 1, &fail("bob", "1.1.1.1", T0), &mut out);
        assert_eq!(st.live_groups(), 2);
        st.take_changes();
        st.apply(
            &rs,
            &kent,
            2,
            &fail("eve", "2.2.2.2", T0 + 3_600_000),
            &mut out,
        );
        assert_eq!(st.live_groups(), 2, "bob's groups expired, eve's are live");
        let deleted = st
            .take_changes()
            .into_iter()
            .filter(|(_, v)| v.is_none())
            .count();
        assert_eq!(deleted, 2);
    }
}
