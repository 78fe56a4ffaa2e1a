//! What the parts of a running node share: its configuration, its NATS and sled handles, and
//! the cluster facts that change while it runs.
//!
//! Changing facts (the onboarded forces, the rule pack in force) are published on
//! `tokio::sync::watch` channels by the tasks that follow them in JetStream
//! ([`crate::cluster::onboarding::follow`], [`crate::rules::reload::follow`]); readers take the
//! latest value when they need it, or wait for the next change. Nothing here is refreshed as a
//! side effect of something else.

use std::sync::Arc;

use async_nats::jetstream;
use tokio::sync::watch;

use crate::cluster::Buckets;
use crate::config::Config;
use crate::rules::RulePack;
use crate::status::NodeStatus;
use crate::store::Store;
use crate::telemetry::metrics::Metrics;

pub use crate::cluster::onboarding::Onboarded;

/// The handles and facts every task of one node shares (cheap to clone: handles and channels).
#[derive(Clone)]
pub struct NodeContext {
    /// Node configuration.
    pub cfg: Arc<Config>,
    /// JetStream context.
    pub js: jetstream::Context,
    /// The node's sled database.
    pub store: Store,
    /// The coordination buckets.
    pub buckets: Buckets,
    /// The rule pack in force on this node.
    pub rules: watch::Receiver<RulePack>,
    /// The onboarded forces.
    pub forces: watch::Receiver<Onboarded>,
    /// What the node knows about itself (held forces, readiness).
    pub status: Arc<NodeStatus>,
    /// The node's instruments.
    pub metrics: Arc<Metrics>,
}

impl NodeContext {
    /// The rule pack in force now.
    pub fn rule_pack(&self) -> RulePack {
        self.rules.borrow().clone()
    }

    /// The version of the rule pack in force now.
    pub fn rules_version(&self) -> String {
        self.rules.borrow().version.clone()
    }

    /// The onboarded forces now.
    pub fn onboarded(&self) -> Onboarded {
        self.forces.borrow().clone()
    }
}
