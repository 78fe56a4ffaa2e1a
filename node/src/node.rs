//! `nmc node`: start-up and shutdown of one cluster node.
//!
//! Starts the HTTP endpoints first (liveness answers while NATS is still out of reach), connects
//! to NATS, provisions the streams and buckets (nodes are the only processes that create or
//! change them; retried until NATS answers), loads the rule pack in force, starts the followers
//! that publish the onboarded forces and the rule pack on watch channels ([`NodeContext`]),
//! starts triage if configured, and joins the cluster: the [`Coordinator`] then runs the forces
//! this node owns until SIGINT/SIGTERM starts a graceful hand-off (the node turns unready at
//! once).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix::prelude::*;
use anyhow::{Context, Result};
use async_nats::jetstream;
use nmc_shared::onboarding::OnboardingPhase;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::cluster::coordinator::Coordinator;
use crate::cluster::{self, Buckets, onboarding};
use crate::config::Config;
use crate::context::NodeContext;
use crate::rules::{RulePack, pack, reload};
use crate::status::NodeStatus;
use crate::store::Store;
use crate::telemetry::metrics::{self, Metrics};
use crate::{bus, http, notify, telemetry, triage};

/// Runs a node until it is told to stop.
pub async fn run(cfg: Config) -> Result<()> {
    telemetry::json::set_node(&cfg.node_id);
    let cfg = Arc::new(cfg);
    let store = Store::open(&cfg.data_dir)?;
    let metrics_slot: Arc<OnceLock<Arc<Metrics>>> = Arc::default();
    let slot = metrics_slot.clone();
    let client = bus::connect(
        &bus::NatsConnect::from(&*cfg),
        &format!("nmc-node {}", cfg.node_id),
        move |event| {
            if let async_nats::Event::Connected = event
                && let Some(m) = slot.get()
            {
                m.nats_reconnect();
            }
        },
    )
    .await?;
    let js = jetstream::new(client.clone());

    // Channels first (filled below), so that status and metrics exist from the start.
    let (rules_tx, rules) = watch::channel(RulePack {
        rules: Arc::default(),
        version: RulePack::LOCAL.into(),
        revision: 0,
    });
    let (forces_tx, forces) = watch::channel(Arc::default());
    let status = Arc::new(NodeStatus::new(
        &cfg.node_id,
        client.clone(),
        cfg.cluster().node_ttl,
        forces.clone(),
        rules.clone(),
    ));
    let installed = metrics::install(&cfg, status.clone())?;
    let _ = metrics_slot.set(installed.metrics.clone());
    let web = http::serve(
        &http::HttpSettings::from(&*cfg),
        status.clone(),
        installed.registry.clone(),
    )?;

    let (buckets, packs) = provision(&js, &cfg).await;
    status.set_provisioned();
    for f in &cfg.forces {
        if onboarding::add(&buckets.forces, f, OnboardingPhase::CloudAndOnprem, 1).await? {
            info!(force = %f, "force onboarded (from the node configuration)");
        }
    }
    rules_tx.send_replace(reload::initial(&cfg, &packs).await?);
    forces_tx.send_replace(Arc::new(onboarding::list(&buckets.forces).await?));
    actix::spawn(reload::follow(
        cfg.clone(),
        packs,
        rules_tx,
        installed.metrics.clone(),
    ));
    actix::spawn(onboarding::follow(buckets.forces.clone(), forces_tx));
    let ctx = NodeContext {
        cfg: cfg.clone(),
        js,
        store,
        buckets,
        rules,
        forces,
        status: status.clone(),
        metrics: installed.metrics.clone(),
    };

    let arbiters: Vec<Arbiter> = (0..cfg.worker_count()).map(|_| Arbiter::new()).collect();
    if cfg.triage {
        arbiters[0].spawn(triage::run(ctx.clone()));
        info!("triage of unknown forces started");
    }
    if cfg.notify {
        let notifier = notify::Notifier::new(
            &ctx.js,
            &cfg.notifications,
            &cfg.node_id,
            Some(ctx.buckets.nodes.clone()),
            Some(installed.metrics.clone()),
        )
        .await
        .context("setting up notifications ([notifications] in the configuration)")?;
        actix::spawn(notifier.run());
        info!("notification of force contacts started");
    }
    let coordinator = Coordinator::join(ctx.clone(), arbiters).await?;
    info!(node = %cfg.node_id, rules = %ctx.rules_version(), "node running");
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let draining = status.clone();
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => info!("SIGINT"),
            _ = sigterm.recv() => info!("SIGTERM"),
        }
        draining.set_draining();
    };
    coordinator.run(stop).await?;
    ctx.store.flush().await?;
    // Bounded: with NATS gone, a flush would wait for a reconnection that never comes.
    let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
    web.stop(true).await;
    // The provider's shutdown blocks until the last OTLP export: not on the actix thread.
    let provider = installed.provider;
    let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    info!("node stopped");
    Ok(())
}

/// Creates or verifies the streams and buckets, retrying until NATS answers (a node started
/// before its NATS cluster waits for it, live and unready, instead of exiting).
async fn provision(js: &jetstream::Context, cfg: &Config) -> (Buckets, pack::Packs) {
    let mut wait = Duration::from_millis(500);
    loop {
        let attempt = async {
            bus::ensure_streams(js, cfg)
                .await
                .context("preparing JetStream streams")?;
            let buckets = cluster::ensure_buckets(js, &cfg.cluster())
                .await
                .context("preparing the coordination buckets")?;
            let packs = pack::ensure(js, cfg.stream_replicas)
                .await
                .context("preparing the rule-pack buckets")?;
            notify::ensure(js, cfg)
                .await
                .context("preparing the contact, lifecycle and delivery buckets")?;
            anyhow::Ok((buckets, packs))
        };
        match attempt.await {
            Ok(done) => return done,
            Err(e) => {
                warn!(
                    error = format!("{e:#}"),
                    retry_in_ms = wait.as_millis() as u64,
                    "provisioning failed; retrying"
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    }
}
