//! The reorder buffer: events that feed correlations wait here until the force's watermark is
//! the allowed lateness past them, then are released in (event time, sequence) order, so that
//! events arriving out of order within the lateness give the same alerts as sorted input.
//!
//! A pending event holds only what its correlations read (a [`Sample`] per correlation input it
//! can reach, chained ones included), not the event itself: a few dozen bytes, persisted in the
//! force's state under its own key so that a crash loses nothing.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::window::Seen;
use crate::event::Event;
use crate::sigma::parse::CorrelationKind;
use crate::sigma::{CompiledCorrelation, Input, RuleSet};
use crate::state::{self, StateError};

/// Key prefix of pending events in the state keyspace (group keys start with a rule id).
pub(super) const PENDING_PREFIX: &[u8] = b"\x01p";

/// What one correlation input reads from an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Sample {
    /// Group-by name and value, in the correlation's `group-by` order.
    pub group: Vec<(String, String)>,
    /// The counted field's value (`value_*`, `new_term`).
    pub value: Option<String>,
    /// Latitude and longitude (`impossible_travel`).
    pub place: Option<(f64, f64)>,
}

impl Sample {
    /// Reads input `pos` of `corr` from `ev`; `None` if the event cannot count (a group-by
    /// field, the counted field or a coordinate is missing).
    pub fn extract(corr: &CompiledCorrelation, pos: usize, ev: &Event) -> Option<Sample> {
        let mut group = Vec::with_capacity(corr.group_by.len());
        for (name, field) in corr.group_by.iter().zip(&corr.group_fields[pos]) {
            group.push((name.clone(), ev.field(field).and_then(value_text)?));
        }
        let value = match (&corr.field, corr.kind) {
            (
                _,
                CorrelationKind::Temporal
                | CorrelationKind::TemporalOrdered
                | CorrelationKind::EventCount
                | CorrelationKind::ImpossibleTravel,
            )
            | (None, _) => None,
            (Some(f), kind) => {
                let v = ev.field(f).and_then(value_text)?;
                // Sums and averages count numeric values only.
                if matches!(kind, CorrelationKind::ValueSum | CorrelationKind::ValueAvg)
                    && v.trim().parse::<f64>().is_err()
                {
                    return None;
                }
                Some(v)
            }
        };
        let place = if corr.kind == CorrelationKind::ImpossibleTravel {
            let coord = |f: &Option<String>| {
                f.as_deref()
                    .and_then(|f| ev.field(f))
                    .and_then(|v| v.as_f64().or_else(|| v.as_str()?.trim().parse().ok()))
            };
            Some((
                coord(&corr.detector.latitude)?,
                coord(&corr.detector.longitude)?,
            ))
        } else {
            None
        };
        Some(Sample {
            group,
            value,
            place,
        })
    }

    /// Canonical group key: `field=value` pairs in field-name order, separated by U+001F.
    pub fn key(&self) -> String {
        let mut pairs: Vec<&(String, String)> = self.group.iter().collect();
        pairs.sort();
        let mut k = String::new();
        for (i, (f, v)) in pairs.into_iter().enumerate() {
            if i > 0 {
                k.push('\u{1f}');
            }
            k.push_str(f);
            k.push('=');
            k.push_str(v);
        }
        k
    }
}

/// Text of a field value for grouping and distinct counting.
pub(super) fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// An event waiting to be released to its correlations.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Pending {
    /// Event time and sequence.
    pub at: Seen,
    /// The (correlation, input position) pairs its detection rules feed.
    pub direct: Vec<(usize, usize)>,
    /// What each reachable (correlation, input position) reads from it, sorted.
    pub samples: Vec<((usize, usize), Sample)>,
}

impl Pending {
    /// Extracts what `direct` and every correlation chained behind them read from `ev`.
    pub fn new(rules: &RuleSet, at: Seen, direct: Vec<(usize, usize)>, ev: &Event) -> Pending {
        let mut reach: BTreeSet<(usize, usize)> = direct.iter().copied().collect();
        let mut todo: Vec<usize> = direct.iter().map(|d| d.0).collect();
        while let Some(c) = todo.pop() {
            for &d in rules.correlations_of_correlation(c) {
                let corr = &rules.correlations()[d];
                for (pos, _) in corr
                    .inputs
                    .iter()
                    .enumerate()
                    .filter(|(_, x)| **x == Input::Correlation(c))
                {
                    if reach.insert((d, pos)) {
                        todo.push(d);
                    }
                }
            }
        }
        let samples = reach
            .into_iter()
            .filter_map(|(c, pos)| {
                Sample::extract(&rules.correlations()[c], pos, ev).map(|s| ((c, pos), s))
            })
            .collect();
        Pending {
            at,
            direct,
            samples,
        }
    }

    /// The sample of input `pos` of correlation `c`, if the event can count there.
    pub fn sample(&self, c: usize, pos: usize) -> Option<&Sample> {
        self.samples
            .binary_search_by(|(k, _)| k.cmp(&(c, pos)))
            .ok()
            .map(|i| &self.samples[i].1)
    }

    /// Its key in the state keyspace: prefix, then time and sequence in sortable big-endian.
    pub fn key(at: Seen) -> Vec<u8> {
        let mut k = PENDING_PREFIX.to_vec();
        k.extend_from_slice(&((at.t as u64) ^ (1 << 63)).to_be_bytes());
        k.extend_from_slice(&at.seq.to_be_bytes());
        k
    }

    /// Encodes it with correlation ids instead of indices (indices change with the rule set).
    pub fn encode(&self, rules: &RuleSet) -> Vec<u8> {
        let id = |c: usize| rules.correlations()[c].meta.id.clone();
        state::encode(&PendingWire {
            t: self.at.t,
            seq: self.at.seq,
            direct: self
                .direct
                .iter()
                .map(|&(c, p)| (id(c), p as u16))
                .collect(),
            samples: self
                .samples
                .iter()
                .map(|((c, p), s)| (id(*c), *p as u16, s.clone()))
                .collect(),
        })
    }

    /// Decodes a pending event; inputs of correlations no longer loaded are dropped.
    pub fn decode(rules: &RuleSet, bytes: &[u8]) -> Result<Pending, StateError> {
        let w: PendingWire = state::decode(bytes)?;
        let index = |id: &str| rules.correlations().iter().position(|c| c.meta.id == id);
        let mut samples: Vec<((usize, usize), Sample)> = w
            .samples
            .into_iter()
            .filter_map(|(id, p, s)| index(&id).map(|c| ((c, usize::from(p)), s)))
            .collect();
        samples.sort_by_key(|s| s.0);
        Ok(Pending {
            at: Seen { t: w.t, seq: w.seq },
            direct: w
                .direct
                .iter()
                .filter_map(|(id, p)| index(id).map(|c| (c, usize::from(*p))))
                .collect(),
            samples,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct PendingWire {
    t: i64,
    seq: u64,
    direct: Vec<(String, u16)>,
    samples: Vec<(String, u16, Sample)>,
}
