//! Triage: dead-letters events published for registered forces that are not onboarded, so
//! that a collector started before its force is onboarded (or after it is offboarded) is seen
//! instead of silently ignored.
//!
//! Every force of the registry has its events stream from the first node's start
//! ([`crate::bus::stream_configs`]). Triage reads the streams of the forces that are not
//! onboarded, each through a durable consumer shared by every triage node, headers only (no
//! payloads), fetches the payload of only the events it dead-letters, and acknowledges each
//! event once its dead letter is stored. The streams of onboarded forces are their actors':
//! triage does not read them, and drops its consumer there. A subject of no registered force
//! has no stream: the server refuses it when it is published (a JetStream publish gets "no
//! responders"; with per-force credentials it is a permissions violation).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::kv::Operation;
use async_nats::jetstream::stream::{ConsumerError, ConsumerErrorKind};
use futures::StreamExt;
use nmc_shared::dead_letter::DeadLetterReason;
use nmc_shared::subject::{self, DLQ_UNKNOWN};
use nmc_shared::{ForceId, force};
use time::OffsetDateTime;
use tracing::{info, warn};

use crate::bus::{self, DeadLetter};
use crate::context::NodeContext;

/// Why and where an event is dead-lettered by triage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Dead-letter subject: the force's, or `nmc.dlq._unknown`.
    pub to: String,
    /// The reason code.
    pub reason: DeadLetterReason,
    /// What is wrong, for the `Nmc-Error` header.
    pub error: String,
}

/// Where an event on `subject` goes, if it must be dead-lettered (`None`: a force actor owns
/// it).
pub fn classify(subject: &str, onboarded: impl Fn(&ForceId) -> bool) -> Option<Verdict> {
    let token = subject
        .strip_prefix("nmc.events.")
        .and_then(|rest| rest.split('.').next())
        .unwrap_or_default();
    let force = ForceId::new(token);
    // The owning force actor handles every subject under an onboarded force, malformed or not.
    if force.as_ref().is_ok_and(onboarded) {
        return None;
    }
    let verdict = |to: String, reason, error| Some(Verdict { to, reason, error });
    if subject::split_events(subject).is_none() {
        return verdict(
            DLQ_UNKNOWN.to_owned(),
            DeadLetterReason::BadSubject,
            format!("subject `{subject}` is not nmc.events.<force>.<source>"),
        );
    }
    match force {
        Ok(f) if force::lookup(f.as_str()).is_some() => verdict(
            subject::dlq(&f),
            DeadLetterReason::ForceNotOnboarded,
            format!(
                "force `{f}` is a known force but is not onboarded on this cluster: `nmc forces add {f}`"
            ),
        ),
        Ok(f) => verdict(
            DLQ_UNKNOWN.to_owned(),
            DeadLetterReason::UnknownForce,
            format!("`{f}` is not a force in the nmc registry"),
        ),
        Err(e) => verdict(
            DLQ_UNKNOWN.to_owned(),
            DeadLetterReason::UnknownForce,
            e.to_string(),
        ),
    }
}

/// Name of the durable consumer that all triage nodes share, on each stream they read.
pub const TRIAGE_CONSUMER: &str = "nmc-triage";

/// Events fetched from one stream at a time.
const TRIAGE_BATCH: usize = 1000;

/// Pause between two rounds over the streams when the last one found nothing.
const TRIAGE_PAUSE: Duration = Duration::from_secs(1);

/// Runs triage forever, restarting after errors.
pub async fn run(ctx: NodeContext) {
    loop {
        if let Err(e) = run_once(&ctx).await {
            warn!(error = format!("{e:#}"), "triage failed; restarting in 1s");
        }
        tokio::time::sleep(TRIAGE_PAUSE).await;
    }
}

/// Triage is stateless (the verdict depends only on the subject and the onboarded forces), so
/// every triage node fetches from the same durable consumers, headers only: each event is
/// classified by one of them, acknowledged once its dead letter (if any) is stored, and
/// redelivered if that node dies first. Dead letters carry a message id derived from the event's
/// sequence, so a redelivery never doubles one.
async fn run_once(ctx: &NodeContext) -> Result<()> {
    info!("triage reading the streams of forces not onboarded");
    // Forces whose stream triage has let go of since it started (consumer deleted), and the
    // consumers it reads.
    let mut released: HashSet<ForceId> = HashSet::new();
    let mut consumers: HashMap<ForceId, Triaged> = HashMap::new();
    loop {
        let onboarded = ctx.onboarded();
        let (mut read, mut backlog) = (0, 0);
        for force in force::registered() {
            if onboarded.contains_key(&force) {
                consumers.remove(&force);
                if !released.contains(&force) {
                    // Retried next round if it fails: a consumer left behind would read again
                    // from before the onboarding.
                    match release(ctx, &force).await {
                        Ok(()) => {
                            released.insert(force);
                        }
                        Err(e) => {
                            warn!(%force, error = format!("{e:#}"), "triage could not let go of the force's stream; retrying")
                        }
                    }
                }
                continue;
            }
            released.remove(&force);
            // One stream failing (deleted, its leader moving) holds back no other force's.
            match triage_one(ctx, &force, &mut consumers).await {
                Ok((n, pending)) => {
                    read += n;
                    backlog += pending;
                }
                Err(e) => {
                    consumers.remove(&force);
                    warn!(%force, error = format!("{e:#}"), "triaging the force's stream failed; retrying next round");
                }
            }
        }
        ctx.status.set_triage_backlog(backlog);
        if read == 0 {
            tokio::time::sleep(TRIAGE_PAUSE).await;
        }
    }
}

/// Triage's consumer on the stream of a force that is not onboarded, and the offboarding it
/// starts after.
struct Triaged {
    /// The durable consumer.
    consumer: PullConsumer,
    /// When the force was last offboarded as the consumer was opened (`None`: never).
    since: Option<OffsetDateTime>,
}

/// What `NMC_FORCES` says of a force now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Record {
    /// It was never onboarded (or its history is gone).
    Never,
    /// It is onboarded.
    Onboarded,
    /// It was offboarded at this time.
    Offboarded(OffsetDateTime),
}

impl Record {
    /// When the force was last offboarded, if it was and still is.
    fn offboarded(self) -> Option<OffsetDateTime> {
        match self {
            Record::Offboarded(t) => Some(t),
            Record::Never | Record::Onboarded => None,
        }
    }
}

/// One round on the stream of `force` (not onboarded), through its consumer in `consumers`;
/// a consumer found stale (the force was onboarded and offboarded again since it was opened)
/// is dropped, to be replaced next round.
async fn triage_one(
    ctx: &NodeContext,
    force: &ForceId,
    consumers: &mut HashMap<ForceId, Triaged>,
) -> Result<(usize, u64)> {
    let triaged = match consumers.entry(force.clone()) {
        Entry::Occupied(c) => c.into_mut(),
        Entry::Vacant(v) => v.insert(open_consumer(ctx, force).await?),
    };
    match triage_force(ctx, force, triaged).await? {
        Round::Read { read, pending } => Ok((read, pending)),
        Round::Stale => {
            consumers.remove(force);
            Ok((0, 0))
        }
    }
}

/// Drops triage's consumer on the stream of `force`, now onboarded: its actor reads it, and a
/// consumer left behind would, once the force is offboarded, dead-letter what the actor applied.
async fn release(ctx: &NodeContext, force: &ForceId) -> Result<()> {
    let stream = bus::events_stream(&ctx.js, force).await?;
    match stream.delete_consumer(TRIAGE_CONSUMER).await {
        Ok(_) => {
            info!(%force, "force onboarded: triage no longer reads its stream");
            Ok(())
        }
        Err(e) if consumer_not_found(&e) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("deleting the triage consumer of {force}")),
    }
}

/// Whether `e` says there is no such consumer.
fn consumer_not_found(e: &ConsumerError) -> bool {
    matches!(e.kind(), ConsumerErrorKind::JetStream(j) if j.error_code() == ErrorCode::CONSUMER_NOT_FOUND)
}

/// What `NMC_FORCES` says of `force` now (read from the bucket, not from the node's view).
async fn record(ctx: &NodeContext, force: &ForceId) -> Result<Record> {
    let entry = ctx
        .buckets
        .forces
        .entry(force.as_str())
        .await
        .with_context(|| format!("reading the onboarding record of {force}"))?;
    Ok(match entry {
        None => Record::Never,
        Some(e) if matches!(e.operation, Operation::Delete | Operation::Purge) => {
            Record::Offboarded(e.created)
        }
        Some(_) => Record::Onboarded,
    })
}

/// The durable consumer of triage on the stream of `force`. A new one starts after the force
/// was offboarded, if it ever was (the events before were its actor's), else at the first
/// event; one created before the last offboarding (left behind while the force was onboarded)
/// is replaced, so that it does not read again what the actor applied.
async fn open_consumer(ctx: &NodeContext, force: &ForceId) -> Result<Triaged> {
    let stream = bus::events_stream(&ctx.js, force).await?;
    let since = record(ctx, force).await?.offboarded();
    match stream.consumer_info(TRIAGE_CONSUMER).await {
        // Kept: created below only if missing.
        Ok(info) if since.is_none_or(|t| info.created >= t) => {}
        Ok(_) => {
            info!(%force, "replacing a triage consumer older than the force's offboarding");
            if let Err(e) = stream.delete_consumer(TRIAGE_CONSUMER).await
                && !consumer_not_found(&e)
            {
                return Err(e).with_context(|| format!("deleting the triage consumer of {force}"));
            }
        }
        Err(e) if matches!(e.kind(), ConsumerInfoErrorKind::NotFound) => {}
        Err(e) => {
            return Err(e).with_context(|| format!("looking up the triage consumer of {force}"));
        }
    }
    let consumer = stream
        .get_or_create_consumer(
            TRIAGE_CONSUMER,
            pull::Config {
                durable_name: Some(TRIAGE_CONSUMER.to_owned()),
                deliver_policy: since.map_or(DeliverPolicy::All, |t| DeliverPolicy::ByStartTime {
                    start_time: t,
                }),
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 20_000,
                headers_only: true,
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("creating the triage consumer of {force}"))?;
    Ok(Triaged { consumer, since })
}

/// What one round on a force's stream came to.
enum Round {
    /// Events read (and dead-lettered or let through), and how many are still pending.
    Read {
        /// Events read.
        read: usize,
        /// Events still pending on the consumer.
        pending: u64,
    },
    /// The consumer predates the force's last onboarding: nothing was acknowledged.
    Stale,
}

/// Longest a fetch of one stream may take before triage gives up on it for the round (a pull
/// whose reply is lost in a reconnection or a leader change would otherwise wait for ever).
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Triages what the stream of `force` holds now (one batch).
///
/// A batch is checked against the force's record in the bucket first: the node's view of the
/// onboarded forces may have missed an onboarding altogether (onboarded and offboarded between
/// two rounds), and the consumer would then deliver what the force's actor applied meanwhile.
/// The view is read before the bucket, so that an offboarding the view shows is in the record.
async fn triage_force(ctx: &NodeContext, force: &ForceId, triaged: &Triaged) -> Result<Round> {
    let fetch = async {
        let mut messages = triaged
            .consumer
            .fetch()
            .max_messages(TRIAGE_BATCH)
            .messages()
            .await
            .with_context(|| format!("fetching the events of {force}"))?;
        let mut batch = Vec::new();
        while let Some(m) = messages.next().await {
            batch.push(m.map_err(|e| anyhow::anyhow!("fetching the events of {force}: {e}"))?);
        }
        anyhow::Ok(batch)
    };
    let batch = tokio::time::timeout(FETCH_TIMEOUT, fetch)
        .await
        .with_context(|| format!("fetching the events of {force}: no answer"))??;
    let Some(last) = batch.last() else {
        return Ok(Round::Read {
            read: 0,
            pending: 0,
        });
    };
    let pending = last.info().map(|i| i.pending).unwrap_or_default();
    // Read again now: the force may have been onboarded since the round began.
    let onboarded = ctx.onboarded();
    let now = record(ctx, force).await?;
    if now == Record::Onboarded || now.offboarded() != triaged.since {
        info!(%force, "the force was onboarded since triage's consumer was opened: replacing it");
        return Ok(Round::Stale);
    }
    let mut dead = Vec::new();
    for m in &batch {
        let seq = m
            .info()
            .map_err(|e| anyhow::anyhow!("no JetStream metadata: {e}"))?
            .stream_sequence;
        if let Some(Verdict { to, reason, error }) =
            classify(m.subject.as_str(), |f| onboarded.contains_key(f))
        {
            let full = bus::stored_event(&ctx.js, force, seq).await?;
            warn!(seq, subject = %m.subject, %reason, "dead-lettering an event of a force that is not onboarded");
            let label = to.strip_prefix("nmc.dlq.").unwrap_or("_unknown");
            ctx.metrics.dead_lettered(label, reason, 1);
            dead.push(DeadLetter {
                subject: to,
                seq,
                from_subject: m.subject.to_string(),
                reason,
                error,
                payload: full.payload,
            });
        }
    }
    if !dead.is_empty() {
        bus::publish_dead_letters(&ctx.js, &ctx.cfg.node_id, &dead).await?;
    }
    for m in &batch {
        m.ack()
            .await
            .map_err(|e| anyhow::anyhow!("acknowledging a triaged event: {e}"))?;
    }
    Ok(Round::Read {
        read: batch.len(),
        pending,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_subjects() {
        let kent = ForceId::new("kent").unwrap();
        let onboarded = |f: &ForceId| *f == kent;
        let verdict = |subject| classify(subject, onboarded).map(|v| (v.to, v.reason.as_str()));
        assert_eq!(verdict("nmc.events.kent.entra_signin"), None);
        assert_eq!(
            verdict("nmc.events.essex.entra_signin"),
            Some(("nmc.dlq.essex".into(), "force_not_onboarded"))
        );
        let unknown = Some((DLQ_UNKNOWN.into(), "unknown_force"));
        assert_eq!(verdict("nmc.events.atlantis.entra_signin"), unknown);
        assert_eq!(verdict("nmc.events.Kent.entra_signin"), unknown);
        assert_eq!(verdict("nmc.events.kent.a.b"), None, "the actor handles it");
        assert_eq!(
            verdict("nmc.events.essex"),
            Some((DLQ_UNKNOWN.into(), "bad_subject"))
        );
    }
}
