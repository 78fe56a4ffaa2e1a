//! Triage: dead-letters events published for forces that are not onboarded (or subjects that
//! name no valid force), so that a misconfigured collector is seen instead of silently ignored.
//!
//! It reads `nmc.events.>` headers-only (cheap: no payloads) from its own sled cursor, fetches
//! the payload of only the events it dead-letters, and moves its cursor after their acks.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::jetstream::consumer::DeliverPolicy;
use futures::{FutureExt, StreamExt};
use nmc_shared::subject::{self, DLQ_UNKNOWN, EVENTS_ALL, EVENTS_STREAM};
use nmc_shared::{ForceId, force};
use tracing::{info, warn};

use crate::bus::{self, DeadLetter};
use crate::runtime::Runtime;

/// Where an event on `subject` goes, if it must be dead-lettered.
pub fn classify(
    subject: &str,
    onboarded: &BTreeSet<ForceId>,
) -> Option<(String, &'static str, String)> {
    let token = subject
        .strip_prefix("nmc.events.")
        .and_then(|rest| rest.split('.').next())
        .unwrap_or_default();
    let force = ForceId::new(token);
    // The owning force actor handles every subject under an onboarded force, malformed or not.
    if force.as_ref().is_ok_and(|f| onboarded.contains(f)) {
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

/// Runs triage forever, restarting after errors.
pub async fn run(rt: Arc<Runtime>) {
    loop {
        if let Err(e) = run_once(&rt).await {
            warn!(error = format!("{e:#}"), "triage failed; restarting in 1s");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn run_once(rt: &Runtime) -> Result<()> {
    let onboarded: BTreeSet<ForceId> = rt.cfg.onboarded_forces().iter().cloned().collect();
    let store = rt.store.named("triage")?;
    let mut cursor = store.cursor()?;
    let stream = rt.js.get_stream(EVENTS_STREAM).await?;
    let mut reader = bus::ordered_reader(
        &stream,
        EVENTS_ALL.to_owned(),
        DeliverPolicy::ByStartSequence {
            start_sequence: cursor + 1,
        },
        true,
    )
    .await?;
    info!(from = cursor + 1, "triage reading");
    loop {
        let Some(first) = reader.next().await else {
            return Ok(());
        };
        let mut batch = vec![first?];
        while batch.len() < 1000 {
            match reader.next().now_or_never() {
                Some(Some(m)) => batch.push(m?),
                _ => break,
            }
        }
        let mut dead = Vec::new();
        let mut last = cursor;
        for m in &batch {
            let seq = m
                .info()
                .map_err(|e| anyhow::anyhow!("no JetStream metadata: {e}"))?
                .stream_sequence;
            last = seq;
            if seq <= cursor {
                continue;
            }
            if let Some((to, reason, error)) = classify(m.subject.as_str(), &onboarded) {
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
            bus::publish_dead_letters(&rt.js, &rt.cfg.node_id, &dead).await?;
        }
        if last > cursor {
            store.set_cursor(last)?;
            cursor = last;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_subjects() {
        let onboarded: BTreeSet<ForceId> = [ForceId::new("kent").unwrap()].into();
        assert!(classify("nmc.events.kent.entra_signin", &onboarded).is_none());
        let (to, reason, _) = classify("nmc.events.essex.entra_signin", &onboarded).unwrap();
        assert_eq!(
            (to.as_str(), reason),
            ("nmc.dlq.essex", "force_not_onboarded")
        );
        let (to, reason, _) = classify("nmc.events.atlantis.entra_signin", &onboarded).unwrap();
        assert_eq!((to.as_str(), reason), (DLQ_UNKNOWN, "unknown_force"));
        let (to, reason, _) = classify("nmc.events.Kent.entra_signin", &onboarded).unwrap();
        assert_eq!((to.as_str(), reason), (DLQ_UNKNOWN, "unknown_force"));
        assert!(
            classify("nmc.events.kent.a.b", &onboarded).is_none(),
            "the actor handles it"
        );
        let (_, reason, _) = classify("nmc.events.essex", &onboarded).unwrap();
        assert_eq!(reason, "bad_subject");
    }
}
