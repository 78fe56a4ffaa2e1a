//! The sliding count window of the count kinds (`kind/count.rs`), and its compact persisted form.
//!
//! Count kinds keep **time buckets** instead of every event: a window of `timespan` is cut into
//! [`BUCKETS_PER_WINDOW`] buckets, each holding a count, the time of its first event and the sum
//! of its numeric values. Memory and persisted bytes per group are therefore bounded by the
//! number of buckets (plus distinct values for `value_count`/`value_percentile`, which are
//! inherent), not by the event rate. The price is precision at the old edge of the window: an
//! event counts while its bucket overlaps `[t - timespan, t]`, so a window reaches at most one
//! bucket (`timespan / 20`) further back than the timespan, never less.
//!
//! The newest [`EVIDENCE_KEPT`] events of a group are kept exactly (time and stream sequence)
//! as the alert's evidence.

use serde::{Deserialize, Serialize};

use super::seen::Seen;
use crate::state::{self, RawWriter, StateError};

/// How many buckets a count window is cut into.
pub const BUCKETS_PER_WINDOW: i64 = 20;

/// How many of a group's newest events are kept as alert evidence.
pub const EVIDENCE_KEPT: usize = 16;

/// One time bucket of a count window (its sum, if any, is in [`Counts::sums`]). Its index
/// (event time divided by the bucket width) is that of its first event's time.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bucket {
    first_t: i64,
    n: u32,
}

impl Bucket {
    fn idx(&self, width: i64) -> i64 {
        self.first_t.div_euclid(width)
    }
}

/// Makes room for one more element, a few at a time up to `max` instead of doubling: groups
/// are many and most hold a handful of events.
fn room<T>(v: &mut Vec<T>, max: usize) {
    if v.len() == v.capacity() {
        v.reserve_exact(2.min(max.saturating_sub(v.len())).max(1));
    }
}

/// Where one value occurs in a window: (bucket, occurrences) pairs, oldest first.
type Slots = Vec<(i64, u32)>;

/// `Counts::newest` of a window that counts nothing.
const NO_TIME: i64 = i64::MIN;

/// A sliding count window in time buckets.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Counts {
    width: i64,
    /// Oldest first.
    buckets: Vec<Bucket>,
    /// Sum of the numeric values of each bucket, parallel to `buckets`; empty while every sum
    /// is zero (counts that sum nothing pay nothing).
    sums: Vec<f64>,
    /// Per value, sorted by value: (bucket, occurrences) pairs, oldest first. `value_count`
    /// keeps only the latest bucket of each value (enough to know whether it is still in the
    /// window).
    values: Vec<(Box<str>, Slots)>,
    /// The newest events, oldest first.
    evidence: Vec<Seen>,
    /// Newest event time counted ([`NO_TIME`] when none since it was created or drained).
    newest: i64,
}

impl Default for Counts {
    fn default() -> Counts {
        Counts {
            width: 0,
            buckets: Vec::new(),
            sums: Vec::new(),
            values: Vec::new(),
            evidence: Vec::new(),
            newest: NO_TIME,
        }
    }
}

/// What a count window knows after an event.
pub(crate) struct Tally {
    /// Events in the window.
    pub events: u64,
    /// Distinct values in the window.
    pub distinct: u64,
    /// Sum of the numeric values in the window.
    pub sum: f64,
    /// Occurrences of the given value in the window.
    pub same: u32,
}

impl Counts {
    fn bucket_width(span: i64) -> i64 {
        (span / BUCKETS_PER_WINDOW).max(1)
    }

    /// The lowest bucket index still inside the window ending at `t`.
    fn low(&self, span: i64, t: i64) -> i64 {
        let buckets = (span + self.width - 1) / self.width;
        t.div_euclid(self.width) - buckets
    }

    /// Adds `x` to the sum of bucket `i`.
    fn add_sum(&mut self, i: usize, x: f64) {
        if self.sums.is_empty() {
            if x == 0.0 {
                return;
            }
            self.sums = vec![0.0; self.buckets.len()];
        }
        self.sums[i] += x;
    }

    /// Counts one event; false if it is older than the window and was not counted (late).
    pub fn add(
        &mut self,
        span: i64,
        at: Seen,
        value: Option<&str>,
        num: Option<f64>,
        per_bucket_values: bool,
    ) -> bool {
        let width = Self::bucket_width(span);
        if self.width != width {
            // First event, or the rule's timespan changed: start over.
            *self = Counts {
                width,
                ..Default::default()
            };
        }
        let (newest, low_before) = if self.newest == NO_TIME {
            (at.t, i64::MIN)
        } else {
            (self.newest.max(at.t), self.low(span, self.newest))
        };
        let low = self.low(span, newest);
        let idx = at.t.div_euclid(width);
        if idx < low {
            return false;
        }
        self.newest = newest;
        // Bucket `idx` holds the times in [start, end).
        let start = idx.saturating_mul(width);
        let end = start.saturating_add(width);
        let pos = self
            .buckets
            .iter()
            .rposition(|b| b.first_t < end)
            .map_or(0, |p| p + 1);
        match self.buckets.get_mut(pos.wrapping_sub(1)) {
            Some(b) if b.first_t >= start => {
                b.n += 1;
                b.first_t = b.first_t.min(at.t);
                self.add_sum(pos - 1, num.unwrap_or(0.0));
            }
            _ => {
                room(&mut self.buckets, BUCKETS_PER_WINDOW as usize + 2);
                self.buckets.insert(
                    pos,
                    Bucket {
                        first_t: at.t,
                        n: 1,
                    },
                );
                if !self.sums.is_empty() {
                    self.sums.insert(pos, 0.0);
                }
                self.add_sum(pos, num.unwrap_or(0.0));
            }
        }
        if let Some(v) = value {
            let at_value = match self.values.binary_search_by(|(k, _)| (**k).cmp(v)) {
                Ok(i) => i,
                Err(i) => {
                    self.values.insert(i, (v.into(), Vec::with_capacity(1)));
                    i
                }
            };
            let slots = &mut self.values[at_value].1;
            if per_bucket_values {
                let p = slots.iter().rposition(|s| s.0 <= idx).map_or(0, |p| p + 1);
                match slots.get_mut(p.wrapping_sub(1)) {
                    Some(s) if s.0 == idx => s.1 += 1,
                    _ => {
                        room(slots, BUCKETS_PER_WINDOW as usize + 2);
                        slots.insert(p, (idx, 1));
                    }
                }
            } else if slots.last().is_none_or(|s| s.0 < idx) {
                slots.clear();
                slots.push((idx, 1));
            }
        }
        let pos = self
            .evidence
            .iter()
            .rposition(|e| *e <= at)
            .map_or(0, |p| p + 1);
        if pos > 0 || self.evidence.len() < EVIDENCE_KEPT {
            room(&mut self.evidence, EVIDENCE_KEPT + 1);
            self.evidence.insert(pos, at);
            if self.evidence.len() > EVIDENCE_KEPT {
                self.evidence.remove(0);
            }
        }
        self.trim(low, low_before);
        true
    }

    /// Drops buckets, values and evidence below bucket `low` (values only if `low` moved up
    /// from `low_before`: they were trimmed to that already).
    fn trim(&mut self, low: i64, low_before: i64) {
        let low_t = low.saturating_mul(self.width);
        let old = self
            .buckets
            .iter()
            .take_while(|b| b.first_t < low_t)
            .count();
        if old > 0 {
            self.buckets.drain(..old);
            if !self.sums.is_empty() {
                self.sums.drain(..old);
            }
        }
        let width = self.width;
        let old = self
            .evidence
            .iter()
            .take_while(|e| e.t.div_euclid(width) < low)
            .count();
        if old > 0 {
            self.evidence.drain(..old);
        }
        if low > low_before {
            self.values.retain_mut(|(_, slots)| {
                let old = slots.iter().take_while(|s| s.0 < low).count();
                slots.drain(..old);
                !slots.is_empty()
            });
        }
    }

    /// The window's tallies, with the occurrences of `value`.
    pub fn tally(&self, value: Option<&str>) -> Tally {
        let events = self.buckets.iter().map(|b| u64::from(b.n)).sum();
        Tally {
            events,
            distinct: self.values.len() as u64,
            sum: self.sums.iter().fold(0.0, |s, x| s + x),
            same: value
                .and_then(|v| {
                    let i = self.values.binary_search_by(|(k, _)| (**k).cmp(v)).ok()?;
                    Some(self.values[i].1.iter().map(|s| s.1).sum())
                })
                .unwrap_or(0),
        }
    }

    /// Empties the window (after it fired), returning its first event time and the evidence.
    pub fn drain(&mut self) -> (Option<i64>, Vec<Seen>) {
        let first = self.buckets.first().map(|b| b.first_t);
        let evidence = std::mem::take(&mut self.evidence);
        self.buckets = Vec::new();
        self.sums = Vec::new();
        self.values = Vec::new();
        // As after a reload (the persisted form has no newest time for an empty window): a
        // restarted state must accept the same events as an uninterrupted one.
        self.newest = NO_TIME;
        (first, evidence)
    }

    /// Newest event time counted.
    pub fn newest(&self) -> Option<i64> {
        (!self.buckets.is_empty()).then_some(self.newest)
    }

    /// Whether nothing is counted.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// The persisted form of a [`Counts`], times relative to an anchor (the group's newest time):
/// bincode varints make the small offsets short.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CountsWire {
    pub width: i64,
    /// (buckets back from the anchor's bucket, count, first time's offset in its bucket).
    pub buckets: Vec<(i64, u32, i64)>,
    /// Sums per bucket; empty when all are zero.
    pub sums: Vec<f64>,
    /// Per value: (buckets back from the anchor's bucket, occurrences).
    pub values: Vec<(String, Vec<(i64, u32)>)>,
    /// (ms before the anchor, sequence delta to the previous evidence).
    pub evidence: Vec<(i64, i64)>,
}

impl Counts {
    /// The persisted form, relative to `anchor` (its newest time). (Persisting goes through
    /// [`Counts::encode_into`], which writes the same bytes by hand.)
    #[cfg(test)]
    pub fn to_wire(&self, anchor: i64) -> CountsWire {
        let top = anchor.div_euclid(self.width.max(1));
        let mut prev = 0u64;
        CountsWire {
            width: self.width,
            buckets: self
                .buckets
                .iter()
                .map(|b| {
                    let idx = b.idx(self.width);
                    (top - idx, b.n, b.first_t - idx * self.width)
                })
                .collect(),
            sums: if self.sums.iter().any(|&s| s != 0.0) {
                self.sums.clone()
            } else {
                Vec::new()
            },
            values: self
                .values
                .iter()
                .map(|(v, slots)| {
                    (
                        v.to_string(),
                        slots.iter().map(|&(i, n)| (top - i, n)).collect(),
                    )
                })
                .collect(),
            evidence: self
                .evidence
                .iter()
                .map(|e| {
                    let d = e.seq as i64 - prev as i64;
                    prev = e.seq;
                    (anchor - e.t, d)
                })
                .collect(),
        }
    }

    /// Writes its [`CountsWire`] form relative to `anchor`, field by field.
    pub fn encode_into(&self, anchor: i64, w: &mut RawWriter) {
        let width = self.width;
        let top = anchor.div_euclid(width.max(1));
        w.i64(width);
        w.len(self.buckets.len());
        for b in &self.buckets {
            let idx = b.idx(width);
            w.i64(top - idx);
            w.u64(u64::from(b.n));
            w.i64(b.first_t - idx * width);
        }
        if self.sums.iter().any(|&s| s != 0.0) {
            w.len(self.sums.len());
            self.sums.iter().for_each(|&s| w.f64(s));
        } else {
            w.len(0);
        }
        w.len(self.values.len());
        for (v, slots) in &self.values {
            w.str(v);
            w.len(slots.len());
            for &(i, n) in slots {
                w.i64(top - i);
                w.u64(u64::from(n));
            }
        }
        w.len(self.evidence.len());
        let mut prev = 0u64;
        for e in &self.evidence {
            w.i64(anchor - e.t);
            w.i64(e.seq as i64 - prev as i64);
            prev = e.seq;
        }
    }

    /// Rebuilds a window from its persisted form relative to `anchor`; numbers that put a time
    /// out of `i64`'s range are corrupt state.
    pub fn from_wire(anchor: i64, w: CountsWire) -> Result<Counts, StateError> {
        let width = w.width.max(1);
        let top = anchor.div_euclid(width);
        let overflow = || StateError::Decode("a window's bucket time overflows".into());
        let buckets: Vec<Bucket> = w
            .buckets
            .iter()
            .map(|&(back, n, off)| {
                let first_t = top
                    .checked_sub(back)
                    .and_then(|b| b.checked_mul(width))
                    .and_then(|t| t.checked_add(off))
                    .ok_or_else(overflow)?;
                Ok(Bucket { first_t, n })
            })
            .collect::<Result<_, StateError>>()?;
        let sums = if w.sums.is_empty() {
            Vec::new()
        } else {
            (0..buckets.len())
                .map(|i| w.sums.get(i).copied().unwrap_or(0.0))
                .collect()
        };
        let mut prev = 0i64;
        let evidence = w
            .evidence
            .iter()
            .map(|&(d, ds)| {
                prev = prev.wrapping_add(ds);
                Ok(Seen {
                    t: state::time_before(anchor, d)?,
                    seq: prev as u64,
                })
            })
            .collect::<Result<_, StateError>>()?;
        let values = w
            .values
            .into_iter()
            .map(|(v, slots)| {
                let slots = slots
                    .into_iter()
                    .map(|(b, n)| Ok((top.checked_sub(b).ok_or_else(overflow)?, n)))
                    .collect::<Result<_, StateError>>()?;
                Ok((v.into_boxed_str(), slots))
            })
            .collect::<Result<_, StateError>>()?;
        Ok(Counts {
            width: w.width,
            newest: if buckets.is_empty() { NO_TIME } else { anchor },
            buckets,
            sums,
            values,
            evidence,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPAN: i64 = 600_000;

    fn seen(t: i64, seq: u64) -> Seen {
        Seen { t, seq }
    }

    #[test]
    fn corrupt_wire_numbers_are_refused_not_overflowed() {
        let anchor = 1_800_000_000_000;
        let wire = |buckets, values, evidence| CountsWire {
            width: 30_000,
            buckets,
            sums: Vec::new(),
            values,
            evidence,
        };
        // Each would overflow rebuilding a time (found by the state fuzz target).
        let bad = [
            wire(vec![(i64::MIN, 1, 0)], vec![], vec![]),
            wire(vec![(-(1 << 50), 1, 0)], vec![], vec![]),
            wire(vec![(0, 1, i64::MAX)], vec![], vec![]),
            wire(vec![], vec![("x".into(), vec![(i64::MIN, 1)])], vec![]),
            wire(vec![], vec![], vec![(i64::MIN, 1)]),
        ];
        for w in bad {
            assert!(Counts::from_wire(anchor, w).is_err());
        }
        assert!(Counts::from_wire(anchor, wire(vec![(2, 1, 5)], vec![], vec![(10, 1)])).is_ok());
    }

    #[test]
    fn window_covers_at_least_the_timespan_and_at_most_one_bucket_more() {
        let mut c = Counts::default();
        let t0 = 1_800_000_000_000;
        assert!(c.add(SPAN, seen(t0, 1), None, None, false));
        // Exactly the timespan later: still counted.
        assert!(c.add(SPAN, seen(t0 + SPAN, 2), None, None, false));
        assert_eq!(c.tally(None).events, 2);
        // One bucket (30 s) beyond: the first event has left.
        c.add(SPAN, seen(t0 + SPAN + 30_000, 3), None, None, false);
        assert_eq!(c.tally(None).events, 2);
        // An event older than the window is refused.
        assert!(!c.add(SPAN, seen(t0 - 1, 4), None, None, false));
    }

    #[test]
    fn distinct_values_sums_and_percentiles() {
        let mut c = Counts::default();
        let t0 = 1_800_000_000_000;
        for (i, v) in ["a", "b", "a", "c", "a"].iter().enumerate() {
            c.add(
                SPAN,
                seen(t0 + i as i64 * 1000, i as u64),
                Some(v),
                Some(2.5),
                true,
            );
        }
        let t = c.tally(Some("a"));
        assert_eq!((t.events, t.distinct, t.same), (5, 3, 3));
        assert_eq!(t.sum, 12.5);
        // Far later: everything before has expired.
        c.add(SPAN, seen(t0 + 10 * SPAN, 9), Some("d"), None, true);
        let t = c.tally(Some("a"));
        assert_eq!((t.events, t.distinct, t.same), (1, 1, 0));
    }

    #[test]
    fn evidence_keeps_the_newest_in_order_and_wire_round_trips() {
        let wire = |c: &Counts, anchor: i64| {
            let mut out = Vec::new();
            c.encode_into(anchor, &mut RawWriter::new(&mut out));
            out
        };
        let empty = Counts::default();
        assert_eq!(wire(&empty, 0), crate::state::encode(&empty.to_wire(0)));
        let mut c = Counts::default();
        let t0 = 1_800_000_000_000;
        for i in (0..40u64).rev() {
            c.add(
                SPAN,
                seen(t0 + i as i64 * 100, 1000 + i),
                Some("x"),
                Some(1.0),
                true,
            );
        }
        let ev: Vec<u64> = c.evidence.iter().map(|e| e.seq).collect();
        assert_eq!(ev, (1024..1040).collect::<Vec<_>>());
        let anchor = c.newest().unwrap();
        let bytes = crate::state::encode(&c.to_wire(anchor));
        assert_eq!(
            wire(&c, anchor),
            bytes,
            "encode_into writes the wire's bytes"
        );
        let back = Counts::from_wire(anchor, c.to_wire(anchor)).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.tally(Some("x")).same, 40);
        assert!(bytes.len() < 200, "{} bytes", bytes.len());
    }
}
