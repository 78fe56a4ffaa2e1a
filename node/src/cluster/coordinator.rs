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
use crate::status::Held;
use crate::telemetry::metrics::LeaseChange;

/// How often the coordinator looks at the cluster (and at once when the onboarded forces change).
const TICK: Duration = Duration::from_millis(500);

/// Checkpoints written at the same time at most: a round of 43 due forces goes out in
/// parallel, without one force's slow export holding up the others or the coordinator.
const CHECKPOINTS_AT_ONCE: usize = 8;

/// How long an actor has to answer a Snapshot or a Handoff (it answers between two batches):
/// a stuck actor must not hold a checkpoint slot, or a hand-off, for ever.
const ACTOR_ANSWER: Duration = Duration::from_secs(10);

/// A force this node holds.
struct Owned {
    control: Arc<ForceControl>,
    addr: Addr<ForceActor>,
    arbiter: usize,
    release: Option<oneshot::Sender<()>>,
    last_checkpoint: Instant,
    /// The periodic checkpoint being written, if any.
    checkpoint: Option<JoinHandle<()>>,
    /// Held while a checkpoint of the force is taken and written: a hand-off's checkpoint is
    /// written after any periodic one in flight, never overwritten by an older one.
    writing: Arc<tokio::sync::Mutex<()>>,
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
    /// The force's state generation the state was restored for.
    generation: u64,
    started: Instant,
}

/// The coordinator of one node.
pub struct Coordinator {
    ctx: NodeContext,
    arbiters: Vec<Arbiter>,
    owned: BTreeMap<ForceId, Owned>,
    /// Forces being handed off (each a task of its own): not taken again until it has ended.
    leaving: BTreeMap<ForceId, JoinHandle<()>>,
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
        ctx.status.heartbeat_ok();
        let every = ctx.cfg.cluster().heartbeat_interval();
        let status = ctx.status.clone();
        let heartbeat = actix::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match m.heartbeat().await {
                    Ok(()) => status.heartbeat_ok(),
                    Err(e) => warn!(error = format!("{e:#}"), "heartbeat failed"),
                }
            }
        });
        info!(node = %me.node_id, weight = me.weight, "joined the cluster");
        Ok(Coordinator {
            ctx,
            arbiters,
            owned: BTreeMap::new(),
            leaving: BTreeMap::new(),
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
        self.hand_off_all(forces, "shutdown");
        futures::future::join_all(std::mem::take(&mut self.leaving).into_values()).await;
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

    /// One look at the cluster. Nothing here waits on a force actor: hand-offs and checkpoints
    /// run as tasks of their own; only acquisitions (lease, checkpoint restore) are awaited,
    /// concurrently, each force starting as soon as it is ready.
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
        let onboarded = self.ctx.onboarded();
        for (f, phase) in &plan.keep {
            if let Some(o) = self.owned.get(f) {
                o.control.set_phase(*phase);
                o.control.set_generation(generation_of(&onboarded, f));
            }
        }
        self.hand_off_all(plan.hand_off, "rebalance");
        let take: Vec<_> = plan
            .take
            .into_iter()
            .filter(|(f, _)| !self.leaving.contains_key(f))
            .collect();
        if !take.is_empty() {
            self.take_all(take).await;
        }
        self.start_checkpoints();
        Ok(())
    }

    /// Forgets forces whose lease keeper gave up and hand-offs that have ended, and restarts
    /// actors whose task died outside the caught evaluation path.
    fn reap(&mut self) {
        self.leaving.retain(|_, h| !h.is_finished());
        let ctx = &self.ctx;
        self.owned.retain(|f, o| {
            let lost = o.control.is_revoked();
            if lost {
                error!(force = %f, "lease lost: force stopped on this node");
                ctx.status.release(f);
                ctx.metrics.lease(f, LeaseChange::Lost);
            }
            !lost
        });
        for (f, o) in &mut self.owned {
            if !o.addr.connected() {
                error!(force = %f, "force actor died; starting a new one");
                self.ctx.metrics.actor_restart(f);
                o.addr = spawn_force(
                    self.ctx.clone(),
                    f.clone(),
                    o.control.clone(),
                    &self.arbiters[o.arbiter].handle(),
                );
                self.ctx.status.hold(f.clone(), held(&o.control, &o.addr));
            }
        }
    }

    /// Tries to acquire `forces` concurrently (lease, then state restore), and starts each one
    /// acquired as soon as it is ready: its lease keeper must not wait for the slowest restore.
    async fn take_all(&mut self, forces: Vec<(ForceId, OnboardingPhase)>) {
        let mut jobs: futures::stream::FuturesUnordered<_> = forces
            .into_iter()
            .map(|(f, phase)| {
                let ctx = self.ctx.clone();
                let node = self.me.node_id.clone();
                async move {
                    let r = acquire(&ctx, &f, &node).await;
                    (f, phase, r)
                }
            })
            .collect();
        while let Some((f, phase, r)) = futures::StreamExt::next(&mut jobs).await {
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
        control.set_generation(a.generation);
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
        self.ctx.status.hold(force.clone(), held(&control, &addr));
        self.ctx.metrics.lease(&force, LeaseChange::Acquired);
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
                writing: Arc::default(),
            },
        );
    }

    /// Starts handing off `forces`, each as a task of its own: stop the actor between commits,
    /// checkpoint, release.
    fn hand_off_all(&mut self, forces: Vec<ForceId>, why: &str) {
        for f in forces {
            if let Some(o) = self.owned.remove(&f) {
                let task = actix::spawn(hand_off(self.ctx.clone(), f.clone(), o, why.to_owned()));
                self.leaving.insert(f, task);
            }
        }
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
                o.writing.clone(),
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
    let generation = generation_of(&ctx.onboarded(), force);
    match restore(ctx, force, generation).await {
        Ok(restored) => Ok(Some(Acquired {
            lease,
            restored,
            generation,
            started,
        })),
        Err(e) => {
            let _ = lease.release().await;
            Err(e.context("restoring the force's state"))
        }
    }
}

/// The state generation of `force` in `onboarded` (0: never reset, or not onboarded).
fn generation_of(onboarded: &crate::cluster::onboarding::Onboarded, force: &ForceId) -> u64 {
    onboarded.get(force).map_or(0, |r| r.state_generation)
}

/// Brings the local sled state of `force` up to its checkpoint if that is newer; says where
/// the state came from. A local state or a checkpoint of an earlier state generation than
/// `generation` (the force was reset since) is discarded. Decoding and importing run on a
/// blocking thread.
async fn restore(ctx: &NodeContext, force: &ForceId, generation: u64) -> Result<&'static str> {
    let fs = ctx.store.force(force)?;
    if fs.generation()? < generation {
        // Off the coordinator's task: the tree may be large.
        let tree = fs.clone();
        tokio::task::spawn_blocking(move || tree.reset(generation))
            .await
            .context("state reset task")??;
        ctx.store.flush().await?;
        warn!(%force, generation, "the force's state was reset: discarding the local state of an earlier generation");
    }
    let local_generation = fs.generation()?;
    let local = fs.cursor()?;
    let Some(checkpoint::Stored {
        meta:
            checkpoint::Meta {
                seq,
                generation: checkpoint_generation,
                cursor_time_ms,
            },
        state: bytes,
    }) = checkpoint::get(&ctx.buckets.checkpoints, force).await?
    else {
        return Ok(if local > 0 { "local" } else { "empty" });
    };
    if checkpoint_generation < local_generation {
        info!(%force, checkpoint = seq, checkpoint_generation, generation = local_generation, "checkpoint of an earlier state generation not restored");
        return Ok(if local > 0 { "local" } else { "empty" });
    }
    if checkpoint_generation == local_generation && seq <= local {
        return Ok("local");
    }
    let rules = ctx.rule_pack().rules;
    let f = force.clone();
    let imported = tokio::task::spawn_blocking(move || -> Result<()> {
        let c = Checkpoint::from_bytes(&bytes).context("decoding the checkpoint")?;
        // With its generation, and which incarnation of the stream the state was built from
        // (the reader checks it).
        fs.restore(&f, &c, Some(&rules), checkpoint_generation, cursor_time_ms)
    })
    .await
    .context("checkpoint import task")?;
    if let Err(e) = imported {
        // A checkpoint that cannot be used must not keep the force unowned: the local state is
        // exact at its own cursor, and the replay from there costs time, not events (as long as
        // NMC_EVENTS_<force> still holds them).
        error!(
            %force,
            error = format!("{e:#}"),
            local,
            checkpoint = seq,
            "checkpoint refused: continuing from the local state and replaying from its cursor"
        );
        return Ok("local (checkpoint refused)");
    }
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
    writing: Arc<tokio::sync::Mutex<()>>,
    slots: Arc<Semaphore>,
) {
    let Ok(_slot) = slots.acquire_owned().await else {
        return;
    };
    let _writing = writing.lock().await;
    // Handed off meanwhile: the hand-off wrote a newer checkpoint.
    if !control.valid() {
        return;
    }
    let ok = match tokio::time::timeout(ACTOR_ANSWER, addr.send(Snapshot)).await {
        Ok(Ok(Ok(c))) if control.valid() => {
            match checkpoint::put(&ctx.buckets.checkpoints, &force, &c.meta(), &c.bytes).await {
                Ok(()) => {
                    debug!(%force, seq = c.seq, "checkpoint written");
                    checkpointed(&control, &c);
                    true
                }
                Err(e) => {
                    warn!(%force, error = format!("{e:#}"), "checkpoint failed");
                    false
                }
            }
        }
        Ok(Ok(Ok(_))) => return,
        Ok(Ok(Err(e))) => {
            warn!(%force, error = format!("{e:#}"), "checkpoint failed");
            false
        }
        Ok(Err(e)) => {
            warn!(%force, error = %e, "checkpoint failed: actor gone");
            false
        }
        Err(_) => {
            warn!(%force, "checkpoint skipped: the actor did not answer in time");
            false
        }
    };
    ctx.metrics.checkpoint(&force, ok);
}

impl Exported {
    /// What the exported state reflects, for its checkpoint's metadata.
    fn meta(&self) -> checkpoint::Meta {
        checkpoint::Meta {
            seq: self.seq,
            generation: self.generation,
            cursor_time_ms: self.cursor_time_ms,
        }
    }
}

/// Records a written checkpoint in the force's stats (its age and the state's size).
fn checkpointed(control: &ForceControl, c: &Exported) {
    control.record(|s| {
        s.checkpointed_at = Some(Instant::now());
        s.store_bytes = c.bytes.len() as u64;
    });
}

/// The status entry of a held force: its control and a probe of its actor.
fn held(control: &Arc<ForceControl>, addr: &Addr<ForceActor>) -> Held {
    let addr = addr.clone();
    Held {
        control: control.clone(),
        alive: Box::new(move || addr.connected()),
    }
}

/// Stops one force's actor between commits, checkpoints it, and releases its lease.
async fn hand_off(ctx: NodeContext, force: ForceId, mut o: Owned, why: String) {
    let started = Instant::now();
    ctx.status.release(&force);
    // After any periodic checkpoint of the force being written: ours is newer and lands last.
    let writing = o.writing.clone();
    let _writing = writing.lock().await;
    match tokio::time::timeout(ACTOR_ANSWER, o.addr.send(Handoff)).await {
        Err(_) => warn!(%force, "hand-off: the actor did not answer in time; no checkpoint"),
        Ok(Ok(Ok(c))) if o.control.valid() => {
            if let Err(e) = ctx.store.flush().await {
                warn!(%force, error = %e, "flush before hand-off failed");
            }
            let put = checkpoint::put(&ctx.buckets.checkpoints, &force, &c.meta(), &c.bytes).await;
            ctx.metrics.checkpoint(&force, put.is_ok());
            match put {
                Ok(()) => info!(%force, seq = c.seq, "checkpoint written for hand-off"),
                Err(e) => warn!(%force, error = format!("{e:#}"), "hand-off checkpoint failed"),
            }
        }
        Ok(Ok(Ok(_))) => warn!(%force, "lease past its deadline: no hand-off checkpoint"),
        Ok(Ok(Err(e))) => warn!(%force, error = format!("{e:#}"), "hand-off export failed"),
        Ok(Err(e)) => warn!(%force, error = %e, "hand-off: actor gone"),
    }
    o.control.revoke();
    if let Some(tx) = o.release.take() {
        let _ = tx.send(());
    }
    ctx.metrics.lease(&force, LeaseChange::Released);
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
            biased;
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
            // Revoked by a hand-off (which asks for the release at once): release; revoked
            // because the lease was lost: nothing to release.
            if release.try_recv().is_ok() {
                let _ = lease.release().await;
            }
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
