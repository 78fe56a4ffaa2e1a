//! `nmc console`: connects to NATS, keeps the index up to date, and serves the API.

use std::sync::Arc;

use actix_web::{App, HttpServer, web};
use anyhow::{Context, Result};
use async_nats::jetstream;
use tracing::{info, warn};

use super::api::{self, Shared};
use super::follow;
use super::index::AlertIndex;
use super::session::Sessions;
use super::users::Users;
use crate::config::Config;

/// Runs the console until SIGINT/SIGTERM.
pub async fn run(cfg: Config) -> Result<()> {
    let c = &cfg.console;
    let client =
        crate::bus::connect(&crate::bus::NatsConnect::from(&cfg), "nmc console", |_| {}).await?;
    let js = jetstream::new(client);
    let states = crate::alert_state::open(&js)
        .await
        .context("opening the alert states (start an nmc node first: nodes create them)")?;
    let index = AlertIndex::open(&c.data_dir)?;
    info!(indexed = index.len(), "console index opened");
    actix::spawn(follow::alerts(js.clone(), index.clone()));
    actix::spawn(follow::states(js.clone(), index.clone()));
    let key = if c.session_key.is_empty() {
        warn!(
            "console.session_key is not set: a random key signs sessions (they end when this console restarts; run one replica only)"
        );
        let rng = ring::rand::SystemRandom::new();
        let mut k = [0u8; 32];
        ring::rand::SecureRandom::fill(&rng, &mut k).expect("system randomness");
        k.to_vec()
    } else {
        c.session_key.expose().as_bytes().to_vec()
    };
    let users = if c.users_file.as_os_str().is_empty() {
        None
    } else {
        Some(Users::read(&c.users_file)?)
    };
    let shared = web::Data::new(Arc::new(Shared {
        index,
        states,
        sessions: Sessions::new(&key, (c.session_ttl_secs * 1000) as i64),
        users,
        roles: c.roles.clone(),
        events: crate::bus::provision::open_stream(&js, nmc_shared::subject::EVENTS_STREAM).await?,
        oidc: if c.oidc.issuer_url.is_empty() {
            None
        } else {
            Some(super::oidc::Oidc::new(c.oidc.clone())?)
        },
        buckets: crate::cluster::open_buckets(&js)
            .await
            .context("opening the coordination buckets")?,
    }));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(shared.clone())
            .app_data(web::JsonConfig::default().limit(64 * 1024))
            .route("/healthz", web::get().to(api::healthz))
            .route("/api/openapi.json", web::get().to(api::openapi))
            .route("/api/login", web::post().to(api::login))
            .route("/api/logout", web::post().to(api::logout))
            .route("/api/session", web::get().to(api::session))
            .route("/api/alerts", web::get().to(api::alerts))
            .route("/api/alerts/{id}", web::get().to(api::alert))
            .route("/api/alerts/{id}/actions", web::post().to(api::act))
            .route("/api/alerts/{id}/evidence", web::get().to(api::evidence))
            .route("/api/stream", web::get().to(api::stream))
            .route("/api/overview", web::get().to(api::overview))
            .route("/auth/login", web::get().to(api::oidc_login))
            .route("/auth/callback", web::get().to(api::oidc_callback))
    })
    .workers(2)
    .shutdown_timeout(5);
    let listen = c.listen.as_str();
    let server = if c.tls_cert.as_os_str().is_empty() {
        server.bind(listen)
    } else {
        server.bind_rustls_0_23(listen, crate::http::tls_config(&c.tls_cert, &c.tls_key)?)
    }
    .with_context(|| format!("binding the console to {listen} (console.listen)"))?;
    for addr in server.addrs() {
        info!(%addr, "console up");
    }
    server.run().await.context("the console server stopped")?;
    Ok(())
}
