//! Cluster coordination, all in NATS JetStream: membership heartbeats ([`membership`]), force
//! leases with fencing epochs ([`lease`]), force-state checkpoints for hand-off ([`checkpoint`])
//! and the onboarded forces ([`onboarding`]). Which node *should* own a force is the pure
//! [`nmc_shared::rendezvous`]; the lease decides who *does*.
//!
//! Every bucket is created or opened by [`ensure_buckets`]. All nodes of a cluster must use the
//! same [`ClusterSettings`]: the TTLs are bucket-wide (`max_age`), and the last node to start
//! rewrites them.

pub mod checkpoint;
pub mod coordinator;
pub mod lease;
pub mod membership;
pub mod onboarding;
pub mod rulepack;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use async_nats::jetstream::{self, kv, object_store};

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

/// Lifetimes and replication of the coordination buckets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSettings {
    /// A node that has not heartbeaten for this long is no longer live (`NMC_NODES` max_age).
    pub node_ttl: Duration,
    /// A lease not renewed for this long expires (`NMC_LEASES` max_age).
    pub lease_ttl: Duration,
    /// Replicas of every bucket (3 in a production NATS cluster).
    pub replicas: usize,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            node_ttl: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(10),
            replicas: 1,
        }
    }
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

/// Creates the coordination buckets, or opens them and brings the KV buckets' TTLs and replicas
/// to `settings` (idempotent; safe to call from several nodes at once).
pub async fn ensure_buckets(
    js: &jetstream::Context,
    settings: &ClusterSettings,
) -> Result<Buckets> {
    let r = settings.replicas;
    let nodes = kv_bucket(js, NODES_BUCKET, settings.node_ttl, 1, r).await?;
    let leases = kv_bucket(js, LEASES_BUCKET, settings.lease_ttl, 1, r).await?;
    let forces = kv_bucket(js, FORCES_BUCKET, Duration::ZERO, FORCES_HISTORY, r).await?;
    let checkpoints = match js.get_object_store(CHECKPOINTS_BUCKET).await {
        Ok(store) => store,
        Err(_) => js
            .create_object_store(object_store::Config {
                bucket: CHECKPOINTS_BUCKET.to_owned(),
                description: Some("nmc force-state checkpoints".to_owned()),
                num_replicas: settings.replicas,
                ..Default::default()
            })
            .await
            .with_context(|| format!("creating object store {CHECKPOINTS_BUCKET}"))?,
    };
    Ok(Buckets {
        nodes,
        leases,
        forces,
        checkpoints,
    })
}

/// Opens the coordination buckets as they are (creating only missing ones, with `settings`):
/// for command-line tools, which must not rewrite a running cluster's TTLs.
pub async fn open_buckets(js: &jetstream::Context, settings: &ClusterSettings) -> Result<Buckets> {
    let (nodes, leases, forces, checkpoints) = (
        js.get_key_value(NODES_BUCKET).await,
        js.get_key_value(LEASES_BUCKET).await,
        js.get_key_value(FORCES_BUCKET).await,
        js.get_object_store(CHECKPOINTS_BUCKET).await,
    );
    match (nodes, leases, forces, checkpoints) {
        (Ok(nodes), Ok(leases), Ok(forces), Ok(checkpoints)) => Ok(Buckets {
            nodes,
            leases,
            forces,
            checkpoints,
        }),
        _ => ensure_buckets(js, settings).await,
    }
}

/// Creates or updates one KV bucket.
async fn kv_bucket(
    js: &jetstream::Context,
    bucket: &str,
    max_age: Duration,
    history: i64,
    replicas: usize,
) -> Result<kv::Store> {
    js.create_or_update_key_value(kv::Config {
        bucket: bucket.to_owned(),
        history,
        max_age,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .with_context(|| format!("creating or updating KV bucket {bucket}"))
}

/// Wall-clock time in Unix milliseconds (for records people read, never for decisions).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
