//! The supervised force actor. It drives its [`Worker`] one step per `Pump` message, so that the
//! next step starts only after the previous one has committed (per-force ordering).
//!
//! A panic in rule evaluation is caught in the batch (actix restarts a *stopped* actor, not a
//! panicked one), recorded in sled against the event's sequence, and turned into `ctx.stop()`:
//! the [`Supervisor`] then restarts the actor, which rebuilds its worker from sled. After
//! `max_attempts` the event is dead-lettered instead of evaluated.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use nmc_shared::ForceId;
use tracing::{error, warn};

use super::worker::{Step, Worker};
use crate::runtime::Runtime;

/// Drives the next step.
#[derive(Message)]
#[rtype(result = "()")]
struct Pump;

/// The actor that owns one force on this node.
pub struct ForceActor {
    rt: Arc<Runtime>,
    force: ForceId,
    worker: Option<Worker>,
    failures: u32,
}

impl ForceActor {
    fn new(rt: Arc<Runtime>, force: ForceId) -> Self {
        ForceActor {
            rt,
            force,
            worker: None,
            failures: 0,
        }
    }

    /// Stops the actor after a back-off so that the supervisor restarts it from sled.
    fn restart_later(&mut self, ctx: &mut Context<Self>) {
        self.worker = None;
        self.failures += 1;
        let wait = Duration::from_millis(200 * u64::from(self.failures.min(25)));
        ctx.run_later(wait, |_, ctx| ctx.stop());
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
        self.worker = None;
    }
}

impl Handler<Pump> for ForceActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Pump, ctx: &mut Self::Context) -> Self::Result {
        let worker = match self.worker.take() {
            Some(w) => Ok(w),
            None => Worker::open(self.rt.clone(), self.force.clone()),
        };
        let mut worker = match worker {
            Ok(w) => w,
            Err(e) => {
                error!(force = %self.force, error = format!("{e:#}"), "cannot open force state");
                self.restart_later(ctx);
                return Box::pin(fut::ready(()));
            }
        };
        let fut = async move {
            let r = worker.step().await;
            (worker, r)
        };
        Box::pin(fut.into_actor(self).map(|(worker, result), act, ctx| match result {
            Ok(Step::Idle) | Ok(Step::Committed { .. }) => {
                if matches!(result, Ok(Step::Committed { .. })) {
                    act.failures = 0;
                }
                act.worker = Some(worker);
                ctx.notify(Pump);
            }
            Ok(Step::Panicked { seq, message }) => {
                match worker.store().record_panic(seq, &message) {
                    Ok(p) => error!(
                        force = %act.force, seq, attempts = p.attempts, max = act.rt.cfg.max_attempts,
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
        }))
    }
}

/// Starts a supervised force actor on `arbiter`.
pub fn spawn_force(rt: Arc<Runtime>, force: ForceId, arbiter: &ArbiterHandle) -> Addr<ForceActor> {
    Supervisor::start_in_arbiter(arbiter, move |_| ForceActor::new(rt, force))
}
