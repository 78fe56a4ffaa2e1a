//! The node's HTTP endpoints (actix-web, on the node's actix system): `/healthz` (the process
//! runs), `/readyz` (the node can do its work: see [`NodeStatus::readiness`]), `/metrics` (the
//! Prometheus text format) and `/api/v1/status` (JSON: what `nmc cluster status` shows for this
//! node). Nothing here answers with a secret: the configuration is not served, and status holds
//! only ids, counters and times.
//!
//! TLS when a certificate is configured (`http_tls_cert`, `http_tls_key`); `/api/v1/*` behind a
//! bearer token when one is configured (`http_api_token`). `/healthz`, `/readyz` and `/metrics`
//! stay open for probes and scrapers: a NetworkPolicy decides who reaches them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{App, FromRequest, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::{Context, Result};
use serde_json::json;

use crate::config::Config;
use crate::secret::Secret;
use crate::status::NodeStatus;

/// How the endpoints are served.
#[derive(Clone, Debug, Default)]
pub struct HttpSettings {
    /// Address and port to bind.
    pub listen: String,
    /// PEM certificate chain and private key: TLS when set.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The bearer token `/api/v1/*` requires; empty: open.
    pub api_token: Secret,
}

impl From<&Config> for HttpSettings {
    /// The node configuration's `http_*` keys.
    fn from(cfg: &Config) -> HttpSettings {
        HttpSettings {
            listen: cfg.http_listen.clone(),
            tls: (!cfg.http_tls_cert.as_os_str().is_empty())
                .then(|| (cfg.http_tls_cert.clone(), cfg.http_tls_key.clone())),
            api_token: cfg.http_api_token.clone(),
        }
    }
}

/// What the handlers share.
struct Shared {
    status: Arc<NodeStatus>,
    registry: prometheus::Registry,
    api_token: Secret,
}

/// Starts the endpoints; stop them with the returned handle.
pub fn serve(
    settings: &HttpSettings,
    status: Arc<NodeStatus>,
    registry: prometheus::Registry,
) -> Result<ServerHandle> {
    let listen = settings.listen.as_str();
    let shared = web::Data::new(Shared {
        status,
        registry,
        api_token: settings.api_token.clone(),
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(shared.clone())
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics))
            .route("/api/v1/status", web::get().to(status_json))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1);
    let server = match &settings.tls {
        Some((cert, key)) => server.bind_rustls_0_23(listen, tls_config(cert, key)?),
        None => server.bind(listen),
    }
    .with_context(|| format!("binding the HTTP endpoints to {listen} (http_listen)"))?;
    let scheme = if settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let api = if settings.api_token.is_empty() {
        "open"
    } else {
        "bearer token"
    };
    for addr in server.addrs() {
        tracing::info!(%addr, scheme, api, "HTTP endpoints up (/healthz, /readyz, /metrics, /api/v1/status)");
    }
    let server = server.run();
    let handle = server.handle();
    actix::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "HTTP endpoints stopped");
        }
    });
    Ok(handle)
}

/// The TLS configuration of a PEM certificate chain and key (rustls, ring provider).
pub(crate) fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!(
                "reading the certificates of http_tls_cert {}",
                cert.display()
            )
        })?;
    if chain.is_empty() {
        anyhow::bail!("http_tls_cert {} holds no PEM certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the private key of http_tls_key {}", key.display()))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("http_tls_cert and http_tls_key do not make a usable certificate and key pair")
}

/// Proof that a request to `/api/v1/*` carries the configured bearer token (or that none is
/// configured). A request without it gets 401 with `WWW-Authenticate: Bearer`, and no hint of
/// the token.
pub struct ApiAccess;

impl FromRequest for ApiAccess {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<ApiAccess, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let token = req
            .app_data::<web::Data<Shared>>()
            .map(|s| s.api_token.clone())
            .unwrap_or_default();
        let presented = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        std::future::ready(
            if token.is_empty() || presented.is_some_and(|p| token.matches(p)) {
                Ok(ApiAccess)
            } else {
                let response = HttpResponse::Unauthorized()
                    .insert_header((actix_web::http::header::WWW_AUTHENTICATE, "Bearer"))
                    .json(json!({ "error": "a valid bearer token is required (Authorization: Bearer ...)" }));
                Err(actix_web::error::InternalError::from_response("unauthorized", response).into())
            },
        )
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("ok\n")
}

async fn readyz(shared: web::Data<Shared>) -> HttpResponse {
    let checks = shared.status.readiness();
    let ready = checks.iter().all(|c| c.ok);
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    HttpResponse::build(code).json(json!({ "ready": ready, "checks": checks }))
}

async fn metrics(shared: web::Data<Shared>) -> HttpResponse {
    registry_text(shared.registry.clone()).await
}

/// `/metrics`: `registry` in the Prometheus text format.
pub async fn registry_text(registry: prometheus::Registry) -> HttpResponse {
    // Gathering runs the gauges' observers: off the I/O thread.
    let text = web::block(move || {
        let mut out = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&registry.gather(), &mut out)
            .map(|()| out)
    })
    .await;
    match text {
        Ok(Ok(body)) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(body),
        Ok(Err(e)) => HttpResponse::InternalServerError().body(format!("encoding metrics: {e}\n")),
        Err(e) => HttpResponse::InternalServerError().body(format!("gathering metrics: {e}\n")),
    }
}

async fn status_json(_: ApiAccess, shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(snapshot(&shared.status))
}

/// This node as `/api/v1/status` shows it.
pub fn snapshot(status: &NodeStatus) -> serde_json::Value {
    let mut forces = Vec::new();
    status.each_held(|f, c| {
        let s = c.status();
        let stats = c.stats();
        let feeds: serde_json::Map<String, serde_json::Value> = stats
            .feeds
            .iter()
            .map(|(src, feed)| {
                (
                    src.as_str().to_owned(),
                    json!({
                        "last_event_time": nmc_shared::time::format_ms(feed.event_ms),
                        "last_ingest_time": nmc_shared::time::format_ms(feed.ingest_ms),
                    }),
                )
            })
            .collect();
        forces.push(json!({
            "force": f,
            "epoch": c.epoch(),
            "phase": c.phase(),
            "cursor": s.cursor,
            "committed": stats.committed,
            "lag": s.lag,
            "pending": s.pending,
            "late": s.late,
            "bad_values": s.bad_values,
            "ingest_time": s.ingest_time,
            "rule_pack": s.rule_pack,
            "outbox": stats.outbox,
            "checkpoint_age_secs": stats
                .checkpointed_at
                .unwrap_or(stats.acquired_at)
                .elapsed()
                .as_secs(),
            "feeds": feeds,
        }));
    });
    let pack = status.rules.borrow();
    json!({
        "node": status.node,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": status.uptime().as_secs(),
        "ready": status.ready(),
        "checks": status.readiness(),
        "nats_connected": status.nats_connected(),
        "rule_pack": {
            "version": pack.version,
            "detections": pack.rules.rules().len(),
            "correlations": pack.rules.correlations().len(),
        },
        "onboarded": status.forces.borrow().len(),
        "forces": forces,
    })
}
