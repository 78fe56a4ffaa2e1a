//! Membership: each live node keeps a key in `NMC_NODES` fresh by heartbeating it.
//!
//! The bucket's `max_age` is the node TTL: a node that stops heartbeating disappears on its own,
//! and a node that leaves deletes its key at once.

use anyhow::{Context, Result};
use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use futures::TryStreamExt;
use nmc_shared::rendezvous::NodeWeight;
use serde::{Deserialize, Serialize};

/// What a node announces about itself (the JSON value of its key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node id (the key).
    pub node_id: String,
    /// When the process started, in Unix milliseconds.
    pub started_ms: i64,
    /// Process id.
    pub pid: u32,
    /// nmc version.
    pub version: String,
    /// Rendezvous weight (relative capacity).
    pub weight: u32,
}

impl NodeInfo {
    /// This process, starting now, as `node_id` with `weight`.
    pub fn this_process(node_id: &str, weight: u32) -> NodeInfo {
        NodeInfo {
            node_id: node_id.to_owned(),
            started_ms: crate::clock::now_ms(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            weight,
        }
    }
}

impl From<&NodeInfo> for NodeWeight {
    fn from(n: &NodeInfo) -> NodeWeight {
        NodeWeight::new(n.node_id.clone(), n.weight)
    }
}

/// This node's membership: heartbeat it more often than the node TTL.
pub struct Membership {
    kv: kv::Store,
    info: NodeInfo,
    value: Bytes,
}

impl Membership {
    /// Announces `info` in the `NMC_NODES` bucket `kv`.
    pub async fn join(kv: &kv::Store, info: NodeInfo) -> Result<Membership> {
        let value = Bytes::from(serde_json::to_vec(&info)?);
        let m = Membership {
            kv: kv.clone(),
            info,
            value,
        };
        m.heartbeat().await?;
        Ok(m)
    }

    /// Re-puts the node's key, restarting its TTL.
    pub async fn heartbeat(&self) -> Result<()> {
        self.kv
            .put(&self.info.node_id, self.value.clone())
            .await
            .with_context(|| format!("heartbeat of node {}", self.info.node_id))?;
        Ok(())
    }

    /// What this node announces.
    pub fn info(&self) -> &NodeInfo {
        &self.info
    }

    /// Deletes the node's key so that the others see it gone at once.
    pub async fn leave(self) -> Result<()> {
        self.kv
            .delete(&self.info.node_id)
            .await
            .with_context(|| format!("leave of node {}", self.info.node_id))
    }
}

/// The live nodes, sorted by id: keys present in `NMC_NODES` (expired entries are gone through
/// `max_age`; delete and purge markers count as absent).
pub async fn live_nodes(kv: &kv::Store) -> Result<Vec<NodeInfo>> {
    let keys: Vec<String> = kv.keys().await?.try_collect().await?;
    let mut nodes = Vec::with_capacity(keys.len());
    for key in keys {
        // An entry may expire between the listing and this read.
        let Some(entry) = kv.entry(&key).await? else {
            continue;
        };
        if entry.operation != Operation::Put {
            continue;
        }
        let info: NodeInfo = serde_json::from_slice(&entry.value)
            .with_context(|| format!("{} entry `{key}` is not a node record", kv.name))?;
        nodes.push(info);
    }
    nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    Ok(nodes)
}
