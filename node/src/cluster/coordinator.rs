//! The coordinator: decides which forces this node runs, and runs the hand-offs.
//!
//! Every tick (and whenever the onboarded forces change) it reads the live nodes, takes the
//! onboarded forces from the node's watch channel, computes the desired owner of
//! each force by rendezvous hashing, and then:
//! - acquires the lease of each force it should own and does not hold, restores the newest of
//!   (its local sled state, the force's checkpoint), and starts the force's actor under the lease;
//! - hands off each force it holds but should not (another live node is the desired owner, or
//!   the force was removed): the actor stops between two commits, its state is checkpointed, and
//!   the lease is released so that the new owner acquires it at once;
//! - checkpoints each owned force every `checkpoint_interval_secs`, as tasks of their own (a
//!   round of many forces never holds up the tick, and so never delays a takeover).
//!
//! What to do is decided by the pure [`super::plan`]; this module carries it out.
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
use nmc_shared::onboarding::OnboardingPhase;
use nmc_shared::rendezvous::NodeWeight;
use nmc_shared::state::Checkpoint;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::checkpoint;
use super::lease::{Lease, LeaseLost};
use super::membership::{self, Membership, NodeInfo};
use super::plan::{self, CheckpointClock};
use crate::context::NodeContext;
use crate::force::{Exported, ForceActor, ForceControl, Handoff, Snapshot, spawn_force};

/// How often the coordinator looks at the cluster (and at once when the onboarded forces change).
const TICK: Duration = Duration::from_millis(500);

/// Checkpoints written at the same time at most: a round of 43 due forces goes out in
/// parallel, without one force's slow export holding up the others or the coordinator.
const CHECKPOINTS_AT_ONCE: usize = 8;

/// How long a hand-off waits for a periodic checkpoint of the force that is being written, so
/// that it never lands after (and over) the hand-off's newer one.
const CHECKPOINT_SETTLE: Duration = Duration::from_secs(5);

/// A force this node holds.
struct Owned {
    control: Arc<ForceControl>,
    addr: Addr<ForceActor>,
    arbiter: usize,
    release: Option<oneshot::Sender<()>>,
    last_checkpoint: Instant,
    /// The periodic checkpoint being written, if any.
    checkpoint: Option<JoinHandle<()>>,
}

impl Owned {
    fn checkpoint_clock(&self) -> CheckpointClock {
        CheckpointClock {
            since_last: self.last_checkpoint.elapsed(),
            in_flight: self.checkpoint.as_ref().is_some_and(|h| !h.is_finished()),
        }
    }
}

/// A lease acquired and the force's state restored: ready to start its actor.
struct Acquired {
    lease: Lease,
    restored: &'static str,
    started: Instant,
}

/// The coordinator of one node.
pub struct Coordinator {
    ctx: NodeContext,
    arbiters: Vec<Arbiter>,
    owned: BTreeMap<ForceId, Owned>,
    next_arbiter: usize,
    me: NodeInfo,
    heartbeat: Option<JoinHandle<()>>,
    checkpoint_slots: Arc<Semaphore>,
}

impl Coordinator {
    /// Joins the cluster as this node (its heartbeat starts now).
    pub async fn join(ctx: NodeContext, arbiters: Vec<Arbiter>) -> Result<Coordinator> {
        let me = NodeInfo::this_process(&ctx.cfg.node_id, ctx.cfg.weight);
        let m = Membership::join(&ctx.buckets.nodes, me.clone()).await?;
        let every = ctx.cfg.cluster().heartbeat_interval();
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
            ctx,
            arbiters,
            owned: BTreeMap::new(),
            next_arbiter: 0,
            me,
            heartbeat: Some(heartbeat),
            checkpoint_slots: Arc::new(Semaphore::new(CHECKPOINTS_AT_ONCE)),
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
        let mut forces = self.ctx.forces.clone();
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => {}
                Ok(()) = forces.changed() => {}
            }
            if let Err(e) = self.tick().await {
                warn!(error = format!("{e:#}"), "cluster tick failed; retrying");
            }
        }
        let grace = Duration::from_secs(self.ctx.cfg.shutdown_grace_secs);
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
        if let Err(e) = self.ctx.store.flush().await {
            warn!(error = %e, "final flush failed");
        }
        let _ = self
            .ctx
            .buckets
            .nodes
            .delete(&self.me.node_id)
            .await
            .map_err(|e| warn!(error = %e, "leaving the cluster failed"));
        for a in &self.arbiters {
            a.stop();
        }
    }

    /// One look at the cluster. Nothing here waits on a force actor: hand-offs are the only
    /// actor round trips, and they run concurrently; checkpoints run as tasks of their own.
    async fn tick(&mut self) -> Result<()> {
        self.reap();
        let live: Vec<NodeWeight> = membership::live_nodes(&self.ctx.buckets.nodes)
            .await?
            .iter()
            .map(NodeWeight::from)
            .collect();
        let held: BTreeSet<ForceId> = self.owned.keys().cloned().collect();
        let plan = plan::plan(
            &NodeWeight::from(&self.me),
            &live,
            &self.ctx.onboarded(),
            &held,
        );
        for (f, phase) in &plan.keep {
            if let Some(o) = self.owned.get(f) {
                o.control.set_phase(*phase);
            }
        }
        if !plan.hand_off.is_empty() {
            self.hand_off_all(plan.hand_off, "rebalance").await;
        }
        if !plan.take.is_empty() {
            self.take_all(plan.take).await;
        }
        self.start_checkpoints();
        Ok(())
    }

    /// Forgets forces whose lease keeper gave up, and restarts actors whose task died outside
    /// the caught evaluation path.
    fn reap(&mut self) {
        self.owned.retain(|f, o| {
            let lost = o.control.is_revoked();
            if lost {
                error!(force = %f, "lease lost: force stopped on this node");
            }
            !lost
        });
        for (f, o) in &mut self.owned {
            if !o.addr.connected() {
                error!(force = %f, "force actor died; starting a new one");
                o.addr = spawn_force(
                    self.ctx.clone(),
                    f.clone(),
                    o.control.clone(),
                    &self.arbiters[o.arbiter].handle(),
                );
            }
        }
    }

    /// Tries to acquire `forces` concurrently (lease, then state restore), and starts an actor
    /// for each one acquired.
    async fn take_all(&mut self, forces: Vec<(ForceId, OnboardingPhase)>) {
        let jobs = forces.into_iter().map(|(f, phase)| {
            let ctx = self.ctx.clone();
            let node = self.me.node_id.clone();
            async move {
                let r = acquire(&ctx, &f, &node).await;
                (f, phase, r)
            }
        });
        for (f, phase, r) in futures::future::join_all(jobs).await {
            match r {
                Ok(Some(a)) => self.start(f, phase, a),
                Ok(None) => debug!(force = %f, "lease held elsewhere"),
                Err(e) => warn!(force = %f, error = format!("{e:#}"), "could not take the force"),
            }
        }
    }

    /// Starts the actor of an acquired force and the keeper of its lease.
    fn start(&mut self, force: ForceId, phase: OnboardingPhase, a: Acquired) {
        let epoch = a.lease.epoch();
        let control = Arc::new(ForceControl::new(epoch, a.lease.deadline(), phase));
        control.report(|s| {
            s.node.clone_from(&self.me.node_id);
            s.rule_pack = self.ctx.rules_version();
        });
        let arbiter = self.next_arbiter % self.arbiters.len();
        self.next_arbiter += 1;
        let addr = spawn_force(
            self.ctx.clone(),
            force.clone(),
            control.clone(),
            &self.arbiters[arbiter].handle(),
        );
        let (tx, rx) = oneshot::channel();
        let every = self.ctx.cfg.cluster().renew_interval();
        actix::spawn(keep_lease(a.lease, control.clone(), rx, every));
        info!(
            %force,
            epoch,
            restored = a.restored,
            took_ms = a.started.elapsed().as_millis() as u64,
            "force acquired"
        );
        self.owned.insert(
            force,
            Owned {
                control,
                addr,
                arbiter,
                release: Some(tx),
                last_checkpoint: Instant::now(),
                checkpoint: None,
            },
        );
    }

    /// Hands off `forces` concurrently: stop each actor between commits, checkpoint, release.
    async fn hand_off_all(&mut self, forces: Vec<ForceId>, why: &str) {
        let mut jobs = Vec::new();
        for f in forces {
            if let Some(o) = self.owned.remove(&f) {
                jobs.push(hand_off(self.ctx.clone(), f, o, why.to_owned()));
            }
        }
        futures::future::join_all(jobs).await;
    }

    /// Starts the checkpoints that are due, each as a task of its own (the actor keeps
    /// processing; at most [`CHECKPOINTS_AT_ONCE`] are written at a time).
    fn start_checkpoints(&mut self) {
        let every = Duration::from_secs(self.ctx.cfg.checkpoint_interval_secs);
        let due = plan::checkpoints_due(
            self.owned.iter().map(|(f, o)| (f, o.checkpoint_clock())),
            every,
        );
        for f in due {
            let Some(o) = self.owned.get_mut(&f) else {
                continue;
            };
            o.last_checkpoint = Instant::now();
            o.checkpoint = Some(actix::spawn(periodic_checkpoint(
                self.ctx.clone(),
                f,
                o.addr.clone(),
                o.control.clone(),
                self.checkpoint_slots.clone(),
            )));
        }
    }
}

/// Acquires `force` for `node` if its lease is free, and restores its state.
async fn acquire(ctx: &NodeContext, force: &ForceId, node: &str) -> Result<Option<Acquired>> {
    let started = Instant::now();
    let Some(lease) = Lease::acquire(&ctx.buckets.leases, force, node).await? else {
        return Ok(None);
    };
    match restore(ctx, force).await {
        Ok(restored) => Ok(Some(Acquired {
            lease,
            restored,
            started,
        })),
        Err(e) => {
            let _ = lease.release().await;
            Err(e.context("restoring the force's state"))
        }
    }
}

/// Brings the local sled state of `force` up to its checkpoint if that is newer; says where
/// the state came from. Decoding and importing run on a blocking thread.
async fn restore(ctx: &NodeContext, force: &ForceId) -> Result<&'static str> {
    let fs = ctx.store.force(force)?;
    let local = fs.cursor()?;
    let Some((seq, bytes)) = checkpoint::get(&ctx.buckets.checkpoints, force).await? else {
        return Ok(if local > 0 { "local" } else { "empty" });
    };
    if seq <= local {
        return Ok("local");
    }
    let rules = ctx.rule_pack().rules;
    let f = force.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let c = Checkpoint::from_bytes(&bytes).context("decoding the checkpoint")?;
        fs.import(&f, &c, Some(&rules))
    })
    .await
    .context("checkpoint import task")??;
    ctx.store.flush().await?;
    info!(%force, from = local, to = seq, "state restored from the checkpoint");
    Ok("checkpoint")
}

/// Writes one periodic checkpoint of `force` (the actor exports between two commits, on a
/// blocking thread, and goes on processing).
async fn periodic_checkpoint(
    ctx: NodeContext,
    force: ForceId,
    addr: Addr<ForceActor>,
    control: Arc<ForceControl>,
    slots: Arc<Semaphore>,
) {
    let Ok(_slot) = slots.acquire_owned().await else {
        return;
    };
    match addr.send(Snapshot).await {
        Ok(Ok(c)) if control.valid() => {
            match checkpoint::put(&ctx.buckets.checkpoints, &force, c.seq, &c.bytes).await {
                Ok(()) => debug!(%force, seq = c.seq, "checkpoint written"),
                Err(e) => warn!(%force, error = format!("{e:#}"), "checkpoint failed"),
            }
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => warn!(%force, error = format!("{e:#}"), "checkpoint failed"),
        Err(e) => warn!(%force, error = %e, "checkpoint failed: actor gone"),
    }
}

/// Stops one force's actor between commits, checkpoints it, and releases its lease.
async fn hand_off(ctx: NodeContext, force: ForceId, mut o: Owned, why: String) {
    let started = Instant::now();
    if let Some(h) = o.checkpoint.take()
        && tokio::time::timeout(CHECKPOINT_SETTLE, h).await.is_err()
    {
        warn!(%force, "periodic checkpoint still running at hand-off");
    }
    match o.addr.send(Handoff).await {
        Ok(Ok(Exported { seq, bytes })) if o.control.valid() => {
            if let Err(e) = ctx.store.flush().await {
                warn!(%force, error = %e, "flush before hand-off failed");
            }
            match checkpoint::put(&ctx.buckets.checkpoints, &force, seq, &bytes).await {
                Ok(()) => info!(%force, seq, "checkpoint written for hand-off"),
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
