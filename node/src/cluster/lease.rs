//! Force leases in `NMC_LEASES`: at most one node owns a force at a time.
//!
//! The key is the force id and the value a JSON [`LeaseStatus`]: the holder's node id and how
//! far it has got with the force (cursor, lag, rule pack), refreshed on every renewal so that
//! `nmc cluster status` reads the whole cluster from this one bucket. The bucket's `max_age` is the
//! lease TTL. `create` acquires (it fails while anyone holds the key), `update(key, value,
//! revision)` renews by compare-and-set, and a delete with the expected revision releases. A key
//! that expired (no renewal within the TTL) or was released can be created again at once.
//!
//! The revision that `create` returned is the lease's fencing epoch: it is a stream sequence of
//! the bucket, so every later acquisition of the same force, by any node, gets a larger one.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;
use nmc_shared::ForceId;

pub use crate::force::control::LeaseStatus;

/// Why a lease is no longer held. Either way the holder must stop processing the force now.
#[derive(Debug, thiserror::Error)]
pub enum LeaseLost {
    /// The key moved on: it expired, was released, or another node acquired it.
    #[error("lease on `{0}` was superseded (expired or taken over)")]
    Superseded(ForceId),
    /// The renewal or release could not be confirmed (NATS unreachable, timeout).
    #[error("lease on `{force}` could not be confirmed: {source}")]
    Unconfirmed {
        /// The force.
        force: ForceId,
        /// What the client reported.
        #[source]
        source: kv::UpdateError,
    },
}

/// Who holds a force's lease now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The holder's node id.
    pub node_id: String,
    /// The current revision (changes on every renewal).
    pub revision: u64,
    /// What the holder last reported.
    pub status: LeaseStatus,
}

/// A held lease on one force.
#[derive(Debug)]
pub struct Lease {
    kv: kv::Store,
    force: ForceId,
    value: Bytes,
    epoch: u64,
    revision: u64,
    deadline: Instant,
}

impl Lease {
    /// Tries to acquire `force` for `node_id` in the `NMC_LEASES` bucket `kv`: `None` if another
    /// holder has it.
    ///
    /// A lease still held under this node's own id (left by a previous process of this node,
    /// e.g. after a crash) is taken back at once by compare-and-set, with a new epoch: node ids
    /// must be unique in a cluster.
    pub async fn acquire(kv: &kv::Store, force: &ForceId, node_id: &str) -> Result<Option<Lease>> {
        let status = LeaseStatus {
            node: node_id.to_owned(),
            ..Default::default()
        };
        let value = Bytes::from(serde_json::to_vec(&status)?);
        let sent = Instant::now();
        let revision = match kv.create(force.as_str(), value.clone()).await {
            Ok(revision) => revision,
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                match holder(kv, force).await? {
                    Some(h) if h.status.node == node_id => {
                        match kv.update(force.as_str(), value.clone(), h.revision).await {
                            Ok(revision) => revision,
                            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                                return Ok(None);
                            }
                            Err(e) => {
                                return Err(e)
                                    .with_context(|| format!("reclaiming the lease on {force}"));
                            }
                        }
                    }
                    _ => return Ok(None),
                }
            }
            Err(e) => return Err(e).with_context(|| format!("acquiring the lease on {force}")),
        };
        Ok(Some(Lease {
            kv: kv.clone(),
            force: force.clone(),
            value,
            epoch: revision,
            revision,
            deadline: sent + ttl(kv),
        }))
    }

    /// Renews the lease and publishes `status` (the epoch and node are filled in) as its value.
    pub async fn renew_with(&mut self, mut status: LeaseStatus) -> Result<(), LeaseLost> {
        status.epoch = self.epoch;
        if let Ok(v) = serde_json::to_vec(&status) {
            self.value = Bytes::from(v);
        }
        self.renew().await
    }

    /// Renews the lease (compare-and-set on the last revision), restarting its TTL.
    pub async fn renew(&mut self) -> Result<(), LeaseLost> {
        let sent = Instant::now();
        match self
            .kv
            .update(self.force.as_str(), self.value.clone(), self.revision)
            .await
        {
            Ok(revision) => {
                self.revision = revision;
                self.deadline = sent + ttl(&self.kv);
                Ok(())
            }
            Err(e) => Err(self.lost(e)),
        }
    }

    /// Releases the lease so that another node can acquire it at once.
    pub async fn release(self) -> Result<(), LeaseLost> {
        self.kv
            .delete_expect_revision(self.force.as_str(), Some(self.revision))
            .await
            .map_err(|e| self.lost(e))
    }

    /// The fencing epoch: the revision at acquisition, larger for every later holder.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The force this lease is on.
    pub fn force(&self) -> &ForceId {
        &self.force
    }

    /// The revision of the last acquisition or renewal.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// When the lease expires at the latest unless renewed (local clock, conservative: counted
    /// from before the last acquire or renew request was sent). Stop processing past it.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    fn lost(&self, e: kv::UpdateError) -> LeaseLost {
        if e.kind() == UpdateErrorKind::WrongLastRevision {
            LeaseLost::Superseded(self.force.clone())
        } else {
            LeaseLost::Unconfirmed {
                force: self.force.clone(),
                source: e,
            }
        }
    }
}

/// A lease value: the holder's [`LeaseStatus`], or (written by an older release) its bare
/// node id.
fn parse_status(bytes: &[u8]) -> LeaseStatus {
    serde_json::from_slice(bytes).unwrap_or_else(|_| LeaseStatus {
        node: String::from_utf8_lossy(bytes).into_owned(),
        ..Default::default()
    })
}

/// Who holds the lease on `force`, if anyone.
pub async fn holder(kv: &kv::Store, force: &ForceId) -> Result<Option<Holder>> {
    let entry = kv
        .entry(force.as_str())
        .await
        .with_context(|| format!("reading the lease on {force}"))?;
    Ok(entry.filter(|e| e.operation == Operation::Put).map(|e| {
        let status = parse_status(&e.value);
        Holder {
            node_id: status.node.clone(),
            revision: e.revision,
            status,
        }
    }))
}

/// Every held lease: force id -> holder.
pub async fn holders(kv: &kv::Store) -> Result<std::collections::BTreeMap<String, Holder>> {
    use futures::TryStreamExt;
    let keys: Vec<String> = kv
        .keys()
        .await
        .context("listing leases")?
        .try_collect()
        .await
        .context("listing leases")?;
    let mut out = std::collections::BTreeMap::new();
    for k in keys {
        if let Ok(force) = ForceId::new(&k)
            && let Some(h) = holder(kv, &force).await?
        {
            out.insert(k, h);
        }
    }
    Ok(out)
}

/// The lease TTL: the bucket's `max_age`.
fn ttl(kv: &kv::Store) -> Duration {
    kv.stream.cached_info().config.max_age
}
