//! NATS and JetStream: connection, the streams nmc needs, ordered readers, and the publish paths
//! (dead letters, pipelined publishing). Who may create streams and buckets: [`provision`].

pub mod connect;
pub mod provision;

pub use connect::{NatsConnect, connect};

use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures::StreamExt;
use nmc_shared::ForceId;
use nmc_shared::dead_letter::DeadLetterReason;
use nmc_shared::subject::{self, ALERTS_ALL, ALERTS_STREAM, DLQ_ALL, DLQ_STREAM};

use crate::config::Config;

/// Header naming the dead-letter reason code ([`DeadLetterReason`]: `malformed_json`,
/// `oversize`, ...).
pub const H_REASON: &str = "Nmc-Reason";
/// Header holding the human-readable dead-letter error.
pub const H_ERROR: &str = "Nmc-Error";
/// Header holding the subject the dead-lettered event arrived on.
pub const H_SUBJECT: &str = "Nmc-Subject";
/// Header holding the sequence of the dead-lettered event in its force's events stream.
pub const H_SEQ: &str = "Nmc-Seq";
/// Header naming the node that dead-lettered the event.
pub const H_NODE: &str = "Nmc-Node";
/// JetStream de-duplication header.
pub const H_MSG_ID: &str = "Nats-Msg-Id";

/// A stream of nmc's with the settings every one of them shares.
fn stream_config(
    cfg: &Config,
    name: String,
    subjects: Vec<String>,
    max_age: u64,
) -> stream::Config {
    stream::Config {
        name,
        subjects,
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: Duration::from_secs(max_age),
        num_replicas: cfg.stream_replicas,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

/// The configuration of `force`'s events stream (`NMC_EVENTS_<force>`).
pub fn events_stream_config(cfg: &Config, force: &ForceId) -> stream::Config {
    stream_config(
        cfg,
        subject::events_stream(force),
        subject::events_stream_subjects(force),
        cfg.events_max_age_secs,
    )
}

/// The events streams a node requires: one for every force of the registry (onboarded or not,
/// so that a collector started before its force is onboarded is triaged, not refused).
pub fn events_stream_configs(cfg: &Config) -> Vec<stream::Config> {
    nmc_shared::force::registered()
        .map(|force| events_stream_config(cfg, &force))
        .collect()
}

/// The streams every force shares: the alerts and the dead letters.
pub fn shared_stream_configs(cfg: &Config) -> [stream::Config; 2] {
    let mut alerts = stream_config(
        cfg,
        ALERTS_STREAM.into(),
        vec![ALERTS_ALL.into()],
        cfg.alerts_max_age_secs,
    );
    alerts.duplicate_window = Duration::from_secs(cfg.alerts_duplicate_window_secs);
    let mut dlq = stream_config(
        cfg,
        DLQ_STREAM.into(),
        vec![DLQ_ALL.into()],
        cfg.alerts_max_age_secs,
    );
    dlq.duplicate_window = Duration::from_secs(cfg.alerts_duplicate_window_secs);
    [alerts, dlq]
}

/// Every stream a node requires: [`events_stream_configs`], then [`shared_stream_configs`].
pub fn stream_configs(cfg: &Config) -> Vec<stream::Config> {
    let mut all = events_stream_configs(cfg);
    all.extend(shared_stream_configs(cfg));
    all
}

/// Why a node cannot provision its streams.
#[derive(Debug, thiserror::Error)]
pub enum StreamLayoutError {
    /// The single events stream of earlier versions is still there.
    #[error(
        "stream {} (every force's events in one stream, nmc before streams per force) exists and its subjects overlap the per-force streams {}<force>: drain it with the previous nmc version, then delete it (docs/operations.md, \"Moving to a stream per force\")",
        subject::LEGACY_EVENTS_STREAM,
        subject::EVENTS_STREAM_PREFIX
    )]
    Legacy,
    /// An existing stream captures other subjects than nmc needs.
    #[error("stream {name} captures {have:?}, nmc needs {want:?}; fix or delete the stream")]
    Subjects {
        /// The stream.
        name: String,
        /// What it captures.
        have: Vec<String>,
        /// What nmc needs.
        want: Vec<String>,
    },
}

/// How many streams a node provisions at once (a replicated stream takes a Raft round trip).
const PROVISION_CONCURRENCY: usize = 8;

/// Creates the streams (node only, see [`provision`]), or checks that existing ones capture the
/// right subjects and brings their retention and duplicate window to the configuration.
pub async fn ensure_streams(js: &jetstream::Context, cfg: &Config) -> Result<()> {
    if provision::stream_config(js, subject::LEGACY_EVENTS_STREAM)
        .await?
        .is_some()
    {
        bail!(StreamLayoutError::Legacy);
    }
    let results: Vec<Result<()>> = futures::stream::iter(events_stream_configs(cfg))
        .map(|want| ensure_stream(js, want))
        .buffered(PROVISION_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect::<Result<()>>()?;
    // The alert and dead-letter streams last: once they exist, every stream does.
    for want in shared_stream_configs(cfg) {
        ensure_stream(js, want).await?;
    }
    Ok(())
}

/// [`ensure_streams`] for one stream.
async fn ensure_stream(js: &jetstream::Context, want: stream::Config) -> Result<()> {
    let limits = provision::Limits {
        max_age: Some(want.max_age),
        duplicate_window: Some(want.duplicate_window),
        replicas: want.num_replicas,
    };
    let name = want.name.clone();
    if let Some(have) = provision::stream_config(js, &name).await?
        && have.subjects != want.subjects
    {
        bail!(StreamLayoutError::Subjects {
            name,
            have: have.subjects,
            want: want.subjects,
        });
    }
    provision::ensure(js, &name, &limits, async || {
        js.create_stream(want).await?;
        Ok(())
    })
    .await?;
    Ok(())
}

/// Opens `force`'s events stream without a round trip (the handle names it; a missing stream
/// shows as an error of the first request made with it).
pub async fn events_stream(js: &jetstream::Context, force: &ForceId) -> Result<stream::Stream<()>> {
    let name = subject::events_stream(force);
    js.get_stream_no_info(&name)
        .await
        .with_context(|| format!("opening stream {name}"))
}

/// Event `seq` of `force` as its events stream stores it (evidence look-ups), while retained.
pub async fn stored_event(
    js: &jetstream::Context,
    force: &ForceId,
    seq: u64,
) -> Result<jetstream::message::StreamMessage> {
    events_stream(js, force)
        .await?
        .get_raw_message(seq)
        .await
        .with_context(|| format!("reading event {seq} of {force}"))
}

/// The event evidence `ev` of an alert of `force` names, from the force's stream while retained,
/// with its source: only an event of that force with the evidence's event time. (A sequence
/// alone may name another event: alerts raised before streams per force carry sequences of
/// the old shared stream.)
pub async fn evidence_event(
    js: &jetstream::Context,
    force: &ForceId,
    ev: &nmc_shared::alert::EvidenceRef,
) -> Option<(nmc_shared::SourceKind, jetstream::message::StreamMessage)> {
    if ev.seq == 0 {
        return None;
    }
    let raw = stored_event(js, force, ev.seq).await.ok()?;
    let (of, source) = subject::parse_events(&raw.subject).ok()?;
    let want = nmc_shared::time::parse_timestamp(&ev.time).ok()?;
    let event = nmc_shared::event::Event::parse(source, &raw.payload, usize::MAX).ok()?;
    (of == *force && event.time_ms == want).then_some((source, raw))
}

/// Opens an ordered reader on `stream`: no acks, flow-controlled, recreated by the client on
/// gaps. Every ordered reader in nmc (force actors, tails, the bench) goes through here.
pub async fn ordered_reader<I>(
    stream: &stream::Stream<I>,
    filter: String,
    deliver_policy: DeliverPolicy,
    headers_only: bool,
) -> Result<pull::Ordered> {
    Ok(
        named_ordered_reader(stream, filter, deliver_policy, headers_only)
            .await?
            .1,
    )
}

/// [`ordered_reader`], with the name of its consumer: a message of another consumer means
/// that the client created the consumer again (the stream or the consumer went away, or
/// heartbeats were missed), from where it was, on whatever stream now has the name.
pub async fn named_ordered_reader<I>(
    stream: &stream::Stream<I>,
    filter: String,
    deliver_policy: DeliverPolicy,
    headers_only: bool,
) -> Result<(String, pull::Ordered)> {
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: filter.clone(),
            deliver_policy,
            headers_only,
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating an ordered reader of {filter}"))?;
    let name = consumer.cached_info().name.clone();
    Ok((name, consumer.messages().await?))
}

/// One event to dead-letter.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Dead-letter subject (`nmc.dlq.<force>` or `nmc.dlq._unknown`).
    pub subject: String,
    /// Sequence of the event in its force's events stream.
    pub seq: u64,
    /// Subject the event arrived on.
    pub from_subject: String,
    /// Why (its code is the `Nmc-Reason` header: see `docs/dead-letters.md`).
    pub reason: DeadLetterReason,
    /// Human-readable error.
    pub error: String,
    /// The original payload.
    pub payload: Bytes,
}

/// The message id of a dead letter: `dlq-<force>-<seq>`, the event's place in its force's
/// stream (sequences are per stream: the force tells them apart), so that a retry after a crash
/// is de-duplicated by JetStream.
pub fn dead_letter_id(from_subject: &str, seq: u64) -> String {
    let force = from_subject
        .strip_prefix("nmc.events.")
        .and_then(|rest| rest.split('.').next())
        .unwrap_or("_");
    format!("dlq-{force}-{seq}")
}

/// Publishes dead letters concurrently and waits for every ack, each with its
/// [`dead_letter_id`].
pub async fn publish_dead_letters(
    js: &jetstream::Context,
    node: &str,
    letters: &[DeadLetter],
) -> Result<()> {
    let mut acks = Vec::with_capacity(letters.len());
    for d in letters {
        let mut h = HeaderMap::new();
        h.insert(H_REASON, d.reason.as_str());
        // Header values are single-line.
        h.insert(H_ERROR, d.error.replace(['\r', '\n'], " ").as_str());
        h.insert(H_SUBJECT, d.from_subject.as_str());
        h.insert(H_SEQ, d.seq.to_string().as_str());
        h.insert(H_NODE, node);
        h.insert(H_MSG_ID, dead_letter_id(&d.from_subject, d.seq).as_str());
        acks.push(
            js.publish_with_headers(d.subject.clone(), h, d.payload.clone())
                .await
                .with_context(|| format!("dead-lettering event {} to {}", d.seq, d.subject))?,
        );
    }
    for ack in
        futures::future::join_all(acks.into_iter().map(std::future::IntoFuture::into_future)).await
    {
        ack.context("waiting for a dead-letter ack")?;
    }
    Ok(())
}

/// Publishes many messages with at most `max` acks outstanding: the fast path of `nmc replay`
/// and `nmc bench` (no per-message round trip, yet every message is acknowledged).
pub struct Pipelined<T> {
    js: jetstream::Context,
    inflight: futures::stream::FuturesUnordered<
        futures::future::LocalBoxFuture<
            'static,
            (
                Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
                T,
            ),
        >,
    >,
    max: usize,
}

impl<T: 'static> Pipelined<T> {
    /// A pipeline with at most `max` unacknowledged messages.
    pub fn new(js: jetstream::Context, max: usize) -> Self {
        Pipelined {
            js,
            inflight: Default::default(),
            max: max.max(1),
        }
    }

    /// Sends one message; calls `done` for acks that complete meanwhile.
    pub async fn send(
        &mut self,
        subject: String,
        payload: Bytes,
        tag: T,
        done: &mut impl FnMut(jetstream::publish::PublishAck, T),
    ) -> Result<()> {
        use futures::{FutureExt, StreamExt};
        while self.inflight.len() >= self.max {
            if let Some((r, t)) = self.inflight.next().await {
                done(r.context("publish not acknowledged")?, t);
            }
        }
        let ack = self
            .js
            .publish(subject.clone(), payload)
            .await
            .with_context(|| format!("publishing to {subject}"))?;
        self.inflight
            .push(async move { (ack.await, tag) }.boxed_local());
        Ok(())
    }

    /// Waits for every outstanding ack.
    pub async fn finish(
        &mut self,
        done: &mut impl FnMut(jetstream::publish::PublishAck, T),
    ) -> Result<()> {
        use futures::StreamExt;
        while let Some((r, t)) = self.inflight.next().await {
            done(r.context("publish not acknowledged")?, t);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_force_has_a_stream_of_its_own_subjects() {
        let cfg = Config::default();
        let all = stream_configs(&cfg);
        assert_eq!(all.len(), nmc_shared::force::FORCES.len() + 2);
        let kent = all.iter().find(|c| c.name == "NMC_EVENTS_kent").unwrap();
        assert_eq!(kent.subjects, ["nmc.events.kent", "nmc.events.kent.>"]);
        assert_eq!(kent.max_age, Duration::from_secs(cfg.events_max_age_secs));
        // No subject twice (the server refuses overlapping streams: the integration tests create
        // them all), and no catch-all of every force's events.
        let subjects: Vec<&String> = all.iter().flat_map(|c| &c.subjects).collect();
        let unique: std::collections::BTreeSet<_> = subjects.iter().collect();
        assert_eq!(unique.len(), subjects.len());
        assert!(!subjects.iter().any(|s| *s == subject::EVENTS_ALL));
        assert!(all.iter().all(|c| c.name != subject::LEGACY_EVENTS_STREAM));
    }

    #[test]
    fn dead_letter_ids_tell_forces_apart() {
        assert_eq!(
            dead_letter_id("nmc.events.kent.entra_signin", 7),
            "dlq-kent-7"
        );
        assert_eq!(dead_letter_id("nmc.events.kent", 7), "dlq-kent-7");
        assert_ne!(
            dead_letter_id("nmc.events.kent.sysmon", 7),
            dead_letter_id("nmc.events.essex.sysmon", 7)
        );
    }
}
