//! The coordinator: decides which forces this node runs, and runs the hand-offs.
//!
//! Every tick it reads the live nodes and the onboarded forces, computes the desired owner of
//! each force by rendezvous hashing, and then:
//! - acquires the lease of each force it should own and does not hold, restores the newest of
//!   (its local sled state, the force's checkpoint), and starts the force's actor under the lease;
//! - hands off each force it holds but should not (another live node is the desired owner, or
//!   the force was removed): the actor stops between two commits, its state is checkpointed, and
//!   the lease is released so that the new owner acquires it at once;
//! - checkpoints each owned force every `checkpoint_interval_secs`.
//!
//! Each held lease has its own keeper task that renews it (compare-and-set) well inside the TTL
//! and revokes the force at once when a renewal is refused or the lease runs past its deadline,
//! so a slow tick never costs a lease. Heartbeats run in their own task too.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use anyhow::{Context, Result};
use nmc_shared::ForceId;
use nmc_shared::onboarding::{ForceRecord, OnboardingPhase};
use nmc_shared::rendezvous::{self, NodeWeight};
use nmc_shared::state::Checkpoint;
use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

use super::lease::{Lease, LeaseLost};
use super::membership::{self, Membership, NodeInfo};
use super::{checkpoint, onboarding};
use crate::force::{ForceActor, ForceControl, Handoff, Snapshot, spawn_force};
use crate::runtime::Runtime;

/// How often the coordinator looks at the cluster.
const TICK: Duration = Duration::from_millis(500);

/// A force this node holds.
struct Owned {
    control: Arc<ForceControl>,
    addr: Addr<ForceActor>,
    arbiter: usize,
    release: Option<oneshot::Sender<()>>,
    last_checkpoint: Instant,
}

/// The coordinator of one node.
pub struct Coordinator {
    rt: Arc<Runtime>,
    arbiters: Vec<Arbiter>,
    owned: BTreeMap<ForceId, Owned>,
    next_arbiter: usize,
    me: NodeInfo,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

impl Coordinator {
    /// Joins the cluster as this node (its heartbeat starts now).
    pub async fn join(rt: Arc<Runtime>, arbiters: Vec<Arbiter>) -> Result<Coordinator> {
        let me = NodeInfo::this_process(&rt.cfg.node_id, rt.cfg.weight);
        let m = Membership::join(&rt.buckets.nodes, me.clone()).await?;
        let every = rt.cfg.cluster().heartbeat_interval();
        let heartbeat = actix::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = m.heartbeat().await {
                    warn!(error = format!("{e:#}"), "heartbeat failed");
                }
            }
        });
        info!(node = %me.node_id, weight = me.weight, "joined the cluster");
        Ok(Coordinator {
            rt,
            arbiters,
            owned: BTreeMap::new(),
            next_arbiter: 0,
            me,
            heartbeat: Some(heartbeat),
        })
    }

    /// Forces this node holds now.
    pub fn owned(&self) -> Vec<ForceId> {
        self.owned.keys().cloned().collect()
    }

    /// Runs ticks until `stop` resolves, then shuts down gracefully within the grace period.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) -> Result<()> {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => {
                    if let Err(e) = self.tick().await {
                        warn!(error = format!("{e:#}"), "cluster tick failed; retrying");
                    }
                }
            }
        }
        let grace = Duration::from_secs(self.rt.cfg.shutdown_grace_secs);
        info!(
            forces = self.owned.len(),
            grace_secs = grace.as_secs(),
            "shutting down: handing off forces"
        );
        if tokio::time::timeout(grace, self.shutdown()).await.is_err() {
            warn!(
                "grace period over before every force was handed off; their leases expire on their own"
            );
        }
        Ok(())
    }

    /// Hands off every force, leaves the cluster.
    async fn shutdown(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        let forces: Vec<ForceId> = self.owned.keys().cloned().collect();
        self.hand_off_all(forces, "shutdown").await;
        if let Err(e) = self.rt.store.flush().await {
            warn!(error = %e, "final flush failed");
        }
        let _ = self
            .rt
            .buckets
            .nodes
            .delete(&self.me.node_id)
            .await
            .map_err(|e| warn!(error = %e, "leaving the cluster failed"));
        for a in &self.arbiters {
            a.stop();
        }
    }

    /// One look at the cluster.
    async fn tick(&mut self) -> Result<()> {
        // Forces whose lease keeper gave up.
        let lost: Vec<ForceId> = self
            .owned
            .iter()
            .filter(|(_, o)| o.control.is_revoked())
            .map(|(f, _)| f.clone())
            .collect();
        for f in lost {
            self.owned.remove(&f);
            error!(force = %f, "lease lost: force stopped on this node");
        }
        // Actors whose task died outside the caught evaluation path.
        for (f, o) in &mut self.owned {
            if !o.addr.connected() {
                error!(force = %f, "force actor died; starting a new one");
                o.addr = spawn_force(
                    self.rt.clone(),
                    f.clone(),
                    o.control.clone(),
                    &self.arbiters[o.arbiter].handle(),
                );
            }
        }

        let forces = onboarding::list(&self.rt.buckets.forces).await?;
        self.rt.set_onboarded(forces.clone());
        let mut live: Vec<NodeWeight> = membership::live_nodes(&self.rt.buckets.nodes)
            .await?
            .iter()
            .map(NodeWeight::from)
            .collect();
        if !live.iter().any(|n| n.id == self.me.node_id) {
            // Our own key may be missing for a moment (NATS restart): we are alive.
            live.push(NodeWeight::from(&self.me));
        }
        let desired: BTreeSet<ForceId> = forces
            .keys()
            .filter(|f| rendezvous::owner(f.as_str(), &live) == Some(self.me.node_id.as_str()))
            .cloned()
            .collect();

        // Phases of running forces follow the record.
        for (f, o) in &self.owned {
            if let Some(r) = forces.get(f) {
                o.control.set_phase(r.phase);
            }
        }

        let leaving: Vec<ForceId> = self
            .owned
            .keys()
            .filter(|f| !desired.contains(*f))
            .cloned()
            .collect();
        if !leaving.is_empty() {
            self.hand_off_all(leaving, "rebalance").await;
        }

        for f in desired {
            if self.owned.contains_key(&f) {
                continue;
            }
            let phase = forces
                .get(&f)
                .map_or(OnboardingPhase::CloudAndOnprem, |r: &ForceRecord| r.phase);
            if let Err(e) = self.try_acquire(&f, phase).await {
                warn!(force = %f, error = format!("{e:#}"), "could not take the force");
            }
        }

        self.checkpoint_due().await;
        Ok(())
    }

    /// Acquires `force` if its lease is free, restores its state and starts its actor.
    async fn try_acquire(&mut self, force: &ForceId, phase: OnboardingPhase) -> Result<()> {
        let started = Instant::now();
        let Some(lease) = Lease::acquire(&self.rt.buckets.leases, force, &self.me.node_id).await?
        else {
            debug!(%force, "lease held elsewhere");
            return Ok(());
        };
        let epoch = lease.epoch();
        let restored = match self.restore(force).await {
            Ok(r) => r,
            Err(e) => {
                let _ = lease.release().await;
                return Err(e.context("restoring the force's state"));
            }
        };
        let control = Arc::new(ForceControl::new(epoch, lease.deadline(), phase));
        control.report(|s| {
            s.node.clone_from(&self.me.node_id);
            s.rule_pack = self.rt.rules_version();
        });
        let arbiter = self.next_arbiter % self.arbiters.len();
        self.next_arbiter += 1;
        let addr = spawn_force(
            self.rt.clone(),
            force.clone(),
            control.clone(),
            &self.arbiters[arbiter].handle(),
        );
        let (tx, rx) = oneshot::channel();
        let every = self.rt.cfg.cluster().renew_interval();
        actix::spawn(keep_lease(lease, control.clone(), rx, every));
        self.owned.insert(
            force.clone(),
            Owned {
                control,
                addr,
                arbiter,
                release: Some(tx),
                last_checkpoint: Instant::now(),
            },
        );
        info!(
            %force,
            epoch,
            restored,
            took_ms = started.elapsed().as_millis() as u64,
            "force acquired"
        );
        Ok(())
    }

    /// Brings the local sled state of `force` up to its checkpoint if that is newer; says
    /// where the state came from.
    async fn restore(&self, force: &ForceId) -> Result<&'static str> {
        let fs = self.rt.store.force(force)?;
        let local = fs.cursor()?;
        let Some((seq, bytes)) = checkpoint::get(&self.rt.buckets.checkpoints, force).await? else {
            return Ok(if local > 0 { "local" } else { "empty" });
        };
        if seq <= local {
            return Ok("local");
        }
        let c = Checkpoint::from_bytes(&bytes).context("decoding the checkpoint")?;
        fs.import(force, &c)?;
        self.rt.store.flush().await?;
        info!(%force, from = local, to = seq, "state restored from the checkpoint");
        Ok("checkpoint")
    }

    /// Hands off `forces` concurrently: stop each actor between commits, checkpoint, release.
    async fn hand_off_all(&mut self, forces: Vec<ForceId>, why: &str) {
        let mut jobs = Vec::new();
        for f in forces {
            if let Some(o) = self.owned.remove(&f) {
                jobs.push(hand_off(self.rt.clone(), f, o, why.to_owned()));
            }
        }
        futures::future::join_all(jobs).await;
    }

    /// Writes the checkpoints that are due (one at a time; the actor keeps processing).
    async fn checkpoint_due(&mut self) {
        let every = Duration::from_secs(self.rt.cfg.checkpoint_interval_secs);
        let due: Vec<ForceId> = self
            .owned
            .iter()
            .filter(|(_, o)| o.last_checkpoint.elapsed() >= every)
            .map(|(f, _)| f.clone())
            .collect();
        for f in due {
            let Some(o) = self.owned.get_mut(&f) else {
                continue;
            };
            o.last_checkpoint = Instant::now();
            let addr = o.addr.clone();
            let control = o.control.clone();
            match addr.send(Snapshot).await {
                Ok(Ok(c)) if control.valid() => {
                    if let Err(e) =
                        checkpoint::put(&self.rt.buckets.checkpoints, &f, c.seq, &c.to_bytes())
                            .await
                    {
                        warn!(force = %f, error = format!("{e:#}"), "checkpoint failed");
                    } else {
                        debug!(force = %f, seq = c.seq, "checkpoint written");
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => warn!(force = %f, error = format!("{e:#}"), "checkpoint failed"),
                Err(e) => warn!(force = %f, error = %e, "checkpoint failed: actor gone"),
            }
        }
    }
}

/// Stops one force's actor between commits, checkpoints it, and releases its lease.
async fn hand_off(rt: Arc<Runtime>, force: ForceId, mut o: Owned, why: String) {
    let started = Instant::now();
    match o.addr.send(Handoff).await {
        Ok(Ok(c)) if o.control.valid() => {
            if let Err(e) = rt.store.flush().await {
                warn!(%force, error = %e, "flush before hand-off failed");
            }
            match checkpoint::put(&rt.buckets.checkpoints, &force, c.seq, &c.to_bytes()).await {
                Ok(()) => info!(%force, seq = c.seq, "checkpoint written for hand-off"),
                Err(e) => warn!(%force, error = format!("{e:#}"), "hand-off checkpoint failed"),
            }
        }
        Ok(Ok(_)) => warn!(%force, "lease past its deadline: no hand-off checkpoint"),
        Ok(Err(e)) => warn!(%force, error = format!("{e:#}"), "hand-off export failed"),
        Err(e) => warn!(%force, error = %e, "hand-off: actor gone"),
    }
    o.control.revoke();
    if let Some(tx) = o.release.take() {
        let _ = tx.send(());
    }
    drop(o.addr);
    info!(
        %force,
        why,
        took_ms = started.elapsed().as_millis() as u64,
        "force handed off"
    );
}

/// Renews one lease until released or lost; revokes the force when it is lost.
async fn keep_lease(
    mut lease: Lease,
    control: Arc<ForceControl>,
    mut release: oneshot::Receiver<()>,
    every: Duration,
) {
    let force = lease.force().clone();
    loop {
        tokio::select! {
            r = &mut release => {
                if r.is_ok() {
                    match lease.release().await {
                        Ok(()) => debug!(%force, "lease released"),
                        Err(e) => warn!(%force, error = %e, "lease release failed; it expires on its own"),
                    }
                }
                return;
            }
            _ = tokio::time::sleep(every) => {}
        }
        if control.is_revoked() {
            return;
        }
        match lease.renew_with(control.status()).await {
            Ok(()) => control.extend(lease.deadline()),
            Err(LeaseLost::Superseded(_)) => {
                error!(%force, epoch = lease.epoch(), "lease superseded: stopping the force now");
                control.revoke();
                return;
            }
            Err(e @ LeaseLost::Unconfirmed { .. }) => {
                if Instant::now() >= lease.deadline() {
                    error!(%force, error = %e, "lease could not be renewed before its deadline: stopping the force");
                    control.revoke();
                    return;
                }
                warn!(%force, error = %e, "lease renewal unconfirmed; retrying");
            }
        }
    }
}
