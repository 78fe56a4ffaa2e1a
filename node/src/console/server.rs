//! `nmc console`: connects to NATS, keeps the index up to date, and serves the API.

use std::sync::Arc;

use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::{Context, Result};
use async_nats::jetstream;
use tracing::{info, warn};

use super::admin;
use super::api::{self, Shared};
use super::follow;
use super::index::AlertIndex;
use super::metrics::{ConsoleMetrics, Following};
use super::pages;
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
    let reading = Arc::new(Following::default());
    actix::spawn(follow::alerts(js.clone(), index.clone(), reading.clone()));
    actix::spawn(follow::states(js.clone(), index.clone(), reading.clone()));
    let metrics = ConsoleMetrics::install(index.clone())?;
    let ready = web::Data::new(Readiness {
        nats: js.client(),
        reading,
    });
    let metrics_data = web::Data::new(metrics.clone());
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
        js: js.clone(),
        oidc: if c.oidc.issuer_url.is_empty() {
            None
        } else {
            Some(super::oidc::Oidc::new(c.oidc.clone())?)
        },
        contacts: crate::contacts::open(&js)
            .await
            .context("opening the contact directory")?,
        catalog: super::catalog::Catalog::new(
            crate::rules::pack::open(&js)
                .await
                .context("opening the rule packs")?,
        ),
        metrics: metrics.clone(),
        buckets: crate::cluster::open_buckets(&js)
            .await
            .context("opening the coordination buckets")?,
    }));
    let server = HttpServer::new(move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(super::metrics::measure))
            .app_data(metrics_data.clone())
            .app_data(ready.clone())
            .wrap(
                actix_web::middleware::DefaultHeaders::new()
                    .add(("Content-Security-Policy", pages::CSP))
                    .add(("X-Content-Type-Options", "nosniff"))
                    .add(("X-Frame-Options", "DENY"))
                    .add(("Referrer-Policy", "no-referrer")),
            )
            .app_data(shared.clone())
            .app_data(web::FormConfig::default().limit(16 * 1024))
            .app_data(web::JsonConfig::default().limit(64 * 1024))
            .route("/healthz", web::get().to(api::healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics_text))
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
            .route("/api/rules", web::get().to(api::rules))
            .route("/api/forces", web::post().to(admin::api_onboard))
            .route(
                "/api/forces/{force}/phase",
                web::post().to(admin::api_phase),
            )
            .route("/api/contacts/{scope}", web::get().to(admin::api_contacts))
            .route(
                "/api/contacts/{scope}",
                web::post().to(admin::api_put_contact),
            )
            .route(
                "/api/contacts/{scope}/{name}",
                web::delete().to(admin::api_remove_contact),
            )
            .route("/auth/login", web::get().to(api::oidc_login))
            .route("/auth/callback", web::get().to(api::oidc_callback))
            .route("/", web::get().to(pages::overview))
            .route("/overview/table", web::get().to(pages::overview_table))
            .route("/login", web::get().to(pages::login_page))
            .route("/login", web::post().to(pages::login_form))
            .route("/logout", web::post().to(pages::logout_form))
            .route("/alerts", web::get().to(pages::queue))
            .route("/alerts/rows", web::get().to(pages::queue_rows))
            .route("/alerts/{id}", web::get().to(pages::alert))
            .route("/alerts/{id}/lifecycle", web::get().to(pages::lifecycle))
            .route("/alerts/{id}/act", web::post().to(pages::act))
            .route("/rules", web::get().to(pages::rules))
            .route("/admin", web::get().to(pages::admin))
            .route("/admin/onboard", web::post().to(pages::onboard))
            .route("/admin/phase", web::post().to(pages::phase))
            .route("/admin/contacts", web::post().to(pages::add_contact))
            .route(
                "/admin/contacts/remove",
                web::post().to(pages::remove_contact),
            )
            .route("/static/console.css", web::get().to(pages::css))
            .route("/static/console.js", web::get().to(pages::js))
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
    let stopped = server.run().await.context("the console server stopped");
    let _ = metrics.provider.shutdown();
    stopped
}

/// What `/readyz` checks.
struct Readiness {
    nats: async_nats::Client,
    reading: Arc<Following>,
}

/// `/readyz`: 200 when NATS is connected and the index follows both streams, else 503 with
/// the failing checks.
async fn readyz(r: web::Data<Readiness>) -> HttpResponse {
    let nats = r.nats.connection_state() == async_nats::connection::State::Connected;
    let checks = serde_json::json!({
        "nats_connected": nats,
        "following_alerts": r.reading.alerts.load(std::sync::atomic::Ordering::Acquire),
        "following_states": r.reading.states.load(std::sync::atomic::Ordering::Acquire),
    });
    if nats && r.reading.all() {
        HttpResponse::Ok().json(serde_json::json!({"ready": true, "checks": checks}))
    } else {
        HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"ready": false, "checks": checks}))
    }
}

/// `/metrics` in the Prometheus text format.
async fn metrics_text(m: web::Data<Arc<ConsoleMetrics>>) -> HttpResponse {
    crate::http::registry_text(m.registry.clone()).await
}
