//! The force worker: the I/O loop body of a force actor, one batch per [`Worker::step`].
//!
//! A step reads up to `batch_size` messages from an ordered consumer that starts after the sled
//! cursor, evaluates them, publishes dead letters and waits for their acks, commits state, outbox
//! and cursor in one sled batch, flushes, then publishes the outbox with `Nats-Msg-Id` = alert id and
//! removes what the alert stream acknowledged. The in-memory state always equals the committed
//! state between steps; on any error the actor drops the worker and rebuilds it from sled.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use nmc_shared::correlate::ForceState;
use nmc_shared::sigma::RuleSet;
use nmc_shared::{ForceId, Level, subject};
use opentelemetry::trace::TraceContextExt;
use tracing::Instrument;
use tracing::{debug, info, warn};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::batch::{self, EvalSettings, Evaluated, Outcome, Raised, Raw};
use super::control::ForceControl;
use crate::bus;
use crate::context::NodeContext;
use crate::rules::RulePack;
use crate::store::{self, ForceStore, OutboxEntry, Poison};
use crate::telemetry::metrics::LatencyFrom;
use crate::telemetry::trace_context;

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
    /// Alerts this worker raised and has not published yet, by outbox key.
    in_flight: HashMap<Vec<u8>, Raised>,
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
            max_past_ms: i64::try_from(ctx.cfg.max_past_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            max_header_bytes: ctx.cfg.max_header_bytes,
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
            in_flight: HashMap::new(),
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
            self.publish_outbox(None).await?;
        }
        if self.reader.is_none() {
            self.reader = Some(self.open_reader().await?);
        }
        let reader = self.reader.as_mut().expect("just set");
        let mut raws = Vec::new();
        let mut broken = false;
        match tokio::time::timeout(IDLE_WAIT, reader.next()).await {
            Err(_) => {
                self.caught_up();
                return Ok(Step::Idle);
            }
            Ok(Some(Ok(m))) => raws.push(to_raw(m, &mut self.lag, self.settings.max_header_bytes)?),
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
                Some(Some(Ok(m))) => {
                    raws.push(to_raw(m, &mut self.lag, self.settings.max_header_bytes)?)
                }
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
        let span = tracing::info_span!(
            "batch",
            force = %self.force,
            events = raws.len(),
            applied = tracing::field::Empty,
            alerts = tracing::field::Empty,
            dead_letters = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        for sc in raws
            .iter()
            .filter_map(|r| r.traceparent.as_deref().and_then(trace_context::parse))
        {
            span.add_link(sc);
        }
        let sc = span.context().span().span_context().clone();
        if sc.is_valid() {
            span.record("trace_id", sc.trace_id().to_string());
        }
        self.process(raws, trace_context::format(&sc))
            .instrument(span)
            .await
    }

    /// The force has no messages after its cursor.
    fn caught_up(&mut self) {
        self.lag = 0;
        self.control.report(|s| s.lag = 0);
        self.control.record(|s| s.lagging_since = None);
    }

    /// Evaluates and commits `raws`, under the batch span whose `traceparent` the alerts carry.
    async fn process(&mut self, raws: Vec<Raw>, traceparent: Option<String>) -> Result<Step> {
        let started = Instant::now();
        self.settings.now_ms = crate::clock::now_ms();
        self.settings.phase = self.control.phase();
        let (late_before, bad_before) = (self.state.late_events(), self.state.bad_values());
        let outcome = batch::evaluate(
            &self.force,
            &self.rules,
            &mut self.state,
            &raws,
            self.poison.as_ref(),
            &self.settings,
        );
        let Evaluated {
            commit,
            dead,
            applied,
            ingest_time,
            stats,
            raised,
        } = match outcome {
            Outcome::Panicked { seq, message } => return Ok(Step::Panicked { seq, message }),
            Outcome::Done(e) => *e,
        };
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
        if !dead.is_empty() {
            for d in &dead {
                warn!(force = %self.force, seq = d.seq, reason = %d.reason, error = %d.error, "dead-lettering event");
            }
            bus::publish_dead_letters(&self.ctx.js, &self.ctx.cfg.node_id, &dead).await?;
        }
        let cursor = commit.cursor;
        let clear_poison = commit.clear_poison;
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
        let now = crate::clock::now_ms();
        let mut feeds = Vec::new();
        self.control.record(|s| {
            for (source, st) in &stats.sources {
                let Some(source) = source else { continue };
                let feed = s.feeds.entry(*source).or_default();
                feed.event_ms = feed.event_ms.max(st.newest_event_ms);
                feed.ingest_ms = feed.ingest_ms.max(st.newest_ingest_ms);
                feed.silent_after_secs = self.ctx.cfg.silence_threshold_secs(*source);
                feed.count(st.received, now);
                feeds.push((source.as_str().to_owned(), *feed));
            }
            if lag == 0 {
                s.lagging_since = None;
            } else if s.lagging_since.is_none() {
                s.lagging_since = Some(Instant::now());
            }
        });
        self.control.report(|s| {
            s.cursor = cursor;
            s.lag = lag;
            s.pending = pending;
            s.late = late;
            s.bad_values = bad_values;
            s.ingest_time = ingest_time;
            s.feeds.extend(feeds);
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
        let span = tracing::Span::current();
        span.record("applied", applied);
        span.record("alerts", raised.len());
        span.record("dead_letters", dead.len());
        debug!(force = %self.force, cursor, applied, raised = raised.len(), dead = dead.len(), pending = self.state.pending_events(), "batch committed");
        for r in &raised {
            self.ctx.metrics.alert_of_rule(&r.rule, r.level);
        }
        let any_raised = !raised.is_empty();
        self.in_flight.extend(
            raised
                .into_iter()
                .map(|r| (store::outbox_key(r.key.0, r.key.1), r)),
        );
        if any_raised {
            self.outbox_pending = true;
            self.publish_outbox(traceparent.as_deref()).await?;
        }
        self.ctx.metrics.batch(
            &self.force,
            &stats,
            self.state.bad_values() - bad_before,
            started.elapsed(),
        );
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

    /// Publishes every outbox entry and removes the acknowledged ones; entries raised by this
    /// worker are counted and their latency recorded. `traceparent` names the batch span that
    /// raised the new ones.
    async fn publish_outbox(&mut self, traceparent: Option<&str>) -> Result<()> {
        if !self.control.valid() {
            anyhow::bail!("lease past its deadline: alerts not published");
        }
        let entries = self.store.outbox()?;
        self.control.record(|s| s.outbox = entries.len() as u64);
        match self.send(&entries, traceparent).await {
            Ok(()) => {}
            Err(e) => {
                self.ctx.metrics.publish_failed(&self.force);
                return Err(e);
            }
        }
        let now = crate::clock::now_ms();
        let mut per_level: BTreeMap<Level, u64> = BTreeMap::new();
        for (k, e) in &entries {
            debug!(force = %self.force, alert = %e.id, subject = %e.subject, "alert published");
            let level = match self.in_flight.remove(k) {
                Some(r) => {
                    let m = &self.ctx.metrics;
                    m.latency(LatencyFrom::Ingest, (now - r.ingest_ms) as f64 / 1000.0);
                    m.latency(LatencyFrom::EventTime, (now - r.event_ms) as f64 / 1000.0);
                    Some(r.level)
                }
                None => e.subject.rsplit('.').next().and_then(|l| l.parse().ok()),
            };
            if let Some(level) = level {
                *per_level.entry(level).or_default() += 1;
            }
        }
        for (level, n) in per_level {
            self.ctx.metrics.published(&self.force, level, n);
        }
        self.store
            .outbox_remove(entries.into_iter().map(|(k, _)| k))?;
        self.control.record(|s| s.outbox = 0);
        self.outbox_pending = false;
        self.outbox_inherited = false;
        Ok(())
    }

    /// Publishes `entries` with their ids as `Nats-Msg-Id` and waits for every ack.
    async fn send(
        &self,
        entries: &[(Vec<u8>, OutboxEntry)],
        traceparent: Option<&str>,
    ) -> Result<()> {
        let mut acks = Vec::with_capacity(entries.len());
        for (_, e) in entries {
            let mut h = HeaderMap::new();
            h.insert(bus::H_MSG_ID, e.id.as_str());
            if let Some(tp) = traceparent {
                h.insert(trace_context::TRACEPARENT, tp);
            }
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
        Ok(())
    }
}

/// Total size of a message's headers: every name and value (what the publisher sent, less the
/// framing).
fn header_bytes(h: &HeaderMap) -> usize {
    h.iter()
        .map(|(name, values)| {
            let name: &str = name.as_ref();
            values
                .iter()
                .map(|v| name.len() + v.as_str().len())
                .sum::<usize>()
        })
        .sum()
}

fn to_raw(
    m: async_nats::jetstream::Message,
    lag: &mut u64,
    max_header_bytes: usize,
) -> Result<Raw> {
    let info = m
        .info()
        .map_err(|e| anyhow::anyhow!("message without JetStream metadata: {e}"))?;
    let seq = info.stream_sequence;
    *lag = info.pending;
    let ingest_ms = i64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let header_bytes = m.headers.as_ref().map_or(0, header_bytes);
    // Oversize headers are dead-lettered unread; a traceparent is 55 bytes.
    let traceparent = m
        .headers
        .as_ref()
        .filter(|_| header_bytes <= max_header_bytes)
        .and_then(|h| h.get(trace_context::TRACEPARENT))
        .map(|v| v.as_str())
        .filter(|v| v.len() <= 256)
        .map(str::to_owned);
    Ok(Raw {
        seq,
        subject: m.subject.to_string(),
        payload: m.payload.clone(),
        ingest_ms,
        traceparent,
        header_bytes,
    })
}
