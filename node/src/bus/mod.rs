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
use nmc_shared::dead_letter::DeadLetterReason;
use nmc_shared::subject::{
    ALERTS_ALL, ALERTS_STREAM, DLQ_ALL, DLQ_STREAM, EVENTS_ALL, EVENTS_STREAM,
};

use crate::config::Config;

/// Header naming the dead-letter reason code ([`DeadLetterReason`]: `malformed_json`,
/// `oversize`, ...).
pub const H_REASON: &str = "Nmc-Reason";
/// Header holding the human-readable dead-letter error.
pub const H_ERROR: &str = "Nmc-Error";
/// Header holding the subject the dead-lettered event arrived on.
pub const H_SUBJECT: &str = "Nmc-Subject";
/// Header holding the `NMC_EVENTS` sequence of the dead-lettered event.
pub const H_SEQ: &str = "Nmc-Seq";
/// Header naming the node that dead-lettered the event.
pub const H_NODE: &str = "Nmc-Node";
/// JetStream de-duplication header.
pub const H_MSG_ID: &str = "Nats-Msg-Id";

/// The stream configurations a node requires.
pub fn stream_configs(cfg: &Config) -> [stream::Config; 3] {
    let base = |name: &str, subject: &str, max_age: u64| stream::Config {
        name: name.to_owned(),
        subjects: vec![subject.to_owned()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: Duration::from_secs(max_age),
        num_replicas: cfg.stream_replicas,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    let events = base(EVENTS_STREAM, EVENTS_ALL, cfg.events_max_age_secs);
    let mut alerts = base(ALERTS_STREAM, ALERTS_ALL, cfg.alerts_max_age_secs);
    alerts.duplicate_window = Duration::from_secs(cfg.alerts_duplicate_window_secs);
    let mut dlq = base(DLQ_STREAM, DLQ_ALL, cfg.alerts_max_age_secs);
    dlq.duplicate_window = Duration::from_secs(cfg.alerts_duplicate_window_secs);
    [events, alerts, dlq]
}

/// Creates the streams (node only, see [`provision`]), or checks that existing ones capture the
/// right subjects and brings their retention and duplicate window to the configuration.
pub async fn ensure_streams(js: &jetstream::Context, cfg: &Config) -> Result<()> {
    for want in stream_configs(cfg) {
        let limits = provision::Limits {
            max_age: Some(want.max_age),
            duplicate_window: Some(want.duplicate_window),
            replicas: want.num_replicas,
        };
        let name = want.name.clone();
        if let Some(have) = provision::stream_config(js, &name).await?
            && have.subjects != want.subjects
        {
            bail!(
                "stream {name} captures {:?}, nmc needs {:?}; fix or delete the stream",
                have.subjects,
                want.subjects
            );
        }
        provision::ensure(js, &name, &limits, async || {
            js.create_stream(want).await?;
            Ok(())
        })
        .await?;
    }
    Ok(())
}

/// Opens an ordered reader on `stream`: no acks, flow-controlled, recreated by the client on
/// gaps. Every reader in nmc (force actors, triage, tails, the bench) goes through here.
pub async fn ordered_reader(
    stream: &stream::Stream,
    filter: String,
    deliver_policy: DeliverPolicy,
    headers_only: bool,
) -> Result<pull::Ordered> {
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: filter.clone(),
            deliver_policy,
            headers_only,
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating an ordered reader of {filter}"))?;
    Ok(consumer.messages().await?)
}

/// One event to dead-letter.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Dead-letter subject (`nmc.dlq.<force>` or `nmc.dlq._unknown`).
    pub subject: String,
    /// `NMC_EVENTS` sequence of the event.
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

/// Publishes dead letters concurrently and waits for every ack. The message id is derived from
/// the event's stream sequence, so a retry after a crash is de-duplicated by JetStream.
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
        h.insert(H_MSG_ID, format!("dlq-{}", d.seq).as_str());
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
