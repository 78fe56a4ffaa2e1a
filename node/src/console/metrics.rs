//! The console's own health and metrics: `/readyz` (NATS connected, the index following both
//! streams) and `/metrics` (requests by kind and status with their durations, sign-ins by
//! method and outcome, the index's size and last sequence), also exported over OTLP when the
//! `OTEL_*` variables ask for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use anyhow::Result;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, MeterProvider as _, ObservableGauge};
use opentelemetry_sdk::metrics::SdkMeterProvider;

use super::index::AlertIndex;

/// Whether the index's followers are reading their streams.
#[derive(Default)]
pub struct Following {
    /// `NMC_ALERTS`.
    pub alerts: AtomicBool,
    /// `NMC_ALERT_STATES`.
    pub states: AtomicBool,
}

impl Following {
    /// Marks one follower as reading (`true`) or restarting (`false`).
    pub fn set(flag: &AtomicBool, on: bool) {
        flag.store(on, Ordering::Release);
    }

    /// Both followers are reading.
    pub fn all(&self) -> bool {
        self.alerts.load(Ordering::Acquire) && self.states.load(Ordering::Acquire)
    }
}

/// The console's instruments.
pub struct ConsoleMetrics {
    requests: Counter<u64>,
    duration: Histogram<f64>,
    sign_ins: Counter<u64>,
    _gauges: Vec<ObservableGauge<u64>>,
    /// What `/metrics` serves.
    pub registry: prometheus::Registry,
    /// Flushed at exit.
    pub provider: SdkMeterProvider,
}

impl ConsoleMetrics {
    /// The instruments, the index's gauges observing `index`.
    pub fn install(index: AlertIndex) -> Result<Arc<ConsoleMetrics>> {
        let (registry, provider) = crate::telemetry::metrics::provider(Some("console"))?;
        let meter = provider.meter("nmc");
        let (i1, i2) = (index.clone(), index);
        let gauges = vec![
            meter
                .u64_observable_gauge("nmc.console.index.alerts")
                .with_unit("{alert}")
                .with_description("Alerts in the console's index.")
                .with_callback(move |o| o.observe(i1.len() as u64, &[]))
                .build(),
            meter
                .u64_observable_gauge("nmc.console.index.last_seq")
                .with_description("The last NMC_ALERTS sequence the index holds.")
                .with_callback(move |o| o.observe(i2.last_seq().unwrap_or(0), &[]))
                .build(),
        ];
        Ok(Arc::new(ConsoleMetrics {
            requests: meter
                .u64_counter("nmc.console.http.requests")
                .with_unit("{request}")
                .with_description(
                    "Requests answered, by kind (page, api, auth, static) and status.",
                )
                .build(),
            duration: meter
                .f64_histogram("nmc.console.http.duration")
                .with_unit("s")
                .with_description("Time to answer a request (to its headers), by kind.")
                .with_boundaries(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0,
                ])
                .build(),
            sign_ins: meter
                .u64_counter("nmc.console.sign_ins")
                .with_unit("{sign_in}")
                .with_description("Sign-ins, by method (local, oidc) and outcome (ok, refused).")
                .build(),
            _gauges: gauges,
            registry,
            provider,
        }))
    }

    /// Counts a sign-in.
    pub fn sign_in(&self, method: &'static str, ok: bool) {
        self.sign_ins.add(
            1,
            &[
                KeyValue::new("method", method),
                KeyValue::new("outcome", if ok { "ok" } else { "refused" }),
            ],
        );
    }

    fn answered(&self, path: &str, status: u16, took: f64) {
        let kind = if path.starts_with("/api/") {
            "api"
        } else if path.starts_with("/auth/") {
            "auth"
        } else if path.starts_with("/static/") {
            "static"
        } else {
            "page"
        };
        self.requests.add(
            1,
            &[
                KeyValue::new("kind", kind),
                KeyValue::new("status", i64::from(status)),
            ],
        );
        self.duration.record(took, &[KeyValue::new("kind", kind)]);
    }
}

/// Middleware: counts and times every request.
pub async fn measure(
    req: ServiceRequest,
    next: actix_web::middleware::Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let path = req.path().to_owned();
    let metrics = req
        .app_data::<actix_web::web::Data<Arc<ConsoleMetrics>>>()
        .cloned();
    let res = next.call(req).await?;
    if let Some(m) = metrics {
        m.answered(
            &path,
            res.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
    }
    Ok(res)
}
