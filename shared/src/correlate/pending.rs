//! The reorder buffer: events that feed correlations wait here until the force's watermark is
//! the allowed lateness past them, then are released in (event time, sequence) order, so that
//! events arriving out of order within the lateness give the same alerts as sorted input.
//!
//! A pending event holds only what its correlations read (a [`Sample`] per correlation input it
//! can reach, chained ones included), not the event itself: a few dozen bytes. The events a
//! batch adds are persisted together, as one *segment* under one key (one write per batch, not
//! two per event), so that a crash loses nothing; a segment is deleted once all its events are
//! released (see `ForceState::take_changes`).

use std::borrow::Cow;
use std::collections::BTreeSet;

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use super::kind::{Reads, finite, on_globe};
use super::seen::Seen;
use crate::event::Event;
use crate::sigma::{CompiledCorrelation, Input, RuleSet};
use crate::state::{self, StateError};

/// Key prefix of pending events persisted one per key (the first form; read, and rewritten as a
/// segment). Group keys start with a rule id.
pub(super) const PENDING_PREFIX: &[u8] = b"\x01p";

/// Key prefix of segments: the events one batch added to the buffer, in one value.
pub(super) const SEGMENT_PREFIX: &[u8] = b"\x01s";

/// Appends the key of segment `id` (the lowest sequence in it) to `out`.
pub(super) fn segment_key(id: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(SEGMENT_PREFIX);
    out.extend_from_slice(&id.to_be_bytes());
}

/// The segment id in a segment key.
pub(super) fn segment_id(key: &[u8]) -> Option<u64> {
    let id: [u8; 8] = key.strip_prefix(SEGMENT_PREFIX)?.try_into().ok()?;
    Some(u64::from_be_bytes(id))
}

/// Appends the persisted form of a segment holding `events` to `out`.
pub(super) fn encode_segment(rules: &RuleSet, events: &[&Pending], out: &mut Vec<u8>) {
    state::encode_into(
        out,
        &Seq(|| events.iter().map(|&pending| PendingRef { rules, pending })),
    );
}

/// Decodes a segment; inputs of correlations no longer loaded are dropped.
pub(super) fn decode_segment(rules: &RuleSet, bytes: &[u8]) -> Result<Vec<Pending>, StateError> {
    let wires: Vec<PendingWire> = state::decode(bytes)?;
    Ok(wires
        .into_iter()
        .map(|w| Pending::from_wire(rules, w))
        .collect())
}

/// What one correlation input reads from an event: borrowed from it when fed at once, owned
/// (`'static`) when it waits in the reorder buffer.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Sample<'a> {
    /// Group-by values, in the correlation's `group-by` order.
    pub group: Vec<Cow<'a, str>>,
    /// The counted field's value (`value_*`, `new_term`).
    pub value: Option<Cow<'a, str>>,
    /// Latitude and longitude (`impossible_travel`).
    pub place: Option<(f64, f64)>,
}

/// An event's fields as its correlations read them, each looked up once: several correlations
/// often group by the same field (five of the identity pack's by `properties.userPrincipalName`),
/// and one lookup through the source's mapping costs several map searches.
pub(super) struct Fields<'a> {
    ev: &'a Event,
    /// (field name, value) looked up so far, the first `len` of them: an event's correlations
    /// read a handful, so they are kept in place rather than in a vector allocated per event
    /// (names past the last slot are looked up every time).
    seen: [(&'a str, Option<&'a Value>); 8],
    len: usize,
}

impl<'a> Fields<'a> {
    /// No field of `ev` looked up yet.
    pub(super) fn new(ev: &'a Event) -> Self {
        Fields {
            ev,
            seen: [("", None); 8],
            len: 0,
        }
    }

    /// [`Event::field`], once per name.
    fn get(&mut self, name: &'a str) -> Option<&'a Value> {
        if let Some((_, v)) = self.seen[..self.len].iter().find(|(n, _)| *n == name) {
            return *v;
        }
        let v = self.ev.field(name);
        if let Some(slot) = self.seen.get_mut(self.len) {
            *slot = (name, v);
            self.len += 1;
        }
        v
    }
}

/// Why an event cannot count in a correlation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unread {
    /// A field it reads is missing (or, for a number or a coordinate, not one).
    Missing,
    /// A number it reads is not finite, or a place is off the globe: a bad value.
    Bad,
}

impl<'a> Sample<'a> {
    /// Reads input `pos` of `corr` from `ev`, as the kind says ([`Reads`]): an error if the
    /// event cannot count (a group-by field, the counted field or a coordinate is missing, or a
    /// number or place is not usable).
    pub fn extract(
        corr: &'a CompiledCorrelation,
        pos: usize,
        fields: &mut Fields<'a>,
    ) -> Result<Sample<'a>, Unread> {
        let mut group = Vec::with_capacity(corr.group_by.len());
        for field in corr.group_fields[pos].iter().take(corr.group_by.len()) {
            group.push(
                fields
                    .get(field)
                    .and_then(value_text)
                    .ok_or(Unread::Missing)?,
            );
        }
        let reads = corr.params.kind.spec().reads;
        let mut text = |f: &'a str| fields.get(f).and_then(value_text).ok_or(Unread::Missing);
        let value = match (reads, corr.field.as_deref()) {
            (Reads::Nothing | Reads::Place, _) | (Reads::Text | Reads::Number, None) => None,
            (Reads::Text, Some(f)) => Some(text(f)?),
            (Reads::Number, Some(f)) => {
                let v = text(f)?;
                // Sums and averages count finite numbers only.
                let x: f64 = v.trim().parse().map_err(|_| Unread::Missing)?;
                finite(x).ok_or(Unread::Bad)?;
                Some(v)
            }
        };
        let place = match reads {
            Reads::Place => {
                let d = &corr.params.detector;
                let mut coord = |f: &'a Option<String>| {
                    f.as_deref()
                        .and_then(|f| fields.get(f))
                        .and_then(|v| v.as_f64().or_else(|| v.as_str()?.trim().parse().ok()))
                        .ok_or(Unread::Missing)
                };
                let (lat, lon) = (coord(&d.latitude)?, coord(&d.longitude)?);
                Some(on_globe(lat, lon).ok_or(Unread::Bad)?)
            }
            Reads::Nothing | Reads::Text | Reads::Number => None,
        };
        Ok(Sample {
            group,
            value,
            place,
        })
    }

    /// The same sample, owning its values (to wait in the reorder buffer).
    pub fn into_owned(self) -> Sample<'static> {
        Sample {
            group: self
                .group
                .into_iter()
                .map(|g| Cow::Owned(g.into_owned()))
                .collect(),
            value: self.value.map(|v| Cow::Owned(v.into_owned())),
            place: self.place,
        }
    }

    /// Writes the canonical group key into `out`: `field=value` pairs in field-name order
    /// (`names` are the correlation's `group-by` names), separated by U+001F.
    pub fn write_key(&self, names: &[String], out: &mut String) {
        out.clear();
        let pair = |i: usize| (names[i].as_str(), &*self.group[i]);
        let mut push = |i: usize, first: bool| {
            if !first {
                out.push('\u{1f}');
            }
            let (f, v) = pair(i);
            out.push_str(f);
            out.push('=');
            out.push_str(v);
        };
        match self.group.len() {
            0 => {}
            1 => push(0, true),
            n => {
                let mut order: Vec<usize> = (0..n).collect();
                order.sort_by(|&a, &b| pair(a).cmp(&pair(b)));
                for (k, i) in order.into_iter().enumerate() {
                    push(i, k == 0);
                }
            }
        }
    }
}

/// Text of a field value for grouping and distinct counting.
pub(super) fn value_text(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(Cow::Borrowed(s)),
        other => Some(Cow::Owned(other.to_string())),
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
    pub samples: Vec<((usize, usize), Sample<'static>)>,
    /// The segment it is persisted in (none until the batch that added it is persisted).
    pub segment: Option<u64>,
}

impl Pending {
    /// [`Pending::read`], not telling bad values.
    #[cfg(test)]
    pub fn new(rules: &RuleSet, at: Seen, direct: Vec<(usize, usize)>, ev: &Event) -> Pending {
        Pending::read(rules, at, direct, ev, &mut false)
    }

    /// Extracts what `direct` (sorted, unique) and every correlation chained behind them read
    /// from `ev`; sets `bad` if a direct one read a bad value ([`Unread::Bad`]).
    pub fn read(
        rules: &RuleSet,
        at: Seen,
        direct: Vec<(usize, usize)>,
        ev: &Event,
        bad: &mut bool,
    ) -> Pending {
        let mut samples = Vec::with_capacity(direct.len());
        let mut fields = Fields::new(ev);
        let mut extract = |c: usize, pos: usize| match Sample::extract(
            &rules.correlations()[c],
            pos,
            &mut fields,
        ) {
            Ok(s) => Some(((c, pos), s.into_owned())),
            Err(Unread::Bad) => {
                *bad |= direct.binary_search(&(c, pos)).is_ok();
                None
            }
            Err(Unread::Missing) => None,
        };
        if direct
            .iter()
            .all(|&(c, _)| rules.correlations_of_correlation(c).is_empty())
        {
            // Nothing chained: the inputs are the direct ones.
            samples.extend(direct.iter().filter_map(|&(c, pos)| extract(c, pos)));
            return Pending {
                at,
                direct,
                samples,
                segment: None,
            };
        }
        let mut reach: BTreeSet<(usize, usize)> = direct.iter().copied().collect();
        let mut todo: Vec<usize> = direct.iter().map(|d| d.0).collect();
        while let Some(c) = todo.pop() {
            for &d in rules.correlations_of_correlation(c) {
                let corr = &rules.correlations()[d];
                for pos in corr.positions_of(Input::Correlation(c)) {
                    if reach.insert((d, pos)) {
                        todo.push(d);
                    }
                }
            }
        }
        samples.extend(reach.into_iter().filter_map(|(c, pos)| extract(c, pos)));
        Pending {
            at,
            direct,
            samples,
            segment: None,
        }
    }

    /// The sample of input `pos` of correlation `c`, if the event can count there.
    pub fn sample(&self, c: usize, pos: usize) -> Option<&Sample<'static>> {
        self.samples
            .binary_search_by(|(k, _)| k.cmp(&(c, pos)))
            .ok()
            .map(|i| &self.samples[i].1)
    }

    /// Appends its key in the first form (one key per event) to `out`: prefix, then time and
    /// sequence in sortable big-endian.
    #[cfg(test)]
    pub fn key_into(at: Seen, out: &mut Vec<u8>) {
        out.extend_from_slice(PENDING_PREFIX);
        out.extend_from_slice(&((at.t as u64) ^ (1 << 63)).to_be_bytes());
        out.extend_from_slice(&at.seq.to_be_bytes());
    }

    /// Encodes it alone, as the first form stored it (segments hold the same per event): with
    /// correlation ids instead of indices (indices change with the rule set), as a
    /// [`PendingWire`] written field by field.
    #[cfg(test)]
    pub fn encode(&self, rules: &RuleSet) -> Vec<u8> {
        state::encode(&PendingRef {
            rules,
            pending: self,
        })
    }

    /// Decodes a pending event persisted in its own key (the first form); inputs of
    /// correlations no longer loaded are dropped.
    pub fn decode(rules: &RuleSet, bytes: &[u8]) -> Result<Pending, StateError> {
        Ok(Pending::from_wire(rules, state::decode(bytes)?))
    }

    fn from_wire(rules: &RuleSet, w: PendingWire) -> Pending {
        let index = |id: &str| rules.correlations().iter().position(|c| c.meta.id == id);
        let mut samples: Vec<((usize, usize), Sample<'static>)> = w
            .samples
            .into_iter()
            .filter_map(|(id, p, s)| {
                let c = index(&id)?;
                // A correlation whose group-by changed since cannot use the sample.
                let names = &rules.correlations()[c].group_by;
                if !s.group.iter().map(|g| &g.0).eq(names.iter()) {
                    return None;
                }
                let sample = Sample {
                    group: s.group.into_iter().map(|(_, v)| Cow::Owned(v)).collect(),
                    value: s.value.map(Cow::Owned),
                    place: s.place,
                };
                Some(((c, usize::from(p)), sample))
            })
            .collect();
        samples.sort_by_key(|s| s.0);
        Pending {
            at: Seen { t: w.t, seq: w.seq },
            direct: w
                .direct
                .iter()
                .filter_map(|(id, p)| index(id).map(|c| (c, usize::from(*p))))
                .collect(),
            samples,
            segment: None,
        }
    }
}

/// A sequence serialized from an exact-size iterator made on demand (no collection built).
struct Seq<F>(F);

impl<F, I> Serialize for Seq<F>
where
    F: Fn() -> I,
    I: ExactSizeIterator,
    I::Item: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq((self.0)())
    }
}

/// Serializes a [`Pending`] as its [`PendingWire`] form, borrowing it.
struct PendingRef<'a> {
    rules: &'a RuleSet,
    pending: &'a Pending,
}

impl Serialize for PendingRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let corrs = self.rules.correlations();
        let p = self.pending;
        let mut w = s.serialize_struct("PendingWire", 4)?;
        w.serialize_field("t", &p.at.t)?;
        w.serialize_field("seq", &p.at.seq)?;
        w.serialize_field(
            "direct",
            &Seq(|| {
                p.direct
                    .iter()
                    .map(|&(c, pos)| (corrs[c].meta.id.as_str(), pos as u16))
            }),
        )?;
        w.serialize_field(
            "samples",
            &Seq(|| {
                p.samples.iter().map(|&((c, pos), ref sample)| {
                    let sample = SampleRef {
                        names: &corrs[c].group_by,
                        sample,
                    };
                    (corrs[c].meta.id.as_str(), pos as u16, sample)
                })
            }),
        )?;
        w.end()
    }
}

/// Serializes a [`Sample`] as its [`SampleWire`] form, with the correlation's group-by names.
struct SampleRef<'a> {
    names: &'a [String],
    sample: &'a Sample<'static>,
}

impl Serialize for SampleRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut w = s.serialize_struct("SampleWire", 3)?;
        w.serialize_field("group", &Seq(|| self.names.iter().zip(&self.sample.group)))?;
        w.serialize_field("value", &self.sample.value)?;
        w.serialize_field("place", &self.sample.place)?;
        w.end()
    }
}

#[derive(Serialize, Deserialize)]
struct PendingWire {
    t: i64,
    seq: u64,
    direct: Vec<(String, u16)>,
    samples: Vec<(String, u16, SampleWire)>,
}

/// The persisted form of a [`Sample`]: group-by values with their names.
#[derive(Serialize, Deserialize)]
struct SampleWire {
    group: Vec<(String, String)>,
    value: Option<String>,
    place: Option<(f64, f64)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigma::parse_rules;
    use crate::source::SourceKind;
    use serde_json::json;

    #[test]
    fn encoding_writes_the_wire_form_and_round_trips() {
        let text = r#"
title: failed
id: failed
logsource: {product: azure, service: signinlogs}
detection: {s: {resultType: 50126}, condition: s}
---
title: spray
id: spray
correlation: {type: value_count, rules: failed, group-by: [ip, app], timespan: 10m, condition: {gte: 3, field: user}}
"#;
        let docs = parse_rules("p.yml", text)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let (rs, errs) = RuleSet::compile(docs);
        assert!(errs.is_empty(), "{errs:?}");
        let ev = Event::with_time(
            SourceKind::EntraSignin,
            1_800_000_000_000,
            json!({"resultType": "50126", "user": "bob", "ip": "10.0.0.1", "app": 7}),
        );
        let at = Seen {
            t: ev.time_ms,
            seq: 42,
        };
        let p = Pending::new(&rs, at, vec![(0, 0)], &ev);
        assert_eq!(p.samples.len(), 1);
        let wire = PendingWire {
            t: at.t,
            seq: 42,
            direct: vec![("spray".into(), 0)],
            samples: vec![(
                "spray".into(),
                0,
                SampleWire {
                    group: vec![("ip".into(), "10.0.0.1".into()), ("app".into(), "7".into())],
                    value: Some("bob".into()),
                    place: None,
                },
            )],
        };
        assert_eq!(p.encode(&rs), state::encode(&wire));
        assert_eq!(Pending::decode(&rs, &p.encode(&rs)).unwrap(), p);
    }
}
