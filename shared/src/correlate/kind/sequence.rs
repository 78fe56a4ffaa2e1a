//! The sequence kinds: `temporal` (every referenced rule matched within the timespan, in any
//! order) and `temporal_ordered` (in the listed order, each step strictly after the previous
//! one). A group keeps the latest match of each step, with its exact time.

use serde::Deserialize;

use super::{Firing, KindSpec, Observed, Params, Reads, no_check};
use crate::correlate::seen::Seen;
use crate::state::{self, RawWriter, StateError};

/// Tag of the sequences' persisted form.
pub(super) const TAG: u8 = 2;

const fn sequence(name: &'static str) -> KindSpec {
    KindSpec {
        name,
        needs_condition: false,
        reads: Reads::Nothing,
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

/// `temporal`: every referenced rule, in any order.
pub(super) static TEMPORAL: KindSpec = sequence("temporal");
/// `temporal_ordered`: every referenced rule, in the listed order.
pub(super) static TEMPORAL_ORDERED: KindSpec = sequence("temporal_ordered");

/// A sequence group's state: the latest match of each referenced rule, in the rules' order.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Steps(Box<[Option<Seen>]>);

/// The persisted form: per step, (ms before the anchor, sequence).
#[derive(Deserialize)]
struct Wire(Vec<Option<(i64, u64)>>);

impl Steps {
    /// Records the event as the steps it matched and fires once every step is filled within
    /// the timespan (not while `quiet`); the sequence restarts empty after firing.
    pub fn step(
        &mut self,
        ordered: bool,
        p: &Params,
        ev: &Observed,
        quiet: bool,
    ) -> Option<Firing<'static>> {
        let at = ev.at;
        let steps = &mut self.0;
        if steps.len() != p.inputs {
            *steps = vec![None; p.inputs].into_boxed_slice();
        }
        for &pos in ev.positions {
            if !ordered {
                steps[pos] = Some(at);
            } else if pos == 0 {
                // The latest occurrence of the first rule starts the sequence.
                steps[0] = Some(at);
                steps[1..].iter_mut().for_each(|s| *s = None);
            } else if steps[pos - 1]
                .as_ref()
                .is_some_and(|prev| prev.seq != at.seq)
            {
                steps[pos] = Some(at);
                steps[pos + 1..].iter_mut().for_each(|s| *s = None);
            }
        }
        let oldest_allowed = at.t - p.timespan_ms;
        if ordered {
            // A sequence older than the timespan is abandoned.
            if steps[0].as_ref().is_some_and(|s| s.t < oldest_allowed) {
                steps.iter_mut().for_each(|s| *s = None);
            }
        } else {
            for s in steps.iter_mut() {
                if s.as_ref().is_some_and(|e| e.t < oldest_allowed) {
                    *s = None;
                }
            }
        }
        if quiet || !steps.iter().all(Option::is_some) {
            return None;
        }
        let mut all: Vec<Seen> = steps.iter_mut().filter_map(Option::take).collect();
        all.sort();
        let n = all.len() as u64;
        let first = all.first().map(|s| s.t);
        Some(Firing::over_timespan(p, at, first, all, n))
    }

    /// Newest step's time.
    pub fn newest(&self) -> Option<i64> {
        self.0.iter().flatten().map(|e| e.t).max()
    }

    /// Whether no step is filled.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }

    /// Writes the persisted form.
    pub fn encode_into(&self, anchor: i64, w: &mut RawWriter) {
        w.len(self.0.len());
        for s in self.0.iter() {
            w.some(s.is_some());
            if let Some(e) = s {
                w.i64(anchor - e.t);
                w.u64(e.seq);
            }
        }
    }

    /// Reads what [`Steps::encode_into`] wrote.
    pub fn decode(anchor: i64, bytes: &[u8]) -> Result<Steps, StateError> {
        let (Wire(steps), _) = state::decode_part::<Wire>(bytes)?;
        let steps = steps
            .into_iter()
            .map(|s| {
                s.map(|(d, seq)| state::time_before(anchor, d).map(|t| Seen { t, seq }))
                    .transpose()
            })
            .collect::<Result<_, StateError>>()?;
        Ok(Steps(steps))
    }

    /// The steps of a group persisted in the legacy form.
    pub fn from_legacy(steps: Box<[Option<Seen>]>) -> Steps {
        Steps(steps)
    }
}
