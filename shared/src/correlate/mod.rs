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
//! - Events missing a group-by field (or the counted field of `value_count`) are not counted;
//!   nor are events whose number (`value_sum`, `value_avg`) or place (`impossible_travel`) is
//!   not usable (`NaN`, infinite, off the globe), which are counted as bad values.
//! - A group with nothing newer than `t - timespan` and no suppression running at the time `t` of
//!   its next event starts afresh; sweeps free the groups expired at the frontier.
//!
//! This file is about the force: the reorder buffer, releasing events to their correlations,
//! sweeps and persistence. What each kind does with an event is in [`kind`] (one file per kind),
//! a group's common part and persisted form in `group.rs`, and every alert is made by
//! `alert_of.rs`.

mod alert_of;
mod changes;
mod group;
mod groups;
pub mod kind;
mod legacy;
mod pending;
mod seen;
mod window;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::alert::Alert;
use crate::event::Event;
use crate::force::ForceId;
use crate::sigma::{CompiledCorrelation, Input, RuleSet};
use crate::state::{self, StateError};
pub use changes::StateChanges;
use group::Group;
use groups::{GroupMap, KeyPrints, Print};
use kind::{Firing, Observed};
use pending::{Fields, PENDING_PREFIX, Pending, SEGMENT_PREFIX, Sample, Unread};
use seen::Seen;
pub use window::{BUCKETS_PER_WINDOW, EVIDENCE_KEPT};
// (The scenario tests compare alert times with it.)
#[cfg(test)]
use crate::time::format_ms;

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
    /// Events that arrived after the frontier had passed them.
    late: u64,
    /// Events whose number or place a correlation could not use (added after the first release
    /// of `Meta`: [`Meta::decode`] reads values without it).
    bad_values: u64,
}

/// [`Meta`] as first released.
#[derive(Deserialize)]
struct MetaV1 {
    late: u64,
}

impl Meta {
    /// Decodes the counters, in the current form or the first one.
    fn decode(bytes: &[u8]) -> Result<Meta, StateError> {
        state::decode(bytes).or_else(|e| {
            let Ok(m) = state::decode::<MetaV1>(bytes) else {
                return Err(e);
            };
            Ok(Meta {
                late: m.late,
                bad_values: 0,
            })
        })
    }
}

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
    /// Alerts of the group being fed that chain to nothing (a silent feed's rate drops), handed
    /// to `feed`.
    reports: Vec<Alert>,
    /// Scratch: firings of a kind's step or frontier check that chain to nothing.
    firings_buf: Vec<Firing<'static>>,
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
    fn changed(&mut self, win: &mut Group, c: usize, print: Print, rule: &str, key: &str) {
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

/// The (correlation, input position) pairs the detection rules `matched` feed, sorted and
/// unique, into `out` (cleared first).
fn direct_inputs(rules: &RuleSet, matched: &[usize], out: &mut Vec<(usize, usize)>) {
    out.clear();
    for &r in matched {
        for &c in rules.correlations_of(r) {
            let corr = &rules.correlations()[c];
            out.extend(corr.positions_of(Input::Rule(r)).map(|pos| (c, pos)));
        }
    }
    out.sort_unstable();
    out.dedup();
}

/// An event made ready for correlation by [`ForceState::prepare`]: its time and sequence, the
/// detection rules it matched, and what its correlations read from it (not the event).
#[derive(Debug)]
pub struct PreparedEvent {
    at: Seen,
    matched: Vec<usize>,
    pending: Option<Pending>,
    bad: bool,
}

/// Sweeps of expired groups run each time the frontier enters a new period of this length; each
/// sweeps the correlations whose own period ([`sweep_every`]) changed too.
const SWEEP_EVERY_MS: i64 = 60_000;

/// How often the groups of `corr` are swept: a tenth of the timespan, at least every minute. A
/// sweep only frees memory (an expired group starts afresh on its next event anyway), so an
/// expired group may be held that much longer.
fn sweep_every(corr: &CompiledCorrelation) -> i64 {
    (corr.params.timespan_ms / 10).max(SWEEP_EVERY_MS)
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
                s.meta = Meta::decode(v)?;
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
                    let kind = rules.correlations()[c].params.kind;
                    let win = Group::decode(kind, key, v)?;
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

    /// Events that fed a correlation a number it could not use (`NaN`, infinite: `value_sum`,
    /// `value_avg`) or a place off the globe (`impossible_travel`): not counted there.
    pub fn bad_values(&self) -> u64 {
        self.meta.bad_values
    }

    /// Counts one event with a bad value.
    fn count_bad_value(&mut self) {
        self.meta.bad_values += 1;
        self.meta_dirty = true;
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
        let at = Seen { t: ev.time_ms, seq };
        let late = self.arrive(at.t);
        self.emit_detections(rules, force, matched, at, out);
        let mut direct = std::mem::take(&mut self.direct_buf);
        direct_inputs(rules, matched, &mut direct);
        if !direct.is_empty() {
            if self.at_once(at, late) {
                self.feed(rules, force, Released::Now(at, &direct, ev), out);
            } else {
                let mut bad = false;
                let p = Pending::read(rules, at, direct.clone(), ev, &mut bad);
                if bad {
                    self.count_bad_value();
                }
                self.added.push(at);
                self.pending.insert(at, p);
            }
        }
        self.direct_buf = direct;
        self.release(rules, force, self.frontier_ms(), out);
    }

    /// Takes an event of time `t` in: starts the sweep period, moves the watermark; whether it
    /// is late (behind the frontier it found).
    fn arrive(&mut self, t: i64) -> bool {
        let late = t < self.frontier_ms();
        if self.sweep_period.is_none() {
            self.sweep_period = Some(self.frontier_ms().div_euclid(SWEEP_EVERY_MS));
        }
        self.watermark_ms = self.watermark_ms.max(t);
        late
    }

    /// The alerts of the matched detection rules that raise their own.
    fn emit_detections(
        &self,
        rules: &RuleSet,
        force: &ForceId,
        matched: &[usize],
        at: Seen,
        out: &mut Vec<Alert>,
    ) {
        for &r in matched {
            let rule = &rules.rules()[r];
            if rule.emits {
                let f = Firing::event(&at);
                out.push(alert_of::alert(&rule.meta, force, "", BTreeMap::new(), &f));
            }
        }
    }

    /// Whether an event feeding correlations is fed at once rather than buffered: late (applied
    /// on arrival, and counted), or it would be released at once and first.
    fn at_once(&mut self, at: Seen, late: bool) -> bool {
        if late {
            self.meta.late += 1;
            self.meta_dirty = true;
        }
        late || (self.pending.is_empty() && at.t <= self.frontier_ms())
    }

    /// What [`ForceState::apply_prepared`] needs of event `ev` (sequence `seq`) whose matching
    /// detection rules are `matched`: its time, the rules, and what its correlations read from
    /// it. Pure, so callers may run it on the thread that parsed the event and drop the event
    /// there (`nmc hunt --threads`); applying it gives the same alerts as
    /// [`ForceState::apply_matched`] with the event.
    pub fn prepare(rules: &RuleSet, seq: u64, ev: &Event, matched: Vec<usize>) -> PreparedEvent {
        let at = Seen { t: ev.time_ms, seq };
        let mut direct = Vec::new();
        direct_inputs(rules, &matched, &mut direct);
        let (mut pending, mut bad) = (None, false);
        if !direct.is_empty() {
            pending = Some(Pending::read(rules, at, direct, ev, &mut bad));
        }
        PreparedEvent {
            at,
            matched,
            pending,
            bad,
        }
    }

    /// Applies an event made ready by [`ForceState::prepare`] (in the order of the events'
    /// sequences, as [`ForceState::apply`]).
    pub fn apply_prepared(
        &mut self,
        rules: &RuleSet,
        force: &ForceId,
        ev: PreparedEvent,
        out: &mut Vec<Alert>,
    ) {
        let at = ev.at;
        let late = self.arrive(at.t);
        self.emit_detections(rules, force, &ev.matched, at, out);
        if let Some(p) = ev.pending {
            let now = self.at_once(at, late);
            if ev.bad {
                self.count_bad_value();
            }
            if now {
                self.feed(rules, force, Released::Buffered(&p), out);
            } else {
                self.added.push(at);
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
        self.check_frontier(rules, force, frontier, out);
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
        let mut bad = false;
        let mut fields = match ev {
            Released::Now(_, _, e) => Some(Fields::new(e)),
            Released::Buffered(_) => None,
        };
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
                Released::Now(_, direct, _) => match Sample::extract(
                    corr,
                    positions[0],
                    fields.as_mut().expect("set for an event fed at once"),
                ) {
                    Ok(s) => {
                        extracted = s;
                        Some(&extracted)
                    }
                    Err(Unread::Bad) => {
                        // Counted once per event, for the correlations it feeds directly (as
                        // when it is buffered).
                        bad |= direct.binary_search(&(c, positions[0])).is_ok();
                        None
                    }
                    Err(Unread::Missing) => None,
                },
            };
            let Some(sample) = sample else {
                continue;
            };
            let alert = self.correlate(c, corr, positions, sample, force, at);
            if !self.reports.is_empty() {
                if corr.emits {
                    out.append(&mut self.reports);
                }
                self.reports.clear();
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
        if bad {
            self.count_bad_value();
        }
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

    /// [`ForceState::correlate`] for the group of canonical key `key`: expiry and suppression,
    /// then the kind's step; the group's alert if it fires (its other reports go to
    /// `self.reports`).
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
        let p = &corr.params;
        if self.groups.len() <= c {
            self.groups.resize_with(c + 1, GroupMap::default);
        }
        let print = self.prints.of(key);
        let groups = &mut self.groups[c];
        let win = groups.get_or_create(print, key);
        if p.kind.spec().expires && win.expired_at(t, p.timespan_ms) {
            // Whether or not a sweep removed it yet, an expired group starts afresh.
            win.reset();
        }
        self.touched.changed(win, c, print, &corr.meta.id, key);
        let quiet = win.suppress_until.is_some_and(|u| t <= u);
        if quiet {
            win.suppressed = win.suppressed.saturating_add(1);
        }
        let observed = Observed {
            at,
            positions,
            value: sample.value.as_deref(),
            place: sample.place,
        };
        let mut reports = std::mem::take(&mut self.firings_buf);
        let fired = kind::step(&mut win.state, p, &observed, quiet, &mut reports);
        let group = || {
            corr.group_by
                .iter()
                .cloned()
                .zip(sample.group.iter().map(|g| g.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        for f in reports.drain(..) {
            self.reports
                .push(alert_of::alert(&corr.meta, force, key, group(), &f));
        }
        self.firings_buf = reports;
        let mut alert = None;
        if let Some(mut f) = fired {
            f.suppressed = u64::from(std::mem::take(&mut win.suppressed));
            win.suppress_until = Some(f.end + p.suppress_ms);
            alert = Some(alert_of::alert(&corr.meta, force, key, group(), &f));
        }
        if win.is_idle(t) {
            groups.remove(print);
            self.touched.removed(c, print, &corr.meta.id, key);
        }
        alert
    }

    /// Judges the kinds that watch the force's event time rather than their events alone (a
    /// silent feed: silences and rate drops) now that the frontier is at `now`.
    fn check_frontier(&mut self, rules: &RuleSet, force: &ForceId, now: i64, out: &mut Vec<Alert>) {
        for (c, corr) in rules
            .correlations()
            .iter()
            .enumerate()
            .filter(|(_, c)| kind::watches_frontier(c.params.kind))
        {
            let empty = self.prints.empty;
            let Some(win) = self.groups.get_mut(c).and_then(|g| g.get_mut(empty)) else {
                continue;
            };
            let mut firings = std::mem::take(&mut self.firings_buf);
            if kind::on_frontier(&mut win.state, &corr.params, now, &mut firings) {
                self.touched.changed(win, c, empty, &corr.meta.id, "");
            }
            if corr.emits {
                out.extend(
                    firings
                        .iter()
                        .map(|f| alert_of::alert(&corr.meta, force, "", BTreeMap::new(), f)),
                );
            }
            firings.clear();
            self.firings_buf = firings;
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
            if !corr.params.kind.spec().expires {
                // A silent feed's last event is what the watch needs: never expire it.
                continue;
            }
            let every = sweep_every(corr);
            let start = |p: i64| p.saturating_mul(SWEEP_EVERY_MS).div_euclid(every);
            if previous.is_some_and(|p| start(p) == start(period)) {
                continue;
            }
            let span = corr.params.timespan_ms;
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
        // Reuse the lists; the buffers come back with `reuse_changes` while the force is busy.
        self.touched = Touched {
            changes: StateChanges::default(),
            dirty,
            removed,
        };
        changes
    }

    /// Takes back the changes of the last [`ForceState::take_changes`] once they are written,
    /// to gather the next ones in their buffers: a force with a backlog then writes its changes
    /// into memory it has touched already, instead of fresh pages the kernel must zero (seen
    /// in a drain's profile). A force that caught up lets them go instead.
    pub fn reuse_changes(&mut self, mut used: StateChanges) {
        let mine = &mut self.touched.changes;
        if mine.is_empty() && used.capacity() > mine.capacity() {
            used.clear();
            *mine = used;
        }
    }
}

#[cfg(test)]
mod compat_tests;
#[cfg(test)]
mod tests;
