//! The force worker: the I/O loop body of a force actor, one batch per [`Worker::step`].
//!
//! A step reads up to `batch_size` messages from an ordered consumer that starts after the sled
//! cursor, evaluates them, publishes dead letters and alerts and waits for their acks. The state
//! in memory then runs ahead of sled. It is committed (the cursor and the state changes since
//! the last commit, in one sled batch, then flushed in the background) every `commit_interval_ms` or
//! `commit_max_events`, once the force has been quiet for `commit_quiet_ms`, before a new rule
//! pack and before a handoff. A crash loses only what was not committed, and the next worker
//! replays it from the committed cursor: the core is deterministic, so the replay re-raises the
//! same alerts with the same ids, which `NMC_ALERTS` drops as duplicates (its duplicate window
//! covers the commit interval: see the configuration rules). On any error the actor drops the
//! worker and rebuilds it from sled.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
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
use crate::store::{BatchCommit, ForceStore, OutboxEntry, Poison, StoredSize};
use crate::telemetry::metrics::LatencyFrom;
use crate::telemetry::trace_context;

/// How long a step waits for the first message before returning to the actor's mailbox.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// How often a caught-up force looks whether its stream was created again (see
/// [`Worker::check_stream`]): one stream lookup per idle force.
const STREAM_CHECK_EVERY: Duration = Duration::from_secs(10);

/// What a step did.
pub enum Step {
    /// Nothing arrived within the idle wait.
    Idle,
    /// A batch was applied (and perhaps committed), or what was applied before was committed.
    Applied {
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
    /// Last sequence applied to `state` (sled's cursor once committed).
    cursor: u64,
    /// When the stream stored the event at `cursor` (Unix ms; 0: unknown): checked against the
    /// stream when a reader opens, so that a stream created again is not read from `cursor`.
    cursor_time_ms: i64,
    /// What `state` holds that sled does not yet.
    uncommitted: Option<Uncommitted>,
    /// How large the stored snapshot and journal are.
    stored: StoredSize,
    /// The flush of the last commit.
    flushing: Option<tokio::task::JoinHandle<Result<()>>>,
    poison: Option<Poison>,
    /// The ordered reader of the force's stream.
    reader: Option<Reader>,
    /// The outbox holds alerts of an earlier holder (found at open) to publish, restamped.
    outbox_inherited: bool,
    settings: EvalSettings,
    lag: u64,
    /// Events applied with their ingest time as event time, since this worker opened.
    ingest_time: u64,
    /// The state generation `state` belongs to: a newer one in the control reopens the worker.
    generation: u64,
}

/// An ordered reader of the force's stream, and what it was opened on.
struct Reader {
    /// The name of the consumer it opened with (see [`bus::named_ordered_reader`]).
    consumer: String,
    messages: pull::Ordered,
    /// When the stream it opened on was created (Unix ns).
    stream_created_ns: i128,
    /// When the stream was last looked at.
    checked: Instant,
}

/// Applied in memory since the last commit.
struct Uncommitted {
    /// When the first of it was applied: the commit is due `commit_interval_ms` later.
    since: Instant,
    /// When the last of it was applied: the commit is due once the force has been quiet for
    /// `commit_quiet_ms` since.
    last: Instant,
    /// Events applied (and dead-lettered) since.
    events: usize,
    /// The poison record's event is behind the cursor: remove the record with the commit.
    clear_poison: bool,
}

impl Worker {
    /// Rebuilds a worker from the force's sled tree.
    pub fn open(ctx: NodeContext, force: ForceId, control: Arc<ForceControl>) -> Result<Worker> {
        let store = ctx.store.force(&force)?;
        let generation = control.generation();
        if store.generation()? < generation {
            // `nmc forces reset-state`: what the tree holds is of an earlier state generation.
            store.reset(generation)?;
            warn!(%force, generation, "the force's state was reset: its correlation state and cursor are discarded and its stream is read from the start");
        }
        let generation = store.generation()?;
        let RulePack {
            rules,
            version: pack,
            ..
        } = ctx.rule_pack();
        let (state, stored) = store.load_state(&rules)?;
        let state = state.with_lateness(ctx.cfg.lateness_ms());
        let cursor = store.cursor()?;
        let cursor_time_ms = store.cursor_time_ms()?.unwrap_or(0);
        let poison = store.poison()?;
        let outbox_inherited = !store.outbox()?.is_empty();
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
            cursor_time_ms,
            uncommitted: None,
            stored,
            flushing: None,
            poison,
            reader: None,
            outbox_inherited,
            settings,
            lag: 0,
            ingest_time,
            generation,
        })
    }

    /// The force's sled tree.
    pub fn store(&self) -> &ForceStore {
        &self.store
    }

    /// The force's own stream, looked up now, and its name.
    async fn force_stream(&self) -> Result<(String, async_nats::jetstream::stream::Stream)> {
        let name = subject::events_stream(&self.force);
        let stream = self
            .ctx
            .js
            .get_stream(&name)
            .await
            .with_context(|| format!("looking up {name}"))?;
        Ok((name, stream))
    }

    /// Opens an ordered reader of the force's own stream from the event after the cursor: every
    /// subject of it (the bare `nmc.events.<force>` too, to dead-letter it), no filter for the
    /// server to match.
    async fn open_reader(&self) -> Result<Reader> {
        let (name, stream) = self.force_stream().await?;
        let last = stream.cached_info().state.last_sequence;
        let created_again = |why: String| {
            anyhow::anyhow!(
                "the state of {} has applied up to sequence {} but {why}: the stream was deleted and created again, or the state comes from another cluster; nothing is read until the state or the stream is fixed: once the new stream is the one to keep, `nmc forces reset-state {} --yes` reads it from its start (docs/operations.md, \"One force's stream deleted and created again\")",
                self.force,
                self.cursor,
                self.force
            )
        };
        if self.cursor > last {
            return Err(created_again(format!("its stream {name} ends at {last}")));
        }
        // The same sequence must be the same event: a stream created again and published past
        // the cursor before this reader opened has other events (and times) there.
        if self.cursor > 0 && self.cursor_time_ms != 0 {
            match stream.get_raw_message(self.cursor).await {
                Ok(m) => {
                    let stored_ms = (m.time.unix_timestamp_nanos() / 1_000_000) as i64;
                    if stored_ms != self.cursor_time_ms {
                        return Err(created_again(format!(
                            "event {} of its stream {name} was stored at {}, not at {} as the event the state applied there",
                            self.cursor,
                            nmc_shared::time::format_ms(stored_ms),
                            nmc_shared::time::format_ms(self.cursor_time_ms)
                        )));
                    }
                }
                // Removed by the stream's limits: nothing left to compare with.
                Err(e)
                    if e.kind()
                        == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
                {
                    debug!(force = %self.force, seq = self.cursor, "the event at the cursor is no longer in the stream; its identity is not checked");
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("reading event {} of {name} to check the stream", self.cursor)
                    });
                }
            }
        }
        let (consumer, messages) = bus::named_ordered_reader(
            &stream,
            String::new(),
            DeliverPolicy::ByStartSequence {
                start_sequence: self.cursor + 1,
            },
            false,
        )
        .await?;
        debug!(force = %self.force, from = self.cursor + 1, "reader opened");
        Ok(Reader {
            consumer,
            messages,
            stream_created_ns: stream.cached_info().created.unix_timestamp_nanos(),
            checked: Instant::now(),
        })
    }

    /// While the force is caught up, looks at its stream every [`STREAM_CHECK_EVERY`]. One
    /// deleted and created again since the reader opened is read by no one until it grows past
    /// the cursor (the reader's consumer comes back on it at the sequence after the cursor), so
    /// the force would sit idle with no lag; reopening from the cursor checks the new stream,
    /// and refuses it. A stream that is gone is an error (the worker is rebuilt, and says so).
    async fn check_stream(&mut self) -> Result<()> {
        let Some(reader) = self
            .reader
            .as_mut()
            .filter(|r| r.checked.elapsed() >= STREAM_CHECK_EVERY)
        else {
            return Ok(());
        };
        reader.checked = Instant::now();
        let opened_on = reader.stream_created_ns;
        let (name, stream) = self.force_stream().await?;
        if stream.cached_info().created.unix_timestamp_nanos() != opened_on {
            info!(force = %self.force, stream = %name, cursor = self.cursor, "the stream was created again since the reader opened; reopening from the cursor, which checks the stream");
            self.reader = None;
        }
        Ok(())
    }

    /// Reads, evaluates and commits one batch.
    pub async fn step(&mut self) -> Result<Step> {
        if self.control.generation() > self.generation {
            // Reset: nothing of the state of the earlier generation is committed.
            info!(force = %self.force, from = self.generation, to = self.control.generation(), "the force's state was reset: reloading the force");
            return Ok(Step::Reopen);
        }
        let new_pack = self.ctx.rules.borrow().version != self.pack;
        if new_pack {
            info!(force = %self.force, from = %self.pack, to = %self.ctx.rules_version(), "new rule pack: reloading the force");
            // What the old pack applied is committed first: the new one takes over from there.
            self.commit().await?;
            return Ok(Step::Reopen);
        }
        if self.outbox_inherited {
            self.publish_outbox().await?;
        }
        if self.reader.is_none() {
            self.reader = Some(self.open_reader().await?);
        }
        // With uncommitted state, wait for the next message until the commit is due (at most
        // the idle wait, so that the actor answers its mailbox).
        let wait = self.uncommitted.as_ref().map_or(IDLE_WAIT, |u| {
            let cfg = &self.ctx.cfg;
            let due = (u.since + cfg.commit_interval()).min(u.last + cfg.commit_quiet());
            due.saturating_duration_since(Instant::now()).min(IDLE_WAIT)
        });
        let Reader {
            consumer,
            messages: reader,
            ..
        } = self.reader.as_mut().expect("just set");
        let consumer = consumer.clone();
        let max_header_bytes = self.settings.max_header_bytes;
        let mut raws = Vec::new();
        let mut reopen = false;
        let first = tokio::time::timeout(wait, reader.next()).await;
        match first {
            Err(_) if self.commit_due() => {
                return Ok(match self.commit().await? {
                    true => Step::Applied { applied: 0 },
                    false => Step::Reopen,
                });
            }
            Err(_) => {
                self.caught_up();
                self.check_stream().await?;
                return Ok(Step::Idle);
            }
            Ok(Some(Ok(m))) => match to_raw(m, &consumer, &mut self.lag, max_header_bytes)? {
                Some(raw) => raws.push(raw),
                None => reopen = true,
            },
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
        let reader = &mut self.reader.as_mut().expect("still set").messages;
        while !reopen && raws.len() < self.ctx.cfg.batch_size {
            match reader.next().now_or_never() {
                Some(Some(Ok(m))) => match to_raw(m, &consumer, &mut self.lag, max_header_bytes)? {
                    Some(raw) => raws.push(raw),
                    None => reopen = true,
                },
                Some(Some(Err(_)) | None) => {
                    self.reader = None;
                    break;
                }
                None => break,
            }
        }
        if reopen {
            // The client created the consumer again on its own, from where it was, on whatever
            // stream has the name now (perhaps one created again under it). Reopening from the
            // cursor checks the stream first; what came before is the old consumer's.
            info!(force = %self.force, cursor = self.cursor, "the reader's consumer was created again (its stream or consumer went away, or heartbeats were missed); reopening from the cursor, which checks the stream");
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

    /// Evaluates `raws`, publishes their dead letters and alerts (under the batch span whose
    /// `traceparent` the alerts carry), and commits if a commit is due.
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
            cursor,
            clear_poison,
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
        if !self.control.valid() {
            warn!(force = %self.force, "lease past its deadline: batch not published");
            return Ok(Step::Reopen);
        }
        // Published before the state is committed (the latency of an alert is not the commit
        // interval's): if the commit never happens, the replay raises them again, same ids.
        self.publish(&raised, traceparent.as_deref()).await?;
        let events = raws.len();
        // The cursor is the batch's last sequence (dead letters and the poison event too).
        debug_assert_eq!(raws.last().map(|r| r.seq), Some(cursor));
        self.cursor_time_ms = raws.last().map_or(0, |r| r.ingest_ms);
        let u = self.uncommitted.get_or_insert(Uncommitted {
            since: started,
            last: started,
            events: 0,
            clear_poison: false,
        });
        u.last = Instant::now();
        u.events += events;
        u.clear_poison |= clear_poison;
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
        debug!(force = %self.force, cursor, applied, raised = raised.len(), dead = dead.len(), pending = self.state.pending_events(), "batch applied");
        self.ctx.metrics.batch(
            &self.force,
            &stats,
            self.state.bad_values() - bad_before,
            started.elapsed(),
        );
        if self.commit_due() && !self.commit().await? {
            return Ok(Step::Reopen);
        }
        Ok(Step::Applied { applied })
    }

    /// Whether what is applied in memory must be committed now.
    fn commit_due(&self) -> bool {
        let cfg = &self.ctx.cfg;
        self.uncommitted.as_ref().is_some_and(|u| {
            u.events >= cfg.commit_max_events
                || u.since.elapsed() >= cfg.commit_interval()
                || u.last.elapsed() >= cfg.commit_quiet()
        })
    }

    /// Writes the cursor and the state changes since the last commit in one sled batch and
    /// starts its flush. False (nothing written) when the lease is past its deadline: the
    /// worker must then be rebuilt from sled.
    pub async fn commit(&mut self) -> Result<bool> {
        let Some(u) = self.uncommitted.take() else {
            return Ok(true);
        };
        if !self.control.valid() {
            warn!(force = %self.force, "lease past its deadline: state not committed");
            return Ok(false);
        }
        let started = Instant::now();
        let commit = BatchCommit {
            cursor: self.cursor,
            cursor_time_ms: self.cursor_time_ms,
            watermark_ms: self.state.watermark_ms(),
            state: self.state.take_changes(&self.rules),
            clear_poison: u.clear_poison,
        };
        // The previous commit's flush (long done by now): its failure stops the worker here.
        if let Some(flush) = self.flushing.take() {
            flush.await.context("the flush task of the last commit")??;
        }
        self.stored.journal += self.store.commit(&commit)?;
        if self.lag > 0 {
            // More is waiting: the next commit gathers its changes in this one's buffers.
            self.state.reuse_changes(commit.state);
        }
        // The batch is atomic, so the force need not wait for it to reach the disk: only the
        // replay after a crash depends on it. sled's threads flush it while the force reads on.
        let store = self.ctx.store.clone();
        self.flushing = Some(tokio::spawn(async move { store.flush().await }));
        if self.stored.fold_due() {
            // Off the actor's thread: the fold reads and rewrites the whole state.
            let store = self.store.clone();
            self.stored = StoredSize {
                snapshot: tokio::task::spawn_blocking(move || store.fold()).await??,
                journal: 0,
            };
        }
        let cursor = self.cursor;
        self.control.record(|s| s.committed = cursor);
        self.ctx
            .metrics
            .commit(&self.force, u.events, started.elapsed());
        debug!(force = %self.force, cursor, events = u.events, "state committed");
        Ok(true)
    }

    /// Publishes the alerts a batch raised and waits for every ack; counts them and records
    /// their latency.
    async fn publish(&self, raised: &[Raised], traceparent: Option<&str>) -> Result<()> {
        if raised.is_empty() {
            return Ok(());
        }
        self.send(raised.iter().map(|r| &r.entry), traceparent, false)
            .await?;
        let now = crate::clock::now_ms();
        let m = &self.ctx.metrics;
        for r in raised {
            m.alert_of_rule(&r.rule, r.level);
            m.latency(LatencyFrom::Ingest, (now - r.ingest_ms) as f64 / 1000.0);
            m.latency(LatencyFrom::EventTime, (now - r.event_ms) as f64 / 1000.0);
        }
        Ok(())
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

    /// Publishes the alerts an earlier holder left in the outbox (restamped with this worker's
    /// node, epoch and pack) and removes them once acknowledged.
    async fn publish_outbox(&mut self) -> Result<()> {
        if !self.control.valid() {
            bail!("lease past its deadline: alerts not published");
        }
        let entries = self.store.outbox()?;
        self.control.record(|s| s.outbox = entries.len() as u64);
        self.send(entries.iter().map(|(_, e)| e), None, true)
            .await?;
        self.store
            .outbox_remove(entries.into_iter().map(|(k, _)| k))?;
        self.control.record(|s| s.outbox = 0);
        self.outbox_inherited = false;
        Ok(())
    }

    /// Publishes `entries` with their ids as `Nats-Msg-Id` (restamped if `restamp`), waits
    /// for every ack and counts them per level; a failure is counted and returned.
    async fn send<'e>(
        &self,
        entries: impl Iterator<Item = &'e OutboxEntry> + Clone,
        traceparent: Option<&str>,
        restamp: bool,
    ) -> Result<()> {
        if let Err(e) = self
            .publish_all(entries.clone(), traceparent, restamp)
            .await
        {
            self.ctx.metrics.publish_failed(&self.force);
            return Err(e);
        }
        let mut per_level: BTreeMap<Level, u64> = BTreeMap::new();
        for e in entries {
            debug!(force = %self.force, alert = %e.id, subject = %e.subject, "alert published");
            // `nmc.alerts.<force>.<level>`
            if let Some(level) = e.subject.rsplit('.').next().and_then(|l| l.parse().ok()) {
                *per_level.entry(level).or_default() += 1;
            }
        }
        for (level, n) in per_level {
            self.ctx.metrics.published(&self.force, level, n);
        }
        Ok(())
    }

    async fn publish_all(
        &self,
        entries: impl Iterator<Item = &OutboxEntry>,
        traceparent: Option<&str>,
        restamp: bool,
    ) -> Result<()> {
        let mut acks = Vec::new();
        for e in entries {
            let mut h = HeaderMap::new();
            h.insert(bus::H_MSG_ID, e.id.as_str());
            if let Some(tp) = traceparent {
                h.insert(trace_context::TRACEPARENT, tp);
            }
            let payload = if restamp {
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

/// The message as a batch reads it; `None` if a consumer other than `consumer` delivered it
/// (see [`bus::named_ordered_reader`]).
fn to_raw(
    m: async_nats::jetstream::Message,
    consumer: &str,
    lag: &mut u64,
    max_header_bytes: usize,
) -> Result<Option<Raw>> {
    let info = m
        .info()
        .map_err(|e| anyhow::anyhow!("message without JetStream metadata: {e}"))?;
    if info.consumer != consumer {
        return Ok(None);
    }
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
    Ok(Some(Raw {
        seq,
        subject: m.subject.to_string(),
        payload: m.payload.clone(),
        ingest_ms,
        traceparent,
        header_bytes,
    }))
}
