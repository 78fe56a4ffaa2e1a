//! Logs, traces and metrics.
//!
//! - Logs go to stderr: the human format on a terminal, one JSON object per line otherwise or
//!   with `NMC_LOG_FORMAT=json` ([`json`]), filtered by `NMC_LOG` (or `RUST_LOG`).
//! - Traces: one span per force batch; an OpenTelemetry tracer provider is always installed (so
//!   that batches have trace ids for logs and alerts), exporting over OTLP when the standard
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set. Sampling follows
//!   `OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG`, the protocol `OTEL_EXPORTER_OTLP_PROTOCOL`
//!   (`http/protobuf` by default, or `grpc`), the service `OTEL_SERVICE_NAME` (default `nmc`).
//! - Metrics ([`metrics`]): nodes only.

pub mod json;
pub mod metrics;
pub mod trace_context;

use std::sync::OnceLock;

use anyhow::{Context as _, Result};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Keeps the providers alive; shut them down on exit to flush what is buffered.
pub struct Telemetry {
    tracer: SdkTracerProvider,
}

/// Whether an OTLP endpoint is configured for `signal` (`TRACES`, `METRICS`).
pub fn otlp_wanted(signal: &str) -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
        format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"),
    ]
    .iter()
    .any(|k| std::env::var(k).is_ok_and(|v| !v.is_empty()))
}

/// The OpenTelemetry resource of this process: `OTEL_SERVICE_NAME` (default `nmc`) and
/// `OTEL_RESOURCE_ATTRIBUTES`, plus the node id as `service.instance.id` once it is known.
pub fn resource(node: Option<&str>) -> Resource {
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "nmc".into());
    let mut b = Resource::builder()
        .with_service_name(service)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ));
    if let Some(node) = node {
        b = b.with_attribute(opentelemetry::KeyValue::new(
            "service.instance.id",
            node.to_owned(),
        ));
    }
    b.build()
}

/// A small Tokio runtime on a thread of its own, for the gRPC (tonic) exporters: the SDK exports
/// from its own threads, and tonic's connections need a reactor that keeps running.
pub fn exporter_runtime() -> &'static tokio::runtime::Handle {
    static RT: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    RT.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("otel-export".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("building the exporter runtime");
                tx.send(rt.handle().clone()).expect("sending the handle");
                rt.block_on(std::future::pending::<()>());
            })
            .expect("starting the exporter thread");
        rx.recv().expect("the exporter runtime started")
    })
}

/// Whether OTLP should go over gRPC for `signal` (`OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL` or
/// `OTEL_EXPORTER_OTLP_PROTOCOL` is `grpc`).
pub fn otlp_grpc(signal: &str) -> bool {
    std::env::var(format!("OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"))
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .is_ok_and(|p| p.trim() == "grpc")
}

/// Installs the global subscriber (logs, and traces into OpenTelemetry). `default_filter`
/// applies when neither `NMC_LOG` nor `RUST_LOG` is set.
pub fn init(default_filter: &str) -> Result<Telemetry> {
    let filter = std::env::var("NMC_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default_filter.to_owned());
    let on_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let as_json = match std::env::var("NMC_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !on_terminal,
    };
    let text = (!as_json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            // Colours only on a terminal: logs collected from files and pods stay greppable.
            .with_ansi(on_terminal)
            .with_target(false)
            .with_filter(EnvFilter::new(&filter))
    });
    let json =
        as_json.then(|| json::JsonLogs::new(std::io::stderr).with_filter(EnvFilter::new(&filter)));

    let mut tracer = SdkTracerProvider::builder().with_resource(resource(None));
    if otlp_wanted("TRACES") {
        let exporter = if otlp_grpc("TRACES") {
            let _rt = exporter_runtime().enter();
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()
        } else {
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .build()
        }
        .context("building the OTLP span exporter")?;
        tracer = tracer.with_batch_exporter(exporter);
    }
    let tracer = tracer.build();
    // Only nmc's own spans become OpenTelemetry spans (one per force batch), not every span a
    // dependency opens.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer.tracer("nmc"))
        .with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target("nmc_node", tracing::Level::INFO),
        );
    tracing_subscriber::registry()
        .with(json::SpanFields)
        .with(text)
        .with(json)
        .with(otel)
        .try_init()?;
    // `try_init` bridges the `log` crate at its most verbose level: every trace record of sled
    // (several per write) then costs a dispatch. Only what the log filter keeps need cross (the
    // OpenTelemetry layer takes nmc's own spans, never `log` records).
    log::set_max_level(as_log(
        EnvFilter::new(&filter)
            .max_level_hint()
            .unwrap_or(tracing::level_filters::LevelFilter::TRACE),
    ));
    Ok(Telemetry { tracer })
}

/// The `log` level that lets through what `filter` keeps.
fn as_log(filter: tracing::level_filters::LevelFilter) -> log::LevelFilter {
    use tracing::level_filters::LevelFilter as T;
    match filter {
        T::OFF => log::LevelFilter::Off,
        T::ERROR => log::LevelFilter::Error,
        T::WARN => log::LevelFilter::Warn,
        T::INFO => log::LevelFilter::Info,
        T::DEBUG => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

impl Telemetry {
    /// Flushes and stops span export (blocking: call off the actix thread or at exit).
    pub fn shutdown(self) {
        let _ = self.tracer.shutdown();
    }
}
