//! The node runtime: connects to NATS, prepares streams, loads rules, opens sled, and starts one
//! supervised force actor per configured force (spread over worker arbiters) plus the triage
//! reader, then watches them until SIGINT/SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anyhow::{Context, Result, bail};
use async_nats::jetstream;
use nmc_shared::sigma::RuleSet;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::force::{ForceActor, spawn_force};
use crate::store::Store;
use crate::{bus, rules, triage};

/// What every actor of a node shares.
pub struct Runtime {
    /// Node configuration.
    pub cfg: Config,
    /// JetStream context (the connection task runs on the system arbiter).
    pub js: jetstream::Context,
    /// The node's sled database.
    pub store: Store,
    /// Compiled rules.
    pub rules: Arc<RuleSet>,
}

/// Runs a node until it is told to stop.
pub async fn run_node(cfg: Config) -> Result<()> {
    if cfg.forces.is_empty() && !cfg.triage {
        bail!("this node has no forces and no triage role: set `forces` (or NMC_FORCES)");
    }
    let (rules, errors) = rules::load_with(&cfg.rules_dirs, &cfg.placeholders)?;
    for e in &errors {
        error!(error = %e, "rule not loaded");
    }
    info!(rules = rules.len(), broken = errors.len(), "rules loaded");
    if rules.is_empty() && !cfg.forces.is_empty() {
        warn!("no rules loaded: events will be read and checked but raise no alert");
    }
    let store = Store::open(&cfg.data_dir)?;
    let client = bus::connect(&cfg.nats_url, &format!("nmc-node {}", cfg.node_id)).await?;
    let js = jetstream::new(client.clone());
    bus::ensure_streams(&js, &cfg)
        .await
        .context("preparing JetStream streams")?;
    let rt = Arc::new(Runtime {
        cfg: cfg.clone(),
        js,
        store,
        rules: Arc::new(rules),
    });

    let arbiters: Vec<Arbiter> = (0..cfg.worker_count()).map(|_| Arbiter::new()).collect();
    let mut actors: Vec<(usize, Addr<ForceActor>)> = Vec::new();
    for (i, force) in cfg.forces.iter().enumerate() {
        let a = i % arbiters.len();
        actors.push((
            a,
            spawn_force(rt.clone(), force.clone(), &arbiters[a].handle()),
        ));
        info!(%force, arbiter = a, "force actor started");
    }
    if cfg.triage {
        let rt2 = rt.clone();
        arbiters[0].spawn(async move { triage::run(rt2).await });
        info!(
            onboarded = cfg.onboarded_forces().len(),
            "triage of unknown forces started"
        );
    }
    info!(node = %cfg.node_id, forces = cfg.forces.len(), "node running");

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
            _ = tick.tick() => {
                // Fallback: a force actor whose task died outside the caught evaluation path.
                for (i, (a, addr)) in actors.iter_mut().enumerate() {
                    if !addr.connected() {
                        let force = cfg.forces[i].clone();
                        error!(%force, "force actor died; starting a new one");
                        *addr = spawn_force(rt.clone(), force, &arbiters[*a].handle());
                    }
                }
            }
        }
    }
    info!("stopping: flushing state");
    rt.store.flush().await?;
    client.flush().await.ok();
    for a in &arbiters {
        a.stop();
    }
    Ok(())
}
