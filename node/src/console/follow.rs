//! Keeps the console's index up to date: alerts from `NMC_ALERTS` (from the sequence after the
//! last one indexed: a lost index folder is rebuilt from the start of the stream) and states
//! from `NMC_ALERT_STATES` (the latest of every key, then each change).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::jetstream::{self, consumer::DeliverPolicy, kv};
use futures::StreamExt;
use nmc_shared::alert::Alert;
use nmc_shared::lifecycle::Lifecycle;
use nmc_shared::subject::{ALERTS_ALL, ALERTS_STREAM};
use tracing::warn;
use uuid::Uuid;

use super::index::AlertIndex;
use super::metrics::Following;
use crate::alert_state;
use crate::bus::{self, provision};

/// Follows `NMC_ALERTS` into the index forever (restarting after errors); `reading` says
/// whether it is reading the stream now (readiness).
pub async fn alerts(js: jetstream::Context, index: AlertIndex, reading: Arc<Following>) {
    let flag = &reading.alerts;
    restarting("NMC_ALERTS", flag, || alerts_once(&js, &index, flag)).await
}

/// Runs `once` again a second after it ends or fails, forever, clearing `flag` in between.
async fn restarting<F, Fut>(what: &str, flag: &AtomicBool, mut once: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    loop {
        let r = once().await;
        Following::set(flag, false);
        if let Err(e) = r {
            warn!(
                error = format!("{e:#}"),
                "following {what} failed; restarting in 1s"
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Reads alerts from the one after the last indexed until the stream's end and on.
pub async fn alerts_once(
    js: &jetstream::Context,
    index: &AlertIndex,
    reading: &AtomicBool,
) -> Result<()> {
    let stream = provision::open_stream(js, ALERTS_STREAM).await?;
    let next = index.last_seq()? + 1;
    let mut reader = bus::ordered_reader(
        &stream,
        ALERTS_ALL.to_owned(),
        DeliverPolicy::ByStartSequence {
            start_sequence: next,
        },
        false,
    )
    .await?;
    Following::set(reading, true);
    while let Some(m) = reader.next().await {
        let m = m.context("reading NMC_ALERTS")?;
        let info = m
            .info()
            .map_err(|e| anyhow::anyhow!("no JetStream metadata: {e}"))?;
        let (seq, published_ms) = (
            info.stream_sequence,
            (info.published.unix_timestamp_nanos() / 1_000_000) as i64,
        );
        match serde_json::from_slice::<Alert>(&m.payload) {
            Ok(a) => index.put_alert(seq, published_ms, a)?,
            Err(e) => warn!(seq, error = %e, "not an alert record; not indexed"),
        }
    }
    Ok(())
}

/// Follows `NMC_ALERT_STATES` into the index forever (restarting after errors).
pub async fn states(js: jetstream::Context, index: AlertIndex, reading: Arc<Following>) {
    let flag = &reading.states;
    restarting("the alert states", flag, || states_once(&js, &index, flag)).await
}

/// The latest state of every alert, then every change.
pub async fn states_once(
    js: &jetstream::Context,
    index: &AlertIndex,
    reading: &AtomicBool,
) -> Result<()> {
    let kv = provision::open_kv(js, alert_state::BUCKET).await?;
    let mut changes = kv
        .watch_with_history(">")
        .await
        .context("watching the alert states")?;
    Following::set(reading, true);
    while let Some(entry) = changes.next().await {
        let entry = entry.context("watching the alert states")?;
        if entry.operation != kv::Operation::Put {
            continue;
        }
        let Some(id) = entry
            .key
            .rsplit_once('.')
            .and_then(|(_, id)| Uuid::parse_str(id).ok())
        else {
            continue;
        };
        match serde_json::from_slice::<Lifecycle>(&entry.value) {
            Ok(l) => index.set_state(id, &l)?,
            Err(e) => warn!(key = %entry.key, error = %e, "a malformed alert state; not indexed"),
        }
    }
    Ok(())
}
