//! `new_term`: a group (an entity, e.g. a user) shows a value of `field` never seen for it
//! before, once the group's own learning period is over. The values seen are the group's
//! baseline, kept while the group has events (its latest event counts, not its first).

use std::collections::BTreeSet;

use serde::Deserialize;

use super::{Firing, KindSpec, Observed, Params, Reads, no_check};
use crate::correlate::seen::Seen;
use crate::state::{self, RawWriter, StateError};

/// Tag of `new_term`'s persisted form.
pub(super) const TAG: u8 = 3;

/// `new_term`.
pub(super) static NEW_TERM: KindSpec = KindSpec {
    name: "new_term",
    needs_condition: false,
    reads: Reads::Text,
    field_key: "field",
    // A baseline is remembered long.
    default_timespan: Some("90d"),
    // Each new value is a finding of its own.
    suppress_by_default: false,
    no_group_by: None,
    keys: &["learning"],
    required_keys: &[],
    check: no_check,
    expires: true,
};

/// A `new_term` group's state: its baseline.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Baseline {
    /// The latest event (keeps the baseline alive: it expires `timespan` after it).
    latest: Option<Seen>,
    /// When the group was first seen (its learning period follows).
    since: Option<i64>,
    /// The values seen.
    seen: BTreeSet<String>,
}

/// The persisted form: latest event and first time (ms before the anchor), values.
#[derive(Deserialize)]
struct Wire {
    latest: Option<(i64, u64)>,
    since: Option<i64>,
    seen: Vec<String>,
}

impl Baseline {
    /// Learns the event's value; fires on a value new to the group after its learning period
    /// (not while `quiet`).
    pub fn step(&mut self, p: &Params, ev: &Observed, quiet: bool) -> Option<Firing<'static>> {
        let at = ev.at;
        if self.latest.is_none_or(|l| l < at) {
            self.latest = Some(at);
        }
        let since = *self.since.get_or_insert(at.t);
        let learning = at.t < since + p.detector.learning_ms;
        let v = ev.value.unwrap_or_default();
        let new = !self.seen.contains(v) && self.seen.insert(v.to_owned());
        (new && !learning && !quiet).then(|| Firing::over_timespan(p, at, Some(at.t), vec![at], 1))
    }

    /// Newest time it holds.
    pub fn newest(&self) -> Option<i64> {
        self.latest.map(|l| l.t).max(self.since)
    }

    /// Whether it has neither an event nor a value.
    pub fn is_empty(&self) -> bool {
        self.latest.is_none() && self.seen.is_empty()
    }

    /// Writes the persisted form.
    pub fn encode_into(&self, anchor: i64, w: &mut RawWriter) {
        w.some(self.latest.is_some());
        if let Some(l) = self.latest {
            w.i64(anchor - l.t);
            w.u64(l.seq);
        }
        w.some(self.since.is_some());
        if let Some(s) = self.since {
            w.i64(anchor - s);
        }
        w.len(self.seen.len());
        self.seen.iter().for_each(|v| w.str(v));
    }

    /// Reads what [`Baseline::encode_into`] wrote.
    pub fn decode(anchor: i64, bytes: &[u8]) -> Result<Baseline, StateError> {
        let (w, _) = state::decode_part::<Wire>(bytes)?;
        let at = |d| state::time_before(anchor, d);
        Ok(Baseline {
            latest: w
                .latest
                .map(|(d, seq)| at(d).map(|t| Seen { t, seq }))
                .transpose()?,
            since: w.since.map(at).transpose()?,
            seen: w.seen.into_iter().collect(),
        })
    }

    /// The baseline of a group persisted in the legacy form.
    pub fn from_legacy(
        latest: Option<Seen>,
        since: Option<i64>,
        seen: BTreeSet<String>,
    ) -> Baseline {
        Baseline {
            latest,
            since,
            seen,
        }
    }
}
