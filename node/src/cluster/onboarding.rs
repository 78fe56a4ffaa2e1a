//! Onboarded forces in `NMC_FORCES`: key = force id, value = a JSON [`ForceRecord`]
//! (`{"phase":"cloud"|"cloud_and_onprem","weight":1,"added_ms":...}`).

use anyhow::{Context, Result, bail};
use async_nats::jetstream::kv::{self, CreateErrorKind, Entry, Operation, UpdateErrorKind};
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use nmc_shared::ForceId;
use nmc_shared::onboarding::{ForceRecord, OnboardingPhase};
use std::collections::BTreeMap;

/// One change to the onboarded forces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForceChange {
    /// The force.
    pub force: ForceId,
    /// Its record now; `None` when it was removed.
    pub record: Option<ForceRecord>,
    /// Revision of the change in the bucket.
    pub revision: u64,
}

/// Onboards `force` in `phase` with `weight`: false (and no change) if it already is.
pub async fn add(
    kv: &kv::Store,
    force: &ForceId,
    phase: OnboardingPhase,
    weight: u32,
) -> Result<bool> {
    let record = ForceRecord {
        phase,
        weight,
        added_ms: super::now_ms(),
    };
    match kv.create(force.as_str(), encode(&record)?).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).with_context(|| format!("onboarding {force}")),
    }
}

/// Offboards `force` (no error if it was not onboarded).
pub async fn remove(kv: &kv::Store, force: &ForceId) -> Result<()> {
    kv.delete(force.as_str())
        .await
        .with_context(|| format!("removing {force}"))
}

/// Moves an onboarded `force` to `phase` (compare-and-set, retried on a concurrent change).
pub async fn set_phase(kv: &kv::Store, force: &ForceId, phase: OnboardingPhase) -> Result<()> {
    for _ in 0..5 {
        let Some((mut record, revision)) = read(kv, force).await? else {
            bail!("force {force} is not onboarded");
        };
        record.phase = phase;
        match kv.update(force.as_str(), encode(&record)?, revision).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
            Err(e) => return Err(e).with_context(|| format!("setting the phase of {force}")),
        }
    }
    bail!("force {force} kept changing while its phase was being set")
}

/// The record of `force`, if onboarded.
pub async fn get(kv: &kv::Store, force: &ForceId) -> Result<Option<ForceRecord>> {
    Ok(read(kv, force).await?.map(|(r, _)| r))
}

/// Every onboarded force.
pub async fn list(kv: &kv::Store) -> Result<BTreeMap<ForceId, ForceRecord>> {
    let keys: Vec<String> = kv.keys().await?.try_collect().await?;
    let mut forces = BTreeMap::new();
    for key in keys {
        let force = ForceId::new(&key).with_context(|| format!("{} key `{key}`", kv.name))?;
        if let Some((record, _)) = read(kv, &force).await? {
            forces.insert(force, record);
        }
    }
    Ok(forces)
}

/// The current state first (one change per key: a removed force shows as `None` while its
/// delete marker lasts), then every change as it happens.
pub async fn watch(kv: &kv::Store) -> Result<impl Stream<Item = Result<ForceChange>> + Unpin> {
    let entries = kv
        .watch_with_history(">")
        .await
        .with_context(|| format!("watching {}", kv.name))?;
    Ok(entries.map(|e| change(e.context("watching the onboarded forces")?)))
}

fn change(e: Entry) -> Result<ForceChange> {
    let force = ForceId::new(&e.key).with_context(|| format!("{} key `{}`", e.bucket, e.key))?;
    let record = match e.operation {
        Operation::Put => Some(decode(&force, &e.value)?),
        Operation::Delete | Operation::Purge => None,
    };
    Ok(ForceChange {
        force,
        record,
        revision: e.revision,
    })
}

async fn read(kv: &kv::Store, force: &ForceId) -> Result<Option<(ForceRecord, u64)>> {
    let entry = kv
        .entry(force.as_str())
        .await
        .with_context(|| format!("reading {force}"))?;
    match entry {
        Some(e) if e.operation == Operation::Put => {
            Ok(Some((decode(force, &e.value)?, e.revision)))
        }
        _ => Ok(None),
    }
}

fn encode(record: &ForceRecord) -> Result<Bytes> {
    Ok(Bytes::from(serde_json::to_vec(record)?))
}

fn decode(force: &ForceId, value: &[u8]) -> Result<ForceRecord> {
    serde_json::from_slice(value).with_context(|| format!("record of {force} is not valid JSON"))
}
