//! The group form persisted before per-kind state: one struct with the fields of every kind
//! (and, before it, the same without the rate watch). Read when a force's state written by that
//! release is loaded, converted to the group's kind (`KindState::from_legacy`), and rewritten in
//! the current form (`group.rs`) when the group next changes. Never written.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::kind::rate_drop::RateWatch;
use super::seen::Seen;
use super::window::{Counts, CountsWire};
use crate::state::{self, StateError};

/// The legacy persisted form (bincode varints make the small offsets short).
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct Wire {
    pub anchor: i64,
    pub width: i64,
    /// (buckets back from the anchor's bucket, count, first time's offset in its bucket).
    pub buckets: Vec<(i64, u32, i64)>,
    /// Sums per bucket; empty when all are zero.
    pub sums: Vec<f64>,
    pub values: Vec<(String, Vec<(i64, u32)>)>,
    /// (ms before the anchor, sequence delta to the previous evidence).
    pub evidence: Vec<(i64, i64)>,
    pub steps: Vec<Option<(i64, u64)>>,
    pub suppress_until: Option<i64>,
    pub suppressed: u64,
    pub seen: Vec<String>,
    pub since: Option<i64>,
    pub last_place: Option<(i64, u64, f64, f64)>,
    /// Added after the first release of this form: [`decode`] reads values without it.
    pub rate: Option<RateWatch>,
}

/// [`Wire`] as first released, without `rate`.
#[derive(Deserialize)]
struct WireV1 {
    anchor: i64,
    width: i64,
    buckets: Vec<(i64, u32, i64)>,
    sums: Vec<f64>,
    values: Vec<(String, Vec<(i64, u32)>)>,
    evidence: Vec<(i64, i64)>,
    steps: Vec<Option<(i64, u64)>>,
    suppress_until: Option<i64>,
    suppressed: u64,
    seen: Vec<String>,
    since: Option<i64>,
    last_place: Option<(i64, u64, f64, f64)>,
}

/// A group persisted in the legacy form, times made absolute: every kind's fields.
#[derive(Debug, Default)]
pub(crate) struct Legacy {
    /// Count kinds' window.
    pub counts: Counts,
    /// Sequences' steps; `new_term`'s and `silent_feed`'s latest event in slot 0.
    pub steps: Box<[Option<Seen>]>,
    /// Quiet until (a silent feed's alerted silence: `i64::MAX`).
    pub suppress_until: Option<i64>,
    /// Matching events while quiet.
    pub suppressed: u64,
    /// `new_term`'s values.
    pub seen: BTreeSet<String>,
    /// `new_term`'s first event time.
    pub since: Option<i64>,
    /// `impossible_travel`'s last place.
    pub last_place: Option<(Seen, f64, f64)>,
    /// `silent_feed`'s rate watch.
    pub rate: Option<RateWatch>,
}

/// Decodes a group persisted in the legacy form (either version).
pub(crate) fn decode(bytes: &[u8]) -> Result<Legacy, StateError> {
    let w: Wire = state::decode(bytes).or_else(|e| {
        let Ok(w) = state::decode::<WireV1>(bytes) else {
            return Err(e);
        };
        Ok(Wire {
            anchor: w.anchor,
            width: w.width,
            buckets: w.buckets,
            sums: w.sums,
            values: w.values,
            evidence: w.evidence,
            steps: w.steps,
            suppress_until: w.suppress_until,
            suppressed: w.suppressed,
            seen: w.seen,
            since: w.since,
            last_place: w.last_place,
            rate: None,
        })
    })?;
    if w.rate.as_ref().is_some_and(|r| !r.plausible()) {
        return Err(StateError::Decode(
            "a rate watch's periods are out of range".into(),
        ));
    }
    let anchor = w.anchor;
    let abs = |d: i64| state::time_before(anchor, d);
    Ok(Legacy {
        counts: Counts::from_wire(
            anchor,
            CountsWire {
                width: w.width,
                buckets: w.buckets,
                sums: w.sums,
                values: w.values,
                evidence: w.evidence,
            },
        )?,
        steps: w
            .steps
            .iter()
            .map(|s| {
                s.map(|(d, seq)| abs(d).map(|t| Seen { t, seq }))
                    .transpose()
            })
            .collect::<Result<_, StateError>>()?,
        suppress_until: w.suppress_until.map(|u| anchor.saturating_add(u)),
        suppressed: w.suppressed,
        seen: w.seen.into_iter().collect(),
        since: w.since.map(abs).transpose()?,
        last_place: w
            .last_place
            .map(|(d, seq, lat, lon)| abs(d).map(|t| (Seen { t, seq }, lat, lon)))
            .transpose()?,
        rate: w.rate,
    })
}
