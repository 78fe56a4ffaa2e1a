//! `nmc bench`: the load generator. Publishes generated sign-in events across forces to a running
//! node, interleaved with probe events that the bench rule (`deploy/rules/bench/`) turns into
//! alerts, and reports one JSON object: end-to-end events/s, event-to-alert latency, and the
//! publish-only rate of the same run as the baseline to compare against.
//!
//! The last event of every force is a probe, and a force is processed in stream order, so when
//! every probe has alerted, every event has been applied.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull};
use bytes::Bytes;
use futures::StreamExt;
use nmc_shared::subject::{ALERTS_ALL, ALERTS_STREAM};
use nmc_shared::{ForceId, SourceKind, subject};
use serde_json::json;

use super::NatsArgs;
use crate::bus::{self, Pipelined};
use crate::synth::{Scenario, generate, signin};

/// App name the bench rule matches.
pub const PROBE_APP: &str = "nmc-bench-probe";

/// Arguments of `nmc bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Forces to load (comma-separated); the node must run them with the bench rule loaded.
    #[arg(long, value_delimiter = ',', required = true)]
    forces: Vec<ForceId>,
    /// Total events across all forces (probes included).
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// One probe every this many events per force.
    #[arg(long, default_value_t = 500)]
    probe_every: usize,
    /// Most unacknowledged publishes.
    #[arg(long, default_value_t = 4096)]
    max_in_flight: usize,
    /// Give up waiting for alerts after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Runs `nmc bench`.
pub async fn run(args: BenchArgs) -> Result<()> {
    if args.forces.is_empty() || args.events == 0 {
        bail!("need at least one force and one event");
    }
    let client = bus::connect(&args.nats.url, "nmc bench").await?;
    let js = jetstream::new(client);

    // Pre-generate and serialise so that generation does not slow publishing.
    let per_force = args.events / args.forces.len();
    let start_ms = nmc_shared::time::parse_timestamp("2026-11-02T08:00:00Z")?;
    let mut plan: Vec<(String, Bytes, bool)> = Vec::with_capacity(args.events);
    let mut streams = Vec::new();
    for (fi, force) in args.forces.iter().enumerate() {
        let s = Scenario {
            force: force.clone(),
            users: 5_000,
            normal: per_force,
            span_ms: 8 * 3_600_000,
            spray: false,
            brute_force: false,
            legacy: 0,
        };
        let mut evs: Vec<(Bytes, bool)> = Vec::with_capacity(per_force);
        for (i, e) in generate(&s, 42 + fi as u64, start_ms)
            .into_iter()
            .enumerate()
        {
            let probe = (i + 1) % args.probe_every == 0 || i + 1 == per_force;
            let e = if probe {
                let t = nmc_shared::event::extract_time(SourceKind::EntraSignin, &e)?;
                signin(
                    t,
                    i as u64,
                    "probe@nmc.invalid",
                    "127.0.0.1",
                    PROBE_APP,
                    "Browser",
                    0,
                    ("London", 51.5, -0.1),
                    "GB",
                )
            } else {
                e
            };
            evs.push((Bytes::from(serde_json::to_vec(&e)?), probe));
        }
        streams.push((subject::events(force, SourceKind::EntraSignin), evs));
    }
    // Interleave forces round-robin, as concurrent collectors would.
    let longest = streams.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    for i in 0..longest {
        for (subj, evs) in &streams {
            if let Some((b, p)) = evs.get(i) {
                plan.push((subj.clone(), b.clone(), *p));
            }
        }
    }
    let probes = plan.iter().filter(|p| p.2).count();

    // Listen for alerts before publishing.
    let arrivals: Rc<RefCell<HashMap<u64, Instant>>> = Rc::default();
    let mut alerts = js
        .get_stream(ALERTS_STREAM)
        .await
        .context("NMC_ALERTS not found: start a node first")?
        .create_consumer(pull::OrderedConfig {
            filter_subject: ALERTS_ALL.to_owned(),
            deliver_policy: DeliverPolicy::New,
            ..Default::default()
        })
        .await?
        .messages()
        .await?;
    let arr = arrivals.clone();
    let listener = tokio::task::spawn_local(async move {
        while let Some(Ok(m)) = alerts.next().await {
            let now = Instant::now();
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&m.payload) else {
                continue;
            };
            let probe = v["rule"]["title"]
                .as_str()
                .is_some_and(|t| t.contains("bench probe"));
            if let (true, Some(seq)) = (probe, v["evidence"][0]["seq"].as_u64()) {
                let mut a = arr.borrow_mut();
                a.insert(seq, now);
                if a.len() >= probes {
                    break;
                }
            }
        }
    });

    let started = Instant::now();
    let mut sent_at: HashMap<u64, Instant> = HashMap::new();
    let mut pipe = Pipelined::new(js, args.max_in_flight);
    let mut done = |ack: jetstream::publish::PublishAck, tag: Option<Instant>| {
        if let Some(t) = tag {
            sent_at.insert(ack.sequence, t);
        }
    };
    for (subj, payload, probe) in plan {
        let tag = probe.then(Instant::now);
        pipe.send(subj, payload, tag, &mut done).await?;
    }
    pipe.finish(&mut done).await?;
    let published = started.elapsed();

    let deadline = Duration::from_secs(args.timeout);
    let _ = tokio::time::timeout(deadline.saturating_sub(started.elapsed()), listener).await;
    let arrivals = arrivals.borrow();
    let last = arrivals.values().max().copied();
    let mut lat: Vec<f64> = sent_at
        .iter()
        .filter_map(|(seq, t)| {
            arrivals
                .get(seq)
                .map(|a| a.duration_since(*t).as_secs_f64() * 1e3)
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    let total = args.forces.len() * per_force;
    let e2e = last.map(|l| l.duration_since(started).as_secs_f64());
    let report = json!({
        "events": total,
        "forces": args.forces.len(),
        "probes": probes,
        "probe_alerts": arrivals.len(),
        "complete": arrivals.len() == probes,
        "publish_seconds": published.as_secs_f64(),
        "publish_events_per_sec": total as f64 / published.as_secs_f64(),
        "end_to_end_seconds": e2e,
        "end_to_end_events_per_sec": e2e.map(|s| total as f64 / s),
        "ratio_to_publish_baseline": e2e.map(|s| published.as_secs_f64() / s),
        "latency_ms": {
            "p50": percentile(&lat, 0.50),
            "p99": percentile(&lat, 0.99),
            "max": lat.last().copied(),
            "samples": lat.len(),
        },
    });
    println!("{report}");
    if arrivals.len() != probes {
        bail!(
            "only {} of {probes} probe alerts arrived within {}s",
            arrivals.len(),
            args.timeout
        );
    }
    Ok(())
}
