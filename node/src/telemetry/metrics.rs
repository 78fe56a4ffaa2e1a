//! A node's metrics: OpenTelemetry instruments (meter `nmc`), read by a Prometheus registry for
//! `/metrics` and, when an OTLP endpoint is configured, pushed by a periodic OTLP reader.
//!
//! Counters and histograms are recorded per batch (never per event) by the code that knows the
//! fact; gauges are observed when a reader collects, from [`NodeStatus`] (what this node holds
//! and knows now), so that a force handed off disappears from them at once. Every name, unit and
//! label is listed in `docs/observability.md`; labels are bounded (forces, sources, levels,
//! reasons, and rules that fired), never values from events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use nmc_shared::dead_letter::DeadLetterReason;
use nmc_shared::{ForceId, Level, SourceKind};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, MeterProvider as _, ObservableGauge};
use opentelemetry_sdk::metrics::SdkMeterProvider;

use crate::config::Config;
use crate::status::NodeStatus;

/// What one batch did, per source and reason: what [`Metrics::batch`] records.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BatchStats {
    /// Per source (`None`: the subject named no source).
    pub sources: BTreeMap<Option<SourceKind>, SourceStats>,
    /// Dead letters per reason.
    pub dead: BTreeMap<DeadLetterReason, u64>,
    /// Alerts raised per level.
    pub alerts: BTreeMap<Level, u64>,
}

/// What one batch did to one source's events.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SourceStats {
    /// Events read.
    pub received: u64,
    /// Events applied to state.
    pub applied: u64,
    /// Of those, events older than the force's frontier.
    pub late: u64,
    /// Of those, events timed by an ingest-time field.
    pub ingest_time: u64,
    /// The newest event time applied (Unix ms; 0: none).
    pub newest_event_ms: i64,
    /// When `NMC_EVENTS_<force>` stored the newest event read (Unix ms; 0: none).
    pub newest_ingest_ms: i64,
}

/// How an alert's publish latency is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencyFrom {
    /// From when `NMC_EVENTS_<force>` stored the event that raised it.
    Ingest,
    /// From the event time of that event.
    EventTime,
}

/// How a force's lease changed on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseChange {
    /// Acquired (a start, a rebalance or a takeover).
    Acquired,
    /// Released by a hand-off.
    Released,
    /// Lost (superseded, or not renewed in time).
    Lost,
}

impl LeaseChange {
    fn as_str(self) -> &'static str {
        match self {
            LeaseChange::Acquired => "acquired",
            LeaseChange::Released => "released",
            LeaseChange::Lost => "lost",
        }
    }
}

/// The node's instruments.
pub struct Metrics {
    received: Counter<u64>,
    applied: Counter<u64>,
    dead_lettered: Counter<u64>,
    late: Counter<u64>,
    ingest_time: Counter<u64>,
    bad_values: Counter<u64>,
    batch_duration: Histogram<f64>,
    commit_duration: Histogram<f64>,
    commit_events: Histogram<f64>,
    alerts_raised: Counter<u64>,
    alerts_published: Counter<u64>,
    alerts_rule: Counter<u64>,
    publish_failures: Counter<u64>,
    alert_latency: Histogram<f64>,
    lease_changes: Counter<u64>,
    checkpoints: Counter<u64>,
    actor_restarts: Counter<u64>,
    rulepacks_refused: Counter<u64>,
    nats_reconnects: Counter<u64>,
    deliveries: Counter<u64>,
    delivery_latency: Histogram<f64>,
    escalations: Counter<u64>,
    _gauges: Vec<ObservableGauge<f64>>,
}

/// What [`install`] returns: the instruments, the registry `/metrics` serves, and the provider
/// to shut down at exit.
pub struct Installed {
    /// The instruments.
    pub metrics: Arc<Metrics>,
    /// The Prometheus registry the instruments are read into.
    pub registry: prometheus::Registry,
    /// The meter provider (flushes OTLP on shutdown).
    pub provider: SdkMeterProvider,
}

/// Builds the meter provider (Prometheus reader, and OTLP when configured) and the node's
/// instruments, whose gauges observe `status`.
pub fn install(cfg: &Config, status: Arc<NodeStatus>) -> Result<Installed> {
    let (registry, provider) = provider(Some(&cfg.node_id))?;
    let meter = provider.meter("nmc");
    let metrics = Arc::new(Metrics::new(&meter, cfg, status));
    Ok(Installed {
        metrics,
        registry,
        provider,
    })
}

/// A meter provider that `/metrics` reads (the registry) and that exports over OTLP when the
/// `OTEL_*` variables ask for it; `instance` is the `service.instance.id`.
pub fn provider(instance: Option<&str>) -> Result<(prometheus::Registry, SdkMeterProvider)> {
    let registry = prometheus::Registry::new();
    let prom = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .scope_info_enabled(false)
        .without_target_info()
        .build()
        .context("building the Prometheus reader")?;
    let mut provider = SdkMeterProvider::builder()
        .with_resource(super::resource(instance))
        .with_reader(prom);
    if super::otlp_wanted("METRICS") {
        let exporter = if super::otlp_grpc("METRICS") {
            let _rt = super::exporter_runtime().enter();
            opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .build()
        } else {
            opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .build()
        }
        .context("building the OTLP metric exporter")?;
        provider = provider.with_periodic_exporter(exporter);
    }
    Ok((registry, provider.build()))
}

fn force_kv(force: &ForceId) -> KeyValue {
    KeyValue::new("force", force.to_string())
}

fn source_kv(source: Option<SourceKind>) -> KeyValue {
    KeyValue::new("source", source.map_or("_unknown", SourceKind::as_str))
}

/// Buckets of batch durations, in seconds.
const BATCH_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets of alert latencies, in seconds: milliseconds from ingest, up to an hour from event
/// time (correlations wait for the allowed lateness).
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0,
];

impl Metrics {
    fn new(meter: &Meter, cfg: &Config, status: Arc<NodeStatus>) -> Metrics {
        let counter = |name: &'static str, unit: &'static str, what: &'static str| {
            meter
                .u64_counter(name)
                .with_unit(unit)
                .with_description(what)
                .build()
        };
        let gauges = gauges(meter, cfg, status);
        Metrics {
            received: counter(
                "nmc.events.received",
                "{event}",
                "Events read from NMC_EVENTS_<force> by the force's actor.",
            ),
            applied: counter(
                "nmc.events.applied",
                "{event}",
                "Events applied to the force's state.",
            ),
            dead_lettered: counter(
                "nmc.events.dead_lettered",
                "{event}",
                "Events dead-lettered, by reason.",
            ),
            late: counter(
                "nmc.events.late",
                "{event}",
                "Events older than the force's frontier, applied on arrival.",
            ),
            ingest_time: counter(
                "nmc.events.ingest_time",
                "{event}",
                "Events timed by an ingest-time field (@timestamp).",
            ),
            bad_values: counter(
                "nmc.correlation.bad_values",
                "{value}",
                "Values correlations could not use (non-finite numbers, places off the globe).",
            ),
            batch_duration: meter
                .f64_histogram("nmc.batch.duration")
                .with_unit("s")
                .with_description("One force batch: evaluate, dead letters, publish alerts.")
                .with_boundaries(BATCH_BUCKETS.to_vec())
                .build(),
            commit_duration: meter
                .f64_histogram("nmc.commit.duration")
                .with_unit("s")
                .with_description("One commit of a force's state and cursor to sled, with its flush.")
                .with_boundaries(BATCH_BUCKETS.to_vec())
                .build(),
            commit_events: meter
                .f64_histogram("nmc.commit.events")
                .with_unit("{event}")
                .with_description("Events one commit made durable (what a crash just before it would replay).")
                .with_boundaries(vec![1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0])
                .build(),
            alerts_raised: counter(
                "nmc.alerts.raised",
                "{alert}",
                "Alerts raised.",
            ),
            alerts_published: counter(
                "nmc.alerts.published",
                "{alert}",
                "Alerts acknowledged by NMC_ALERTS.",
            ),
            alerts_rule: counter(
                "nmc.alerts.rule",
                "{alert}",
                "Alerts by rule id, over all forces (rules that fired only).",
            ),
            publish_failures: counter(
                "nmc.alerts.publish_failures",
                "{failure}",
                "Outbox publishes that failed (retried from sled).",
            ),
            deliveries: counter(
                "nmc.notify.deliveries",
                "{delivery}",
                "Notification deliveries by channel and outcome (sent, failed, digested).",
            ),
            delivery_latency: meter
                .f64_histogram("nmc.notify.latency")
                .with_unit("s")
                .with_description("Alert raised (window end) to a provider accepting its message, first tier only.")
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build(),
            escalations: counter(
                "nmc.notify.escalations",
                "{escalation}",
                "Alerts escalated to the next tier, by reason (unacknowledged, unreached).",
            ),
            alert_latency: meter
                .f64_histogram("nmc.alert.latency")
                .with_unit("s")
                .with_description(
                    "Alert published minus the raising event's ingest time (from=ingest) or event time (from=event).",
                )
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build(),
            lease_changes: counter(
                "nmc.lease.changes",
                "{change}",
                "Force leases acquired, released (hand-off) or lost on this node.",
            ),
            checkpoints: counter(
                "nmc.checkpoints",
                "{checkpoint}",
                "Checkpoints written (outcome=ok) or failed (outcome=failed).",
            ),
            actor_restarts: counter(
                "nmc.actor.restarts",
                "{restart}",
                "Force actor restarts (panics, errors).",
            ),
            rulepacks_refused: counter(
                "nmc.rulepacks.refused",
                "{pack}",
                "Pushed rule packs this node refused (they do not compile here).",
            ),
            nats_reconnects: counter(
                "nmc.nats.reconnects",
                "{reconnect}",
                "NATS connections re-established.",
            ),
            _gauges: gauges,
        }
    }

    /// Records one batch of `force`: what `stats` says, `bad_values` new bad values, and its
    /// duration.
    pub fn batch(&self, force: &ForceId, stats: &BatchStats, bad_values: u64, took: Duration) {
        let f = force_kv(force);
        for (source, s) in &stats.sources {
            let attrs = [f.clone(), source_kv(*source)];
            let add = |c: &Counter<u64>, n: u64| {
                if n > 0 {
                    c.add(n, &attrs);
                }
            };
            add(&self.received, s.received);
            add(&self.applied, s.applied);
            add(&self.late, s.late);
            add(&self.ingest_time, s.ingest_time);
        }
        for (reason, n) in &stats.dead {
            self.dead_lettered(force.as_str(), *reason, *n);
        }
        for (level, n) in &stats.alerts {
            self.alerts_raised
                .add(*n, &[f.clone(), KeyValue::new("level", level.as_str())]);
        }
        if bad_values > 0 {
            self.bad_values.add(bad_values, std::slice::from_ref(&f));
        }
        self.batch_duration
            .record(took.as_secs_f64(), std::slice::from_ref(&f));
    }

    /// Counts `n` dead letters of `force` (a force id, or `_unknown`) for `reason`.
    pub fn dead_lettered(&self, force: &str, reason: DeadLetterReason, n: u64) {
        self.dead_lettered.add(
            n,
            &[
                KeyValue::new("force", force.to_owned()),
                KeyValue::new("reason", reason.as_str()),
            ],
        );
    }

    /// Counts an alert of `rule` (id) at `level` raised.
    pub fn alert_of_rule(&self, rule: &str, level: Level) {
        self.alerts_rule.add(
            1,
            &[
                KeyValue::new("rule", rule.to_owned()),
                KeyValue::new("level", level.as_str()),
            ],
        );
    }

    /// Counts `n` alerts of `force` at `level` acknowledged by `NMC_ALERTS`.
    pub fn published(&self, force: &ForceId, level: Level, n: u64) {
        self.alerts_published.add(
            n,
            &[force_kv(force), KeyValue::new("level", level.as_str())],
        );
    }

    /// Records an alert's publish latency.
    pub fn latency(&self, from: LatencyFrom, secs: f64) {
        let from = match from {
            LatencyFrom::Ingest => "ingest",
            LatencyFrom::EventTime => "event",
        };
        self.alert_latency
            .record(secs.max(0.0), &[KeyValue::new("from", from)]);
    }

    /// Records one commit of `force`: the events it made durable and how long it took.
    pub fn commit(&self, force: &ForceId, events: usize, took: Duration) {
        let f = [force_kv(force)];
        self.commit_duration.record(took.as_secs_f64(), &f);
        self.commit_events.record(events as f64, &f);
    }

    /// Counts a failed alert publish of `force`.
    pub fn publish_failed(&self, force: &ForceId) {
        self.publish_failures.add(1, &[force_kv(force)]);
    }

    /// Counts a lease change of `force`.
    pub fn lease(&self, force: &ForceId, change: LeaseChange) {
        self.lease_changes.add(
            1,
            &[force_kv(force), KeyValue::new("change", change.as_str())],
        );
    }

    /// Counts a checkpoint of `force`, written or failed.
    pub fn checkpoint(&self, force: &ForceId, ok: bool) {
        self.checkpoints.add(
            1,
            &[
                force_kv(force),
                KeyValue::new("outcome", if ok { "ok" } else { "failed" }),
            ],
        );
    }

    /// Counts a restart of `force`'s actor.
    pub fn actor_restart(&self, force: &ForceId) {
        self.actor_restarts.add(1, &[force_kv(force)]);
    }

    /// Counts a refused rule pack.
    pub fn rulepack_refused(&self) {
        self.rulepacks_refused.add(1, &[]);
    }

    /// Counts a delivery of `force`'s alert over `channel` with `outcome`.
    pub fn delivery(&self, force: &ForceId, channel: &'static str, outcome: &'static str) {
        self.deliveries.add(
            1,
            &[
                force_kv(force),
                KeyValue::new("channel", channel),
                KeyValue::new("outcome", outcome),
            ],
        );
    }

    /// Records how long after it was raised an alert's first message was accepted.
    pub fn delivery_latency(&self, secs: f64) {
        self.delivery_latency.record(secs.max(0.0), &[]);
    }

    /// Counts an escalation of `force`'s alert to the next tier.
    pub fn escalation(&self, force: &ForceId, reason: &'static str) {
        self.escalations
            .add(1, &[force_kv(force), KeyValue::new("reason", reason)]);
    }

    /// Counts a NATS reconnection.
    pub fn nats_reconnect(&self) {
        self.nats_reconnects.add(1, &[]);
    }
}

/// What a gauge reports when a reader collects: called with the node's status and a sink for
/// (value, attributes).
type Observe = Box<dyn Fn(&NodeStatus, &mut dyn FnMut(f64, &[KeyValue])) + Send + Sync>;

/// Seconds since `t`.
fn secs_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// The gauges, observed from `status` whenever a reader collects.
fn gauges(meter: &Meter, cfg: &Config, status: Arc<NodeStatus>) -> Vec<ObservableGauge<f64>> {
    let mut out = Vec::new();
    let node = status.node.clone();
    let mut gauge =
        |name: &'static str, unit: &'static str, what: &'static str, observe: Observe| {
            let st = status.clone();
            out.push(
                meter
                    .f64_observable_gauge(name)
                    .with_unit(unit)
                    .with_description(what)
                    .with_callback(move |o| observe(&st, &mut |v, attrs| o.observe(v, attrs)))
                    .build(),
            );
        };
    gauge(
        "nmc.force.lag",
        "{event}",
        "Messages of the force in NMC_EVENTS_<force> after its cursor.",
        Box::new(|st, o| {
            st.each_held(|f, c| o(c.status().lag as f64, &[force_kv(f)]));
        }),
    );
    gauge(
        "nmc.force.lag_age",
        "s",
        "Time since the force last had no lag (0 when caught up).",
        Box::new(|st, o| {
            st.each_held(|f, c| {
                let age = c.stats().lagging_since.map_or(0.0, secs_since);
                o(age, &[force_kv(f)]);
            });
        }),
    );
    gauge(
        "nmc.events.pending",
        "{event}",
        "Events waiting in the force's reorder buffer.",
        Box::new(|st, o| {
            st.each_held(|f, c| o(c.status().pending as f64, &[force_kv(f)]));
        }),
    );
    gauge(
        "nmc.outbox.pending",
        "{alert}",
        "Alerts raised and not yet acknowledged by NMC_ALERTS.",
        Box::new(|st, o| {
            st.each_held(|f, c| o(c.stats().outbox as f64, &[force_kv(f)]));
        }),
    );
    let owner = node.clone();
    gauge(
        "nmc.force.owned",
        "{force}",
        "1 per force this node owns.",
        Box::new(move |st, o| {
            st.each_held(|f, _| o(1.0, &[force_kv(f), KeyValue::new("node", owner.clone())]));
        }),
    );
    let owner = node.clone();
    gauge(
        "nmc.force.epoch",
        "{epoch}",
        "The lease epoch the owner runs the force under.",
        Box::new(move |st, o| {
            st.each_held(|f, c| {
                o(
                    c.epoch() as f64,
                    &[force_kv(f), KeyValue::new("node", owner.clone())],
                )
            });
        }),
    );
    gauge(
        "nmc.force.onboarded",
        "{force}",
        "1 per onboarded force (the cluster's list, as this node sees it).",
        Box::new(|st, o| {
            for (f, r) in st.forces.borrow().iter() {
                o(
                    1.0,
                    &[force_kv(f), KeyValue::new("phase", r.phase.as_str())],
                );
            }
        }),
    );
    gauge(
        "nmc.checkpoint.age",
        "s",
        "Time since this node last wrote the force's checkpoint (since it acquired it, if never).",
        Box::new(|st, o| {
            st.each_held(|f, c| {
                let s = c.stats();
                o(
                    secs_since(s.checkpointed_at.unwrap_or(s.acquired_at)),
                    &[force_kv(f)],
                );
            });
        }),
    );
    gauge(
        "nmc.store.size",
        "By",
        "Bytes of the force's sled state (keys and values) at its last checkpoint.",
        Box::new(|st, o| {
            st.each_held(|f, c| o(c.stats().store_bytes as f64, &[force_kv(f)]));
        }),
    );
    gauge(
        "nmc.feed.last_event_time",
        "s",
        "Event time of the feed's newest event (Unix seconds).",
        Box::new(|st, o| {
            st.each_held(|f, c| {
                for (s, feed) in c.stats().feeds {
                    o(
                        feed.event_ms as f64 / 1000.0,
                        &[force_kv(f), source_kv(Some(s))],
                    );
                }
            });
        }),
    );
    gauge(
        "nmc.feed.last_ingest_time",
        "s",
        "When NMC_EVENTS_<force> stored the feed's newest event (Unix seconds).",
        Box::new(|st, o| {
            st.each_held(|f, c| {
                for (s, feed) in c.stats().feeds {
                    o(
                        feed.ingest_ms as f64 / 1000.0,
                        &[force_kv(f), source_kv(Some(s))],
                    );
                }
            });
        }),
    );
    let silence = cfg.clone();
    gauge(
        "nmc.feed.silence_threshold",
        "s",
        "How long the feed may be silent before it counts as silent (feed_silence_secs).",
        Box::new(move |st, o| {
            st.each_held(|f, c| {
                for s in c.stats().feeds.keys() {
                    o(
                        silence.silence_threshold_secs(*s) as f64,
                        &[force_kv(f), source_kv(Some(*s))],
                    );
                }
            });
        }),
    );
    gauge(
        "nmc.rulepack.info",
        "{pack}",
        "1 for the rule pack this node runs.",
        Box::new(|st, o| {
            o(
                1.0,
                &[KeyValue::new("version", st.rules.borrow().version.clone())],
            );
        }),
    );
    gauge(
        "nmc.rules.loaded",
        "{rule}",
        "Rules in the running pack, by kind.",
        Box::new(|st, o| {
            let pack = st.rules.borrow().rules.clone();
            o(
                pack.rules().len() as f64,
                &[KeyValue::new("kind", "detection")],
            );
            o(
                pack.correlations().len() as f64,
                &[KeyValue::new("kind", "correlation")],
            );
        }),
    );
    gauge(
        "nmc.nats.connected",
        "{state}",
        "1 while connected to NATS.",
        Box::new(|st, o| o(f64::from(u8::from(st.nats_connected())), &[])),
    );
    gauge(
        "nmc.triage.backlog",
        "{event}",
        "Events waiting for triage (the shared consumers' pending counts over the streams of forces not onboarded).",
        Box::new(|st, o| o(st.triage_backlog() as f64, &[])),
    );
    let me = node;
    gauge(
        "nmc.node.ready",
        "{state}",
        "1 while /readyz would answer ready.",
        Box::new(move |st, o| {
            o(
                f64::from(u8::from(st.ready())),
                &[KeyValue::new("node", me.clone())],
            )
        }),
    );
    out
}
