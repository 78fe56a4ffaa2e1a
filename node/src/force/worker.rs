//! The force worker: the I/O loop body of a force actor, one batch per [`Worker::step`].
//!
//! A step reads up to `batch_size` messages from an ordered consumer that starts after the sled
//! cursor, evaluates them, publishes dead letters and waits for their acks, commits state, outbox
//! and cursor in one sled batch, flushes, then publishes the outbox with `Nats-Msg-Id` = alert id and
//! removes what the alert stream acknowledged. The in-memory state always equals the committed
//! state between steps; on any error the actor drops the worker and rebuilds it from sled.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use nmc_shared::correlate::ForceState;
use nmc_shared::sigma::RuleSet;
use nmc_shared::{ForceId, subject};
use tracing::{debug, info, warn};

use super::batch::{self, EvalSettings, Outcome, Raw};
use super::control::ForceControl;
use crate::bus;
use crate::context::NodeContext;
use crate::rules::RulePack;
use crate::store::{ForceStore, Poison};

/// How long a step waits for the first message before returning to the actor's mailbox.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// What a step did.
pub enum Step {
    /// Nothing arrived within the idle wait.
    Idle,
    /// A batch was committed.
    Committed {
        /// Events applied.
        applied: usize,
    },
    /// Rebuild the worker from sled: the lease is past its deadline (nothing was committed),
    /// or a new rule pack is in force.
    Reopen,
    /// Evaluation panicked on the event at `seq`.
    Panicked {
        /// Poison event.
        seq: u64,
        /// Panic message.
        message: String,
    },
}

/// The state a force actor owns between steps.
pub struct Worker {
    ctx: NodeContext,
    rules: Arc<RuleSet>,
    pack: String,
    control: Arc<ForceControl>,
    force: ForceId,
    store: ForceStore,
    state: ForceState,
    cursor: u64,
    poison: Option<Poison>,
    reader: Option<pull::Ordered>,
    outbox_pending: bool,
    /// Whether the outbox may hold entries of an earlier holder (found at open): only those
    /// need restamping; entries this worker wrote already carry its epoch.
    outbox_inherited: bool,
    settings: EvalSettings,
    lag: u64,
    /// Events applied with their ingest time as event time, since this worker opened.
    ingest_time: u64,
}

impl Worker {
    /// Rebuilds a worker from the force's sled tree.
    pub fn open(ctx: NodeContext, force: ForceId, control: Arc<ForceControl>) -> Result<Worker> {
        let store = ctx.store.force(&force)?;
        let RulePack {
            rules,
            version: pack,
            ..
        } = ctx.rule_pack();
        let state = store
            .load_state(&rules)?
            .with_lateness(ctx.cfg.lateness_ms());
        let cursor = store.cursor()?;
        let poison = store.poison()?;
        let outbox_pending = !store.outbox()?.is_empty();
        let settings = EvalSettings {
            node: ctx.cfg.node_id.clone(),
            epoch: control.epoch(),
            rule_pack: pack.clone(),
            phase: control.phase(),
            max_event_bytes: ctx.cfg.max_event_bytes,
            max_attempts: ctx.cfg.max_attempts,
            panic_field: super::fault::panic_field(),
            max_future_ms: i64::try_from(ctx.cfg.max_future_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            now_ms: 0,
        };
        control.report(|s| s.rule_pack.clone_from(&pack));
        // Counted since the force was acquired here, across worker restarts.
        let ingest_time = control.status().ingest_time;
        info!(
            %force,
            cursor,
            groups = state.live_groups(),
            pending = state.pending_events(),
            late = state.late_events(),
            "force state loaded"
        );
        Ok(Worker {
            ctx,
            rules,
            pack,
            control,
            force,
            store,
            state,
            cursor,
            poison,
            reader: None,
            outbox_pending,
            outbox_inherited: outbox_pending,
            settings,
            lag: 0,
            ingest_time,
        })
    }

    /// The force's sled tree.
    pub fn store(&self) -> &ForceStore {
        &self.store
    }

    async fn open_reader(&self) -> Result<pull::Ordered> {
        let stream = self
            .ctx
            .js
            .get_stream(subject::EVENTS_STREAM)
            .await
            .context("looking up NMC_EVENTS")?;
        let reader = bus::ordered_reader(
            &stream,
            subject::events_of(&self.force),
            DeliverPolicy::ByStartSequence {
                start_sequence: self.cursor + 1,
            },
            false,
        )
        .await?;
        debug!(force = %self.force, from = self.cursor + 1, "reader opened");
        Ok(reader)
    }

    /// Reads, evaluates and commits one batch.
    pub async fn step(&mut self) -> Result<Step> {
        let new_pack = self.ctx.rules.borrow().version != self.pack;
        if new_pack {
            info!(force = %self.force, from = %self.pack, to = %self.ctx.rules_version(), "new rule pack: reloading the force");
            return Ok(Step::Reopen);
        }
        if self.outbox_pending {
            self.publish_outbox().await?;
        }
        if self.reader.is_none() {
            self.reader = Some(self.open_reader().await?);
        }
        let reader = self.reader.as_mut().expect("just set");
        let mut raws = Vec::new();
        let mut broken = false;
        match tokio::time::timeout(IDLE_WAIT, reader.next()).await {
            Err(_) => return Ok(Step::Idle),
            Ok(Some(Ok(m))) => raws.push(to_raw(m, &mut self.lag)?),
            Ok(Some(Err(e))) => {
                warn!(force = %self.force, error = %e, "reader failed; reopening from the cursor");
                self.reader = None;
                return Ok(Step::Idle);
            }
            Ok(None) => {
                self.reader = None;
                return Ok(Step::Idle);
            }
        }
        while raws.len() < self.ctx.cfg.batch_size {
            match reader.next().now_or_never() {
                Some(Some(Ok(m))) => raws.push(to_raw(m, &mut self.lag)?),
                Some(Some(Err(_)) | None) => {
                    broken = true;
                    break;
                }
                None => break,
            }
        }
        if broken {
            self.reader = None;
        }
        // The ordered reader never goes back, but a reopened one may overlap: skip what is applied.
        raws.retain(|r| r.seq > self.cursor);
        if raws.is_empty() {
            return Ok(Step::Idle);
        }
        self.settings.now_ms = crate::clock::now_ms();
        self.settings.phase = self.control.phase();
        let late_before = self.state.late_events();
        let outcome = batch::evaluate(
            &self.force,
            &self.rules,
            &mut self.state,
            &raws,
            self.poison.as_ref(),
            &self.settings,
        );
        let (commit, dead, applied) = match outcome {
            Outcome::Panicked { seq, message } => return Ok(Step::Panicked { seq, message }),
            Outcome::Done {
                commit,
                dead,
                applied,
                ingest_time,
            } => {
                if let (n @ 1.., Some(field)) = ingest_time {
                    self.ingest_time += n as u64;
                    warn!(
                        force = %self.force,
                        events = n,
                        field,
                        total = self.ingest_time,
                        "events without their source's time field: their ingest time was used as event time"
                    );
                }
                (commit, dead, applied)
            }
        };
        if !dead.is_empty() {
            for d in &dead {
                warn!(force = %self.force, seq = d.seq, reason = %d.reason, error = %d.error, "dead-lettering event");
            }
            bus::publish_dead_letters(&self.ctx.js, &self.ctx.cfg.node_id, &dead).await?;
        }
        let cursor = commit.cursor;
        let clear_poison = commit.clear_poison;
        let raised = commit.outbox.len();
        if !self.control.valid() {
            warn!(force = %self.force, "lease past its deadline: batch not committed");
            return Ok(Step::Reopen);
        }
        self.store.commit(commit)?;
        self.ctx.store.flush().await?;
        self.cursor = cursor;
        if clear_poison {
            self.poison = None;
        }
        let (pending, late) = (self.state.pending_events() as u64, self.state.late_events());
        let (lag, bad_values, ingest_time) = (self.lag, self.state.bad_values(), self.ingest_time);
        self.control.report(|s| {
            s.cursor = cursor;
            s.lag = lag;
            s.pending = pending;
            s.late = late;
            s.bad_values = bad_values;
            s.ingest_time = ingest_time;
        });
        let late = self.state.late_events() - late_before;
        if late > 0 {
            warn!(
                force = %self.force,
                late,
                total = self.state.late_events(),
                lateness_ms = self.ctx.cfg.lateness_ms(),
                "events arrived later than the allowed lateness; applied as they came"
            );
        }
        debug!(force = %self.force, cursor, applied, raised, dead = dead.len(), pending = self.state.pending_events(), "batch committed");
        if raised > 0 {
            self.outbox_pending = true;
            self.publish_outbox().await?;
        }
        Ok(Step::Committed { applied })
    }

    /// An outbox payload with this worker's node, epoch and rule pack (an entry left by an
    /// earlier holder of the force must not go out under its stale epoch).
    fn restamp(&self, payload: &[u8]) -> Bytes {
        match serde_json::from_slice::<nmc_shared::Alert>(payload) {
            Ok(mut a)
                if a.epoch != self.settings.epoch
                    || a.node != self.settings.node
                    || a.rule_pack != self.settings.rule_pack =>
            {
                a.epoch = self.settings.epoch;
                a.node.clone_from(&self.settings.node);
                a.rule_pack.clone_from(&self.settings.rule_pack);
                Bytes::from(serde_json::to_vec(&a).expect("alerts serialize"))
            }
            _ => Bytes::copy_from_slice(payload),
        }
    }

    /// Publishes every outbox entry and removes the acknowledged ones.
    async fn publish_outbox(&mut self) -> Result<()> {
        if !self.control.valid() {
            anyhow::bail!("lease past its deadline: alerts not published");
        }
        let entries = self.store.outbox()?;
        let mut acks = Vec::with_capacity(entries.len());
        for (_, e) in &entries {
            let mut h = HeaderMap::new();
            h.insert(bus::H_MSG_ID, e.id.as_str());
            let payload = if self.outbox_inherited {
                self.restamp(&e.payload)
            } else {
                Bytes::from(e.payload.clone())
            };
            acks.push(
                self.ctx
                    .js
                    .publish_with_headers(e.subject.clone(), h, payload)
                    .await
                    .with_context(|| format!("publishing alert {}", e.id))?,
            );
        }
        for ack in
            futures::future::join_all(acks.into_iter().map(std::future::IntoFuture::into_future))
                .await
        {
            ack.context("waiting for an alert ack")?;
        }
        for (_, e) in &entries {
            debug!(force = %self.force, alert = %e.id, subject = %e.subject, "alert published");
        }
        self.store
            .outbox_remove(entries.into_iter().map(|(k, _)| k))?;
        self.outbox_pending = false;
        self.outbox_inherited = false;
        Ok(())
    }
}

fn to_raw(m: async_nats::jetstream::Message, lag: &mut u64) -> Result<Raw> {
    let info = m
        .info()
        .map_err(|e| anyhow::anyhow!("message without JetStream metadata: {e}"))?;
    let seq = info.stream_sequence;
    *lag = info.pending;
    Ok(Raw {
        seq,
        subject: m.subject.to_string(),
        payload: m.payload.clone(),
    })
}
