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
//! - A group with nothing newer than `t - timespan` and no suppression running at the time `t` of
//!   its next event starts afresh; sweeps free the groups expired at the frontier.
//! - `silent_feed` watches a feed's silence, or with `below` its rate per period (`rate.rs`).

mod changes;
mod groups;
mod pending;
mod rate;
mod window;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::alert::{Alert, EvidenceRef, alert_id};
use crate::event::Event;
use crate::force::ForceId;
use crate::sigma::parse::CorrelationKind;
use crate::sigma::{CompiledCorrelation, Input, RuleSet};
use crate::state::{self, StateError};
use crate::time::format_ms;
pub use changes::StateChanges;
use groups::{GroupMap, KeyPrints, Print};
use pending::{PENDING_PREFIX, Pending, SEGMENT_PREFIX, Sample};
use rate::RateWatch;
pub use window::{BUCKETS_PER_WINDOW, EVIDENCE_KEPT};
use window::{GroupWindow, Seen, Wire};

// A group's key in the state keyspace: correlation rule id, a zero byte, canonical group key
// (written by `StateChanges::group`).

/// The key of segment `id`.
fn segment_key_vec(id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(SEGMENT_PREFIX.len() + 8);
    pending::segment_key(id, &mut k);
    k
}

/// Splits a group's state key into rule id and group key.
fn split_group_key(bytes: &[u8]) -> Option<(&str, &str)> {
    let zero = bytes.iter().position(|&b| b == 0)?;
    Some((
        std::str::from_utf8(&bytes[..zero]).ok()?,
        std::str::from_utf8(&bytes[zero + 1..]).ok()?,
    ))
}

/// Key of the force-level counters in the state keyspace.
const META_KEY: &[u8] = b"\x01m";

/// Key of the event time up to which the reorder buffer has released everything: events of
/// persisted segments at or before it are no longer pending.
const RELEASED_KEY: &[u8] = b"\x01f";

/// Force-level counters, persisted with the state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Meta {
    late: u64,
}

/// What a firing group hands to the alert: first event time, evidence, count, distinct count,
/// measured value.
type Firing = (Option<i64>, Vec<Seen>, u64, Option<u64>, Option<f64>);

/// A change to persist, owned: key and new value, or `None` to delete.
pub type StateChange = (Vec<u8>, Option<Vec<u8>>);

/// The correlation state of one force. It is used with the rule set it was loaded with (groups
/// and pending events refer to correlations by their index in it).
#[derive(Debug, Default)]
pub struct ForceState {
    /// Per correlation (index in the rule set): its live groups.
    groups: Vec<GroupMap>,
    /// Prints of group keys.
    prints: KeyPrints,
    /// Groups changed and removed since the last `take_changes`.
    touched: Touched,
    /// Persisted groups of correlations no longer loaded, deleted by the next `take_changes`.
    orphans: Vec<Vec<u8>>,
    /// The reorder buffer, by (event time, sequence).
    pending: BTreeMap<Seen, Pending>,
    /// Events buffered since the last `take_changes` (persisted then, together, as one
    /// segment, if still pending).
    added: Vec<Seen>,
    /// Persisted segments: id to the number of their events still pending. A segment is
    /// deleted once all its events are released.
    segments: BTreeMap<u64, u32>,
    /// Everything pending up to this event time has been released (none: nothing yet).
    released_upto: Option<i64>,
    /// `released_upto` as last persisted.
    released_persisted: Option<i64>,
    watermark_ms: i64,
    lateness_ms: i64,
    meta: Meta,
    meta_dirty: bool,
    /// The frontier's [`SWEEP_EVERY_MS`] period at the last sweep of expired groups (set on the
    /// first event): sweeps run when the frontier enters a new period, so that the same stream
    /// sweeps at the same events after a restart.
    sweep_period: Option<i64>,
    /// Scratch: the group key being looked up.
    key_buf: String,
    /// Scratch: the correlation queue of `feed`.
    queue_buf: Vec<(usize, usize, usize)>,
    /// Scratch: the (correlation, input position) pairs an event feeds directly.
    direct_buf: Vec<(usize, usize)>,
    /// Rate-drop alerts of the silent feed being fed (handed to `feed`).
    rate_alerts: Vec<Alert>,
}

/// The groups changed and removed since the last `take_changes`, their state keys already
/// listed in the changes being gathered (copied while the key is at hand).
#[derive(Debug, Default)]
struct Touched {
    changes: StateChanges,
    /// (correlation, print, index in `changes`). A live group is listed once (its window's
    /// `dirty` flag); a removed and re-created one may repeat.
    dirty: Vec<(usize, Print, usize)>,
    /// (correlation, print, index in `changes`): deleted unless re-created since.
    removed: Vec<(usize, Print, usize)>,
}

impl Touched {
    /// Lists group `key` of correlation `c` (rule id `rule`) as changed, once per batch.
    fn changed(&mut self, win: &mut GroupWindow, c: usize, print: Print, rule: &str, key: &str) {
        if !win.dirty {
            win.dirty = true;
            let i = self.changes.group(rule, key);
            self.dirty.push((c, print, i));
        }
    }

    /// Lists removed group `key` of correlation `c` (rule id `rule`) for deletion.
    fn removed(&mut self, c: usize, print: Print, rule: &str, key: &str) {
        let i = self.changes.group(rule, key);
        self.removed.push((c, print, i));
    }
}

/// An event reaching its correlations: at once (time and sequence, the pairs it feeds
/// directly, the event), or from the reorder buffer.
#[derive(Clone, Copy)]
enum Released<'a> {
    Now(Seen, &'a [(usize, usize)], &'a Event),
    Buffered(&'a Pending),
}

/// Sweeps of expired groups run each time the frontier enters a new period of this length; each
/// sweeps the correlations whose own period ([`sweep_every`]) changed too.
const SWEEP_EVERY_MS: i64 = 60_000;

/// How often the groups of `corr` are swept: a tenth of the timespan, at least every minute. A
/// sweep only frees memory (an expired group starts afresh on its next event anyway), so an
/// expired group may be held that much longer.
fn sweep_every(corr: &CompiledCorrelation) -> i64 {
    (corr.timespan_ms / 10).max(SWEEP_EVERY_MS)
}

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
        let mut segments = Vec::new();
        s.groups
            .resize_with(rules.correlations().len(), GroupMap::default);
        let index: HashMap<&str, usize> = rules
            .correlations()
            .iter()
            .enumerate()
            .map(|(i, c)| (c.meta.id.as_str(), i))
            .collect();
        for (k, v) in entries {
            if k == META_KEY {
                s.meta = state::decode(v)?;
                continue;
            }
            if k == RELEASED_KEY {
                s.released_upto = Some(state::decode(v)?);
                s.released_persisted = s.released_upto;
                continue;
            }
            if let Some(id) = pending::segment_id(k) {
                segments.push((id, pending::decode_segment(rules, v)?));
                continue;
            }
            if k.starts_with(PENDING_PREFIX) {
                // The first form, one key per event (deleted once released): rewritten as a
                // segment by the next `take_changes`.
                let p = Pending::decode(rules, v)?;
                if !p.direct.is_empty() {
                    s.added.push(p.at);
                    s.pending.insert(p.at, p);
                }
                s.orphans.push(k.to_vec());
                continue;
            }
            if k.starts_with(SEGMENT_PREFIX) {
                return Err(StateError::Decode("malformed segment key".into()));
            }
            let Some((rule, key)) = split_group_key(k) else {
                return Err(StateError::Decode("malformed group key".into()));
            };
            match index.get(rule) {
                Some(&c) => {
                    let win = GroupWindow::from_wire(key, Wire::decode(v)?);
                    s.groups[c].insert(s.prints.of(key), Box::new(win));
                }
                None => s.orphans.push(k.to_vec()),
            }
        }
        for (id, events) in segments {
            // Events released before the state was persisted stay in their segment until the
            // last one is: they are not pending.
            let mut live = 0;
            for mut p in events {
                if s.released_upto.is_none_or(|r| p.at.t > r) && !p.direct.is_empty() {
                    p.segment = Some(id);
                    s.pending.insert(p.at, p);
                    live += 1;
                }
            }
            if live == 0 {
                s.orphans.push(segment_key_vec(id));
            } else {
                s.segments.insert(id, live);
            }
        }
        Ok(s)
    }

    /// Newest event time applied so far.
    pub fn watermark_ms(&self) -> i64 {
        self.watermark_ms
    }

    /// Event time up to which correlations have seen every on-time event: the watermark minus
    /// the lateness, and never before what was already released (after a restart with a
    /// longer lateness, the longer lateness takes effect as the watermark catches up; events
    /// before the released time are late, not buffered again).
    pub fn frontier_ms(&self) -> i64 {
        let f = self.watermark_ms.saturating_sub(self.lateness_ms);
        self.released_upto.map_or(f, |r| f.max(r))
    }

    /// Number of live groups.
    pub fn live_groups(&self) -> usize {
        self.groups.iter().map(GroupMap::len).sum()
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
        let mut direct = std::mem::take(&mut self.direct_buf);
        direct.clear();
        for &r in matched {
            let rule = &rules.rules()[r];
            if rule.emits {
                out.push(detection_alert(rule.meta.clone(), force, seq, ev.time_ms));
            }
            for &c in rules.correlations_of(r) {
                let corr = &rules.correlations()[c];
                direct.extend(corr.positions_of(Input::Rule(r)).map(|pos| (c, pos)));
            }
        }
        if !direct.is_empty() {
            direct.sort_unstable();
            direct.dedup();
            let at = Seen { t: ev.time_ms, seq };
            // Late (applied on arrival), or it would be released at once and first: no need to
            // buffer it.
            let now = late || (self.pending.is_empty() && at.t <= self.frontier_ms());
            if late {
                self.meta.late += 1;
                self.meta_dirty = true;
            }
            if now {
                self.feed(rules, force, Released::Now(at, &direct, ev), out);
            } else {
                let p = Pending::new(rules, at, direct.clone(), ev);
                self.added.push(at);
                self.pending.insert(at, p);
            }
        }
        self.direct_buf = direct;
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
            let p = entry.remove();
            if let Some(id) = p.segment
                && let Some(live) = self.segments.get_mut(&id)
            {
                *live -= 1;
                if *live == 0 {
                    self.segments.remove(&id);
                    self.orphans.push(segment_key_vec(id));
                }
            }
            self.feed(rules, force, Released::Buffered(&p), out);
        }
        // Up to the frontier (a drain releases everything without moving it: the segments it
        // empties are deleted, and a hunt's next file is judged against the same frontier).
        let upto = upto.min(self.frontier_ms());
        self.released_upto = Some(self.released_upto.map_or(upto, |r| r.max(upto)));
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
    fn feed(&mut self, rules: &RuleSet, force: &ForceId, ev: Released, out: &mut Vec<Alert>) {
        let (at, direct) = match ev {
            Released::Now(at, direct, _) => (at, direct),
            Released::Buffered(p) => (p.at, p.direct.as_slice()),
        };
        // (rank, correlation, position of the input in its `inputs`), sorted and unique: a
        // correlation runs after the correlations it counts, so that their firing on this event
        // reaches it.
        let mut queue = std::mem::take(&mut self.queue_buf);
        queue.clear();
        queue.extend(
            direct
                .iter()
                .map(|&(c, pos)| (rules.correlations()[c].rank, c, pos)),
        );
        queue.sort_unstable();
        queue.dedup();
        let mut i = 0;
        while i < queue.len() {
            let (rank, c, _) = queue[i];
            let mut j = i + 1;
            while j < queue.len() && (queue[j].0, queue[j].1) == (rank, c) {
                j += 1;
            }
            let mut small = [0usize; 8];
            let many: Vec<usize>;
            let positions: &[usize] = if j - i <= small.len() {
                for (slot, q) in small.iter_mut().zip(&queue[i..j]) {
                    *slot = q.2;
                }
                &small[..j - i]
            } else {
                many = queue[i..j].iter().map(|q| q.2).collect();
                &many
            };
            i = j;
            let corr = &rules.correlations()[c];
            let extracted;
            let sample = match ev {
                Released::Buffered(p) => p.sample(c, positions[0]),
                Released::Now(_, _, e) => {
                    extracted = Sample::extract(corr, positions[0], e);
                    extracted.as_ref()
                }
            };
            let Some(sample) = sample else {
                continue;
            };
            let alert = self.correlate(c, corr, positions, sample, force, at);
            if !self.rate_alerts.is_empty() {
                if corr.emits {
                    out.append(&mut self.rate_alerts);
                }
                self.rate_alerts.clear();
            }
            if let Some(alert) = alert {
                if corr.emits {
                    out.push(alert);
                }
                for &d in rules.correlations_of_correlation(c) {
                    let down = &rules.correlations()[d];
                    for pos in down.positions_of(Input::Correlation(c)) {
                        // Downstream ranks are higher: the entry lands after the current one.
                        let entry = (down.rank, d, pos);
                        if let Err(at) = queue[i..].binary_search(&entry) {
                            queue.insert(i + at, entry);
                        }
                    }
                }
            }
        }
        self.queue_buf = queue;
    }

    /// Feeds one event, which matched the inputs at `positions` of `corr.inputs`, to its group;
    /// returns the alert if the correlation fires.
    fn correlate(
        &mut self,
        c: usize,
        corr: &CompiledCorrelation,
        positions: &[usize],
        sample: &Sample,
        force: &ForceId,
        at: Seen,
    ) -> Option<Alert> {
        let mut key = std::mem::take(&mut self.key_buf);
        sample.write_key(&corr.group_by, &mut key);
        let alert = self.correlate_group(c, corr, &key, positions, sample, force, at);
        self.key_buf = key;
        alert
    }

    /// [`ForceState::correlate`] for the group of canonical key `key`.
    #[allow(clippy::too_many_arguments)]
    fn correlate_group(
        &mut self,
        c: usize,
        corr: &CompiledCorrelation,
        key: &str,
        positions: &[usize],
        sample: &Sample,
        force: &ForceId,
        at: Seen,
    ) -> Option<Alert> {
        let t = at.t;
        let current = sample.value.as_deref();
        if self.groups.len() <= c {
            self.groups.resize_with(c + 1, GroupMap::default);
        }
        let print = self.prints.of(key);
        let groups = &mut self.groups[c];
        let win = groups.get_or_create(print, key);
        if corr.kind != CorrelationKind::SilentFeed && win.expired_at(t, corr.timespan_ms) {
            // Whether or not a sweep removed it yet, an expired group starts afresh.
            win.reset();
        }
        self.touched.changed(win, c, print, &corr.meta.id, key);
        let quiet = win.suppress_until.is_some_and(|u| t <= u);
        if quiet {
            win.suppressed = win.suppressed.saturating_add(1);
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
                // Only distinct counts and percentiles need the values themselves.
                let kept = match corr.kind {
                    CorrelationKind::ValueCount | CorrelationKind::ValuePercentile => current,
                    _ => None,
                };
                let counted = win.counts.add(
                    corr.timespan_ms,
                    at,
                    kept,
                    num,
                    corr.kind == CorrelationKind::ValuePercentile,
                );
                let tally = win.counts.tally(kept);
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
                    win.steps = Box::new([Some(at)]);
                }
                win.suppress_until = None;
                win.suppressed = 0;
                if let Some(below) = corr.detector.below {
                    // The periods before this event's are complete: judge them, then count it.
                    let span = corr.timespan_ms;
                    let period = t.div_euclid(span);
                    let watch = win
                        .extra_mut()
                        .rate
                        .get_or_insert_with(|| RateWatch::new(period));
                    let drops = watch.judge(period, corr.detector.baseline_ms / span, below);
                    watch.count(period, at);
                    self.rate_alerts
                        .extend(drops.iter().map(|d| rate_alert(corr, force, d)));
                }
                None
            }
            CorrelationKind::NewTerm => {
                // The latest event keeps the baseline alive (it expires `timespan` after it).
                match win.steps.first_mut() {
                    Some(Some(latest)) if *latest >= at => {}
                    Some(slot) => *slot = Some(at),
                    None => win.steps = Box::new([Some(at)]),
                }
                let x = win.extra_mut();
                let since = *x.since.get_or_insert(t);
                let learning = t < since + corr.detector.learning_ms;
                let v = current.unwrap_or_default();
                let new = !x.seen.contains(v) && x.seen.insert(v.to_owned());
                (new && !learning && !quiet).then(|| (Some(t), vec![at], 1, None, None))
            }
            CorrelationKind::ImpossibleTravel => {
                let (lat, lon) = sample.place?;
                let previous = win.extra_mut().last_place.replace((at, lat, lon));
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
                    win.steps = vec![None; corr.inputs.len()].into_boxed_slice();
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
                    for s in win.steps.iter_mut() {
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
                id: alert_id(&corr.meta.id, force, key, start, newest, first_seq),
                force: force.clone(),
                rule: corr.meta.clone(),
                group: corr
                    .group_by
                    .iter()
                    .cloned()
                    .zip(sample.group.iter().map(|g| g.to_string()))
                    .collect(),
                window_start: format_ms(start),
                window_end: format_ms(newest),
                count,
                first_seen: format_ms(first),
                last_seen: format_ms(newest),
                distinct,
                measured,
                suppressed: u64::from(std::mem::take(&mut win.suppressed)),
                evidence: evidence.iter().map(|e| evidence_ref(*e)).collect(),
                node: String::new(),
                epoch: 0,
                rule_pack: String::new(),
            });
            win.suppress_until = Some(newest + corr.suppress_ms);
        }
        if win.is_idle(t) {
            groups.remove(print);
            self.touched.removed(c, print, &corr.meta.id, key);
        }
        alert
    }

    /// Raises `silent_feed` alerts: a feed whose rules matched nothing for `timespan` while the
    /// force's event time (its frontier, moved by its other sources) went on. One alert per
    /// silence; the next matching event re-arms it. A feed never seen is not watched.
    fn check_silence(&mut self, rules: &RuleSet, force: &ForceId, now: i64, out: &mut Vec<Alert>) {
        for (c, corr) in rules
            .correlations()
            .iter()
            .enumerate()
            .filter(|(_, c)| c.kind == CorrelationKind::SilentFeed)
        {
            let empty = self.prints.empty;
            let Some(win) = self.groups.get_mut(c).and_then(|g| g.get_mut(empty)) else {
                continue;
            };
            if let Some(below) = corr.detector.below {
                // Rate drop: judge the periods the frontier has completed.
                let span = corr.timespan_ms;
                let until = now.div_euclid(span);
                let Some(watch) = win
                    .extra
                    .as_mut()
                    .and_then(|x| x.rate.as_mut())
                    .filter(|w| w.next() < until)
                else {
                    continue;
                };
                let drops = watch.judge(until, corr.detector.baseline_ms / span, below);
                self.touched.changed(win, c, empty, &corr.meta.id, "");
                if corr.emits {
                    out.extend(drops.iter().map(|d| rate_alert(corr, force, d)));
                }
                continue;
            }
            let Some(last) = win.steps.first().copied().flatten() else {
                continue;
            };
            let silent_from = last.t + corr.timespan_ms;
            if now <= silent_from || win.suppress_until == Some(i64::MAX) {
                continue;
            }
            win.suppress_until = Some(i64::MAX);
            self.touched.changed(win, c, empty, &corr.meta.id, "");
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
                evidence: vec![evidence_ref(last)],
                node: String::new(),
                epoch: 0,
                rule_pack: String::new(),
            };
            if corr.emits {
                out.push(alert);
            }
        }
    }

    /// Removes the groups expired at the frontier (nothing newer than their rule's timespan
    /// before it, no suppression running): of every correlation when called directly, of those
    /// whose sweep period changed when called as the frontier enters a new minute.
    pub fn expire(&mut self, rules: &RuleSet) {
        let frontier = self.frontier_ms();
        let period = frontier.div_euclid(SWEEP_EVERY_MS);
        // The previous sweep's period (none yet: sweep everything).
        let previous = self.sweep_period.replace(period).filter(|&p| p < period);
        for (c, corr) in rules.correlations().iter().enumerate() {
            let Some(groups) = self.groups.get_mut(c) else {
                break;
            };
            if corr.kind == CorrelationKind::SilentFeed {
                // A silent feed's last event is what the watch needs: never expire it.
                continue;
            }
            let every = sweep_every(corr);
            let start = |p: i64| p.saturating_mul(SWEEP_EVERY_MS).div_euclid(every);
            if previous.is_some_and(|p| start(p) == start(period)) {
                continue;
            }
            let span = corr.timespan_ms;
            let touched = &mut self.touched;
            groups.remove_if(
                |win| win.expired_at(frontier, span),
                |print, win| touched.removed(c, print, &corr.meta.id, &win.key),
            );
        }
    }

    /// Changes since the last call, to persist atomically with the stream cursor (sorted by
    /// key, so that the same events always give the same batch).
    pub fn take_changes(&mut self, rules: &RuleSet) -> StateChanges {
        let Touched {
            mut changes,
            mut dirty,
            mut removed,
        } = std::mem::take(&mut self.touched);
        for (c, print, i) in dirty.drain(..) {
            match self.groups[c].get_mut(print).filter(|w| w.dirty) {
                Some(w) => {
                    w.dirty = false;
                    changes.put(i, |out| w.encode_into(out));
                }
                // Removed since (its deletion is listed), or listed again after a re-creation
                // (written once).
                None => changes.skip(i),
            }
        }
        for (c, print, i) in removed.drain(..) {
            // Re-created since: written above.
            if self.groups[c].contains(print) {
                changes.skip(i);
            }
        }
        for k in self.orphans.drain(..) {
            changes.key(|out| out.extend_from_slice(&k));
        }
        // The events buffered since, still pending: one segment, named by its lowest sequence
        // (a batch replayed after a crash writes the same segment again).
        let mut added = std::mem::take(&mut self.added);
        added.retain(|at| self.pending.contains_key(at));
        if let Some(id) = added.iter().map(|at| at.seq).min() {
            let events: Vec<&Pending> =
                added.iter().filter_map(|at| self.pending.get(at)).collect();
            let i = changes.key(|out| pending::segment_key(id, out));
            changes.put(i, |out| pending::encode_segment(rules, &events, out));
            for at in &added {
                if let Some(p) = self.pending.get_mut(at) {
                    p.segment = Some(id);
                }
            }
            *self.segments.entry(id).or_default() += added.len() as u32;
        }
        added.clear();
        self.added = added;
        // Segments need it (to tell their released events), and it keeps the frontier from
        // going back after a restart with a longer lateness.
        if let Some(upto) = self.released_upto
            && self.released_upto != self.released_persisted
        {
            let i = changes.key(|out| out.extend_from_slice(RELEASED_KEY));
            changes.put(i, |out| state::encode_into(out, &upto));
            self.released_persisted = self.released_upto;
        }
        if std::mem::take(&mut self.meta_dirty) {
            let i = changes.key(|out| out.extend_from_slice(META_KEY));
            changes.put(i, |out| state::encode_into(out, &self.meta));
        }
        changes.finish();
        // The next batch is likely similar: reuse the lists, size the buffers alike.
        self.touched = Touched {
            changes: StateChanges::sized_like(&changes),
            dirty,
            removed,
        };
        changes
    }
}

/// The alert of a `silent_feed` rate drop: the period, its count, the baseline's mean per
/// period (`measured`), and its first and last events (or the feed's last event before it).
fn rate_alert(corr: &CompiledCorrelation, force: &ForceId, d: &rate::RateDrop) -> Alert {
    let start = d.period.saturating_mul(corr.timespan_ms);
    let end = start.saturating_add(corr.timespan_ms);
    let first = d.evidence.first().map_or(start, |e| e.t);
    let last = d.evidence.last().map_or(start, |e| e.t);
    let seq = d.evidence.first().map_or(0, |e| e.seq);
    Alert {
        id: alert_id(&corr.meta.id, force, "", start, end, seq),
        force: force.clone(),
        rule: corr.meta.clone(),
        group: BTreeMap::new(),
        window_start: format_ms(start),
        window_end: format_ms(end),
        count: u64::from(d.count),
        first_seen: format_ms(first),
        last_seen: format_ms(last),
        distinct: None,
        measured: Some(d.mean),
        suppressed: 0,
        evidence: d.evidence.iter().map(|e| evidence_ref(*e)).collect(),
        node: String::new(),
        epoch: 0,
        rule_pack: String::new(),
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

/// The evidence reference of one remembered event (stream evidence: no file or line).
fn evidence_ref(e: Seen) -> EvidenceRef {
    EvidenceRef {
        seq: e.seq,
        time: format_ms(e.t),
        file: None,
        line: None,
    }
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
        evidence: vec![evidence_ref(Seen { t, seq })],
        node: String::new(),
        epoch: 0,
        rule_pack: String::new(),
    }
}

#[cfg(test)]
mod compat_tests;
#[cfg(test)]
mod tests;
