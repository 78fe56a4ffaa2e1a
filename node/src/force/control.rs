//! What the cluster coordinator and a force actor share: the lease's fencing epoch and deadline,
//! revocation, the force's onboarding phase, and the progress ([`LeaseStatus`]) the lease keeper
//! publishes.
//!
//! The actor checks [`ForceControl::valid`] before every commit and every publish, so a node
//! whose lease ran out (frozen, partitioned, or just slow to renew) writes nothing more for the
//! force even before the coordinator notices.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
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
    /// Last applied `NMC_EVENTS` sequence.
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
}

/// What this node knows of a force it holds, for its metrics and `/api/v1/status` (local:
/// never published to the cluster).
#[derive(Clone, Debug)]
pub struct ForceStats {
    /// When this node acquired the force.
    pub acquired_at: Instant,
    /// Per source, the newest event read: its event time and when `NMC_EVENTS` stored it.
    pub feeds: BTreeMap<SourceKind, Feed>,
    /// Since when the force has had messages after its cursor (`None`: caught up).
    pub lagging_since: Option<Instant>,
    /// Alerts raised and not yet acknowledged by `NMC_ALERTS`.
    pub outbox: u64,
    /// When this node last wrote the force's checkpoint.
    pub checkpointed_at: Option<Instant>,
    /// Bytes of the force's state (keys and values) at that checkpoint.
    pub store_bytes: u64,
}

/// The newest event of one feed (a force's source), in Unix milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Feed {
    /// Its event time.
    pub event_ms: i64,
    /// When `NMC_EVENTS` stored it.
    pub ingest_ms: i64,
}

/// Shared between a force's actor, its lease keeper and the coordinator.
#[derive(Debug)]
pub struct ForceControl {
    epoch: u64,
    revoked: AtomicBool,
    deadline: Mutex<Instant>,
    phase: AtomicU8,
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
            status: Mutex::new(LeaseStatus::default()),
            stats: Mutex::new(ForceStats {
                acquired_at: Instant::now(),
                feeds: BTreeMap::new(),
                lagging_since: None,
                outbox: 0,
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
