//! `silent_feed`: the referenced rules (a feed) have matched nothing for `timespan` of the
//! force's event time, or, with `below`, a period of the feed holds far fewer events than its
//! baseline (the watch in `rate_drop.rs`). Judged as the force's frontier moves on, never on the
//! wall clock; one group per rule (no `group-by`), which never expires.

use serde::Deserialize;

use super::rate_drop::{RateDrop, RateWatch};
use super::{DetectorSpec, Firing, KindSpec, Observed, Params, Reads};
use crate::correlate::seen::Seen;
use crate::state::{self, RawWriter, StateError};

/// Tag of `silent_feed`'s persisted form.
pub(super) const TAG: u8 = 5;

/// Most periods a `silent_feed` baseline may span (its counts are part of the group's state).
pub const MAX_BASELINE_PERIODS: i64 = 1000;

/// `silent_feed`.
pub(super) static SILENT_FEED: KindSpec = KindSpec {
    name: "silent_feed",
    needs_condition: false,
    reads: Reads::Nothing,
    field_key: "condition.field",
    default_timespan: None,
    // One alert per silence or drop already.
    suppress_by_default: false,
    no_group_by: Some("one feed per rule"),
    keys: &["below", "baseline"],
    required_keys: &[],
    check,
    expires: false,
};

/// `baseline` needs `below`, and must hold 1 to [`MAX_BASELINE_PERIODS`] timespans.
fn check(timespan_ms: i64, d: &DetectorSpec, given: &dyn Fn(&str) -> bool) -> Result<(), String> {
    if given("baseline") && !given("below") {
        return Err("silent_feed `baseline` without `below`".into());
    }
    if d.below.is_some() {
        let periods = d.baseline_ms / timespan_ms;
        if !(1..=MAX_BASELINE_PERIODS).contains(&periods) {
            return Err(format!(
                "silent_feed `baseline` must hold 1 to {MAX_BASELINE_PERIODS} timespans (it holds {periods})"
            ));
        }
    }
    Ok(())
}

/// A silent feed's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Watch {
    /// The feed's latest event.
    last: Option<Seen>,
    /// The silence since `last` was alerted (re-armed by the next event).
    silent: bool,
    /// With `below`: events per period.
    rate: Option<Box<RateWatch>>,
}

/// The persisted form: latest event (ms before the anchor, sequence), alerted, rate watch.
#[derive(Deserialize)]
struct Wire {
    last: Option<(i64, u64)>,
    silent: bool,
    rate: Option<RateWatch>,
}

impl Watch {
    /// Remembers the feed's latest event, which re-arms the silence watch; with `below`,
    /// judges the periods before the event's (drops go to `reports`) and counts it.
    pub fn step(&mut self, p: &Params, ev: &Observed, reports: &mut Vec<Firing<'static>>) {
        let at = ev.at;
        if self.last.is_none_or(|s| s < at) {
            self.last = Some(at);
        }
        self.silent = false;
        if let Some(below) = p.detector.below {
            // The periods before this event's are complete: judge them, then count it.
            let span = p.timespan_ms;
            let period = at.t.div_euclid(span);
            let watch = self
                .rate
                .get_or_insert_with(|| Box::new(RateWatch::new(period)));
            let drops = watch.judge(period, p.detector.baseline_ms / span, below);
            watch.count(period, at);
            reports.extend(drops.iter().map(|d| drop_firing(p, d)));
        }
    }

    /// Judges the feed at frontier `now`: with `below`, the periods the frontier completed (a
    /// drop's firing goes to `out`); else whether it has been silent for the timespan since its
    /// latest event (once per silence). True if the state changed.
    pub fn on_frontier(&mut self, p: &Params, now: i64, out: &mut Vec<Firing<'static>>) -> bool {
        let span = p.timespan_ms;
        if let Some(below) = p.detector.below {
            let until = now.div_euclid(span);
            let Some(watch) = self.rate.as_mut().filter(|w| w.next() < until) else {
                return false;
            };
            let drops = watch.judge(until, p.detector.baseline_ms / span, below);
            out.extend(drops.iter().map(|d| drop_firing(p, d)));
            return true;
        }
        let Some(last) = self.last else {
            return false;
        };
        let silent_from = last.t + span;
        if now <= silent_from || self.silent {
            return false;
        }
        self.silent = true;
        out.push(Firing {
            start: last.t,
            end: silent_from,
            first_seen: last.t,
            last_seen: last.t,
            count: 0,
            distinct: None,
            measured: None,
            suppressed: 0,
            evidence: vec![last].into(),
            discriminator: last.seq,
        });
        true
    }

    /// The latest event's time.
    pub fn newest(&self) -> Option<i64> {
        self.last.map(|l| l.t)
    }

    /// Whether the feed was never seen.
    pub fn is_empty(&self) -> bool {
        self.last.is_none() && self.rate.is_none()
    }

    /// Writes the persisted form.
    pub fn encode_into(&self, anchor: i64, w: &mut RawWriter) {
        w.some(self.last.is_some());
        if let Some(l) = self.last {
            w.i64(anchor - l.t);
            w.u64(l.seq);
        }
        w.some(self.silent);
        w.serde(&self.rate);
    }

    /// Reads what [`Watch::encode_into`] wrote.
    pub fn decode(anchor: i64, bytes: &[u8]) -> Result<Watch, StateError> {
        let (w, _) = state::decode_part::<Wire>(bytes)?;
        if w.rate.as_ref().is_some_and(|r| !r.plausible()) {
            return Err(StateError::Decode(
                "a rate watch's periods are out of range".into(),
            ));
        }
        Ok(Watch {
            last: w
                .last
                .map(|(d, seq)| state::time_before(anchor, d).map(|t| Seen { t, seq }))
                .transpose()?,
            silent: w.silent,
            rate: w.rate.map(Box::new),
        })
    }

    /// The watch of a group persisted in the legacy form (alerted: its suppression was
    /// `i64::MAX`).
    pub fn from_legacy(last: Option<Seen>, silent: bool, rate: Option<RateWatch>) -> Watch {
        Watch {
            last,
            silent,
            rate: rate.map(Box::new),
        }
    }
}

/// The firing of a rate drop: the period, its count, the baseline's mean per period
/// (`measured`), and its first and last events (or the feed's last event before it).
fn drop_firing(p: &Params, d: &RateDrop) -> Firing<'static> {
    let start = d.period.saturating_mul(p.timespan_ms);
    let end = start.saturating_add(p.timespan_ms);
    Firing {
        start,
        end,
        first_seen: d.evidence.first().map_or(start, |e| e.t),
        last_seen: d.evidence.last().map_or(start, |e| e.t),
        count: u64::from(d.count),
        distinct: None,
        measured: Some(d.mean),
        suppressed: 0,
        evidence: d.evidence.clone().into(),
        discriminator: d.evidence.first().map_or(0, |e| e.seq),
    }
}
