//! Delivery records and retries: each (alert, contact, channel) has one record in the KV
//! bucket `NMC_DELIVERIES` (key `<force>.<alert>.<contact>.<channel id>`) saying whether it was
//! sent, with every attempt and the provider's answer. A notifier reads the record before
//! sending and skips what was sent, so a redelivered alert (its notifier died) is not sent
//! twice once the record says so; the only window is between the provider's acceptance and
//! the record's write.

use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::bus::provision;
use crate::config::NotifyConfig;

/// The bucket.
pub const BUCKET: &str = "NMC_DELIVERIES";
/// Attempts kept in a record (the first ones and the last ones).
const MAX_ATTEMPTS_KEPT: usize = 20;

/// A provider accepted the message.
#[derive(Debug, Clone)]
pub struct Sent {
    /// What it answered (SMTP reply, HTTP status and the start of the body).
    pub response: String,
}

/// A provider did not accept the message.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Another attempt would fail the same way (bad address, 4xx answer, no server set).
    pub permanent: bool,
    /// Why, for the record (never a secret).
    pub reason: String,
}

impl Failure {
    /// A failure not worth retrying.
    pub fn permanent(reason: impl Into<String>) -> Failure {
        Failure {
            permanent: true,
            reason: reason.into(),
        }
    }

    /// A failure worth retrying.
    pub fn transient(reason: impl Into<String>) -> Failure {
        Failure {
            permanent: false,
            reason: reason.into(),
        }
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Being attempted.
    Sending,
    /// Waiting in a digest (the contact's message limit was reached).
    Digest,
    /// Accepted by the provider.
    Sent,
    /// Given up after the retry budget or a permanent failure; escalated.
    Failed,
}

/// One attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When, Unix ms.
    pub at_ms: i64,
    /// Whether the provider accepted it.
    pub ok: bool,
    /// The provider's answer or the error.
    pub response: String,
}

/// The record of one (alert, contact, channel) delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Where it stands.
    pub status: Status,
    /// Channel kind (`email`, `webhook`, `teams`, `slack`).
    pub channel: String,
    /// Where to, safe to show (address, or URL scheme and host).
    pub target: String,
    /// Attempts, oldest first (at most 20 kept: the first ten and the last ten).
    pub attempts: Vec<Attempt>,
    /// Attempts made in all.
    pub attempt_count: u32,
    /// When it was accepted, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_ms: Option<i64>,
    /// The digest that carried it, if it went in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// For a failed delivery: whether the last failure was permanent (a transient one is tried
    /// again when its alert reached nobody and comes round again).
    #[serde(default)]
    pub permanent: bool,
}

impl Record {
    /// A record about to be attempted.
    pub fn new(channel: &str, target: String) -> Record {
        Record {
            status: Status::Sending,
            channel: channel.into(),
            target,
            attempts: Vec::new(),
            attempt_count: 0,
            sent_ms: None,
            digest: None,
            permanent: false,
        }
    }

    fn push(&mut self, a: Attempt) {
        self.attempt_count += 1;
        self.attempts.push(a);
        if self.attempts.len() > MAX_ATTEMPTS_KEPT {
            self.attempts.remove(MAX_ATTEMPTS_KEPT / 2);
        }
    }
}

/// Creates the bucket if missing (nodes only).
pub async fn ensure(js: &jetstream::Context, replicas: usize, days: u64) -> Result<Deliveries> {
    let kv = provision::ensure_kv(
        js,
        kv::Config {
            bucket: BUCKET.into(),
            description: "nmc notification delivery records".into(),
            history: 1,
            num_replicas: replicas,
            max_age: Duration::from_secs(days.max(1) * 86_400),
            ..Default::default()
        },
    )
    .await?;
    Ok(Deliveries { kv })
}

/// Opens the bucket (commands, tests).
pub async fn open(js: &jetstream::Context) -> Result<Deliveries> {
    Ok(Deliveries {
        kv: provision::open_kv(js, BUCKET).await?,
    })
}

/// The delivery records.
#[derive(Clone)]
pub struct Deliveries {
    kv: kv::Store,
}

impl Deliveries {
    /// The record under `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<Record>> {
        match self
            .kv
            .get(key)
            .await
            .context("reading a delivery record")?
        {
            Some(v) => Ok(Some(
                serde_json::from_slice(&v).context("a malformed delivery record")?,
            )),
            None => Ok(None),
        }
    }

    /// Stores `record` under `key` (retried a few times: the record is what prevents a resend).
    pub async fn put(&self, key: &str, record: &Record) -> Result<()> {
        let value = Bytes::from(serde_json::to_vec(record)?);
        let mut last = None;
        for wait in [0, 100, 500, 2000] {
            tokio::time::sleep(Duration::from_millis(wait)).await;
            match self.kv.put(key, value.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("an error")).context("storing a delivery record")
    }

    /// Every record whose key starts with `prefix` (`<force>.<alert>.`), for tests and tools.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, Record)>> {
        use futures::TryStreamExt;
        let keys: Vec<String> = self
            .kv
            .keys()
            .await?
            .try_filter(|k| futures::future::ready(k.starts_with(prefix) && !k.ends_with(".claim")))
            .try_collect()
            .await?;
        let mut out = Vec::new();
        for k in keys {
            if let Some(r) = self.get(&k).await? {
                out.push((k, r));
            }
        }
        Ok(out)
    }
}

/// A notifier's claim on delivering one alert: the node, valid while that node is a live
/// member of the cluster (its key in `NMC_NODES`, which expires a node TTL after it stops).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claim {
    node: String,
}

impl Deliveries {
    /// Claims the delivery of an alert for `node` (key `<force>.<alert>.claim`): `Ok`, or the
    /// live node that holds it (a redelivery while another notifier is still at it: that one
    /// acknowledges the alert when done; if it dies, its claim dies with its membership).
    /// `live`: the cluster's `NMC_NODES` bucket.
    pub async fn claim(
        &self,
        prefix: &str,
        node: &str,
        live: &kv::Store,
    ) -> Result<Result<(), String>> {
        let key = format!("{prefix}.claim");
        let value = Bytes::from(
            serde_json::to_vec(&Claim {
                node: node.to_owned(),
            })
            .expect("JSON"),
        );
        for _ in 0..10 {
            match self
                .kv
                .entry(&key)
                .await
                .context("reading a delivery claim")?
            {
                Some(e) if e.operation == kv::Operation::Put => {
                    if let Ok(c) = serde_json::from_slice::<Claim>(&e.value)
                        && c.node != node
                        && live
                            .get(&c.node)
                            .await
                            .context("reading cluster membership")?
                            .is_some()
                    {
                        return Ok(Err(c.node));
                    }
                    if self
                        .kv
                        .update(&key, value.clone(), e.revision)
                        .await
                        .is_ok()
                    {
                        return Ok(Ok(()));
                    }
                }
                Some(e) => {
                    if self
                        .kv
                        .update(&key, value.clone(), e.revision)
                        .await
                        .is_ok()
                    {
                        return Ok(Ok(()));
                    }
                }
                None => {
                    if self.kv.create(&key, value.clone()).await.is_ok() {
                        return Ok(Ok(()));
                    }
                }
            }
        }
        anyhow::bail!("the delivery claim {key} kept changing")
    }

    /// Gives a claim up (the alert is done, or will come round again).
    pub async fn release(&self, prefix: &str) {
        let _ = self.kv.purge(format!("{prefix}.claim")).await;
    }
}

/// The key of a delivery record.
pub fn key(force: &str, alert: &str, contact: &str, channel_id: &str) -> String {
    format!("{force}.{alert}.{contact}.{channel_id}")
}

/// The delay before attempt `n + 1` (n ≥ 1): `initial · 2^(n-1)` capped at `max`, with jitter
/// between half and all of it, so that many deliveries failing together do not retry together;
/// never under a second.
pub fn backoff(cfg: &NotifyConfig, n: u32, random: u64) -> Duration {
    let full = cfg
        .backoff_initial_ms
        .saturating_mul(1u64 << n.saturating_sub(1).min(30))
        .min(cfg.backoff_max_ms);
    let half = full / 2;
    // At least a second: a retry is signed afresh with a later timestamp, so a receiver's
    // replay check (same timestamp and signature) never refuses it.
    Duration::from_millis((half + random % (full - half + 1)).max(1000))
}

/// A random number for jitter (std's hasher keys are random per process and call).
pub fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(crate::clock::now_ms() as u64);
    h.finish()
}

/// Attempts `send` until it succeeds, fails permanently or this round's retry budget
/// (`attempts`) is spent, storing the record after every attempt; the record's earlier
/// attempts (a previous round, another notifier) are kept. Returns the final record (status
/// `Sent` or `Failed`).
pub async fn attempt<F, Fut>(
    cfg: &NotifyConfig,
    records: &Deliveries,
    key: &str,
    mut record: Record,
    mut send: F,
) -> Record
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Sent, Failure>>,
{
    record.status = Status::Sending;
    let mut made = 0;
    loop {
        made += 1;
        let result = send().await;
        let at_ms = crate::clock::now_ms();
        let (ok, response, give_up) = match &result {
            Ok(s) => (true, s.response.clone(), false),
            Err(f) => (false, f.reason.clone(), f.permanent || made >= cfg.attempts),
        };
        record.permanent = matches!(&result, Err(f) if f.permanent);
        record.push(Attempt {
            at_ms,
            ok,
            response,
        });
        if ok {
            record.status = Status::Sent;
            record.sent_ms = Some(at_ms);
        } else if give_up {
            record.status = Status::Failed;
        }
        if let Err(e) = records.put(key, &record).await {
            tracing::warn!(error = format!("{e:#}"), key, "delivery record not stored");
        }
        if record.status != Status::Sending {
            return record;
        }
        tokio::time::sleep(backoff(cfg, made, random())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_in_the_upper_half() {
        let cfg = NotifyConfig {
            backoff_initial_ms: 1000,
            backoff_max_ms: 8000,
            ..Default::default()
        };
        for (n, full) in [
            (1, 1000),
            (2, 2000),
            (3, 4000),
            (4, 8000),
            (9, 8000),
            (60, 8000),
        ] {
            for r in [0, 1, 12_345, u64::MAX] {
                let d = backoff(&cfg, n, r).as_millis() as u64;
                assert!(d >= full / 2 && d <= full, "attempt {n}: {d} ms");
            }
        }
        assert_ne!(random(), random());
    }

    #[test]
    fn a_record_keeps_its_first_and_last_attempts() {
        let mut r = Record::new("email", "a@b.example".into());
        for i in 0..30 {
            r.push(Attempt {
                at_ms: i,
                ok: false,
                response: String::new(),
            });
        }
        assert_eq!(r.attempt_count, 30);
        assert_eq!(r.attempts.len(), MAX_ATTEMPTS_KEPT);
        assert_eq!(r.attempts[0].at_ms, 0);
        assert_eq!(r.attempts[9].at_ms, 9);
        assert_eq!(r.attempts[19].at_ms, 29);
    }
}
