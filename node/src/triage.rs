//! Triage: dead-letters events published for forces that are not onboarded (or subjects that
//! name no valid force), so that a misconfigured collector is seen instead of silently ignored.
//!
//! It reads `nmc.events.>` headers-only (cheap: no payloads) through a durable consumer shared
//! by every triage node, fetches the payload of only the events it dead-letters, and
//! acknowledges each event once its dead letter is stored.

use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use futures::{FutureExt, StreamExt};
use nmc_shared::dead_letter::DeadLetterReason;
use nmc_shared::subject::{self, DLQ_UNKNOWN, EVENTS_ALL, EVENTS_STREAM};
use nmc_shared::{ForceId, force};
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

/// Name of the durable consumer that all triage nodes share.
pub const TRIAGE_CONSUMER: &str = "nmc-triage";

/// Runs triage forever, restarting after errors.
pub async fn run(ctx: NodeContext) {
    loop {
        if let Err(e) = run_once(&ctx).await {
            warn!(error = format!("{e:#}"), "triage failed; restarting in 1s");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Triage is stateless (the verdict depends only on the subject and the onboarded forces), so
/// every triage node pulls from one shared durable consumer, headers only: each event is
/// classified by one of them, acknowledged once its dead letter (if any) is stored, and
/// redelivered if that node dies first. Dead letters carry a message id derived from the event's
/// sequence, so a redelivery never doubles one.
async fn run_once(ctx: &NodeContext) -> Result<()> {
    let stream = ctx.js.get_stream(EVENTS_STREAM).await?;
    let consumer = stream
        .get_or_create_consumer(
            TRIAGE_CONSUMER,
            pull::Config {
                durable_name: Some(TRIAGE_CONSUMER.to_owned()),
                filter_subject: EVENTS_ALL.to_owned(),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 20_000,
                headers_only: true,
                ..Default::default()
            },
        )
        .await
        .context("creating the triage consumer")?;
    let mut messages = consumer.messages().await?;
    info!("triage reading");
    loop {
        let Some(first) = messages.next().await else {
            return Ok(());
        };
        let mut batch = vec![first?];
        while batch.len() < 1000 {
            match messages.next().now_or_never() {
                Some(Some(m)) => batch.push(m?),
                _ => break,
            }
        }
        let onboarded = ctx.onboarded();
        let mut dead = Vec::new();
        for m in &batch {
            let seq = m
                .info()
                .map_err(|e| anyhow::anyhow!("no JetStream metadata: {e}"))?
                .stream_sequence;
            if let Some(Verdict { to, reason, error }) =
                classify(m.subject.as_str(), |f| onboarded.contains_key(f))
            {
                let full = stream
                    .get_raw_message(seq)
                    .await
                    .with_context(|| format!("fetching event {seq}"))?;
                warn!(seq, subject = %m.subject, %reason, "dead-lettering event of an unknown force");
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
        if let Some(Ok(info)) = batch.last().map(|m| m.info()) {
            ctx.status.set_triage_backlog(info.pending);
        }
    }
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
