//! `nmc node`: start-up and shutdown of one cluster node.
//!
//! Connects to NATS, provisions the streams and buckets (nodes are the only processes that
//! create or change them), loads the rule pack in force, starts the followers that publish the
//! onboarded forces and the rule pack on watch channels ([`NodeContext`]), starts triage if
//! configured, and joins the cluster: the [`Coordinator`] then runs the forces this node owns
//! until SIGINT/SIGTERM starts a graceful hand-off.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anyhow::{Context, Result};
use async_nats::jetstream;
use nmc_shared::onboarding::OnboardingPhase;
use tokio::sync::watch;
use tracing::info;

use crate::cluster::coordinator::Coordinator;
use crate::cluster::{self, onboarding};
use crate::config::Config;
use crate::context::NodeContext;
use crate::rules::{pack, reload};
use crate::store::Store;
use crate::{bus, triage};

/// Runs a node until it is told to stop.
pub async fn run(cfg: Config) -> Result<()> {
    let cfg = Arc::new(cfg);
    let store = Store::open(&cfg.data_dir)?;
    let client = bus::connect(&cfg.nats_url, &format!("nmc-node {}", cfg.node_id)).await?;
    let js = jetstream::new(client.clone());
    bus::ensure_streams(&js, &cfg)
        .await
        .context("preparing JetStream streams")?;
    let buckets = cluster::ensure_buckets(&js, &cfg.cluster())
        .await
        .context("preparing the coordination buckets")?;
    let packs = pack::ensure(&js, cfg.stream_replicas)
        .await
        .context("preparing the rule-pack buckets")?;
    for f in &cfg.forces {
        if onboarding::add(&buckets.forces, f, OnboardingPhase::CloudAndOnprem, 1).await? {
            info!(force = %f, "force onboarded (from the node configuration)");
        }
    }

    let (rules_tx, rules) = watch::channel(reload::initial(&cfg, &packs).await?);
    let (forces_tx, forces) = watch::channel(Arc::new(onboarding::list(&buckets.forces).await?));
    actix::spawn(reload::follow(cfg.clone(), packs, rules_tx));
    actix::spawn(onboarding::follow(buckets.forces.clone(), forces_tx));
    let ctx = NodeContext {
        cfg: cfg.clone(),
        js,
        store,
        buckets,
        rules,
        forces,
    };

    let arbiters: Vec<Arbiter> = (0..cfg.worker_count()).map(|_| Arbiter::new()).collect();
    if cfg.triage {
        arbiters[0].spawn(triage::run(ctx.clone()));
        info!("triage of unknown forces started");
    }
    let coordinator = Coordinator::join(ctx.clone(), arbiters).await?;
    info!(node = %cfg.node_id, rules = %ctx.rules_version(), "node running");
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => info!("SIGINT"),
            _ = sigterm.recv() => info!("SIGTERM"),
        }
    };
    coordinator.run(stop).await?;
    ctx.store.flush().await?;
    // Bounded: with NATS gone, a flush would wait for a reconnection that never comes.
    let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
    info!("node stopped");
    Ok(())
}
