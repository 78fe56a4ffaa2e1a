//! Onboarded forces in `NMC_FORCES`: key = force id, value = a JSON [`ForceRecord`]
//! (`{"phase":"cloud"|"cloud_and_onprem","weight":1,"added_ms":...}`).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use async_nats::jetstream::kv::{self, CreateErrorKind, Entry, Operation, UpdateErrorKind};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use nmc_shared::ForceId;
use nmc_shared::onboarding::{ForceRecord, OnboardingPhase};
use tokio::sync::watch;
use tracing::warn;

/// The onboarded forces and their records, as last read from `NMC_FORCES` (what a node's
/// follower publishes on its watch channel).
pub type Onboarded = Arc<BTreeMap<ForceId, ForceRecord>>;

/// One change to the onboarded forces.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ForceChange {
    /// The force.
    force: ForceId,
    /// Its record now; `None` when it was removed.
    record: Option<ForceRecord>,
    /// Revision of the change in the bucket.
    revision: u64,
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
        added_ms: crate::clock::now_ms(),
        state_generation: 0,
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
    update(kv, force, |r| r.phase = phase).await.map(drop)
}

/// Starts a new state generation of an onboarded `force`: its holder discards the force's
/// state and reads its stream from the start (see `ForceRecord::state_generation`); returns
/// the new generation. It is the time of the reset in Unix ms (or one more than the last, if
/// that is later): greater than any generation a tree or checkpoint may hold even after the
/// record was removed and added again, or rewritten by an earlier build without the field.
pub async fn reset_state(kv: &kv::Store, force: &ForceId) -> Result<u64> {
    let now = u64::try_from(crate::clock::now_ms()).unwrap_or(0);
    Ok(update(kv, force, |r| {
        r.state_generation = (r.state_generation + 1).max(now)
    })
    .await?
    .state_generation)
}

/// Changes an onboarded `force`'s record with `change` (compare-and-set, retried on a
/// concurrent change); returns the record written.
pub async fn update(
    kv: &kv::Store,
    force: &ForceId,
    change: impl Fn(&mut ForceRecord),
) -> Result<ForceRecord> {
    for _ in 0..5 {
        let Some((mut record, revision)) = read(kv, force).await? else {
            bail!("force {force} is not onboarded");
        };
        change(&mut record);
        match kv.update(force.as_str(), encode(&record)?, revision).await {
            Ok(_) => return Ok(record),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
            Err(e) => return Err(e).with_context(|| format!("updating {force}")),
        }
    }
    bail!("force {force} kept changing while it was being updated")
}

/// The record of `force`, if onboarded.
pub async fn get(kv: &kv::Store, force: &ForceId) -> Result<Option<ForceRecord>> {
    Ok(read(kv, force).await?.map(|(r, _)| r))
}

/// Every onboarded force.
pub async fn list(kv: &kv::Store) -> Result<BTreeMap<ForceId, ForceRecord>> {
    Ok(snapshot(kv)
        .await?
        .into_iter()
        .map(|(f, (r, _))| (f, r))
        .collect())
}

/// Every onboarded force with the revision of its record. A malformed entry (not a force id,
/// not a record) is skipped with a warning: one bad key must not hide every other force. A
/// failure to read is an error (a partial list would hand forces off).
async fn snapshot(kv: &kv::Store) -> Result<BTreeMap<ForceId, (ForceRecord, u64)>> {
    let keys: Vec<String> = kv.keys().await?.try_collect().await?;
    let mut forces = BTreeMap::new();
    for key in keys {
        let Some(entry) = kv
            .entry(&key)
            .await
            .with_context(|| format!("reading {key}"))?
        else {
            continue;
        };
        if entry.operation != Operation::Put {
            continue;
        }
        match change(entry) {
            Ok(ForceChange {
                force,
                record: Some(record),
                revision,
            }) => {
                forces.insert(force, (record, revision));
            }
            Ok(_) => {}
            Err(e) => warn!(
                bucket = %kv.name,
                key,
                error = format!("{e:#}"),
                "ignoring a malformed NMC_FORCES entry"
            ),
        }
    }
    Ok(forces)
}

/// Follows `NMC_FORCES` forever and publishes the onboarded forces on `tx` whenever they
/// change: the node's one reader of the bucket (the coordinator and triage read the channel).
pub async fn follow(kv: kv::Store, tx: watch::Sender<Onboarded>) {
    loop {
        if let Err(e) = follow_once(&kv, &tx).await {
            warn!(
                error = format!("{e:#}"),
                "following the onboarded forces failed; restarting"
            );
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// Watches for changes first, then reads the whole bucket, then applies each change newer than
/// what the read saw: no change is missed between the read and the watch.
async fn follow_once(kv: &kv::Store, tx: &watch::Sender<Onboarded>) -> Result<()> {
    let mut changes = kv
        .watch_all()
        .await
        .with_context(|| format!("watching {}", kv.name))?;
    let mut forces = snapshot(kv).await?;
    let publish = |forces: &BTreeMap<ForceId, (ForceRecord, u64)>| {
        let now: BTreeMap<ForceId, ForceRecord> = forces
            .iter()
            .map(|(f, (r, _))| (f.clone(), r.clone()))
            .collect();
        tx.send_if_modified(|old| {
            let changed = **old != now;
            if changed {
                *old = Arc::new(now);
            }
            changed
        });
    };
    publish(&forces);
    while let Some(entry) = changes.next().await {
        let c = match change(entry.context("watching the onboarded forces")?) {
            Ok(c) => c,
            Err(e) => {
                warn!(
                    error = format!("{e:#}"),
                    "ignoring a malformed NMC_FORCES entry"
                );
                continue;
            }
        };
        if apply(&mut forces, c) {
            publish(&forces);
        }
    }
    Ok(())
}

/// Applies one change to the followed forces unless what they hold is as new or newer (the
/// full read may already have seen it); whether anything changed.
fn apply(forces: &mut BTreeMap<ForceId, (ForceRecord, u64)>, c: ForceChange) -> bool {
    if forces
        .get(&c.force)
        .is_some_and(|(_, rev)| *rev >= c.revision)
    {
        return false;
    }
    match c.record {
        Some(r) => {
            forces.insert(c.force, (r, c.revision));
            true
        }
        None => forces.remove(&c.force).is_some(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(phase: OnboardingPhase) -> ForceRecord {
        ForceRecord {
            phase,
            weight: 1,
            added_ms: 0,
            state_generation: 0,
        }
    }

    fn put(f: &str, phase: OnboardingPhase, revision: u64) -> ForceChange {
        ForceChange {
            force: ForceId::new(f).unwrap(),
            record: Some(record(phase)),
            revision,
        }
    }

    fn delete(f: &str, revision: u64) -> ForceChange {
        ForceChange {
            force: ForceId::new(f).unwrap(),
            record: None,
            revision,
        }
    }

    #[test]
    fn changes_older_than_what_the_read_saw_are_ignored() {
        use OnboardingPhase::*;
        let kent = ForceId::new("kent").unwrap();
        // The full read saw kent at revision 10.
        let mut forces = BTreeMap::from([(kent.clone(), (record(CloudAndOnprem), 10))]);
        assert!(!apply(&mut forces, put("kent", Cloud, 9)), "a stale put");
        assert!(
            !apply(&mut forces, put("kent", Cloud, 10)),
            "the same put again"
        );
        assert!(!apply(&mut forces, delete("kent", 8)), "a stale delete");
        assert_eq!(forces[&kent].0.phase, CloudAndOnprem);
        assert!(apply(&mut forces, put("kent", Cloud, 11)));
        assert_eq!(forces[&kent], (record(Cloud), 11));
        assert!(apply(&mut forces, delete("kent", 12)));
        assert!(forces.is_empty());
        assert!(!apply(&mut forces, delete("kent", 13)), "nothing to delete");
        assert!(
            apply(&mut forces, put("kent", Cloud, 14)),
            "onboarded again"
        );
        assert!(apply(&mut forces, put("essex", Cloud, 15)));
        assert_eq!(forces.len(), 2);
    }
}
