//! Noise control: at most N single messages a minute per contact, counted across notify nodes
//! in the KV bucket `NMC_NOTIFY_RATE` (key `<force>.<contact>.<minute>`, compare-and-set); what
//! is over the limit waits in a digest that goes out every `digest_interval_secs`. Critical
//! alerts never wait.
//!
//! A digest holds its alerts' messages unacknowledged on the `NMC_ALERTS` consumer until it is
//! sent: a notifier that dies with a digest pending has its alerts redelivered to another,
//! which digests them again. Each notify node sends its own digests, so with k notify nodes a
//! contact may get up to k digests an interval (each alert in exactly one of them).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use nmc_shared::contact::Contact;
use tokio::sync::oneshot;

use super::message::AlertView;
use crate::bus::provision;

/// The bucket of per-minute counters.
pub const BUCKET: &str = "NMC_NOTIFY_RATE";

/// Creates the bucket if missing (nodes only); counters expire after three minutes.
pub async fn ensure(js: &jetstream::Context, replicas: usize) -> Result<RateLimiter> {
    let kv = provision::ensure_kv(
        js,
        kv::Config {
            bucket: BUCKET.into(),
            description: "nmc notification counters per contact and minute".into(),
            history: 1,
            num_replicas: replicas,
            max_age: Duration::from_secs(180),
            ..Default::default()
        },
    )
    .await?;
    Ok(RateLimiter { kv })
}

/// Opens the bucket.
impl RateLimiter {
    /// Opens the bucket (after [`ensure`]).
    pub async fn open(js: &jetstream::Context) -> Result<RateLimiter> {
        Ok(RateLimiter {
            kv: provision::open_kv(js, BUCKET).await?,
        })
    }
}

/// The per-contact message counter.
#[derive(Clone)]
pub struct RateLimiter {
    kv: kv::Store,
}

impl RateLimiter {
    /// Takes one message of `limit` a minute for the contact; `false` when the minute's
    /// are used up (the message goes into the digest).
    pub async fn take(&self, force: &str, contact: &str, limit: u32, now_ms: i64) -> Result<bool> {
        let key = format!("{force}.{contact}.{}", now_ms.div_euclid(60_000));
        for _ in 0..20 {
            match self
                .kv
                .entry(&key)
                .await
                .context("reading a rate counter")?
            {
                Some(e) if e.operation == kv::Operation::Put => {
                    let n: u32 = std::str::from_utf8(&e.value)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(u32::MAX);
                    if n >= limit {
                        return Ok(false);
                    }
                    let next = Bytes::from((n + 1).to_string());
                    if self.kv.update(&key, next, e.revision).await.is_ok() {
                        return Ok(true);
                    }
                }
                _ => {
                    if self.kv.create(&key, Bytes::from_static(b"1")).await.is_ok() {
                        return Ok(true);
                    }
                }
            }
        }
        // Heavy contention on one counter: let it through rather than hold it.
        Ok(true)
    }
}

/// A digest that no channel accepted.
#[derive(Debug, Clone, Copy)]
pub struct NotSent {
    /// Every channel failed for good (else one may come back).
    pub permanent: bool,
}

/// When a queued alert's digest went out (`Ok(sent at, digest id)`), or that it did not.
pub type Outcome = Result<(i64, String), NotSent>;

/// An alert waiting for a contact's digest.
pub struct Queued {
    /// The alert.
    pub view: AlertView,
    /// Told when the digest went out or could not.
    pub done: oneshot::Sender<Outcome>,
}

/// A contact's waiting alerts, keyed by (force, contact name).
type Waiting = BTreeMap<(String, String), (Contact, Vec<Queued>)>;

/// What waits, per (force, contact).
#[derive(Default)]
pub struct DigestQueue {
    waiting: Mutex<Waiting>,
}

impl DigestQueue {
    /// Queues `view` for `contact` of `force`; the receiver answers when its digest went out.
    pub fn push(
        &self,
        force: &str,
        contact: &Contact,
        view: AlertView,
    ) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        let mut w = self.waiting.lock().expect("digest queue");
        let slot = w
            .entry((force.to_owned(), contact.name.clone()))
            .or_insert_with(|| (contact.clone(), Vec::new()));
        slot.0 = contact.clone();
        // The same alert twice (a redelivery while queued): one entry, both told.
        if let Some(pos) = slot.1.iter().position(|q| q.view.id == view.id) {
            let old = std::mem::replace(&mut slot.1[pos], Queued { view, done: tx });
            let _ = old.done.send(Err(NotSent { permanent: false }));
        } else {
            slot.1.push(Queued { view, done: tx });
        }
        rx
    }

    /// Everything waiting, emptied: one entry per (force, contact), alerts in arrival order.
    pub fn take_all(&self) -> Vec<(String, Contact, Vec<Queued>)> {
        let w = std::mem::take(&mut *self.waiting.lock().expect("digest queue"));
        w.into_iter()
            .map(|((force, _), (contact, queued))| (force, contact, queued))
            .collect()
    }
}

/// The id of a digest: derived from its force, contact and alerts (a re-sent digest of the
/// same alerts has the same id, hence the same idempotency key).
pub fn digest_id(force: &str, contact: &str, alerts: &[AlertView]) -> String {
    let mut ids: Vec<&str> = alerts.iter().map(|a| a.id.as_str()).collect();
    ids.sort_unstable();
    let name = format!("digest/{force}/{contact}/{}", ids.join(","));
    uuid::Uuid::new_v5(&nmc_shared::alert::ALERT_NAMESPACE, name.as_bytes()).to_string()
}
