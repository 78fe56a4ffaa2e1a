//! What one node knows about itself right now: the forces it holds, whether it is ready, and
//! the facts its metrics and HTTP endpoints report. The coordinator, the heartbeat and the
//! start-up sequence write it; `/readyz`, `/api/v1/status` and the metrics' observers read it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use nmc_shared::ForceId;
use serde::Serialize;
use tokio::sync::watch;

use crate::cluster::onboarding::Onboarded;
use crate::force::ForceControl;
use crate::rules::RulePack;

/// A force this node holds: its control (lease, progress, stats) and a probe of its actor.
pub struct Held {
    /// Shared with the force's actor and lease keeper.
    pub control: Arc<ForceControl>,
    /// Whether the force's actor is running.
    pub alive: Box<dyn Fn() -> bool + Send + Sync>,
}

/// One node's view of itself.
pub struct NodeStatus {
    /// The node's id.
    pub node: String,
    started: Instant,
    nats: async_nats::Client,
    held: RwLock<BTreeMap<ForceId, Held>>,
    provisioned: AtomicBool,
    draining: AtomicBool,
    heartbeat: Mutex<Option<Instant>>,
    member_ttl: Duration,
    triage_backlog: AtomicU64,
    /// The onboarded forces (the node's watch channel).
    pub forces: watch::Receiver<Onboarded>,
    /// The rule pack in force (the node's watch channel).
    pub rules: watch::Receiver<RulePack>,
}

/// One readiness check and its outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is checked.
    pub name: &'static str,
    /// Whether it passes.
    pub ok: bool,
    /// Why not, when it fails.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl NodeStatus {
    /// A node that has not provisioned anything yet, holds nothing and is not a member.
    pub fn new(
        node: &str,
        nats: async_nats::Client,
        member_ttl: Duration,
        forces: watch::Receiver<Onboarded>,
        rules: watch::Receiver<RulePack>,
    ) -> NodeStatus {
        NodeStatus {
            node: node.to_owned(),
            started: Instant::now(),
            nats,
            held: RwLock::default(),
            provisioned: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            heartbeat: Mutex::new(None),
            member_ttl,
            triage_backlog: AtomicU64::new(0),
            forces,
            rules,
        }
    }

    /// The streams and buckets are verified.
    pub fn set_provisioned(&self) {
        self.provisioned.store(true, Ordering::Release);
    }

    /// The node is shutting down: it hands its forces off and takes no new ones.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// A heartbeat reached `NMC_NODES`.
    pub fn heartbeat_ok(&self) {
        *self.heartbeat.lock().expect("heartbeat lock") = Some(Instant::now());
    }

    /// Records the triage consumer's pending count.
    pub fn set_triage_backlog(&self, n: u64) {
        self.triage_backlog.store(n, Ordering::Relaxed);
    }

    /// Events waiting for triage, as last seen.
    pub fn triage_backlog(&self) -> u64 {
        self.triage_backlog.load(Ordering::Relaxed)
    }

    /// The node now holds `force`.
    pub fn hold(&self, force: ForceId, held: Held) {
        self.held.write().expect("held lock").insert(force, held);
    }

    /// The node no longer holds `force`.
    pub fn release(&self, force: &ForceId) {
        self.held.write().expect("held lock").remove(force);
    }

    /// Calls `f` with every force this node holds and its control.
    pub fn each_held(&self, mut f: impl FnMut(&ForceId, &ForceControl)) {
        for (force, h) in self.held.read().expect("held lock").iter() {
            f(force, &h.control);
        }
    }

    /// Whether the NATS connection is up.
    pub fn nats_connected(&self) -> bool {
        self.nats.connection_state() == async_nats::connection::State::Connected
    }

    /// How long the node has run.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The readiness checks, in order; the node is ready when all pass.
    pub fn readiness(&self) -> Vec<Check> {
        let check = |name, ok: bool, detail: String| Check {
            name,
            ok,
            detail: if ok { String::new() } else { detail },
        };
        let beat = *self.heartbeat.lock().expect("heartbeat lock");
        let dead: Vec<String> = self
            .held
            .read()
            .expect("held lock")
            .iter()
            .filter(|(_, h)| !(h.alive)())
            .map(|(f, _)| f.to_string())
            .collect();
        vec![
            check(
                "nats",
                self.nats_connected(),
                "not connected to NATS".into(),
            ),
            check(
                "provisioned",
                self.provisioned.load(Ordering::Acquire),
                "streams and buckets not verified yet".into(),
            ),
            check(
                "member",
                beat.is_some_and(|t| t.elapsed() < self.member_ttl),
                "no heartbeat reached NMC_NODES within the node TTL".into(),
            ),
            check(
                "actors",
                dead.is_empty(),
                format!("force actors not running: {}", dead.join(", ")),
            ),
            check(
                "not_draining",
                !self.draining.load(Ordering::Acquire),
                "shutting down: handing forces off".into(),
            ),
        ]
    }

    /// Whether every readiness check passes.
    pub fn ready(&self) -> bool {
        self.readiness().iter().all(|c| c.ok)
    }
}
