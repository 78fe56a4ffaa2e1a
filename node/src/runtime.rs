//! The node runtime: connects to NATS, prepares streams and coordination buckets, loads the rule
//! pack in force, joins the cluster and lets the [`Coordinator`] run the forces this node owns,
//! until SIGINT/SIGTERM starts a graceful shutdown.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use actix::prelude::*;
use anyhow::{Context, Result};
use async_nats::jetstream;
use nmc_shared::ForceId;
use nmc_shared::onboarding::{ForceRecord, OnboardingPhase};
use nmc_shared::sigma::RuleSet;
use tracing::{error, info, warn};

use crate::cluster::coordinator::Coordinator;
use crate::cluster::rulepack::{self, Packs};
use crate::cluster::{self, Buckets, onboarding};
use crate::config::Config;
use crate::store::Store;
use crate::{bus, rules, triage};

/// A compiled rule set and the version of the pack it came from.
#[derive(Clone)]
pub struct RulePack {
    /// Compiled rules.
    pub rules: Arc<RuleSet>,
    /// `pack-<n>` for a pushed pack, `local` for the node's own `rules_dirs`.
    pub version: String,
}

/// What every actor of a node shares.
pub struct Runtime {
    /// Node configuration.
    pub cfg: Config,
    /// JetStream context (the connection task runs on the system arbiter).
    pub js: jetstream::Context,
    /// The node's sled database.
    pub store: Store,
    /// The coordination buckets.
    pub buckets: Buckets,
    rules: RwLock<RulePack>,
    onboarded: RwLock<BTreeMap<ForceId, ForceRecord>>,
}

impl Runtime {
    /// The rule pack in force on this node.
    pub fn rules(&self) -> RulePack {
        self.rules.read().expect("rules lock").clone()
    }

    /// The version of the rule pack in force.
    pub fn rules_version(&self) -> String {
        self.rules.read().expect("rules lock").version.clone()
    }

    /// Replaces the rule pack; force actors pick it up at their next step.
    pub fn set_rules(&self, pack: RulePack) {
        *self.rules.write().expect("rules lock") = pack;
    }

    /// The onboarded forces as last read from the cluster.
    pub fn onboarded(&self) -> BTreeMap<ForceId, ForceRecord> {
        self.onboarded.read().expect("onboarded lock").clone()
    }

    /// Records the onboarded forces.
    pub fn set_onboarded(&self, forces: BTreeMap<ForceId, ForceRecord>) {
        *self.onboarded.write().expect("onboarded lock") = forces;
    }
}

/// Runs a node until it is told to stop.
pub async fn run_node(cfg: Config) -> Result<()> {
    let store = Store::open(&cfg.data_dir)?;
    let client = bus::connect(&cfg.nats_url, &format!("nmc-node {}", cfg.node_id)).await?;
    let js = jetstream::new(client.clone());
    bus::ensure_streams(&js, &cfg)
        .await
        .context("preparing JetStream streams")?;
    let buckets = cluster::ensure_buckets(&js, &cfg.cluster())
        .await
        .context("preparing the coordination buckets")?;
    let packs = rulepack::ensure(&js, cfg.stream_replicas)
        .await
        .context("preparing the rule-pack buckets")?;
    let pack = initial_rules(&cfg, &packs).await?;
    for f in cfg.startup_forces() {
        if onboarding::add(&buckets.forces, &f, OnboardingPhase::CloudAndOnprem, 1).await? {
            info!(force = %f, "force onboarded (from the node configuration)");
        }
    }
    let rt = Arc::new(Runtime {
        cfg: cfg.clone(),
        js,
        store,
        buckets: buckets.clone(),
        rules: RwLock::new(pack),
        onboarded: RwLock::new(onboarding::list(&buckets.forces).await?),
    });

    let arbiters: Vec<Arbiter> = (0..cfg.worker_count()).map(|_| Arbiter::new()).collect();
    if cfg.triage {
        let rt2 = rt.clone();
        arbiters[0].spawn(async move { triage::run(rt2).await });
        info!("triage of unknown forces started");
    }
    let rt2 = rt.clone();
    actix::spawn(async move { watch_rules(rt2, packs).await });

    let coordinator = Coordinator::join(rt.clone(), arbiters).await?;
    info!(node = %cfg.node_id, rules = %rt.rules_version(), "node running");
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => info!("SIGINT"),
            _ = sigterm.recv() => info!("SIGTERM"),
        }
    };
    coordinator.run(stop).await?;
    rt.store.flush().await?;
    // Bounded: with NATS gone, a flush would wait for a reconnection that never comes.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), client.flush()).await;
    info!("node stopped");
    Ok(())
}

/// The rules a node starts with: the pack in force in the cluster, or its own `rules_dirs`
/// when none was ever pushed.
async fn initial_rules(cfg: &Config, packs: &Packs) -> Result<RulePack> {
    if let Some(cur) = rulepack::current(packs).await? {
        match compile_pack(cfg, packs, &cur).await {
            Ok(p) => return Ok(p),
            Err(e) => error!(
                version = %cur.version,
                error = format!("{e:#}"),
                "the cluster's rule pack does not compile here; using rules_dirs"
            ),
        }
    }
    let (rules, errors) = rules::load_with(&cfg.rules_dirs, &cfg.placeholders)?;
    for e in &errors {
        error!(error = %e, "rule not loaded");
    }
    info!(
        rules = rules.len(),
        broken = errors.len(),
        "rules loaded from rules_dirs"
    );
    if rules.is_empty() {
        warn!("no rules loaded: events will be read and checked but raise no alert");
    }
    Ok(RulePack {
        rules: Arc::new(rules),
        version: "local".into(),
    })
}

/// Fetches and compiles a pack; any broken rule refuses the whole pack.
async fn compile_pack(cfg: &Config, packs: &Packs, cur: &rulepack::Current) -> Result<RulePack> {
    let files = rulepack::fetch(packs, &cur.pack).await?;
    let (set, errors) = rules::compile_texts(&files.files, &cfg.placeholders);
    if let Some(e) = errors.first() {
        anyhow::bail!(
            "{} rule(s) do not compile, first: {e}; the pack is refused",
            errors.len()
        );
    }
    info!(version = %cur.version, rules = set.len(), "rule pack compiled");
    Ok(RulePack {
        rules: Arc::new(set),
        version: cur.version.clone(),
    })
}

/// Follows `NMC_RULES` and swaps in each new pack that compiles.
async fn watch_rules(rt: Arc<Runtime>, packs: Packs) {
    loop {
        let mut watch = match packs.kv.watch(rulepack::CURRENT).await {
            Ok(w) => w,
            Err(e) => {
                warn!(error = %e, "cannot watch rule packs; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                continue;
            }
        };
        // A pack pushed while the watch was down.
        if let Ok(Some(cur)) = rulepack::current(&packs).await {
            apply_pack(&rt, &packs, cur).await;
        }
        loop {
            match rulepack::next_change(&mut watch).await {
                Ok(Some(cur)) => apply_pack(&rt, &packs, cur).await,
                Ok(None) => break,
                Err(e) => {
                    warn!(
                        error = format!("{e:#}"),
                        "rule pack watch failed; restarting it"
                    );
                    break;
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

async fn apply_pack(rt: &Runtime, packs: &Packs, cur: rulepack::Current) {
    if cur.version == rt.rules_version() {
        return;
    }
    match compile_pack(&rt.cfg, packs, &cur).await {
        Ok(p) => {
            info!(from = %rt.rules_version(), to = %p.version, "rule pack hot-reloaded");
            rt.set_rules(p);
        }
        Err(e) => error!(
            version = %cur.version,
            error = format!("{e:#}"),
            running = %rt.rules_version(),
            "rule pack refused; the running pack stays in force"
        ),
    }
}
