//! One (correlation, group) pair: what every kind's group has (its key, its suppression after
//! an alert, whether it awaits persisting) around its kind's own state ([`KindState`]), and the
//! persisted form of the whole.
//!
//! Persisted form (after the state version byte): the marker [`FORM`] (a byte no group of the
//! legacy form starts with), the kind state's tag, the anchor (the group's newest event time),
//! the suppression (relative to the anchor) and the suppressed count, then the kind's state as
//! its file writes it, times relative to the anchor (small varints). Values of the legacy form
//! (one struct with every kind's fields, `legacy.rs`) are read and converted.

use super::kind::{CorrelationKind, KindState};
use super::legacy;
use crate::state::{self, RawWriter, STATE_VERSION, StateError};

/// First byte of a group's current form after the version: bincode never starts an `i64` (the
/// legacy form's anchor) with it.
const FORM: u8 = 0xff;

/// The state of one (correlation, group) pair.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Group {
    /// The canonical group key (for the state key; groups are found by its print).
    pub key: Box<str>,
    /// The kind's state.
    pub state: KindState,
    /// Quiet until this event time (inclusive) after an alert.
    pub suppress_until: Option<i64>,
    /// Matching events while quiet (saturating).
    pub suppressed: u32,
    /// Changed since the state was last persisted (not persisted itself).
    pub dirty: bool,
    /// The low half of its key's print (see `groups.rs`; not persisted).
    pub print_lo: u64,
}

impl Group {
    /// An empty group of key `key`.
    pub fn new(key: &str) -> Group {
        Group {
            key: key.into(),
            ..Default::default()
        }
    }

    /// Empties the group (it expired), keeping its key and whether it awaits persisting.
    pub fn reset(&mut self) {
        *self = Group {
            key: std::mem::take(&mut self.key),
            dirty: self.dirty,
            print_lo: self.print_lo,
            ..Default::default()
        };
    }

    /// Whether the group has expired by event time `now`: nothing newer than `now - span` and no
    /// suppression running. An expired group is as good as absent: it is removed by the next
    /// sweep, or starts afresh on its next event, whichever comes first (so that when sweeps run
    /// changes nothing).
    pub fn expired_at(&self, now: i64, span: i64) -> bool {
        self.state
            .newest()
            .is_none_or(|t| t < now.saturating_sub(span))
            && self.suppress_until.is_none_or(|u| u < now)
    }

    /// Whether the group holds nothing worth keeping at event time `now`.
    pub fn is_idle(&self, now: i64) -> bool {
        self.state.is_empty() && self.suppress_until.is_none_or(|u| u < now)
    }

    /// Appends the persisted bytes of the group to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let anchor = self.state.newest().unwrap_or(0);
        let mut w = RawWriter::new(out);
        w.u8(FORM);
        w.u8(self.state.tag());
        w.i64(anchor);
        w.some(self.suppress_until.is_some());
        if let Some(u) = self.suppress_until {
            w.i64(u.saturating_sub(anchor));
        }
        w.u64(u64::from(self.suppressed));
        self.state.encode_into(anchor, &mut w);
    }

    /// The persisted bytes of the group.
    #[cfg(test)]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Rebuilds group `key` of a correlation of kind `kind` from its persisted bytes, in the
    /// current form or the legacy one.
    pub fn decode(kind: CorrelationKind, key: &str, bytes: &[u8]) -> Result<Group, StateError> {
        let group = |state, suppress_until, suppressed: u64| Group {
            key: key.into(),
            state,
            suppress_until,
            suppressed: u32::try_from(suppressed).unwrap_or(u32::MAX),
            dirty: false,
            print_lo: 0,
        };
        match bytes {
            [STATE_VERSION, FORM, rest @ ..] => {
                type Head = (u8, i64, Option<i64>, u64);
                let ((tag, anchor, suppress, suppressed), n) = state::decode_part::<Head>(rest)?;
                let state = KindState::decode(tag, anchor, &rest[n..])?;
                let suppress_until = suppress.map(|u| anchor.saturating_add(u));
                Ok(group(state, suppress_until, suppressed))
            }
            _ => {
                let mut old = legacy::decode(bytes)?;
                let state = KindState::from_legacy(kind, &mut old);
                Ok(group(state, old.suppress_until, old.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::kind::{CmpOp, DetectorSpec, Observed, Params, step};
    use crate::correlate::legacy::Wire;
    use crate::correlate::seen::Seen;

    const T0: i64 = 1_800_000_000_000;

    fn params(kind: CorrelationKind) -> Params {
        Params {
            kind,
            timespan_ms: 3_600_000,
            condition: vec![(CmpOp::Gte, 1e9)],
            suppress_ms: 60_000,
            inputs: 2,
            detector: DetectorSpec {
                learning_ms: 0,
                latitude: Some("lat".into()),
                longitude: Some("lon".into()),
                speed_kmh: 1e9,
                min_distance_km: 1e9,
                below: Some(0.5),
                baseline_ms: 4 * 3_600_000,
            },
        }
    }

    /// A group of kind `kind` fed a few events.
    fn fed(kind: CorrelationKind) -> Group {
        let p = params(kind);
        let mut g = Group::new("user=bob");
        for i in 0..5u64 {
            let ev = Observed {
                at: Seen {
                    t: T0 + i as i64 * 60_000,
                    seq: 10 + i,
                },
                positions: &[0],
                value: Some(["12", "7.5", "x"][i as usize % 3]),
                place: Some((51.5, -0.1)),
            };
            step(&mut g.state, &p, &ev, false, &mut Vec::new());
        }
        g.suppress_until = Some(T0 + 100_000);
        g.suppressed = 3;
        g
    }

    #[test]
    fn every_kind_round_trips_in_the_current_form() {
        for kind in CorrelationKind::ALL {
            let g = fed(kind);
            assert!(!g.state.is_empty(), "{kind:?}");
            let bytes = g.encode();
            assert_eq!(&bytes[..2], &[STATE_VERSION, FORM]);
            let back = Group::decode(kind, "user=bob", &bytes).unwrap();
            assert_eq!(back, g, "{kind:?}");
            assert_eq!(back.encode(), bytes);
        }
        // A group read for a rule whose id now names another kind starts that kind afresh.
        let g = fed(CorrelationKind::EventCount);
        let mut back = Group::decode(CorrelationKind::Temporal, "k", &g.encode()).unwrap();
        let p = params(CorrelationKind::Temporal);
        let ev = Observed {
            at: Seen { t: T0, seq: 1 },
            positions: &[0],
            value: None,
            place: None,
        };
        assert!(step(&mut back.state, &p, &ev, false, &mut Vec::new()).is_none());
        assert_eq!(back.state.newest(), Some(T0));
        assert!(
            Group::decode(
                CorrelationKind::Temporal,
                "k",
                &[STATE_VERSION, FORM, 99, 0, 0, 0]
            )
            .is_err()
        );
    }

    #[test]
    fn both_legacy_forms_are_read_as_the_group_kind() {
        let wire = Wire {
            anchor: T0,
            width: 0,
            buckets: Vec::new(),
            sums: Vec::new(),
            values: Vec::new(),
            evidence: Vec::new(),
            steps: vec![Some((5_000, 7))],
            suppress_until: Some(i64::MAX - T0),
            suppressed: 2,
            seen: vec!["GB".into(), "FR".into()],
            since: Some(1_000),
            last_place: Some((0, 9, 51.5, -0.1)),
            rate: None,
        };
        let bytes = state::encode(&wire);
        // The first form is the same without the rate watch's `None`.
        assert_eq!(bytes.last(), Some(&0));
        for bytes in [&bytes[..], &bytes[..bytes.len() - 1]] {
            let feed = Group::decode(CorrelationKind::SilentFeed, "", bytes).unwrap();
            assert_eq!(feed.state.newest(), Some(T0 - 5_000));
            assert_eq!(
                (feed.suppress_until, feed.suppressed),
                (None, 0),
                "alerted: in the watch"
            );
            let term = Group::decode(CorrelationKind::NewTerm, "k", bytes).unwrap();
            assert_eq!(term.state.newest(), Some(T0 - 1_000));
            assert_eq!((term.suppress_until, term.suppressed), (Some(i64::MAX), 2));
            let travel = Group::decode(CorrelationKind::ImpossibleTravel, "k", bytes).unwrap();
            assert_eq!(travel.state.newest(), Some(T0));
            let steps = Group::decode(CorrelationKind::TemporalOrdered, "k", bytes).unwrap();
            assert_eq!(steps.state.newest(), Some(T0 - 5_000));
            let count = Group::decode(CorrelationKind::ValueSum, "k", bytes).unwrap();
            assert!(count.state.is_empty());
            for g in [feed, term, travel, steps, count] {
                assert!(g.encode().len() <= bytes.len() + 2);
            }
        }
    }

    #[test]
    fn a_group_is_no_larger_than_before_per_kind_state() {
        // 184 bytes with every kind's fields in one struct.
        assert!(
            std::mem::size_of::<Group>() <= 160,
            "{}",
            std::mem::size_of::<Group>()
        );
    }
}
