//! The supervised force actor. It drives its [`Worker`] one step per `Pump` message, so that the
//! next step starts only after the previous one has committed (per-force ordering), and answers
//! the coordinator's [`Snapshot`] and [`Handoff`] between steps.
//!
//! A panic in rule evaluation is caught in the batch (actix restarts a *stopped* actor, not a
//! panicked one), recorded in sled against the event's sequence, and turned into `ctx.stop()`:
//! the [`Supervisor`] then restarts the actor, which rebuilds its worker from sled. After
//! `max_attempts` the event is dead-lettered instead of evaluated.
//!
//! When its lease is revoked the actor stops stepping and drops its worker; once the
//! coordinator drops its address, actix stops it for good.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use nmc_shared::ForceId;
use tracing::{error, info, warn};

use super::control::ForceControl;
use super::worker::{Step, Worker};
use crate::context::NodeContext;

/// Drives the next step.
#[derive(Message)]
#[rtype(result = "()")]
struct Pump;

/// Asks the actor to commit and return the force's committed state (for a periodic
/// checkpoint); processing goes on.
#[derive(Message)]
#[rtype(result = "anyhow::Result<Exported>")]
pub struct Snapshot;

/// Asks the actor to stop processing, commit and hand over its committed state (rebalance,
/// shutdown).
#[derive(Message)]
#[rtype(result = "anyhow::Result<Exported>")]
pub struct Handoff;

/// A force's committed state, encoded as a checkpoint, and the stream sequence it reflects.
pub struct Exported {
    /// Last applied `NMC_EVENTS_<force>` sequence.
    pub seq: u64,
    /// The state generation it belongs to.
    pub generation: u64,
    /// When the stream stored the event at `seq` (Unix ms), if the last commit recorded it.
    pub cursor_time_ms: Option<i64>,
    /// [`nmc_shared::state::Checkpoint::to_bytes`].
    pub bytes: Vec<u8>,
}

/// The actor that owns one force on this node.
pub struct ForceActor {
    ctx: NodeContext,
    force: ForceId,
    control: Arc<ForceControl>,
    worker: Option<Worker>,
    failures: u32,
    draining: bool,
    /// A Snapshot or Handoff is committing and exporting: no step may run meanwhile.
    exporting: bool,
    /// A Pump arrived while exporting; the export's end sends it again.
    pump_parked: bool,
}

impl ForceActor {
    fn new(ctx: NodeContext, force: ForceId, control: Arc<ForceControl>) -> Self {
        ForceActor {
            ctx,
            force,
            control,
            worker: None,
            failures: 0,
            draining: false,
            exporting: false,
            pump_parked: false,
        }
    }

    /// Stops the actor after a back-off so that the supervisor restarts it from sled.
    fn restart_later(&mut self, ctx: &mut Context<Self>) {
        self.worker = None;
        self.failures += 1;
        let wait = Duration::from_millis(200 * u64::from(self.failures.min(25)));
        ctx.run_later(wait, |_, ctx| ctx.stop());
    }

    /// Commits what the worker applied since its last commit, then reads the committed state
    /// from sled and encodes it on a blocking thread: atomic, so that no step runs meanwhile.
    /// With `keep`, the worker goes on afterwards (a snapshot); without, it is dropped (a
    /// handoff: the export is the last word of this holder).
    fn export(&mut self, keep: bool) -> AtomicResponse<Self, anyhow::Result<Exported>> {
        let store = self.ctx.store.clone();
        let force = self.force.clone();
        let mut worker = self.worker.take();
        self.exporting = true;
        let fut = async move {
            if let Some(w) = worker.as_mut() {
                match w.commit().await {
                    Ok(true) => {}
                    // Fenced: the export is what sled holds, and the worker is rebuilt from it.
                    Ok(false) => worker = None,
                    Err(e) => {
                        warn!(%force, error = format!("{e:#}"), "commit before export failed; exporting the last commit");
                        worker = None;
                    }
                }
            }
            let job = tokio::task::spawn_blocking(move || -> anyhow::Result<Exported> {
                let fs = store.force(&force)?;
                let c = fs.export(&force)?;
                Ok(Exported {
                    seq: c.seq,
                    generation: fs.generation()?,
                    cursor_time_ms: fs.cursor_time_ms()?,
                    bytes: c.to_bytes(),
                })
            });
            (
                worker,
                job.await.map_err(anyhow::Error::from).and_then(|r| r),
            )
        };
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(
            move |(worker, exported), act, ctx| {
                act.exporting = false;
                if keep {
                    act.worker = worker;
                }
                if std::mem::take(&mut act.pump_parked) {
                    ctx.notify(Pump);
                }
                exported
            },
        )))
    }
}

impl Actor for ForceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.notify(Pump);
    }
}

impl Supervised for ForceActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        warn!(force = %self.force, "force actor restarting from sled");
        self.ctx.metrics.actor_restart(&self.force);
        self.worker = None;
    }
}

impl Handler<Snapshot> for ForceActor {
    type Result = AtomicResponse<Self, anyhow::Result<Exported>>;

    fn handle(&mut self, _: Snapshot, _: &mut Self::Context) -> Self::Result {
        self.export(true)
    }
}

impl Handler<Handoff> for ForceActor {
    type Result = AtomicResponse<Self, anyhow::Result<Exported>>;

    fn handle(&mut self, _: Handoff, _: &mut Self::Context) -> Self::Result {
        self.draining = true;
        info!(force = %self.force, "force handed off: processing stopped");
        self.export(false)
    }
}

impl Handler<Pump> for ForceActor {
    // Atomic: the mailbox waits while a step runs, so a Snapshot or Handoff always sees the
    // state between two commits and no step runs after a Handoff. The converse, that no step
    // starts during an export, is `exporting`'s job.
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: Pump, ctx: &mut Self::Context) -> Self::Result {
        if self.exporting {
            // Atomic is not enough here. actix 0.13 merges the wait of a mailbox message's
            // handler (Snapshot, Handoff) into its context only after polling the notified
            // items queued behind it, so the Pump notified at the end of the last step can
            // run while the export is in flight. It would then find no worker, rebuild one
            // from sled and step it before the export, which would put its own worker back
            // over that one afterwards. Parked instead, it runs when the export ends.
            self.pump_parked = true;
            return AtomicResponse::new(Box::pin(fut::ready(())));
        }
        if self.draining || self.control.is_revoked() {
            // Idle until the coordinator drops the address; actix then stops the actor.
            self.worker = None;
            return AtomicResponse::new(Box::pin(fut::ready(())));
        }
        if !self.control.valid() {
            // The lease is past its local deadline: write nothing until it is renewed or revoked.
            self.worker = None;
            ctx.run_later(Duration::from_millis(250), |_, ctx| ctx.notify(Pump));
            return AtomicResponse::new(Box::pin(fut::ready(())));
        }
        let worker = match self.worker.take() {
            Some(w) => Ok(w),
            None => Worker::open(self.ctx.clone(), self.force.clone(), self.control.clone()),
        };
        let mut worker = match worker {
            Ok(w) => w,
            Err(e) => {
                error!(force = %self.force, error = format!("{e:#}"), "cannot open force state");
                self.restart_later(ctx);
                return AtomicResponse::new(Box::pin(fut::ready(())));
            }
        };
        let fut = async move {
            let r = worker.step().await;
            (worker, r)
        };
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(|(worker, result), act, ctx| match result {
            Ok(Step::Idle) | Ok(Step::Applied { .. }) => {
                if matches!(result, Ok(Step::Applied { .. })) {
                    act.failures = 0;
                }
                act.worker = Some(worker);
                ctx.notify(Pump);
            }
            Ok(Step::Reopen) => {
                // Fenced (the state in memory may be ahead of sled) or new rules: rebuild.
                act.worker = None;
                ctx.notify(Pump);
            }
            Ok(Step::Panicked { seq, message }) => {
                match worker.store().record_panic(seq, &message) {
                    Ok(p) => error!(
                        force = %act.force, seq, attempts = p.attempts, max = act.ctx.cfg.max_attempts,
                        panic = %message, "rule evaluation panicked; restarting the force actor"
                    ),
                    Err(e) => error!(force = %act.force, seq, error = %e, "cannot record panic"),
                }
                act.worker = None;
                ctx.stop();
            }
            Err(e) => {
                warn!(force = %act.force, error = format!("{e:#}"), "force step failed; restarting from sled");
                act.restart_later(ctx);
            }
        })))
    }
}

/// Starts a supervised force actor on `arbiter`.
pub fn spawn_force(
    ctx: NodeContext,
    force: ForceId,
    control: Arc<ForceControl>,
    arbiter: &ArbiterHandle,
) -> Addr<ForceActor> {
    Supervisor::start_in_arbiter(arbiter, move |_| ForceActor::new(ctx, force, control))
}
