//! Per-force correlation: detection matches feed sliding event-time windows per (rule, group).
//!
//! [`ForceState`] is the whole mutable state of one force. It is a pure function of the rule set
//! and the events applied in stream order: the runtime persists [`ForceState::take_changes`] in the
//! same atomic batch as the stream cursor, so a crash replays to exactly the same state and alerts.
//!
//! Semantics (decided and explained in `docs/correlation-semantics.md`):
//! - Windows slide on event time: a group considers the events with time in `[t - timespan, t]`,
//!   where `t` is the newest event time seen in the group.
//! - `event_count`/`value_count` fire when the count (distinct count) meets the condition;
//!   `temporal` when every referenced rule matched in the window, `temporal_ordered` when they
//!   matched in the listed order (the latest occurrence of the first rule starts a sequence).
//! - After firing, a group is suppressed until `t + suppress` (default: the timespan): matching
//!   events are still counted into the window but raise nothing, and the next alert of the group
//!   carries how many there were. Count windows and sequences restart empty after an alert.
//! - Events missing a group-by field (or the counted field of `value_count`) are not counted.
//! - Groups with nothing newer than `watermark - timespan` and no running suppression are removed.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::alert::{Alert, EvidenceRef, MAX_EVIDENCE, alert_id};
use crate::event::Event;
use crate::force::ForceId;
use crate::sigma::parse::CorrelationKind;
use crate::sigma::{CompiledCorrelation, Input, RuleSet};
use crate::state::{self, StateError};
use crate::time::format_ms;

/// One counted event in a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    t: i64,
    seq: u64,
    value: Option<String>,
}

/// The state of one (correlation, group) pair.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct GroupWindow {
    /// Counted events (count kinds), oldest first.
    entries: VecDeque<Entry>,
    /// Latest event per referenced rule (temporal kinds), in the rules' order.
    steps: Vec<Option<Entry>>,
    /// Quiet until this event time (inclusive) after an alert.
    suppress_until: Option<i64>,
    /// Matching events while quiet.
    suppressed: u64,
    /// `new_term`: values seen, and when the group was first seen (end of learning follows).
    seen: BTreeSet<String>,
    since: Option<i64>,
    /// `impossible_travel`: the previous sighting and its coordinates.
    last_place: Option<(Entry, f64, f64)>,
    /// Count kinds: occurrences of each value in `entries` (derived: rebuilt on load, not
    /// persisted), and the running sum of the numeric ones (persisted, so that a reload continues
    /// the exact same floating-point sum).
    #[serde(skip)]
    values: BTreeMap<String, u32>,
    sum: f64,
}

impl GroupWindow {
    /// Adds (`+1`) or removes (`-1`) an entry's value from the running tallies.
    fn tally(&mut self, e: &Entry, dir: i32) {
        let Some(v) = &e.value else { return };
        if let Ok(n) = v.trim().parse::<f64>() {
            self.sum += f64::from(dir) * n;
        }
        if dir > 0 {
            *self.values.entry(v.clone()).or_insert(0) += 1;
        } else if let Some(c) = self.values.get_mut(v) {
            *c -= 1;
            if *c == 0 {
                self.values.remove(v);
            }
        }
    }

    fn newest(&self) -> Option<i64> {
        let steps = self.steps.iter().flatten().map(|e| e.t).max();
        let place = self.last_place.as_ref().map(|(e, _, _)| e.t);
        self.entries
            .back()
            .map(|e| e.t)
            .max(steps)
            .max(place)
            .max(self.since)
    }

    fn is_idle(&self, now: i64) -> bool {
        self.entries.is_empty()
            && self.steps.iter().all(Option::is_none)
            && self.suppress_until.is_none_or(|u| u < now)
            && self.seen.is_empty()
            && self.last_place.is_none()
    }
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

/// What a firing group hands to the alert: its events, count, distinct count, measured value.
type Firing = (Vec<Entry>, u64, Option<u64>, Option<f64>);

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
                let mut win: GroupWindow = state::decode(v)?;
                for e in &win.entries {
                    if let Some(v) = &e.value {
                        *win.values.entry(v.clone()).or_insert(0) += 1;
                    }
                }
                s.groups.insert(id, win);
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
        // (rank, correlation, position of the input in its `inputs`): a correlation runs after
        // the correlations it counts, so that their firing on this event reaches it.
        let mut queue: BTreeSet<(usize, usize, usize)> = BTreeSet::new();
        let feed = |queue: &mut BTreeSet<(usize, usize, usize)>, c: usize, input: Input| {
            let corr = &rules.correlations()[c];
            for (pos, _) in corr.inputs.iter().enumerate().filter(|(_, x)| **x == input) {
                queue.insert((corr.rank, c, pos));
            }
        };
        for r in rules.matching(ev) {
            let rule = &rules.rules()[r];
            if rule.emits {
                out.push(detection_alert(rule.meta.clone(), force, seq, ev.time_ms));
            }
            for &c in rules.correlations_of(r) {
                feed(&mut queue, c, Input::Rule(r));
            }
        }
        while let Some((rank, c, pos)) = queue.pop_first() {
            let mut positions = vec![pos];
            while let Some(&(r2, c2, p2)) = queue.first() {
                if (r2, c2) != (rank, c) {
                    break;
                }
                positions.push(p2);
                queue.pop_first();
            }
            let corr = &rules.correlations()[c];
            if let Some(alert) = self.correlate(corr, &positions, force, seq, ev) {
                if corr.emits {
                    out.push(alert);
                }
                for &d in rules.correlations_of_correlation(c) {
                    feed(&mut queue, d, Input::Correlation(c));
                }
            }
        }
        self.check_silence(rules, force, out);
        if self.watermark_ms - self.last_sweep_ms >= SWEEP_EVERY_MS {
            self.expire(rules);
        }
    }

    /// Feeds one event, which matched the inputs at `positions` of `corr.inputs`, to its group;
    /// returns the alert if the correlation fires.
    fn correlate(
        &mut self,
        corr: &CompiledCorrelation,
        positions: &[usize],
        force: &ForceId,
        seq: u64,
        ev: &Event,
    ) -> Option<Alert> {
        let mut group = BTreeMap::new();
        let fields = &corr.group_fields[positions[0]];
        for (name, field) in corr.group_by.iter().zip(fields) {
            match ev.field(field).and_then(value_text) {
                Some(v) => group.insert(name.clone(), v),
                None => return None,
            };
        }
        let value = match &corr.field {
            Some(f)
                if !matches!(
                    corr.kind,
                    CorrelationKind::Temporal
                        | CorrelationKind::TemporalOrdered
                        | CorrelationKind::EventCount
                        | CorrelationKind::ImpossibleTravel
                ) =>
            {
                match ev.field(f).and_then(value_text) {
                    // Sums and averages count numeric values only.
                    Some(v)
                        if !matches!(
                            corr.kind,
                            CorrelationKind::ValueSum | CorrelationKind::ValueAvg
                        ) || v.trim().parse::<f64>().is_ok() =>
                    {
                        Some(v)
                    }
                    _ => return None,
                }
            }
            _ => None,
        };
        let key = group_key(&group);
        let id = GroupId {
            rule: corr.meta.id.clone(),
            key,
        };
        let t = ev.time_ms;
        let current = value.clone();
        let entry = Entry { t, seq, value };
        let win = self.groups.entry(id.clone()).or_default();
        let quiet = win.suppress_until.is_some_and(|u| t <= u);
        if quiet {
            win.suppressed += 1;
        }
        let fired: Option<Firing> = match corr.kind {
            CorrelationKind::EventCount
            | CorrelationKind::ValueCount
            | CorrelationKind::ValueSum
            | CorrelationKind::ValueAvg
            | CorrelationKind::ValuePercentile => {
                // Insert in event-time order (stable for equal times: stream order).
                let pos = win
                    .entries
                    .iter()
                    .rposition(|e| e.t <= t)
                    .map_or(0, |p| p + 1);
                win.tally(&entry, 1);
                win.entries.insert(pos, entry);
                let newest = win.entries.back().map_or(t, |e| e.t);
                while win
                    .entries
                    .front()
                    .is_some_and(|e| e.t < newest - corr.timespan_ms)
                {
                    if let Some(old) = win.entries.pop_front() {
                        win.tally(&old, -1);
                    }
                }
                // Counts, distinct values and sums are kept up to date incrementally: O(1) per
                // event whatever the window holds.
                let events = win.entries.len() as u64;
                let distinct =
                    (corr.kind == CorrelationKind::ValueCount).then_some(win.values.len() as u64);
                let measured = match corr.kind {
                    CorrelationKind::ValueSum => Some(win.sum),
                    CorrelationKind::ValueAvg => Some(win.sum / events.max(1) as f64),
                    CorrelationKind::ValuePercentile => {
                        let same = current.as_ref().and_then(|v| win.values.get(v)).copied();
                        Some(100.0 * f64::from(same.unwrap_or(0)) / events.max(1) as f64)
                    }
                    _ => None,
                };
                let m = measured.unwrap_or(distinct.unwrap_or(events) as f64);
                (!quiet && corr.holds(m)).then(|| {
                    let all: Vec<Entry> = win.entries.drain(..).collect();
                    win.values.clear();
                    win.sum = 0.0;
                    (all, events, distinct, measured)
                })
            }
            CorrelationKind::SilentFeed => {
                // Remember the latest event; any event re-arms the watch.
                win.entries.clear();
                win.entries.push_back(entry);
                win.suppress_until = None;
                win.suppressed = 0;
                None
            }
            CorrelationKind::NewTerm => {
                let v = entry.value.clone().unwrap_or_default();
                let since = *win.since.get_or_insert(t);
                let learning = t < since + corr.detector.learning_ms;
                let new = win.seen.insert(v);
                (new && !learning && !quiet).then(|| (vec![entry], 1, None, None))
            }
            CorrelationKind::ImpossibleTravel => {
                let coord = |f: &Option<String>| {
                    f.as_deref()
                        .and_then(|f| ev.field(f))
                        .and_then(|v| v.as_f64().or_else(|| v.as_str()?.trim().parse().ok()))
                };
                let (Some(lat), Some(lon)) = (
                    coord(&corr.detector.latitude),
                    coord(&corr.detector.longitude),
                ) else {
                    return None;
                };
                let previous = win.last_place.replace((entry.clone(), lat, lon));
                previous.and_then(|(prev, plat, plon)| {
                    let km = haversine_km(plat, plon, lat, lon);
                    let hours = ((t - prev.t).abs() as f64 / 3_600_000.0).max(1.0 / 60.0);
                    let fast =
                        km >= corr.detector.min_distance_km && km / hours > corr.detector.speed_kmh;
                    (fast && !quiet).then(|| {
                        let mut both = vec![prev, entry.clone()];
                        both.sort_by_key(|e| (e.t, e.seq));
                        (both, 2, None, Some((km / hours).round()))
                    })
                })
            }
            CorrelationKind::Temporal | CorrelationKind::TemporalOrdered => {
                if win.steps.len() != corr.inputs.len() {
                    win.steps = vec![None; corr.inputs.len()];
                }
                let ordered = corr.kind == CorrelationKind::TemporalOrdered;
                for &p in positions {
                    if !ordered {
                        win.steps[p] = Some(entry.clone());
                    } else if p == 0 {
                        // The latest occurrence of the first rule starts the sequence.
                        win.steps[0] = Some(entry.clone());
                        win.steps[1..].iter_mut().for_each(|s| *s = None);
                    } else if win.steps[p - 1]
                        .as_ref()
                        .is_some_and(|prev| prev.seq != seq)
                    {
                        win.steps[p] = Some(entry.clone());
                        win.steps[p + 1..].iter_mut().for_each(|s| *s = None);
                    }
                }
                let oldest_allowed = t - corr.timespan_ms;
                if ordered {
                    // A sequence older than the timespan is abandoned.
                    if win.steps[0].as_ref().is_some_and(|s| s.t < oldest_allowed) {
                        win.steps.iter_mut().for_each(|s| *s = None);
                    }
                } else {
                    for s in &mut win.steps {
                        if s.as_ref().is_some_and(|e| e.t < oldest_allowed) {
                            *s = None;
                        }
                    }
                }
                let complete = win.steps.iter().all(Option::is_some);
                (!quiet && complete).then(|| {
                    let mut all: Vec<Entry> =
                        win.steps.iter_mut().filter_map(Option::take).collect();
                    all.sort_by_key(|e| (e.t, e.seq));
                    let n = all.len() as u64;
                    (all, n, None, None)
                })
            }
        };
        let mut alert = None;
        if let Some((entries, count, distinct, measured)) = fired {
            let newest = entries.iter().map(|e| e.t).max().unwrap_or(t).max(t);
            let first = entries.first().map_or(t, |e| e.t);
            let first_seq = entries.first().map_or(seq, |e| e.seq);
            let start = newest - corr.timespan_ms;
            let skip = entries.len().saturating_sub(MAX_EVIDENCE);
            let evidence = entries
                .iter()
                .skip(skip)
                .map(|e| EvidenceRef {
                    seq: e.seq,
                    time: format_ms(e.t),
                    file: None,
                    line: None,
                })
                .collect();
            alert = Some(Alert {
                id: alert_id(&corr.meta.id, force, &id.key, start, newest, first_seq),
                force: force.clone(),
                rule: corr.meta.clone(),
                group,
                window_start: format_ms(start),
                window_end: format_ms(newest),
                count,
                first_seen: format_ms(first),
                last_seen: format_ms(newest),
                distinct,
                measured,
                suppressed: std::mem::take(&mut win.suppressed),
                evidence,
                node: String::new(),
                epoch: 0,
            });
            win.suppress_until = Some(newest + corr.suppress_ms);
        }
        if win.is_idle(self.watermark_ms) {
            self.groups.remove(&id);
        }
        self.dirty.insert(id);
        alert
    }

    /// Raises `silent_feed` alerts: a feed whose rules matched nothing for `timespan` while the
    /// force's event time (its watermark, moved by its other sources) went on. One alert per
    /// silence; the next matching event re-arms it. A feed never seen is not watched.
    fn check_silence(&mut self, rules: &RuleSet, force: &ForceId, out: &mut Vec<Alert>) {
        for corr in rules
            .correlations()
            .iter()
            .filter(|c| c.kind == CorrelationKind::SilentFeed)
        {
            let id = GroupId {
                rule: corr.meta.id.clone(),
                key: String::new(),
            };
            let Some(win) = self.groups.get_mut(&id) else {
                continue;
            };
            let Some(last) = win.entries.back().cloned() else {
                continue;
            };
            let silent_from = last.t + corr.timespan_ms;
            if self.watermark_ms <= silent_from || win.suppress_until == Some(i64::MAX) {
                continue;
            }
            win.suppress_until = Some(i64::MAX);
            self.dirty.insert(id);
            let alert = Alert {
                id: alert_id(&corr.meta.id, force, "", last.t, silent_from, last.seq),
                force: force.clone(),
                rule: corr.meta.clone(),
                group: BTreeMap::new(),
                window_start: format_ms(last.t),
                window_end: format_ms(silent_from),
                count: 0,
                first_seen: format_ms(last.t),
                last_seen: format_ms(last.t),
                distinct: None,
                measured: None,
                suppressed: 0,
                evidence: vec![EvidenceRef {
                    seq: last.seq,
                    time: format_ms(last.t),
                    file: None,
                    line: None,
                }],
                node: String::new(),
                epoch: 0,
            };
            if corr.emits {
                out.push(alert);
            }
        }
    }

    /// Removes groups whose newest event is older than their rule's timespan before the watermark.
    pub fn expire(&mut self, rules: &RuleSet) {
        self.last_sweep_ms = self.watermark_ms;
        let spans: HashMap<&str, i64> = rules
            .correlations()
            .iter()
            // A silent feed's last event is what the watch needs: never expire it.
            .map(|c| {
                let span = match c.kind {
                    CorrelationKind::SilentFeed => i64::MAX / 4,
                    _ => c.timespan_ms,
                };
                (c.meta.id.as_str(), span)
            })
            .collect();
        let wm = self.watermark_ms;
        let dirty = &mut self.dirty;
        self.groups.retain(|id, win| {
            let span = spans.get(id.rule.as_str()).copied().unwrap_or(0);
            let keep = win.newest().is_some_and(|t| t >= wm - span)
                || win.suppress_until.is_some_and(|u| u >= wm);
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

/// Great-circle distance in kilometres.
fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0 * a.sqrt().asin()
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
        measured: None,
        suppressed: 0,
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
    use serde_json::{Value, json};

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
    fn brute_force_fires_then_is_suppressed_then_rearms() {
        let rs = rules();
        // 12 failures 10 s apart, then 6 more after the 10-minute suppression has run out.
        let mut evs: Vec<_> = (0..12)
            .map(|i| fail("bob", "1.1.1.1", T0 + i * 10_000))
            .collect();
        evs.extend((0..6).map(|i| fail("bob", "1.1.1.1", T0 + 1_000_000 + i * 10_000)));
        let alerts = run(&rs, &evs);
        let brute: Vec<_> = alerts.iter().filter(|a| a.rule.id == "brute").collect();
        assert_eq!(brute.len(), 2, "one alert per attack burst: {brute:#?}");
        assert_eq!(brute[0].count, 5);
        assert_eq!(brute[0].suppressed, 0);
        assert_eq!(brute[0].group.get("user").unwrap(), "bob");
        assert_eq!(
            brute[0].evidence.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        // Failures 6..12 fell in the suppression (quiet until the 5th + 10 min); the window slid
        // past them, refilled from the 13th, and the next alert reports the 7 suppressed.
        assert_eq!(brute[1].suppressed, 7);
        assert_eq!(brute[1].evidence.first().map(|e| e.seq), Some(13));
        assert_ne!(brute[0].id, brute[1].id);
        assert!(
            alerts.iter().all(|a| a.rule.id != "failed"),
            "referenced rule is silent"
        );
    }

    const SEQUENCES: &str = r#"
title: failed
id: failed
logsource: {product: azure, service: signinlogs}
detection: {s: {resultType: 50126}, condition: s}
---
title: success
id: success
logsource: {product: azure, service: signinlogs}
detection: {s: {resultType: 0}, condition: s}
---
title: mfa denied
id: mfa
logsource: {product: azure, service: signinlogs}
detection: {s: {resultType: 500121}, condition: s}
---
title: failure then success
id: fail_then_success
correlation: {type: temporal_ordered, rules: [failed, success], group-by: [user], timespan: 5m}
level: high
---
title: failure and mfa denial, any order
id: fail_and_mfa
correlation: {type: temporal, rules: [failed, mfa], group-by: [user], timespan: 5m, suppress: 1h}
level: medium
"#;

    fn signin(user: &str, code: &str, t: i64) -> Event {
        Event::with_time(
            SourceKind::EntraSignin,
            t,
            json!({"resultType": code, "user": user, "ip": "1.1.1.1"}),
        )
    }

    fn sequences() -> RuleSet {
        let docs = parse_rules("s.yml", SEQUENCES)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let (rs, errs) = RuleSet::compile(docs);
        assert!(errs.is_empty(), "{errs:?}");
        rs
    }

    fn fired<'a>(alerts: &'a [Alert], id: &str) -> Vec<&'a Alert> {
        alerts.iter().filter(|a| a.rule.id == id).collect()
    }

    /// The specification's example of a correlation of a correlation: ten failed logons of a user
    /// within ten minutes (`event_count`, silent) followed by a successful logon of that user
    /// (`temporal_ordered`).
    #[test]
    fn spec_example_failed_logins_then_success() {
        let text = include_str!("../../tests/data/sigma-specification/spec_example_15.yml");
        let docs = parse_rules("spec_example_15.yml", text)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let (rs, errs) = RuleSet::compile(docs);
        assert!(errs.is_empty(), "{errs:?}");
        let logon = |user: &str, eid: u32, t: i64| {
            Event::with_time(
                SourceKind::WindowsSecurity,
                t,
                json!({"EventID": eid, "Channel": "Security", "User": user}),
            )
        };
        let mut evs: Vec<Event> = (0..10)
            .map(|i| logon("bob", 4625, T0 + i * 20_000))
            .collect();
        evs.push(logon("bob", 4624, T0 + 300_000));
        let alerts = run(&rs, &evs);
        assert_eq!(
            alerts.len(),
            1,
            "only the chained correlation alerts: {alerts:#?}"
        );
        let a = &alerts[0];
        assert_eq!(
            a.rule.title,
            "Correlation - Multiple Failed Logins Followed by Successful Login"
        );
        assert_eq!(a.group.get("User").map(String::as_str), Some("bob"));
        assert_eq!(
            a.evidence.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![10, 11],
            "the 10th failure completed the count"
        );
        // Nine failures are not enough; a success without failures neither; another user neither.
        let mut nine: Vec<Event> = (0..9)
            .map(|i| logon("bob", 4625, T0 + i * 20_000))
            .collect();
        nine.push(logon("bob", 4624, T0 + 300_000));
        assert!(run(&rs, &nine).is_empty());
        let mut other: Vec<Event> = (0..10)
            .map(|i| logon("bob", 4625, T0 + i * 20_000))
            .collect();
        other.push(logon("eve", 4624, T0 + 300_000));
        assert!(run(&rs, &other).is_empty());
    }

    /// Runs a specification example completed with an id (if it has none) and `base` rules over
    /// CloudTrail-shaped events (base rules match on the field `kind`), one second apart.
    fn spec_run(example: &str, base: &str, events: &[Value]) -> Vec<Alert> {
        let mut text = String::new();
        for (key, line) in [("title:", "title: example\n"), ("id:", "id: example\n")] {
            if !example.lines().any(|l| l.starts_with(key)) {
                text.push_str(line);
            }
        }
        text.push_str(example);
        text.push('\n');
        text.push_str(base);
        let docs = parse_rules("example.yml", &text)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let (rs, errs) = RuleSet::compile(docs);
        assert!(errs.is_empty(), "{errs:?}");
        let evs: Vec<Event> = events
            .iter()
            .enumerate()
            .map(|(i, b)| {
                Event::with_time(SourceKind::AwsCloudtrail, T0 + i as i64 * 1_000, b.clone())
            })
            .collect();
        run(&rs, &evs)
            .into_iter()
            .filter(|a| a.rule.kind != "detection")
            .collect()
    }

    /// A base detection rule named `name` (and with id `id`) matching events whose `kind` is `name`.
    fn base(id: &str, name: &str) -> String {
        format!(
            "---\ntitle: {name}\nid: {id}\nname: {name}\nlogsource: {{product: aws, service: cloudtrail}}\ndetection: {{s: {{kind: {name}}}, condition: s}}\n"
        )
    }

    #[test]
    fn spec_examples_count_and_value_types() {
        let ex = |n: &str| {
            std::fs::read_to_string(format!(
                "{}/../tests/data/sigma-specification/spec_example_{n}.yml",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap()
        };
        let failed = base("5638f7c0-ac70-491d-8465-2a65075e0d86", "failed");
        // 05: 100 failed logins on one computer within an hour.
        let evs: Vec<Value> = (0..100)
            .map(|_| json!({"kind": "failed", "ComputerName": "pc1"}))
            .collect();
        let a = spec_run(&ex("05"), &failed, &evs);
        assert_eq!((a.len(), a[0].count), (1, 100));
        assert!(spec_run(&ex("05"), &failed, &evs[..99]).is_empty());
        // 06: 100 distinct users failing on one computer/workstation within a day.
        let evs: Vec<Value> = (0..100)
            .map(|i| json!({"kind": "failed", "ComputerName": "pc1", "WorkstationName": "ws", "User": format!("u{i}")}))
            .collect();
        let a = spec_run(&ex("06"), &failed, &evs);
        assert_eq!((a.len(), a[0].distinct), (1, Some(100)));
        let same: Vec<Value> = (0..150).map(|_| json!({"kind": "failed", "ComputerName": "pc1", "WorkstationName": "ws", "User": "u"})).collect();
        assert!(
            spec_run(&ex("06"), &failed, &same).is_empty(),
            "one user, however many times"
        );
        // 09: more than 1,000,000 bytes sent to websites by one source/user within an hour.
        let site = base("website", "website_access");
        let evs: Vec<Value> = (0..3)
            .map(|_| json!({"kind": "website_access", "SourceIP": "10.0.0.1", "User": "bob", "bytes_sent": 400_000}))
            .collect();
        let a = spec_run(&ex("09"), &site, &evs);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].measured, Some(1_200_000.0));
        assert!(
            spec_run(&ex("09"), &site, &evs[..2]).is_empty(),
            "800,000 is not more than 1,000,000"
        );
        // 10: average BytesOut above 500.
        let r = base("rule_a_id", "rule_a");
        let small =
            json!({"kind": "rule_a", "SourceIP": "10.0.0.1", "User": "bob", "BytesOut": 100});
        let big =
            json!({"kind": "rule_a", "SourceIP": "10.0.0.1", "User": "bob", "BytesOut": 2000});
        let a = spec_run(&ex("10"), &r, &[small.clone(), big.clone()]);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].measured, Some(1050.0));
        assert!(spec_run(&ex("10"), &r, &[small.clone(), small]).is_empty());
        // 11: a process name that makes up at most 1% of a computer's process creations.
        let pc = base("pc", "process_creation");
        let mut evs: Vec<Value> = (0..199).map(|_| json!({"kind": "process_creation", "ComputerName": "pc1", "image": "svchost.exe"})).collect();
        evs.push(json!({"kind": "process_creation", "ComputerName": "pc1", "image": "evil.exe"}));
        let a = spec_run(&ex("11"), &pc, &evs);
        assert_eq!(a.len(), 1, "the rare image");
        assert_eq!(a[0].measured, Some(0.5));
        assert_eq!(a[0].evidence.last().map(|e| e.seq), Some(200));
    }

    #[test]
    fn spec_examples_temporal_types_and_aliases() {
        let ex = |n: &str| {
            std::fs::read_to_string(format!(
                "{}/../tests/data/sigma-specification/spec_example_{n}.yml",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap()
        };
        // 07: three recon commands by one user on one computer within 5 minutes, any order.
        let recon = [
            base("a", "recon_cmd_a"),
            base("b", "recon_cmd_b"),
            base("c", "recon_cmd_c"),
        ]
        .concat();
        let ev = |k: &str| json!({"kind": k, "ComputerName": "pc1", "User": "bob"});
        let a = spec_run(
            &ex("07"),
            &recon,
            &[ev("recon_cmd_c"), ev("recon_cmd_a"), ev("recon_cmd_b")],
        );
        assert_eq!((a.len(), a[0].count), (1, 3));
        assert!(spec_run(&ex("07"), &recon, &[ev("recon_cmd_c"), ev("recon_cmd_a")]).is_empty());
        // 08: many failed logins (a correlation the example leaves out) then a success.
        let chain = [
            base("f", "failed_login"),
            base("s", "successful_login"),
            "---\ntitle: many\nid: many\nname: many_failed_logins\ncorrelation: {type: event_count, rules: [failed_login], group-by: [User], timespan: 1h, condition: {gte: 3}}\n".to_string(),
        ]
        .concat();
        let ev = |k: &str| json!({"kind": k, "User": "bob"});
        let a = spec_run(
            &ex("08"),
            &chain,
            &[
                ev("failed_login"),
                ev("failed_login"),
                ev("failed_login"),
                ev("successful_login"),
            ],
        );
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].rule.kind, "temporal_ordered");
        assert!(
            spec_run(
                &ex("08"),
                &chain,
                &[
                    ev("successful_login"),
                    ev("failed_login"),
                    ev("failed_login"),
                    ev("failed_login")
                ]
            )
            .is_empty()
        );
        // 14: aliases: the two rules name the same addresses with different fields.
        let rules = [
            base("e", "internal_error"),
            base("n", "new_network_connection"),
        ]
        .concat();
        let err = json!({"kind": "internal_error", "destination": {"ip": "10.0.0.5"}, "source": {"ip": "8.8.8.8"}});
        let conn = json!({"kind": "new_network_connection", "source": {"ip": "10.0.0.5"}, "destination": {"ip": "8.8.8.8"}});
        let a = spec_run(&ex("14"), &rules, &[err.clone(), conn]);
        assert_eq!(a.len(), 1);
        assert_eq!(
            a[0].group.get("internal_ip").map(String::as_str),
            Some("10.0.0.5")
        );
        assert_eq!(
            a[0].group.get("remote_ip").map(String::as_str),
            Some("8.8.8.8")
        );
        let other = json!({"kind": "new_network_connection", "source": {"ip": "10.0.0.6"}, "destination": {"ip": "8.8.8.8"}});
        assert!(
            spec_run(&ex("14"), &rules, &[err, other]).is_empty(),
            "different internal address"
        );
        // 01 is an illustration without a type: rejected with that reason.
        let r = parse_rules("01.yml", &ex("01"));
        assert!(
            r[0].as_ref()
                .unwrap_err()
                .to_string()
                .contains("without `type`")
        );
    }

    const DETECTORS: &str = r#"
title: success
id: success
logsource: {product: azure, service: signinlogs}
detection: {s: {resultType: 0}, condition: s}
---
title: new country
id: new_country
correlation: {type: new_term, rules: [success], group-by: [user], field: country, learning: 1d}
level: medium
---
title: impossible travel
id: travel
correlation: {type: impossible_travel, rules: [success], group-by: [user], latitude: lat, longitude: lon, speed: 900, min_distance: 300}
level: high
"#;

    fn at(user: &str, country: &str, lat: f64, lon: f64, t: i64) -> Event {
        Event::with_time(
            SourceKind::EntraSignin,
            t,
            json!({"resultType": "0", "user": user, "country": country, "lat": lat, "lon": lon}),
        )
    }

    fn detectors() -> RuleSet {
        let docs = parse_rules("d.yml", DETECTORS)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let (rs, errs) = RuleSet::compile(docs);
        assert!(errs.is_empty(), "{errs:?}");
        rs
    }

    const DAY: i64 = 86_400_000;
    const LONDON: (f64, f64) = (51.507, -0.128);
    const MANCHESTER: (f64, f64) = (53.480, -2.242);
    const MOSCOW: (f64, f64) = (55.756, 37.617);

    #[test]
    fn new_term_learns_then_alerts_once_per_new_value() {
        let rs = detectors();
        let evs = [
            at("bob", "GB", LONDON.0, LONDON.1, T0),
            at("bob", "FR", LONDON.0, LONDON.1, T0 + DAY / 2), // learning: FR joins the baseline
            at("bob", "GB", LONDON.0, LONDON.1, T0 + 2 * DAY),
            at("bob", "FR", LONDON.0, LONDON.1, T0 + 3 * DAY), // known
            at("bob", "RU", LONDON.0, LONDON.1, T0 + 4 * DAY), // new: alert
            at("bob", "RU", LONDON.0, LONDON.1, T0 + 5 * DAY), // now known
            at("eve", "RU", LONDON.0, LONDON.1, T0 + 5 * DAY), // eve is still learning
        ];
        let alerts = run(&rs, &evs);
        let new: Vec<_> = fired(&alerts, "new_country");
        assert_eq!(new.len(), 1, "{new:#?}");
        assert_eq!(new[0].evidence[0].seq, 5);
        assert_eq!(new[0].group.get("user").map(String::as_str), Some("bob"));
    }

    #[test]
    fn impossible_travel_needs_distance_and_speed() {
        let rs = detectors();
        // London then Moscow (2,500 km) one hour later: ~2,500 km/h.
        let evs = [
            at("bob", "GB", LONDON.0, LONDON.1, T0),
            at("bob", "RU", MOSCOW.0, MOSCOW.1, T0 + 3_600_000),
        ];
        let alerts = run(&rs, &evs);
        let travel = fired(&alerts, "travel");
        assert_eq!(travel.len(), 1);
        assert_eq!(
            travel[0].evidence.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!(
            travel[0].measured.unwrap() > 2000.0,
            "{:?}",
            travel[0].measured
        );
        // London then Moscow 21 hours later is a trip, not impossible travel.
        let slow = [
            at("bob", "GB", LONDON.0, LONDON.1, T0),
            at("bob", "RU", MOSCOW.0, MOSCOW.1, T0 + 7 * DAY / 8),
        ];
        assert!(fired(&run(&rs, &slow), "travel").is_empty());
        // London then Manchester (260 km) ten minutes later: fast, but under the minimum distance
        // (VPN egress and geolocation noise).
        let near = [
            at("bob", "GB", LONDON.0, LONDON.1, T0),
            at("bob", "GB", MANCHESTER.0, MANCHESTER.1, T0 + 600_000),
        ];
        assert!(fired(&run(&rs, &near), "travel").is_empty());
    }

    #[test]
    fn silent_feed_alerts_once_per_silence_on_event_time() {
        let text = r#"
title: any aws
id: any_aws
logsource: {product: aws, service: cloudtrail}
detection: {s: {eventName|exists: true}, condition: s}
---
title: any signin
id: any_signin
logsource: {product: azure, service: signinlogs}
detection: {s: {resultType|exists: true}, condition: s}
---
title: CloudTrail feed silent
id: aws_silent
correlation: {type: silent_feed, rules: [any_aws], timespan: 1h}
level: high
"#;
        let docs = parse_rules("s.yml", text)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let (rs, errs) = RuleSet::compile(docs);
        assert!(errs.is_empty(), "{errs:?}");
        let aws =
            |t: i64| Event::with_time(SourceKind::AwsCloudtrail, t, json!({"eventName": "X"}));
        let sign =
            |t: i64| Event::with_time(SourceKind::EntraSignin, t, json!({"resultType": "0"}));
        let min = 60_000;
        // CloudTrail goes quiet at T0 while sign-ins go on: one alert once an hour has passed.
        let mut evs = vec![aws(T0)];
        evs.extend((1..=150).map(|i| sign(T0 + i * min)));
        let alerts: Vec<_> = run(&rs, &evs)
            .into_iter()
            .filter(|a| a.rule.id == "aws_silent")
            .collect();
        assert_eq!(alerts.len(), 1, "{alerts:#?}");
        assert_eq!(alerts[0].evidence[0].seq, 1, "the feed's last event");
        assert_eq!(alerts[0].window_end, format_ms(T0 + 60 * min));
        // The feed comes back, then goes quiet again: a second alert.
        evs.push(aws(T0 + 151 * min));
        evs.extend((152..=300).map(|i| sign(T0 + i * min)));
        let alerts: Vec<_> = run(&rs, &evs)
            .into_iter()
            .filter(|a| a.rule.id == "aws_silent")
            .collect();
        assert_eq!(alerts.len(), 2);
        // A steady feed never alerts; a feed never seen is not watched.
        let steady: Vec<_> = (0..300)
            .map(|i| {
                if i % 30 == 0 {
                    aws(T0 + i * min)
                } else {
                    sign(T0 + i * min)
                }
            })
            .collect();
        assert!(run(&rs, &steady).iter().all(|a| a.rule.id != "aws_silent"));
        let never: Vec<_> = (0..300).map(|i| sign(T0 + i * min)).collect();
        assert!(run(&rs, &never).iter().all(|a| a.rule.id != "aws_silent"));
    }

    #[test]
    fn correlation_cycles_and_missing_references_are_rejected() {
        let text = r#"
title: a
id: a
correlation: {type: event_count, rules: [b], timespan: 1m, condition: {gte: 1}}
---
title: b
id: b
correlation: {type: event_count, rules: [a], timespan: 1m, condition: {gte: 1}}
---
title: c
id: c
correlation: {type: event_count, rules: [nothing], timespan: 1m, condition: {gte: 1}}
"#;
        let docs = parse_rules("c.yml", text)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let (rs, errs) = RuleSet::compile(docs);
        assert!(rs.correlations().is_empty());
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs.iter().any(|e| e.to_string().contains("cycle")));
        assert!(errs.iter().any(|e| e.to_string().contains("nothing")));
    }

    #[test]
    fn temporal_ordered_needs_the_order_and_the_timespan() {
        let rs = sequences();
        let ok = run(
            &rs,
            &[signin("bob", "50126", T0), signin("bob", "0", T0 + 60_000)],
        );
        let a = fired(&ok, "fail_then_success");
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].count, 2);
        assert_eq!(
            a[0].evidence.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2]
        );
        let reversed = run(
            &rs,
            &[signin("bob", "0", T0), signin("bob", "50126", T0 + 60_000)],
        );
        assert!(
            fired(&reversed, "fail_then_success").is_empty(),
            "wrong order"
        );
        let slow = run(
            &rs,
            &[signin("bob", "50126", T0), signin("bob", "0", T0 + 600_000)],
        );
        assert!(
            fired(&slow, "fail_then_success").is_empty(),
            "outside the timespan"
        );
        let other = run(
            &rs,
            &[signin("bob", "50126", T0), signin("eve", "0", T0 + 1_000)],
        );
        assert!(
            fired(&other, "fail_then_success").is_empty(),
            "different group"
        );
    }

    #[test]
    fn temporal_any_order_and_custom_suppression() {
        let rs = sequences();
        let evs = [
            signin("bob", "500121", T0),
            signin("bob", "50126", T0 + 1_000),
            // Within the 1 h suppression: counted, not raised.
            signin("bob", "500121", T0 + 600_000),
            signin("bob", "50126", T0 + 601_000),
        ];
        let alerts = run(&rs, &evs);
        let a = fired(&alerts, "fail_and_mfa");
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].evidence.len(), 2);
        let mut later = evs.to_vec();
        later.push(signin("bob", "500121", T0 + 7_200_000));
        later.push(signin("bob", "50126", T0 + 7_201_000));
        let alerts = run(&rs, &later);
        let a = fired(&alerts, "fail_and_mfa");
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].suppressed, 2);
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
