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
use nmc_shared::subject::{self, DLQ_UNKNOWN, EVENTS_ALL, EVENTS_STREAM};
use nmc_shared::{ForceId, force};
use tracing::{info, warn};

use crate::bus::{self, DeadLetter};
use crate::context::NodeContext;

/// Where an event on `subject` goes, if it must be dead-lettered.
pub fn classify(
    subject: &str,
    onboarded: impl Fn(&ForceId) -> bool,
) -> Option<(String, &'static str, String)> {
    let token = subject
        .strip_prefix("nmc.events.")
        .and_then(|rest| rest.split('.').next())
        .unwrap_or_default();
    let force = ForceId::new(token);
    // The owning force actor handles every subject under an onboarded force, malformed or not.
    if force.as_ref().is_ok_and(onboarded) {
        return None;
    }
    if subject::split_events(subject).is_none() {
        return Some((
            DLQ_UNKNOWN.to_owned(),
            "bad_subject",
            format!("subject `{subject}` is not nmc.events.<force>.<source>"),
        ));
    }
    match force {
        Ok(f) if force::lookup(f.as_str()).is_some() => Some((
            subject::dlq(&f),
            "force_not_onboarded",
            format!("force `{f}` is a known force but is not onboarded on this cluster"),
        )),
        Ok(f) => Some((
            DLQ_UNKNOWN.to_owned(),
            "unknown_force",
            format!("`{f}` is not a force in the nmc registry"),
        )),
        Err(e) => Some((DLQ_UNKNOWN.to_owned(), "unknown_force", e.to_string())),
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
            if let Some((to, reason, error)) =
                classify(m.subject.as_str(), |f| onboarded.contains_key(f))
            {
                let full = stream
                    .get_raw_message(seq)
                    .await
                    .with_context(|| format!("fetching event {seq}"))?;
                warn!(seq, subject = %m.subject, reason, "dead-lettering event of an unknown force");
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_subjects() {
        let kent = ForceId::new("kent").unwrap();
        let onboarded = |f: &ForceId| *f == kent;
        assert!(classify("nmc.events.kent.entra_signin", onboarded).is_none());
        let (to, reason, _) = classify("nmc.events.essex.entra_signin", onboarded).unwrap();
        assert_eq!(
            (to.as_str(), reason),
            ("nmc.dlq.essex", "force_not_onboarded")
        );
        let (to, reason, _) = classify("nmc.events.atlantis.entra_signin", onboarded).unwrap();
        assert_eq!((to.as_str(), reason), (DLQ_UNKNOWN, "unknown_force"));
        let (to, reason, _) = classify("nmc.events.Kent.entra_signin", onboarded).unwrap();
        assert_eq!((to.as_str(), reason), (DLQ_UNKNOWN, "unknown_force"));
        assert!(
            classify("nmc.events.kent.a.b", onboarded).is_none(),
            "the actor handles it"
        );
        let (_, reason, _) = classify("nmc.events.essex", onboarded).unwrap();
        assert_eq!(reason, "bad_subject");
    }
}
