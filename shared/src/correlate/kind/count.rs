//! The count kinds: `event_count`, `value_count`, `value_sum`, `value_avg` and
//! `value_percentile`. Each counts the group's events in the bucketed sliding window of
//! `window.rs` and differs only in what it measures against the condition ([`Measure`]).

use super::{Firing, KindSpec, Observed, Params, Reads, finite, no_check};
use crate::correlate::window::{Counts, CountsWire};
use crate::state::{self, RawWriter, StateError};

/// Tag of the count kinds' persisted form.
pub(super) const TAG: u8 = 1;

/// What a count kind compares with its condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Measure {
    /// Events in the window (`event_count`).
    Events,
    /// Distinct values of the field in the window (`value_count`).
    Distinct,
    /// Sum of the numeric field over the window (`value_sum`).
    Sum,
    /// Average of the numeric field over the window's events (`value_avg`).
    Average,
    /// Percentage of the window's events with this event's value (`value_percentile`).
    Percentile,
}

const fn counting(name: &'static str, reads: Reads) -> KindSpec {
    KindSpec {
        name,
        needs_condition: true,
        reads,
        field_key: "condition.field",
        default_timespan: None,
        suppress_by_default: true,
        no_group_by: None,
        keys: &[],
        required_keys: &[],
        check: no_check,
        expires: true,
    }
}

/// `event_count`: events per group.
pub(super) static EVENT_COUNT: KindSpec = counting("event_count", Reads::Nothing);
/// `value_count`: distinct values of the field per group.
pub(super) static VALUE_COUNT: KindSpec = counting("value_count", Reads::Text);
/// `value_sum`: sum of the numeric field per group.
pub(super) static VALUE_SUM: KindSpec = counting("value_sum", Reads::Number);
/// `value_avg`: average of the numeric field per group.
pub(super) static VALUE_AVG: KindSpec = counting("value_avg", Reads::Number);
/// `value_percentile`: how common the event's value is in its group.
pub(super) static VALUE_PERCENTILE: KindSpec = counting("value_percentile", Reads::Text);

/// A count group's state: its window.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct CountState(Counts);

impl CountState {
    /// Counts one event and fires if the measure meets the condition (not while `quiet`); the
    /// window restarts empty after firing.
    pub fn step(
        &mut self,
        measure: Measure,
        p: &Params,
        ev: &Observed,
        quiet: bool,
    ) -> Option<Firing<'static>> {
        let num = match measure {
            Measure::Sum | Measure::Average => {
                // Read as finite when the event was (a value buffered by an older release may
                // not be): one that is not cannot count.
                Some(
                    ev.value
                        .and_then(|v| v.trim().parse().ok())
                        .and_then(finite)?,
                )
            }
            Measure::Events | Measure::Distinct | Measure::Percentile => None,
        };
        // Only distinct counts and percentiles keep the values themselves.
        let kept = match measure {
            Measure::Distinct | Measure::Percentile => ev.value,
            Measure::Events | Measure::Sum | Measure::Average => None,
        };
        let counts = &mut self.0;
        let counted = counts.add(
            p.timespan_ms,
            ev.at,
            kept,
            num,
            measure == Measure::Percentile,
        );
        let tally = counts.tally(kept);
        let events = tally.events;
        let per_event = |x: f64| x / events.max(1) as f64;
        let (distinct, measured) = match measure {
            Measure::Events => (None, None),
            Measure::Distinct => (Some(tally.distinct), None),
            Measure::Sum => (None, Some(tally.sum)),
            Measure::Average => (None, Some(per_event(tally.sum))),
            Measure::Percentile => (None, Some(per_event(100.0 * f64::from(tally.same)))),
        };
        let m = measured.unwrap_or(distinct.unwrap_or(events) as f64);
        if !counted || quiet || !p.holds(m) {
            return None;
        }
        let (first, evidence) = counts.drain();
        Some(Firing {
            distinct,
            measured,
            ..Firing::over_timespan(p, ev.at, first, evidence, events)
        })
    }

    /// Newest event time counted.
    pub fn newest(&self) -> Option<i64> {
        self.0.newest()
    }

    /// Whether nothing is counted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Writes the window's persisted form ([`CountsWire`]).
    pub fn encode_into(&self, anchor: i64, w: &mut RawWriter) {
        self.0.encode_into(anchor, w);
    }

    /// Reads what [`CountState::encode_into`] wrote.
    pub fn decode(anchor: i64, bytes: &[u8]) -> Result<CountState, StateError> {
        let (wire, _) = state::decode_part::<CountsWire>(bytes)?;
        Ok(CountState(Counts::from_wire(anchor, wire)?))
    }

    /// The window of a group persisted in the legacy form.
    pub fn from_legacy(counts: Counts) -> CountState {
        CountState(counts)
    }
}
