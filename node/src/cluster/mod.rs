//! Cluster coordination, all in NATS JetStream: membership heartbeats ([`membership`]), force
//! leases with fencing epochs ([`lease`]), force-state checkpoints for hand-off ([`checkpoint`])
//! and the onboarded forces ([`onboarding`]). Which node *should* own a force is the pure
//! [`nmc_shared::rendezvous`]; the lease decides who *does*.
//!
//! Nodes create or update the buckets with [`ensure_buckets`]; command-line tools only open them
//! with [`open_buckets`]. All nodes of a cluster must use the same [`ClusterSettings`]: the TTLs
//! are bucket-wide (`max_age`), and the last node to start rewrites them.

pub mod checkpoint;
pub mod coordinator;
pub mod lease;
pub mod membership;
pub mod onboarding;
pub mod plan;

use std::time::Duration;

use anyhow::Result;
use async_nats::jetstream::{self, kv, object_store};

use crate::bus::provision;

/// KV bucket of node heartbeats (key: node id).
pub const NODES_BUCKET: &str = "NMC_NODES";
/// KV bucket of force leases (key: force id).
pub const LEASES_BUCKET: &str = "NMC_LEASES";
/// KV bucket of onboarded forces (key: force id).
pub const FORCES_BUCKET: &str = "NMC_FORCES";
/// Object store of force-state checkpoints (object name: force id).
pub const CHECKPOINTS_BUCKET: &str = "NMC_CHECKPOINTS";

/// Revisions of a force record kept in `NMC_FORCES`, as an audit trail of phase changes.
const FORCES_HISTORY: i64 = 5;

/// Lifetimes and replication of the coordination buckets, from the node's configuration
/// ([`crate::config::Config::cluster`]: one set of defaults).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSettings {
    /// A node that has not heartbeaten for this long is no longer live (`NMC_NODES` max_age).
    pub node_ttl: Duration,
    /// A lease not renewed for this long expires (`NMC_LEASES` max_age).
    pub lease_ttl: Duration,
    /// Replicas of every bucket (3 in a production NATS cluster); existing buckets keep more.
    pub replicas: usize,
}

impl ClusterSettings {
    /// How often a node should heartbeat: three chances per TTL.
    pub fn heartbeat_interval(&self) -> Duration {
        self.node_ttl / 3
    }

    /// How often a lease holder should renew: three chances per TTL.
    pub fn renew_interval(&self) -> Duration {
        self.lease_ttl / 3
    }
}

/// Handles on the coordination buckets.
#[derive(Clone)]
pub struct Buckets {
    /// `NMC_NODES`.
    pub nodes: kv::Store,
    /// `NMC_LEASES`.
    pub leases: kv::Store,
    /// `NMC_FORCES`.
    pub forces: kv::Store,
    /// `NMC_CHECKPOINTS`.
    pub checkpoints: object_store::ObjectStore,
}

/// Creates the coordination buckets or brings existing ones to `settings` (node only; see
/// [`provision`]: TTLs follow the node, replicas are never lowered). Idempotent and safe to
/// call from several nodes at once.
pub async fn ensure_buckets(
    js: &jetstream::Context,
    settings: &ClusterSettings,
) -> Result<Buckets> {
    let r = settings.replicas;
    let kv = |bucket: &str, max_age: Duration, history: i64| kv::Config {
        bucket: bucket.to_owned(),
        history,
        max_age,
        num_replicas: r,
        ..Default::default()
    };
    Ok(Buckets {
        nodes: provision::ensure_kv(js, kv(NODES_BUCKET, settings.node_ttl, 1)).await?,
        leases: provision::ensure_kv(js, kv(LEASES_BUCKET, settings.lease_ttl, 1)).await?,
        forces: provision::ensure_kv(js, kv(FORCES_BUCKET, Duration::ZERO, FORCES_HISTORY)).await?,
        checkpoints: provision::ensure_objects(
            js,
            object_store::Config {
                bucket: CHECKPOINTS_BUCKET.to_owned(),
                description: Some("nmc force-state checkpoints".to_owned()),
                num_replicas: r,
                ..Default::default()
            },
        )
        .await?,
    })
}

/// Opens the coordination buckets as they are, for command-line tools: nothing is created or
/// changed, and a missing bucket is an error that says to start a node first.
pub async fn open_buckets(js: &jetstream::Context) -> Result<Buckets> {
    Ok(Buckets {
        nodes: provision::open_kv(js, NODES_BUCKET).await?,
        leases: provision::open_kv(js, LEASES_BUCKET).await?,
        forces: provision::open_kv(js, FORCES_BUCKET).await?,
        checkpoints: provision::open_objects(js, CHECKPOINTS_BUCKET).await?,
    })
}
