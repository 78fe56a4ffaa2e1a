//! The correlation kinds: this registry says what each kind is, takes and keeps, and dispatches
//! to the kind's own file, which holds its step (what an event does to a group and when the group
//! fires), its group state and that state's persisted form.
//!
//! | file | kinds |
//! |---|---|
//! | `count.rs` | `event_count`, `value_count`, `value_sum`, `value_avg`, `value_percentile`: the bucketed window of `window.rs`, told apart by a [`count::Measure`] |
//! | `sequence.rs` | `temporal`, `temporal_ordered` |
//! | `new_term.rs` | `new_term` |
//! | `impossible_travel.rs` | `impossible_travel` (and the great-circle distance) |
//! | `silent_feed.rs` | `silent_feed`, with its rate-drop watch in `rate_drop.rs` |
//!
//! What the rest of the engine knows of a kind goes through here:
//! - the parser and the compiler read the kind's [`KindSpec`] (`CorrelationKind::spec`):
//!   whether it needs a condition, which field it reads, its default timespan and suppression,
//!   whether it takes `group-by`, its extension keys and their checks;
//! - the reorder buffer reads what [`KindSpec::reads`] says from each event (nothing, a text, a
//!   finite number, a place);
//! - the force state (`correlate/mod.rs`) finds the group, handles expiry and suppression, then
//!   calls [`step`] (and [`on_frontier`] for kinds judged as the force's event time moves on),
//!   and raises each returned [`Firing`] through the one alert constructor (`alert_of.rs`);
//! - a group's state is a [`KindState`]: one variant per file, encoded by its file after the
//!   group's common header (`group.rs`), tagged so that a group of another kind is never misread.
//!
//! Each kind's state is its own type (instead of one struct with a field for every kind): a count
//! group no longer carries empty sequence, baseline, place and rate fields, in memory (a group is
//! at most 160 bytes instead of 184, the count window being the largest state) or persisted (a
//! count group 3 bytes less, a sequence 7, counting the two bytes of the form's marker and
//! tag). The price is a `match` on the state's variant per event. State persisted by the
//! release before this form is read by `legacy.rs` and converted by [`KindState::from_legacy`].
//!
//! # Adding a kind
//! 1. Add the variant to the `correlation_kinds!` list (which declares [`CorrelationKind`] and
//!    [`CorrelationKind::ALL`] together).
//! 2. Write `kind/<name>.rs`: its `KindSpec` static, its state type (`Default`, `newest`,
//!    `is_empty`, `encode_into`, `decode` with a `TAG` not used by another file), its `step`.
//! 3. Register it here: `mod <name>;`, a [`KindState`] variant with its `accessor!` line, and an
//!    arm in each `match` the compiler then reports as not exhaustive
//!    ([`CorrelationKind::spec`], [`step`], [`watches_frontier`], [`on_frontier`],
//!    [`KindState::from_legacy`] (no legacy state: start empty), and `KindState`'s `newest`,
//!    `is_empty`, `tag`, `encode_into`; `decode` by the new `TAG`, which the round trip test of
//!    every kind in `group.rs` checks). No match on a kind or a kind
//!    state has a wildcard arm, so no place can be forgotten; nothing outside `kind/` changes
//!    (the parser, the compiler, the reorder buffer and the force state read the spec).
//! 4. Document it in `docs/correlation-semantics.md` and test it like `correlate/tests.rs` does.

mod count;
mod impossible_travel;
mod new_term;
pub(crate) mod rate_drop;
mod sequence;
mod silent_feed;

use std::borrow::Cow;

use super::legacy::Legacy;
use super::seen::Seen;
use crate::state::{RawWriter, StateError};

pub(crate) use count::Measure;
pub use silent_feed::MAX_BASELINE_PERIODS;

/// Declares [`CorrelationKind`] and [`CorrelationKind::ALL`] from one list, so that a kind
/// cannot be left out of `ALL` (the parser knows kinds by name through it).
macro_rules! correlation_kinds {
    ($($(#[doc = $doc:literal])* $variant:ident,)+) => {
        /// Sigma correlation kinds, and nmc's detectors written as correlations.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum CorrelationKind {
            $($(#[doc = $doc])* $variant,)+
        }

        impl CorrelationKind {
            /// Every kind, in declaration order.
            pub const ALL: [CorrelationKind; [$(stringify!($variant)),+].len()] =
                [$(CorrelationKind::$variant),+];
        }
    };
}

correlation_kinds! {
    /// Count events per group.
    EventCount,
    /// Count distinct values of `field` per group.
    ValueCount,
    /// Every referenced rule matches within the timespan, in any order.
    Temporal,
    /// Every referenced rule matches within the timespan, in the listed order.
    TemporalOrdered,
    /// Sum of the numeric `field` per group.
    ValueSum,
    /// Average of the numeric `field` per group.
    ValueAvg,
    /// How common the event's `field` value is in its group (percent of the group's events).
    ValuePercentile,
    /// nmc: a `field` value never seen for the group, after a learning period.
    NewTerm,
    /// nmc: two consecutive events of a group too far apart for the time between them.
    ImpossibleTravel,
    /// nmc: the referenced rules have matched nothing for `timespan` of the force's event time.
    SilentFeed,
}

impl CorrelationKind {
    /// What the kind is and takes (defined in the kind's file).
    pub fn spec(self) -> &'static KindSpec {
        match self {
            CorrelationKind::EventCount => &count::EVENT_COUNT,
            CorrelationKind::ValueCount => &count::VALUE_COUNT,
            CorrelationKind::ValueSum => &count::VALUE_SUM,
            CorrelationKind::ValueAvg => &count::VALUE_AVG,
            CorrelationKind::ValuePercentile => &count::VALUE_PERCENTILE,
            CorrelationKind::Temporal => &sequence::TEMPORAL,
            CorrelationKind::TemporalOrdered => &sequence::TEMPORAL_ORDERED,
            CorrelationKind::NewTerm => &new_term::NEW_TERM,
            CorrelationKind::ImpossibleTravel => &impossible_travel::IMPOSSIBLE_TRAVEL,
            CorrelationKind::SilentFeed => &silent_feed::SILENT_FEED,
        }
    }

    /// The Sigma name.
    pub fn as_str(self) -> &'static str {
        self.spec().name
    }

    /// The kind of Sigma name `name`.
    pub fn from_name(name: &str) -> Option<CorrelationKind> {
        CorrelationKind::ALL
            .into_iter()
            .find(|k| k.as_str() == name)
    }
}

/// What the parser, the compiler and the reorder buffer need to know of a kind: one static per
/// kind, in the kind's file.
#[derive(Debug)]
pub struct KindSpec {
    /// The Sigma name (`type:`).
    pub name: &'static str,
    /// Whether the rule must have a `condition` with at least one operator (else none is
    /// needed).
    pub needs_condition: bool,
    /// What the kind reads from each event besides the group-by fields.
    pub reads: Reads,
    /// The key named when the counted field is missing (`condition.field` or `field`).
    pub field_key: &'static str,
    /// The timespan when the rule gives none (none: the rule must give one).
    pub default_timespan: Option<&'static str>,
    /// Whether a group is quiet for its timespan after it fired, unless `suppress:` says
    /// otherwise (false: no suppression unless `suppress:` sets one).
    pub suppress_by_default: bool,
    /// Why `group-by` is refused (none: it is allowed).
    pub no_group_by: Option<&'static str>,
    /// The nmc extension keys it takes in its `correlation` section.
    pub keys: &'static [&'static str],
    /// Of those, the ones it needs.
    pub required_keys: &'static [&'static str],
    /// Checks of its parameters beyond the keys: the timespan, the parameters and whether a
    /// key was given; the error says why.
    pub check: Check,
    /// Whether its groups expire (`timespan` after their newest event, see `group.rs`).
    pub expires: bool,
}

impl KindSpec {
    /// Whether the kind reads the counted field.
    pub fn reads_field(&self) -> bool {
        match self.reads {
            Reads::Text | Reads::Number => true,
            Reads::Nothing | Reads::Place => false,
        }
    }
}

/// A kind's own checks of its parameters ([`KindSpec::check`]): given the timespan, the
/// parameters and whether a key was given, the error says why they are wrong.
pub type Check = fn(i64, &DetectorSpec, &dyn Fn(&str) -> bool) -> Result<(), String>;

/// A [`KindSpec::check`] with nothing to check.
fn no_check(_: i64, _: &DetectorSpec, _: &dyn Fn(&str) -> bool) -> Result<(), String> {
    Ok(())
}

/// What a kind reads from an event, besides the group-by fields. A field that is missing, or
/// (numbers, places) unusable, means the event cannot count in that correlation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Nothing else.
    Nothing,
    /// The counted field's text.
    Text,
    /// The counted field as a finite number.
    Number,
    /// Latitude and longitude (the `latitude` and `longitude` fields): finite, within ±90 and
    /// ±180.
    Place,
}

/// A number read from an event for correlation: finite, or not usable. `"NaN"` and `"inf"`
/// parse as floats: taken, one such event would turn a sum into NaN for a whole timespan.
pub(crate) fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// A latitude and longitude read from an event, if both are finite and on the globe.
pub(crate) fn on_globe(lat: f64, lon: f64) -> Option<(f64, f64)> {
    (lat.is_finite() && lon.is_finite() && lat.abs() <= 90.0 && lon.abs() <= 180.0)
        .then_some((lat, lon))
}

/// Comparison operator of a correlation condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `>`
    Gt,
    /// `>=`
    Gte,
    /// `<`
    Lt,
    /// `<=`
    Lte,
    /// `==`
    Eq,
    /// `!=`
    Neq,
}

impl CmpOp {
    /// Applies the operator.
    pub fn test(self, lhs: f64, rhs: f64) -> bool {
        match self {
            CmpOp::Gt => lhs > rhs,
            CmpOp::Gte => lhs >= rhs,
            CmpOp::Lt => lhs < rhs,
            CmpOp::Lte => lhs <= rhs,
            CmpOp::Eq => lhs == rhs,
            CmpOp::Neq => lhs != rhs,
        }
    }
}

/// Parameters of nmc's detectors, from the `correlation` section.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DetectorSpec {
    /// `new_term`: how long each group only learns its values (`learning`, default 14d).
    pub learning_ms: i64,
    /// `impossible_travel`: latitude field.
    pub latitude: Option<String>,
    /// `impossible_travel`: longitude field.
    pub longitude: Option<String>,
    /// `impossible_travel`: fastest plausible speed, km/h (`speed`, default 900).
    pub speed_kmh: f64,
    /// `impossible_travel`: shorter distances never alert, km (`min_distance`, default 300).
    pub min_distance_km: f64,
    /// `silent_feed` rate drop: alert when a period of `timespan` holds fewer events than this
    /// fraction of the baseline's mean per period (`below`, e.g. `10%`). None: alert on silence.
    pub below: Option<f64>,
    /// `silent_feed` rate drop: how far back the baseline reaches (`baseline`, default 7d).
    pub baseline_ms: i64,
}

/// What a kind's step reads of its rule, compiled once per correlation (the kinds do not see
/// the rule set).
#[derive(Debug, Clone)]
pub struct Params {
    /// The kind.
    pub kind: CorrelationKind,
    /// Window length.
    pub timespan_ms: i64,
    /// All must hold for the rule to fire.
    pub condition: Vec<(CmpOp, f64)>,
    /// How long a group stays quiet after it fired.
    pub suppress_ms: i64,
    /// Number of referenced rules (a sequence's steps).
    pub inputs: usize,
    /// Detectors' parameters.
    pub detector: DetectorSpec,
}

impl Params {
    /// Whether `n` satisfies the condition.
    pub fn holds(&self, n: f64) -> bool {
        self.condition.iter().all(|(op, t)| op.test(n, *t))
    }
}

/// One event reaching a group, as its kind sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Observed<'a> {
    /// Its time and sequence.
    pub at: Seen,
    /// The positions of the correlation's inputs it matched.
    pub positions: &'a [usize],
    /// The counted field's text ([`Reads::Text`], [`Reads::Number`]).
    pub value: Option<&'a str>,
    /// Its latitude and longitude ([`Reads::Place`]).
    pub place: Option<(f64, f64)>,
}

/// What a firing hands to its alert: everything the alert says beyond the rule, the force and
/// the group. (Its evidence is borrowed for a detection match's one event, owned otherwise.)
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Firing<'a> {
    /// The alert's window.
    pub start: i64,
    /// The window's end: for a group, its newest event's time.
    pub end: i64,
    /// Time of the first event counted.
    pub first_seen: i64,
    /// Time of the newest event counted.
    pub last_seen: i64,
    /// Events counted.
    pub count: u64,
    /// Distinct values (`value_count`).
    pub distinct: Option<u64>,
    /// The measured value (sums, averages, percentiles, speeds, baselines).
    pub measured: Option<f64>,
    /// Matching events of the group while it was quiet before this alert.
    pub suppressed: u64,
    /// The events behind it, oldest first.
    pub evidence: Cow<'a, [Seen]>,
    /// Tells apart alerts of one window in the alert id: the first evidence's sequence.
    pub discriminator: u64,
}

impl<'a> Firing<'a> {
    /// A single event's: a detection rule's match.
    pub fn event(at: &'a Seen) -> Firing<'a> {
        Firing {
            start: at.t,
            end: at.t,
            first_seen: at.t,
            last_seen: at.t,
            count: 1,
            distinct: None,
            measured: None,
            suppressed: 0,
            evidence: Cow::Borrowed(std::slice::from_ref(at)),
            discriminator: at.seq,
        }
    }

    /// A group's, over the timespan up to its newest event (`at`'s or an evidence's):
    /// `[newest - timespan, newest]`, from `first` (default: `at`'s time).
    pub fn over_timespan(
        p: &Params,
        at: Seen,
        first: Option<i64>,
        evidence: Vec<Seen>,
        count: u64,
    ) -> Firing<'static> {
        let newest = evidence.iter().map(|e| e.t).max().unwrap_or(at.t).max(at.t);
        Firing {
            start: newest - p.timespan_ms,
            end: newest,
            first_seen: first.unwrap_or(at.t),
            last_seen: newest,
            count,
            distinct: None,
            measured: None,
            suppressed: 0,
            discriminator: evidence.first().map_or(at.seq, |e| e.seq),
            evidence: Cow::Owned(evidence),
        }
    }
}

/// Feeds one event to its group's state: the group's firing, if it fires (which suppresses the
/// group and counts for the correlations chained behind it). `quiet`: the group is suppressed
/// (its events count, nothing fires). Reports that neither suppress nor chain (a rate drop's)
/// go to `reports`.
pub(crate) fn step(
    state: &mut KindState,
    p: &Params,
    ev: &Observed,
    quiet: bool,
    reports: &mut Vec<Firing<'static>>,
) -> Option<Firing<'static>> {
    match p.kind {
        CorrelationKind::EventCount => state.count().step(Measure::Events, p, ev, quiet),
        CorrelationKind::ValueCount => state.count().step(Measure::Distinct, p, ev, quiet),
        CorrelationKind::ValueSum => state.count().step(Measure::Sum, p, ev, quiet),
        CorrelationKind::ValueAvg => state.count().step(Measure::Average, p, ev, quiet),
        CorrelationKind::ValuePercentile => state.count().step(Measure::Percentile, p, ev, quiet),
        CorrelationKind::Temporal => state.sequence().step(false, p, ev, quiet),
        CorrelationKind::TemporalOrdered => state.sequence().step(true, p, ev, quiet),
        CorrelationKind::NewTerm => state.new_term().step(p, ev, quiet),
        CorrelationKind::ImpossibleTravel => state.travel().step(p, ev, quiet),
        CorrelationKind::SilentFeed => {
            state.silent_feed().step(p, ev, reports);
            None
        }
    }
}

/// Whether the kind is judged as the force's frontier moves on, not only on its events (its one
/// group, of the empty key, is then passed to [`on_frontier`]).
pub(crate) fn watches_frontier(kind: CorrelationKind) -> bool {
    match kind {
        CorrelationKind::SilentFeed => true,
        CorrelationKind::EventCount
        | CorrelationKind::ValueCount
        | CorrelationKind::ValueSum
        | CorrelationKind::ValueAvg
        | CorrelationKind::ValuePercentile
        | CorrelationKind::Temporal
        | CorrelationKind::TemporalOrdered
        | CorrelationKind::NewTerm
        | CorrelationKind::ImpossibleTravel => false,
    }
}

/// Judges a group of a kind that [`watches_frontier`] now that the force's frontier is at `now`:
/// its firings go to `out`; true if its state changed.
pub(crate) fn on_frontier(
    state: &mut KindState,
    p: &Params,
    now: i64,
    out: &mut Vec<Firing<'static>>,
) -> bool {
    match p.kind {
        CorrelationKind::SilentFeed => state.silent_feed().on_frontier(p, now, out),
        CorrelationKind::EventCount
        | CorrelationKind::ValueCount
        | CorrelationKind::ValueSum
        | CorrelationKind::ValueAvg
        | CorrelationKind::ValuePercentile
        | CorrelationKind::Temporal
        | CorrelationKind::TemporalOrdered
        | CorrelationKind::NewTerm
        | CorrelationKind::ImpossibleTravel => false,
    }
}

/// A group's kind state: one variant per kind file.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) enum KindState {
    /// Nothing yet (a new group, or one that expired): the kind's state is made on its first
    /// event.
    #[default]
    Empty,
    /// Count kinds: the bucketed window.
    Count(count::CountState),
    /// Sequences: the latest match of each step.
    Sequence(sequence::Steps),
    /// `new_term`: the values seen.
    NewTerm(new_term::Baseline),
    /// `impossible_travel`: the last place.
    Travel(impossible_travel::LastPlace),
    /// `silent_feed`: the last event and the rate watch.
    SilentFeed(silent_feed::Watch),
}

/// Tag of [`KindState::Empty`] in the persisted form (the kinds' files hold theirs).
const EMPTY_TAG: u8 = 0;

/// The state of variant `$v`, made empty first if the group holds another (a fresh group, or a
/// rule whose id now names another kind).
macro_rules! accessor {
    ($name:ident, $v:ident, $t:ty) => {
        fn $name(&mut self) -> &mut $t {
            if !matches!(self, KindState::$v(_)) {
                *self = KindState::$v(Default::default());
            }
            let KindState::$v(s) = self else {
                unreachable!("set above")
            };
            s
        }
    };
}

impl KindState {
    accessor!(count, Count, count::CountState);
    accessor!(sequence, Sequence, sequence::Steps);
    accessor!(new_term, NewTerm, new_term::Baseline);
    accessor!(travel, Travel, impossible_travel::LastPlace);
    accessor!(silent_feed, SilentFeed, silent_feed::Watch);

    /// Newest event time the state holds.
    pub fn newest(&self) -> Option<i64> {
        match self {
            KindState::Empty => None,
            KindState::Count(s) => s.newest(),
            KindState::Sequence(s) => s.newest(),
            KindState::NewTerm(s) => s.newest(),
            KindState::Travel(s) => s.newest(),
            KindState::SilentFeed(s) => s.newest(),
        }
    }

    /// Whether it holds nothing worth keeping.
    pub fn is_empty(&self) -> bool {
        match self {
            KindState::Empty => true,
            KindState::Count(s) => s.is_empty(),
            KindState::Sequence(s) => s.is_empty(),
            KindState::NewTerm(s) => s.is_empty(),
            KindState::Travel(s) => s.is_empty(),
            KindState::SilentFeed(s) => s.is_empty(),
        }
    }

    /// The tag of its persisted form.
    pub fn tag(&self) -> u8 {
        match self {
            KindState::Empty => EMPTY_TAG,
            KindState::Count(_) => count::TAG,
            KindState::Sequence(_) => sequence::TAG,
            KindState::NewTerm(_) => new_term::TAG,
            KindState::Travel(_) => impossible_travel::TAG,
            KindState::SilentFeed(_) => silent_feed::TAG,
        }
    }

    /// Writes its persisted form (after the group's header), times relative to `anchor`.
    pub fn encode_into(&self, anchor: i64, w: &mut RawWriter) {
        match self {
            KindState::Empty => {}
            KindState::Count(s) => s.encode_into(anchor, w),
            KindState::Sequence(s) => s.encode_into(anchor, w),
            KindState::NewTerm(s) => s.encode_into(anchor, w),
            KindState::Travel(s) => s.encode_into(anchor, w),
            KindState::SilentFeed(s) => s.encode_into(anchor, w),
        }
    }

    /// Reads the persisted form of tag `tag` from `bytes`, times relative to `anchor`.
    pub fn decode(tag: u8, anchor: i64, bytes: &[u8]) -> Result<KindState, StateError> {
        Ok(match tag {
            EMPTY_TAG => KindState::Empty,
            count::TAG => KindState::Count(count::CountState::decode(anchor, bytes)?),
            sequence::TAG => KindState::Sequence(sequence::Steps::decode(anchor, bytes)?),
            new_term::TAG => KindState::NewTerm(new_term::Baseline::decode(anchor, bytes)?),
            impossible_travel::TAG => {
                KindState::Travel(impossible_travel::LastPlace::decode(anchor, bytes)?)
            }
            silent_feed::TAG => KindState::SilentFeed(silent_feed::Watch::decode(anchor, bytes)?),
            other => {
                return Err(StateError::Decode(format!(
                    "group of unknown kind form {other}"
                )));
            }
        })
    }

    /// The state of a group of kind `kind` persisted by the release before per-kind state (one
    /// struct with every kind's fields): its kind's fields. Kinds added since have none.
    /// Takes what it converts out of `old`; what is left is the group's (its suppression).
    pub fn from_legacy(kind: CorrelationKind, old: &mut Legacy) -> KindState {
        let latest = old.steps.first().copied().flatten();
        match kind {
            CorrelationKind::EventCount
            | CorrelationKind::ValueCount
            | CorrelationKind::ValueSum
            | CorrelationKind::ValueAvg
            | CorrelationKind::ValuePercentile => KindState::Count(count::CountState::from_legacy(
                std::mem::take(&mut old.counts),
            )),
            CorrelationKind::Temporal | CorrelationKind::TemporalOrdered => {
                KindState::Sequence(sequence::Steps::from_legacy(std::mem::take(&mut old.steps)))
            }
            CorrelationKind::NewTerm => KindState::NewTerm(new_term::Baseline::from_legacy(
                latest,
                old.since,
                std::mem::take(&mut old.seen),
            )),
            CorrelationKind::ImpossibleTravel => {
                KindState::Travel(impossible_travel::LastPlace::from_legacy(old.last_place))
            }
            CorrelationKind::SilentFeed => {
                // Its alerted silence was a suppression until `i64::MAX`, re-armed (with the
                // suppressed count) by each event: the watch's own flag now.
                let silent = old.suppress_until.take() == Some(i64::MAX);
                old.suppressed = 0;
                KindState::SilentFeed(silent_feed::Watch::from_legacy(
                    latest,
                    silent,
                    old.rate.take(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_listed_once_and_named_by_its_spec() {
        for (i, k) in CorrelationKind::ALL.iter().enumerate() {
            assert_eq!(CorrelationKind::from_name(k.as_str()), Some(*k));
            assert!(!CorrelationKind::ALL[..i].contains(k), "{k:?} twice");
        }
        assert_eq!(CorrelationKind::from_name("nope"), None);
    }

    #[test]
    fn numbers_and_places_must_be_usable() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(finite(bad), None);
            assert_eq!(on_globe(bad, 0.0), None);
            assert_eq!(on_globe(0.0, bad), None);
        }
        assert_eq!(finite(-2.5), Some(-2.5));
        assert_eq!(on_globe(90.0, -180.0), Some((90.0, -180.0)));
        assert_eq!(on_globe(90.5, 0.0), None);
        assert_eq!(on_globe(0.0, 180.1), None);
    }
}
