//! The node's HTTP endpoints (actix-web, on the node's actix system): `/healthz` (the process
//! runs), `/readyz` (the node can do its work: see [`NodeStatus::readiness`]), `/metrics` (the
//! Prometheus text format) and `/api/v1/status` (JSON: what `nmc cluster status` shows for this
//! node). Nothing here answers with a secret: the configuration is not served, and status holds
//! only ids, counters and times.

use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::{Context, Result};
use serde_json::json;

use crate::status::NodeStatus;

/// What the handlers share.
struct Shared {
    status: Arc<NodeStatus>,
    registry: prometheus::Registry,
}

/// Starts the endpoints on `listen`; stop them with the returned handle.
pub fn serve(
    listen: &str,
    status: Arc<NodeStatus>,
    registry: prometheus::Registry,
) -> Result<ServerHandle> {
    let shared = web::Data::new(Shared { status, registry });
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
    .shutdown_timeout(1)
    .bind(listen)
    .with_context(|| format!("binding the HTTP endpoints to {listen} (http_listen)"))?;
    for addr in server.addrs() {
        tracing::info!(%addr, "HTTP endpoints up (/healthz, /readyz, /metrics, /api/v1/status)");
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
    // Gathering runs the gauges' observers: off the I/O thread.
    let registry = shared.registry.clone();
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

async fn status_json(shared: web::Data<Shared>) -> HttpResponse {
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
