//! The rate-drop watch of a `silent_feed` rule with `below`: the feed's events are counted per
//! period of `timespan` (periods aligned on multiples of it since the epoch), and each completed
//! period is compared with the mean of the periods before it over the `baseline`.
//!
//! Everything is event time: a period is complete once the force's frontier has passed its end
//! (every on-time event of it has been released), or once an event of a later period is released.
//! Either way its verdict depends only on the counts of it and of the baseline before it, so the
//! same events give the same alerts in any arrival order within the lateness, and after a restart.
//! The state is bounded: counts of at most `baseline / timespan + 1` periods, plus the first and
//! last event of the periods not judged yet.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::correlate::seen::Seen;

/// Per-period counts of one watched feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RateWatch {
    /// Period (event time divided by the timespan) of `counts[0]`.
    base: i64,
    /// Events per period from `base` on, consecutive (a period without events counts 0).
    counts: VecDeque<u32>,
    /// First period with an event: the watch learns from the period after it.
    first: i64,
    /// Next period to judge.
    next: i64,
    /// First and last event of each period not judged yet.
    open: Vec<(i64, Seen, Seen)>,
    /// Last event of the latest judged period that had one.
    last: Option<Seen>,
    /// Alerted: quiet until a period is back at or above the threshold.
    fired: bool,
}

/// A period whose count fell below the threshold.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RateDrop {
    /// The period (its start is `period * timespan`).
    pub period: i64,
    /// Events in it.
    pub count: u32,
    /// Mean events per period over the baseline.
    pub mean: f64,
    /// Its first and last events, or (none in it) the feed's last event before it.
    pub evidence: Vec<Seen>,
}

/// Periods are event times divided by a timespan of at least 1 ms, so within this bound; a
/// persisted watch with periods beyond it is corrupt (and its arithmetic could overflow).
const PERIOD_LIMIT: i64 = 1 << 50;

impl RateWatch {
    /// Whether a watch read from persisted state has periods a watch can have: checked when it
    /// is read, so that corrupt state is refused rather than judged (found by fuzzing).
    pub fn plausible(&self) -> bool {
        let ok = |p: i64| (-PERIOD_LIMIT..=PERIOD_LIMIT).contains(&p);
        ok(self.base) && ok(self.first) && ok(self.next) && self.open.iter().all(|o| ok(o.0))
    }

    /// A watch starting with the feed's first event, in period `period`.
    pub fn new(period: i64) -> RateWatch {
        RateWatch {
            base: period,
            counts: VecDeque::new(),
            first: period,
            next: period,
            open: Vec::new(),
            last: None,
            fired: false,
        }
    }

    /// The next period to judge.
    pub fn next(&self) -> i64 {
        self.next
    }

    fn count_of(&self, p: i64) -> u32 {
        usize::try_from(p - self.base)
            .ok()
            .and_then(|i| self.counts.get(i).copied())
            .unwrap_or(0)
    }

    /// Counts one event of period `p`. Call [`RateWatch::judge`] up to `p` first. An event of a
    /// period already judged (late) still counts in the baselines of later periods; one older
    /// than every kept count is not counted.
    pub fn count(&mut self, p: i64, at: Seen) {
        let Ok(i) = usize::try_from(p - self.base) else {
            return;
        };
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] = self.counts[i].saturating_add(1);
        if p >= self.next {
            match self.open.iter_mut().find(|o| o.0 == p) {
                Some(o) => {
                    o.1 = o.1.min(at);
                    o.2 = o.2.max(at);
                }
                None => {
                    self.open.push((p, at, at));
                    self.open.sort_by_key(|o| o.0);
                }
            }
        }
    }

    /// Judges the periods before `until`, in order, against the mean of the `n` periods before
    /// each: one below `below` times that mean (once `n` full periods follow the first one, and
    /// the mean is above zero) is a drop, reported once until a period is back at or above it.
    pub fn judge(&mut self, until: i64, n: i64, below: f64) -> Vec<RateDrop> {
        let mut drops = Vec::new();
        while self.next < until {
            let k = self.next;
            if k < self.base {
                // Before the kept counts: no events and an empty baseline, so nothing to
                // judge up to `base`. Judging never leaves `next` below `base`; state read from
                // elsewhere can, and stepping through such a gap one period at a time could
                // take forever (found by fuzzing).
                let to = self.base.min(until);
                let skipped = self.open.iter().filter(|o| o.0 < to).map(|o| o.2).max();
                self.open.retain(|o| o.0 >= to);
                if skipped.is_some() {
                    self.last = skipped;
                }
                self.next = to;
                continue;
            }
            let last_events = self
                .counts
                .iter()
                .rposition(|&c| c > 0)
                .map(|i| self.base + i as i64);
            if last_events.is_none_or(|p| k - n > p) {
                // This period and its baseline are empty, and so are those of the periods after
                // it up to `until`: judging them changes nothing.
                self.next = until;
                break;
            }
            let count = self.count_of(k);
            let open = self
                .open
                .iter()
                .position(|o| o.0 == k)
                .map(|i| self.open.remove(i));
            if k - n > self.first {
                let sum: u64 = (k - n..k).map(|p| u64::from(self.count_of(p))).sum();
                let mean = sum as f64 / n as f64;
                if mean > 0.0 {
                    if f64::from(count) < below * mean {
                        if !self.fired {
                            self.fired = true;
                            let evidence = match open {
                                Some((_, first, last)) if first == last => vec![first],
                                Some((_, first, last)) => vec![first, last],
                                None => self.last.into_iter().collect(),
                            };
                            drops.push(RateDrop {
                                period: k,
                                count,
                                mean,
                                evidence,
                            });
                        }
                    } else {
                        self.fired = false;
                    }
                }
            }
            if let Some((_, _, last)) = open {
                self.last = Some(last);
            }
            self.next = k + 1;
        }
        // Keep the counts that later periods' baselines need.
        let keep_from = self.next - n;
        while self.base < keep_from && !self.counts.is_empty() {
            self.counts.pop_front();
            self.base += 1;
        }
        if self.counts.is_empty() {
            self.base = self.base.max(keep_from);
        }
        drops
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: i64) -> Seen {
        Seen { t, seq: t as u64 }
    }

    /// Feeds `per_period[i]` events into period i, judging as a node would.
    fn run(per_period: &[u32], n: i64, below: f64) -> (RateWatch, Vec<RateDrop>) {
        let mut w = RateWatch::new(0);
        let mut drops = Vec::new();
        for (p, &c) in per_period.iter().enumerate() {
            let p = p as i64;
            drops.extend(w.judge(p, n, below));
            for i in 0..c {
                w.count(p, at(p * 1000 + i64::from(i)));
            }
        }
        drops.extend(w.judge(per_period.len() as i64, n, below));
        (w, drops)
    }

    #[test]
    fn drops_below_the_threshold_alert_once_then_rearm() {
        // Baseline of 4 periods; the first period is partial and not used.
        let mut p = vec![3, 10, 10, 10, 10, 10, 1, 0, 10, 0];
        let (_, drops) = run(&p, 4, 0.2);
        let periods: Vec<i64> = drops.iter().map(|d| d.period).collect();
        assert_eq!(periods, vec![6, 9], "once for 6-7, again after 8 re-armed");
        assert_eq!(drops[0].count, 1);
        assert_eq!(drops[0].mean, 10.0);
        assert_eq!(drops[0].evidence, vec![at(6000)]);
        // Period 9 is empty: the evidence is the feed's last event before it.
        assert_eq!(drops[1].evidence, vec![at(8009)]);
        // A dip above the threshold (3 of 10 with below 20%) is no drop.
        p[6] = 3;
        p[7] = 3;
        p[9] = 10;
        assert!(run(&p, 4, 0.2).1.is_empty());
        // Learning: the same drop before four full periods follow the first is not judged.
        assert!(run(&[3, 10, 10, 1], 4, 0.2).1.is_empty());
    }

    #[test]
    fn long_gaps_are_judged_in_bounded_work_and_state() {
        let mut w = RateWatch::new(0);
        for p in 0..10 {
            assert!(w.judge(p, 4, 0.5).is_empty());
            w.count(p, at(p * 1000));
        }
        // The feed stops; a million periods later the frontier moves on: one drop (period 10),
        // and the counts kept are bounded by the baseline.
        let drops = w.judge(1_000_000, 4, 0.5);
        assert_eq!(drops.len(), 1);
        assert_eq!(drops[0].period, 10);
        assert_eq!(w.next(), 1_000_000);
        assert!(w.counts.len() <= 5, "{}", w.counts.len());
        // It comes back: counting resumes from there.
        w.count(1_000_000, at(1));
        assert_eq!(w.count_of(1_000_000), 1);
        assert!(w.counts.len() <= 5);
    }

    #[test]
    fn a_watch_read_with_its_next_period_far_before_its_counts_is_judged_at_once() {
        // Never written by judging (it leaves `next` at or after `base`), but read from
        // corrupt state: a trillion periods to step through one by one (found by fuzzing).
        let mut w = RateWatch::new(0);
        w.count(0, at(5));
        w.base = 1_000_000_000_000;
        w.counts = VecDeque::from([3, 3, 3]);
        w.open.push((7, at(7_000), at(7_001)));
        let drops = w.judge(1_000_000_000_010, 2, 0.5);
        assert_eq!(w.next(), 1_000_000_000_010);
        assert_eq!(drops.len(), 1, "the drop after the counts: {drops:?}");
        assert_eq!(
            w.last,
            Some(at(7_001)),
            "a skipped open period's last event"
        );
        assert!(w.plausible());
        w.next = i64::MAX;
        assert!(!w.plausible());
    }
}
