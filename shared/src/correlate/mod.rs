//! Per-force correlation: detection matches feed sliding event-time windows per (rule, group).
//!
//! [`ForceState`] is the whole mutable state of one force. It is a pure function of the rule set,
//! the allowed lateness and the events applied in stream order: the runtime persists
//! [`ForceState::take_changes`] in the same atomic batch as the stream cursor, so a crash replays
//! to exactly the same state and alerts.
//!
//! Semantics (decided and explained in `docs/correlation-semantics.md`):
//! - Detection alerts are raised as each event arrives. Events that feed correlations wait in a
//!   reorder buffer ([`pending`]) until the force's watermark (newest event time seen) is the
//!   lateness past them, and reach the correlations in (event time, sequence) order, so that any
//!   arrival order within the lateness gives the same alerts. Later events are counted as late
//!   and applied on arrival.
//! - Windows slide on event time, in time buckets ([`window`]): a group counts the events of the
//!   buckets overlapping `[t - timespan, t]`, `t` being the newest event time of the group.
//! - After firing, a group is suppressed until `t + suppress` (default: the timespan): matching
//!   events are still counted but raise nothing, and the next alert of the group carries how many
//!   there were. Count windows and sequences restart empty after an alert.
//! - Events missing a group-by field (or the counted field of `value_count`) are not counted.
//! - Groups with nothing newer than `frontier - timespan` and no running suppression are removed.

mod pending;
mod window;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::alert::{Alert, EvidenceRef, alert_id};
use crate::event::Event;
use crate::force::ForceId;
use crate::sigma::parse::CorrelationKind;
use crate::sigma::{CompiledCorrelation, Input, RuleSet};
use crate::state::{self, StateError};
use crate::time::format_ms;
use pending::{PENDING_PREFIX, Pending, Sample};
pub use window::{BUCKETS_PER_WINDOW, EVIDENCE_KEPT};
use window::{GroupWindow, Seen};

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

/// Key of the force-level counters in the state keyspace.
const META_KEY: &[u8] = b"\x01m";

/// Force-level counters, persisted with the state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Meta {
    late: u64,
}

/// What a firing group hands to the alert: first event time, evidence, count, distinct count,
/// measured value.
type Firing = (Option<i64>, Vec<Seen>, u64, Option<u64>, Option<f64>);

/// A change to persist: key and new value, or `None` to delete.
pub type StateChange = (Vec<u8>, Option<Vec<u8>>);

/// The correlation state of one force.
#[derive(Debug, Default)]
pub struct ForceState {
    groups: HashMap<GroupId, GroupWindow>,
    dirty: HashSet<GroupId>,
    /// The reorder buffer, by (event time, sequence).
    pending: BTreeMap<Seen, Pending>,
    /// Pending events added (true) or released (false) since the last `take_changes`.
    pending_changes: BTreeMap<Seen, bool>,
    watermark_ms: i64,
    lateness_ms: i64,
    meta: Meta,
    meta_dirty: bool,
    /// The frontier's [`SWEEP_EVERY_MS`] period at the last sweep of expired groups (set on the
    /// first event): sweeps run when the frontier enters a new period, so that the same stream
    /// sweeps at the same events after a restart.
    sweep_period: Option<i64>,
}

/// Expired groups are swept each time the frontier enters a new period of this length.
const SWEEP_EVERY_MS: i64 = 60_000;

impl ForceState {
    /// An empty state with no allowed lateness (events reach correlations as they arrive).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the allowed lateness: events feeding correlations wait until the watermark is this
    /// far past them.
    pub fn with_lateness(mut self, lateness_ms: i64) -> Self {
        self.lateness_ms = lateness_ms.max(0);
        self
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
            ..Default::default()
        };
        for (k, v) in entries {
            if k == META_KEY {
                s.meta = state::decode(v)?;
                continue;
            }
            if k.starts_with(PENDING_PREFIX) {
                let p = Pending::decode(rules, v)?;
                if p.direct.is_empty() {
                    s.pending_changes.insert(p.at, false);
                } else {
                    s.pending.insert(p.at, p);
                }
                continue;
            }
            let Some(id) = GroupId::decode(k) else {
                return Err(StateError::Decode("malformed group key".into()));
            };
            if rules.correlations().iter().any(|c| c.meta.id == id.rule) {
                s.groups
                    .insert(id, GroupWindow::from_wire(state::decode(v)?));
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

    /// Event time up to which correlations have seen every on-time event: the watermark minus
    /// the lateness.
    pub fn frontier_ms(&self) -> i64 {
        self.watermark_ms.saturating_sub(self.lateness_ms)
    }

    /// Number of live groups.
    pub fn live_groups(&self) -> usize {
        self.groups.len()
    }

    /// Events waiting in the reorder buffer.
    pub fn pending_events(&self) -> usize {
        self.pending.len()
    }

    /// Events that arrived after the frontier had passed them (applied on arrival).
    pub fn late_events(&self) -> u64 {
        self.meta.late
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
        let matched: Vec<usize> = rules.matching(ev).collect();
        self.apply_matched(rules, force, seq, ev, &matched, out);
    }

    /// [`ForceState::apply`] for an event whose matching detection rules are already known.
    pub fn apply_matched(
        &mut self,
        rules: &RuleSet,
        force: &ForceId,
        seq: u64,
        ev: &Event,
        matched: &[usize],
        out: &mut Vec<Alert>,
    ) {
        let late = ev.time_ms < self.frontier_ms();
        if self.sweep_period.is_none() {
            self.sweep_period = Some(self.frontier_ms().div_euclid(SWEEP_EVERY_MS));
        }
        self.watermark_ms = self.watermark_ms.max(ev.time_ms);
        let mut direct = Vec::new();
        for &r in matched {
            let rule = &rules.rules()[r];
            if rule.emits {
                out.push(detection_alert(rule.meta.clone(), force, seq, ev.time_ms));
            }
            for &c in rules.correlations_of(r) {
                let corr = &rules.correlations()[c];
                for (pos, _) in corr
                    .inputs
                    .iter()
                    .enumerate()
                    .filter(|(_, x)| **x == Input::Rule(r))
                {
                    direct.push((c, pos));
                }
            }
        }
        if !direct.is_empty() {
            direct.sort_unstable();
            direct.dedup();
            let at = Seen { t: ev.time_ms, seq };
            let p = Pending::new(rules, at, direct, ev);
            if late {
                self.meta.late += 1;
                self.meta_dirty = true;
                self.feed(rules, force, &p, out);
            } else {
                self.pending_changes.insert(at, true);
                self.pending.insert(at, p);
            }
        }
        self.release(rules, force, self.frontier_ms(), out);
    }

    /// Releases every pending event (end of an offline input: nothing more will arrive).
    pub fn drain(&mut self, rules: &RuleSet, force: &ForceId, out: &mut Vec<Alert>) {
        self.release(rules, force, i64::MAX, out);
    }

    /// Feeds the pending events up to `upto` (event time) to their correlations, oldest first,
    /// then checks silent feeds and sweeps expired groups.
    fn release(&mut self, rules: &RuleSet, force: &ForceId, upto: i64, out: &mut Vec<Alert>) {
        while let Some(entry) = self.pending.first_entry() {
            if entry.key().t > upto {
                break;
            }
            let (at, p) = entry.remove_entry();
            if self.pending_changes.remove(&at) != Some(true) {
                self.pending_changes.insert(at, false);
            }
            self.feed(rules, force, &p, out);
        }
        let frontier = self.frontier_ms();
        self.check_silence(rules, force, frontier, out);
        if self
            .sweep_period
            .is_some_and(|p| p != frontier.div_euclid(SWEEP_EVERY_MS))
        {
            self.expire(rules);
        }
    }

    /// Runs one released event through its correlations, chained ones after the ones they count.
    fn feed(&mut self, rules: &RuleSet, force: &ForceId, p: &Pending, out: &mut Vec<Alert>) {
        // (rank, correlation, position of the input in its `inputs`): a correlation runs after
        // the correlations it counts, so that their firing on this event reaches it.
        let mut queue: BTreeSet<(usize, usize, usize)> = p
            .direct
            .iter()
            .map(|&(c, pos)| (rules.correlations()[c].rank, c, pos))
            .collect();
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
            let Some(sample) = p.sample(c, positions[0]) else {
                continue;
            };
            if let Some(alert) = self.correlate(corr, &positions, sample, force, p.at) {
                if corr.emits {
                    out.push(alert);
                }
                for &d in rules.correlations_of_correlation(c) {
                    let down = &rules.correlations()[d];
                    for (pos, _) in down
                        .inputs
                        .iter()
                        .enumerate()
                        .filter(|(_, x)| **x == Input::Correlation(c))
                    {
                        queue.insert((down.rank, d, pos));
                    }
                }
            }
        }
    }

    /// Feeds one event, which matched the inputs at `positions` of `corr.inputs`, to its group;
    /// returns the alert if the correlation fires.
    fn correlate(
        &mut self,
        corr: &CompiledCorrelation,
        positions: &[usize],
        sample: &Sample,
        force: &ForceId,
        at: Seen,
    ) -> Option<Alert> {
        let id = GroupId {
            rule: corr.meta.id.clone(),
            key: sample.key(),
        };
        let t = at.t;
        let current = sample.value.as_deref();
        let win = self.groups.entry(id.clone()).or_default();
        if corr.kind != CorrelationKind::SilentFeed && win.expired_at(t, corr.timespan_ms) {
            // Whether or not a sweep removed it yet, an expired group starts afresh.
            *win = GroupWindow::default();
        }
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
                let num = match corr.kind {
                    CorrelationKind::ValueSum | CorrelationKind::ValueAvg => {
                        current.and_then(|v| v.trim().parse::<f64>().ok())
                    }
                    _ => None,
                };
                let counted = win.counts.add(
                    corr.timespan_ms,
                    at,
                    current,
                    num,
                    corr.kind == CorrelationKind::ValuePercentile,
                );
                let tally = win.counts.tally(current);
                let events = tally.events;
                let distinct = (corr.kind == CorrelationKind::ValueCount).then_some(tally.distinct);
                let measured = match corr.kind {
                    CorrelationKind::ValueSum => Some(tally.sum),
                    CorrelationKind::ValueAvg => Some(tally.sum / events.max(1) as f64),
                    CorrelationKind::ValuePercentile => {
                        Some(100.0 * f64::from(tally.same) / events.max(1) as f64)
                    }
                    _ => None,
                };
                let m = measured.unwrap_or(distinct.unwrap_or(events) as f64);
                (counted && !quiet && corr.holds(m)).then(|| {
                    let (first, evidence) = win.counts.drain();
                    (first, evidence, events, distinct, measured)
                })
            }
            CorrelationKind::SilentFeed => {
                // Remember the latest event; any event re-arms the watch.
                if win.steps.first().copied().flatten().is_none_or(|s| s < at) {
                    win.steps = vec![Some(at)];
                }
                win.suppress_until = None;
                win.suppressed = 0;
                None
            }
            CorrelationKind::NewTerm => {
                // The latest event keeps the baseline alive (it expires `timespan` after it).
                match win.steps.first_mut() {
                    Some(Some(latest)) if *latest >= at => {}
                    Some(slot) => *slot = Some(at),
                    None => win.steps.push(Some(at)),
                }
                let v = current.unwrap_or_default().to_owned();
                let since = *win.since.get_or_insert(t);
                let learning = t < since + corr.detector.learning_ms;
                let new = win.seen.insert(v);
                (new && !learning && !quiet).then(|| (Some(t), vec![at], 1, None, None))
            }
            CorrelationKind::ImpossibleTravel => {
                let (lat, lon) = sample.place?;
                let previous = win.last_place.replace((at, lat, lon));
                previous.and_then(|(prev, plat, plon)| {
                    let km = haversine_km(plat, plon, lat, lon);
                    let hours = ((t - prev.t).abs() as f64 / 3_600_000.0).max(1.0 / 60.0);
                    let fast =
                        km >= corr.detector.min_distance_km && km / hours > corr.detector.speed_kmh;
                    (fast && !quiet).then(|| {
                        let mut both = vec![prev, at];
                        both.sort();
                        (Some(both[0].t), both, 2, None, Some((km / hours).round()))
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
                        win.steps[p] = Some(at);
                    } else if p == 0 {
                        // The latest occurrence of the first rule starts the sequence.
                        win.steps[0] = Some(at);
                        win.steps[1..].iter_mut().for_each(|s| *s = None);
                    } else if win.steps[p - 1]
                        .as_ref()
                        .is_some_and(|prev| prev.seq != at.seq)
                    {
                        win.steps[p] = Some(at);
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
                    let mut all: Vec<Seen> =
                        win.steps.iter_mut().filter_map(Option::take).collect();
                    all.sort();
                    let n = all.len() as u64;
                    (all.first().map(|s| s.t), all, n, None, None)
                })
            }
        };
        let mut alert = None;
        if let Some((first, evidence, count, distinct, measured)) = fired {
            let newest = evidence.iter().map(|e| e.t).max().unwrap_or(t).max(t);
            let first = first.unwrap_or(t);
            let first_seq = evidence.first().map_or(at.seq, |e| e.seq);
            let start = newest - corr.timespan_ms;
            alert = Some(Alert {
                id: alert_id(&corr.meta.id, force, &id.key, start, newest, first_seq),
                force: force.clone(),
                rule: corr.meta.clone(),
                group: sample.group.iter().cloned().collect(),
                window_start: format_ms(start),
                window_end: format_ms(newest),
                count,
                first_seen: format_ms(first),
                last_seen: format_ms(newest),
                distinct,
                measured,
                suppressed: std::mem::take(&mut win.suppressed),
                evidence: evidence
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
            });
            win.suppress_until = Some(newest + corr.suppress_ms);
        }
        if win.is_idle(t) {
            self.groups.remove(&id);
        }
        self.dirty.insert(id);
        alert
    }

    /// Raises `silent_feed` alerts: a feed whose rules matched nothing for `timespan` while the
    /// force's event time (its frontier, moved by its other sources) went on. One alert per
    /// silence; the next matching event re-arms it. A feed never seen is not watched.
    fn check_silence(&mut self, rules: &RuleSet, force: &ForceId, now: i64, out: &mut Vec<Alert>) {
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
            let Some(last) = win.steps.first().copied().flatten() else {
                continue;
            };
            let silent_from = last.t + corr.timespan_ms;
            if now <= silent_from || win.suppress_until == Some(i64::MAX) {
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

    /// Removes groups whose newest event is older than their rule's timespan before the
    /// frontier.
    pub fn expire(&mut self, rules: &RuleSet) {
        let frontier = self.frontier_ms();
        self.sweep_period = Some(frontier.div_euclid(SWEEP_EVERY_MS));
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
        let dirty = &mut self.dirty;
        self.groups.retain(|id, win| {
            let span = spans.get(id.rule.as_str()).copied().unwrap_or(0);
            let keep = !win.expired_at(frontier, span);
            if !keep {
                dirty.insert(id.clone());
            }
            keep
        });
    }

    /// Changes since the last call, to persist atomically with the stream cursor (sorted by
    /// key, so that the same events always give the same batch).
    pub fn take_changes(&mut self, rules: &RuleSet) -> Vec<StateChange> {
        let mut changes: Vec<StateChange> = self
            .dirty
            .drain()
            .map(|id| {
                let v = self.groups.get(&id).map(|w| state::encode(&w.to_wire()));
                (id.encode(), v)
            })
            .collect();
        for (at, put) in std::mem::take(&mut self.pending_changes) {
            let v = if put {
                self.pending.get(&at).map(|p| p.encode(rules))
            } else {
                None
            };
            changes.push((Pending::key(at), v));
        }
        if std::mem::take(&mut self.meta_dirty) {
            changes.push((META_KEY.to_vec(), Some(state::encode(&self.meta))));
        }
        changes.sort_by(|a, b| a.0.cmp(&b.0));
        changes
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
mod tests;
