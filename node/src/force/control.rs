//! What the cluster coordinator and a force actor share: the lease's fencing epoch and deadline,
//! revocation, the force's onboarding phase, and the progress ([`LeaseStatus`]) the lease keeper
//! publishes.
//!
//! The actor checks [`ForceControl::valid`] before every commit and every publish, so a node
//! whose lease ran out (frozen, partitioned, or just slow to renew) writes nothing more for the
//! force even before the coordinator notices.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use nmc_shared::SourceKind;
use nmc_shared::onboarding::OnboardingPhase;

/// What a force reports about itself while a node holds it: published as the value of its
/// lease key on every renewal (`NMC_LEASES`), so that `nmc cluster status` reads the whole
/// cluster from one bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LeaseStatus {
    /// Holder's node id.
    pub node: String,
    /// Fencing epoch of the holder's lease.
    pub epoch: u64,
    /// Last applied `NMC_EVENTS_<force>` sequence.
    pub cursor: u64,
    /// Messages of the force still to read after the cursor (as last seen by the reader).
    pub lag: u64,
    /// Events waiting in the reorder buffer.
    pub pending: u64,
    /// Events that arrived later than the allowed lateness, in total.
    pub late: u64,
    /// Values correlations could not use (non-finite numbers, places off the globe), in total.
    pub bad_values: u64,
    /// Events whose event time came from an ingest-time field (`@timestamp`) because none of
    /// their source's own time fields was present, since the force was acquired here.
    pub ingest_time: u64,
    /// Rule pack the force runs.
    pub rule_pack: String,
    /// Per source (`SourceKind` name), its feed as this holder read it: what the console's
    /// overview shows as feed health.
    pub feeds: BTreeMap<String, Feed>,
}

/// What this node knows of a force it holds, for its metrics and `/api/v1/status` (local:
/// never published to the cluster).
#[derive(Clone, Debug)]
pub struct ForceStats {
    /// When this node acquired the force.
    pub acquired_at: Instant,
    /// Per source, the newest event read: its event time and when `NMC_EVENTS_<force>` stored it.
    pub feeds: BTreeMap<SourceKind, Feed>,
    /// Since when the force has had messages after its cursor (`None`: caught up).
    pub lagging_since: Option<Instant>,
    /// Alerts an earlier holder left in the outbox, not yet acknowledged by `NMC_ALERTS`.
    pub outbox: u64,
    /// Last sequence whose state is committed to sled (the cursor runs ahead of it by up to a
    /// commit interval).
    pub committed: u64,
    /// When this node last wrote the force's checkpoint.
    pub checkpointed_at: Option<Instant>,
    /// Bytes of the force's state (keys and values) at that checkpoint.
    pub store_bytes: u64,
}

/// One feed (a force's source) as its holder read it: the newest event, in Unix milliseconds,
/// and how many events arrived per wall-clock minute, to tell a flowing feed from a silent one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Feed {
    /// Its event time.
    pub event_ms: i64,
    /// When `NMC_EVENTS_<force>` stored it.
    pub ingest_ms: i64,
    /// The wall-clock minute (Unix ms / 60,000) `this_minute` counts.
    pub minute: i64,
    /// Events read in `minute`.
    pub this_minute: u64,
    /// Events read in the minute before it.
    pub last_minute: u64,
    /// How long the feed may be silent (`feed_silence_secs` for its source).
    pub silent_after_secs: u64,
}

impl Feed {
    /// Counts `n` events read at `now_ms`.
    pub fn count(&mut self, n: u64, now_ms: i64) {
        let m = now_ms.div_euclid(60_000);
        if m != self.minute {
            self.last_minute = if m == self.minute + 1 {
                self.this_minute
            } else {
                0
            };
            self.this_minute = 0;
            self.minute = m;
        }
        self.this_minute += n;
    }

    /// Events a minute: the last whole minute's, or the current minute's so far when more.
    pub fn per_minute(&self, now_ms: i64) -> u64 {
        match now_ms.div_euclid(60_000) - self.minute {
            0 => self.last_minute.max(self.this_minute),
            1 => self.this_minute,
            _ => 0,
        }
    }

    /// Whether nothing was stored for the source for longer than it may be silent.
    pub fn silent(&self, now_ms: i64) -> bool {
        self.silent_after_secs > 0
            && now_ms.saturating_sub(self.ingest_ms) > self.silent_after_secs as i64 * 1000
    }
}

/// Shared between a force's actor, its lease keeper and the coordinator.
#[derive(Debug)]
pub struct ForceControl {
    epoch: u64,
    revoked: AtomicBool,
    deadline: Mutex<Instant>,
    phase: AtomicU8,
    generation: AtomicU64,
    status: Mutex<LeaseStatus>,
    stats: Mutex<ForceStats>,
}

impl ForceControl {
    /// Control for a lease acquired with `epoch`, valid until `deadline` unless renewed.
    pub fn new(epoch: u64, deadline: Instant, phase: OnboardingPhase) -> ForceControl {
        ForceControl {
            epoch,
            revoked: AtomicBool::new(false),
            deadline: Mutex::new(deadline),
            phase: AtomicU8::new(phase_code(phase)),
            generation: AtomicU64::new(0),
            status: Mutex::new(LeaseStatus::default()),
            stats: Mutex::new(ForceStats {
                acquired_at: Instant::now(),
                feeds: BTreeMap::new(),
                lagging_since: None,
                outbox: 0,
                committed: 0,
                checkpointed_at: None,
                store_bytes: 0,
            }),
        }
    }

    /// Control that never expires (single-process tools and tests without a cluster).
    pub fn unfenced() -> ForceControl {
        Self::new(
            0,
            Instant::now() + std::time::Duration::from_secs(100 * 365 * 86_400),
            OnboardingPhase::CloudAndOnprem,
        )
    }

    /// The lease's fencing epoch, written on every alert.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether the force may still commit and publish: not revoked and the lease not past its
    /// local deadline.
    pub fn valid(&self) -> bool {
        !self.is_revoked() && Instant::now() < *self.deadline.lock().expect("deadline lock")
    }

    /// Whether the force was taken away from this node for good.
    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }

    /// Takes the force away: the actor stops at its next step.
    pub fn revoke(&self) {
        self.revoked.store(true, Ordering::Release);
    }

    /// Moves the deadline after a successful renewal.
    pub fn extend(&self, deadline: Instant) {
        *self.deadline.lock().expect("deadline lock") = deadline;
    }

    /// The force's onboarding phase.
    pub fn phase(&self) -> OnboardingPhase {
        match self.phase.load(Ordering::Acquire) {
            0 => OnboardingPhase::Cloud,
            _ => OnboardingPhase::CloudAndOnprem,
        }
    }

    /// Changes the phase (takes effect from the next batch).
    pub fn set_phase(&self, phase: OnboardingPhase) {
        self.phase.store(phase_code(phase), Ordering::Release);
    }

    /// The force's state generation (`ForceRecord::state_generation`) as last read.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Records the force's state generation: a worker of an earlier one reopens, and discards
    /// its state.
    pub fn set_generation(&self, generation: u64) {
        self.generation.fetch_max(generation, Ordering::AcqRel);
    }

    /// The progress to publish with the next renewal.
    pub fn status(&self) -> LeaseStatus {
        self.status.lock().expect("status lock").clone()
    }

    /// Records the force's progress.
    pub fn report(&self, f: impl FnOnce(&mut LeaseStatus)) {
        f(&mut self.status.lock().expect("status lock"));
    }

    /// What this node knows of the force now.
    pub fn stats(&self) -> ForceStats {
        self.stats.lock().expect("stats lock").clone()
    }

    /// Records what this node knows of the force.
    pub fn record(&self, f: impl FnOnce(&mut ForceStats)) {
        f(&mut self.stats.lock().expect("stats lock"));
    }
}

fn phase_code(p: OnboardingPhase) -> u8 {
    match p {
        OnboardingPhase::Cloud => 0,
        OnboardingPhase::CloudAndOnprem => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::Feed;

    #[test]
    fn a_feed_counts_per_minute_and_falls_silent() {
        let mut f = Feed {
            silent_after_secs: 120,
            ..Default::default()
        };
        let t = 1_000 * 60_000;
        f.count(5, t);
        f.count(7, t + 30_000);
        assert_eq!(f.per_minute(t + 59_000), 12, "the minute so far");
        assert_eq!(f.per_minute(t + 61_000), 12);
        f.count(3, t + 61_000);
        assert_eq!(f.per_minute(t + 62_000), 12, "the last whole minute");
        assert_eq!(f.per_minute(t + 121_000), 3);
        assert_eq!(f.per_minute(t + 181_000), 0, "nothing for a whole minute");
        f.count(1, t + 10 * 60_000);
        assert_eq!(
            f.per_minute(t + 11 * 60_000),
            1,
            "older minutes are forgotten"
        );
        f.ingest_ms = t;
        assert!(!f.silent(t + 120_000));
        assert!(f.silent(t + 120_001));
    }
}
