//! `nmc bench`: the load generator. Publishes a realistic mix of generated events across forces
//! to a running node: Entra ID sign-ins, Microsoft 365 audit and AWS CloudTrail records (`--mix`,
//! by default 50/30/20 percent of each force's events), each force's sources interleaved in
//! event-time order on their own subjects, with probe sign-ins that the bench rule
//! (`deploy/rules/bench/`) turns into alerts, and reports one JSON object.
//!
//! The last event of every force is a probe, and a force is processed in stream order, so when
//! every probe has alerted, every event has been applied.
//!
//! Phases: `all` (default) publishes while the node runs (as fast as it can, or at `--rate`)
//! and reports end-to-end events/s, event-to-alert latency, and the publish-only rate of the
//! same run as the baseline. `publish` only publishes (into a stopped node's backlog); `drain`
//! then waits, from its own start, for all probe alerts: started together with the node, it
//! measures the node's processing rate alone. `floor` reads the events streams of the forces one
//! after the other with a bare ordered consumer that only counts the messages: the rate of one
//! reader, the JetStream floor a drain is compared with. `force-floor` reads them as a node does,
//! one ordered consumer per force's stream, all at once, only counting.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use async_nats::jetstream::{self, consumer::DeliverPolicy};
use bytes::Bytes;
use futures::StreamExt;
use nmc_shared::subject::{ALERTS_ALL, ALERTS_STREAM};
use nmc_shared::{ForceId, SourceKind, subject};
use serde_json::json;

use super::NatsArgs;
use crate::bus::{self, Pipelined};
use crate::synth::{Mix, Scenario, mixed, signin};

/// App name the bench rule matches.
pub const PROBE_APP: &str = "nmc-bench-probe";

/// The default `--mix`: percent of each force's events by source.
pub const DEFAULT_MIX: &str = "entra_signin=50,m365_audit=30,aws_cloudtrail=20";

/// Which part of the benchmark to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    /// Publish to a running node and wait for every probe alert.
    All,
    /// Publish only.
    Publish,
    /// Wait for every probe alert of a backlog published before (same `--events`, `--forces`
    /// and `--probe-every`), timing the node from its first alert to the last probe alert.
    Drain,
    /// Read every message of the events streams of `--forces`, one stream after the other, with
    /// a bare ordered consumer, and count them.
    Floor,
    /// Read the events streams of `--forces` with a bare ordered consumer each, all at once (as
    /// a node reads them), and count them.
    ForceFloor,
}

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
    /// Which part to run.
    #[arg(long, value_enum, default_value = "all")]
    phase: Phase,
    /// Publish at this many events/s (0: as fast as the server acknowledges).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Percent of each force's events by source (entra_signin, m365_audit, aws_cloudtrail),
    /// summing to 100; probes are Entra sign-ins whatever the mix.
    #[arg(long, default_value = DEFAULT_MIX)]
    mix: Mix,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// One force's share of the bench: `events` ordinary events of 5,000 users over eight hours,
/// no attack (also what `examples/evaluate_mix.rs` evaluates).
pub fn scenario(force: &ForceId, events: usize) -> Scenario {
    Scenario {
        force: force.clone(),
        users: 5_000,
        normal: events,
        span_ms: 8 * 3_600_000,
        spray: false,
        brute_force: false,
        legacy: 0,
    }
}

/// The messages to publish, forces interleaved round-robin as concurrent collectors would:
/// (subject, payload, is probe). Each force's events are its `--mix` of sources in event-time
/// order, every `--probe-every`th and the last replaced by a probe sign-in at the same time.
/// Pre-serialised so that generation does not slow publishing.
fn plan(args: &BenchArgs) -> Result<Vec<(String, Bytes, bool)>> {
    let per_force = args.events / args.forces.len();
    let start_ms = nmc_shared::time::parse_timestamp("2026-11-02T08:00:00Z")?;
    let mut streams = Vec::new();
    for (fi, force) in args.forces.iter().enumerate() {
        let s = scenario(force, per_force);
        let mut evs: Vec<(String, Bytes, bool)> = Vec::with_capacity(per_force);
        for (i, (t, kind, e)) in mixed(&s, &args.mix, 42 + fi as u64, start_ms)
            .into_iter()
            .enumerate()
        {
            let probe = (i + 1) % args.probe_every.max(1) == 0 || i + 1 == per_force;
            let (kind, e) = if probe {
                let city = ("London", 51.5, -0.1);
                let e = signin(
                    t,
                    i as u64,
                    "probe@nmc.invalid",
                    "127.0.0.1",
                    PROBE_APP,
                    "Browser",
                    0,
                    city,
                    "GB",
                );
                (SourceKind::EntraSignin, e)
            } else {
                (kind, e)
            };
            let payload = Bytes::from(serde_json::to_vec(&e)?);
            evs.push((subject::events(force, kind), payload, probe));
        }
        debug_assert_eq!(
            evs.iter().filter(|e| e.2).count(),
            probes_per_force(per_force, args.probe_every)
        );
        streams.push(evs);
    }
    let longest = streams.iter().map(Vec::len).max().unwrap_or(0);
    let mut streams: Vec<_> = streams.into_iter().map(Vec::into_iter).collect();
    let mut plan = Vec::with_capacity(args.events);
    for _ in 0..longest {
        plan.extend(streams.iter_mut().filter_map(Iterator::next));
    }
    Ok(plan)
}

/// Arrival time of each probe alert, by probe.
type Arrivals = Rc<RefCell<HashMap<ProbeKey, Instant>>>;

/// A probe: its force and its sequence in the force's events stream (sequences are per stream).
type ProbeKey = (String, u64);

/// Probes among `per_force` events of a force, one every `every` and the last.
fn probes_per_force(per_force: usize, every: usize) -> usize {
    let every = every.max(1);
    per_force.div_ceil(every)
}

/// Follows the alert stream and records probe alerts until `probes` have arrived, and when
/// the first alert of any kind arrived.
async fn listen(
    js: &jetstream::Context,
    from_start: bool,
    probes: usize,
) -> Result<(
    Arrivals,
    Rc<std::cell::OnceCell<Instant>>,
    tokio::task::JoinHandle<()>,
)> {
    let arrivals: Arrivals = Rc::default();
    let first: Rc<std::cell::OnceCell<Instant>> = Rc::default();
    let stream = crate::bus::provision::open_stream(js, ALERTS_STREAM).await?;
    let deliver = if from_start {
        DeliverPolicy::All
    } else {
        DeliverPolicy::New
    };
    let mut alerts = bus::ordered_reader(&stream, ALERTS_ALL.to_owned(), deliver, false).await?;
    let (arr, first_alert) = (arrivals.clone(), first.clone());
    let task = tokio::task::spawn_local(async move {
        while let Some(Ok(m)) = alerts.next().await {
            let now = Instant::now();
            let _ = first_alert.set(now);
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&m.payload) else {
                continue;
            };
            let probe = v["rule"]["title"]
                .as_str()
                .is_some_and(|t| t.contains("bench probe"));
            if let (true, Some(force), Some(seq)) =
                (probe, v["force"].as_str(), v["evidence"][0]["seq"].as_u64())
            {
                let mut a = arr.borrow_mut();
                a.insert((force.to_owned(), seq), now);
                if a.len() >= probes {
                    break;
                }
            }
        }
    });
    Ok((arrivals, first, task))
}

/// Runs `nmc bench`.
pub async fn run(args: BenchArgs) -> Result<()> {
    if args.forces.is_empty() || args.events == 0 {
        bail!("need at least one force and one event");
    }
    let started = Instant::now();
    let client = args.nats.connect("nmc bench").await?;
    let js = jetstream::new(client);
    if args.phase == Phase::Floor {
        return floor(&js, &args.forces, Duration::from_secs(args.timeout)).await;
    }
    if args.phase == Phase::ForceFloor {
        return force_floor(&js, &args.forces, Duration::from_secs(args.timeout)).await;
    }
    let deadline = Duration::from_secs(args.timeout);

    if args.phase == Phase::Drain {
        // Not generated again: this command runs beside the node it measures.
        let per_force = args.events / args.forces.len();
        let total = per_force * args.forces.len();
        let probes = probes_per_force(per_force, args.probe_every) * args.forces.len();
        let (arrivals, first, task) = listen(&js, true, probes).await?;
        let _ = tokio::time::timeout(deadline, task).await;
        let arrivals = arrivals.borrow();
        let last = arrivals.values().max();
        // From the node's first alert (it is processing: start-up is not drain time, and is
        // measured as recovery) to the last probe alert (the backlog is done).
        let secs = first
            .get()
            .zip(last)
            .map(|(f, l)| l.duration_since(*f).as_secs_f64());
        println!(
            "{}",
            json!({
                "phase": "drain",
                "events": total,
                "forces": args.forces.len(),
                "probe_alerts": arrivals.len(),
                "complete": arrivals.len() == probes,
                "drain_seconds": secs,
                "drain_events_per_sec": secs.map(|s| total as f64 / s),
                "wall_seconds": last.map(|l| l.duration_since(started).as_secs_f64()),
            })
        );
        if arrivals.len() != probes {
            bail!(
                "only {} of {probes} probe alerts arrived within {}s",
                arrivals.len(),
                args.timeout
            );
        }
        return Ok(());
    }

    let plan = plan(&args)?;
    let total = plan.len();
    let probes = plan.iter().filter(|p| p.2).count();
    let listener = match args.phase {
        Phase::All => Some(listen(&js, false, probes).await?),
        _ => None,
    };
    let started = Instant::now();
    let mut sent_at: HashMap<ProbeKey, Instant> = HashMap::new();
    let mut pipe = Pipelined::new(js, args.max_in_flight);
    let mut done = |ack: jetstream::publish::PublishAck, tag: Option<Instant>| {
        if let Some(t) = tag {
            let force = ack
                .stream
                .strip_prefix(subject::EVENTS_STREAM_PREFIX)
                .unwrap_or(&ack.stream);
            sent_at.insert((force.to_owned(), ack.sequence), t);
        }
    };
    for (i, (subj, payload, probe)) in plan.into_iter().enumerate() {
        if args.rate > 0 && i % 64 == 0 {
            // Paced: message i is due i/rate seconds after the start.
            let due = started + Duration::from_secs_f64(i as f64 / args.rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let tag = probe.then(Instant::now);
        pipe.send(subj, payload, tag, &mut done).await?;
    }
    pipe.finish(&mut done).await?;
    let published = started.elapsed().as_secs_f64();
    let Some((arrivals, _, task)) = listener else {
        println!(
            "{}",
            json!({
                "phase": "publish",
                "events": total,
                "publish_seconds": published,
                "publish_events_per_sec": total as f64 / published,
            })
        );
        return Ok(());
    };

    let _ = tokio::time::timeout(deadline.saturating_sub(started.elapsed()), task).await;
    let arrivals = arrivals.borrow();
    let last = arrivals.values().max().copied();
    let mut lat: Vec<f64> = sent_at
        .iter()
        .filter_map(|(key, t)| {
            arrivals
                .get(key)
                .map(|a| a.duration_since(*t).as_secs_f64() * 1e3)
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    let e2e = last.map(|l| l.duration_since(started).as_secs_f64());
    let report = json!({
        "phase": "all",
        "events": total,
        "forces": args.forces.len(),
        "probes": probes,
        "probe_alerts": arrivals.len(),
        "complete": arrivals.len() == probes,
        "publish_seconds": published,
        "publish_events_per_sec": total as f64 / published,
        "end_to_end_seconds": e2e,
        "end_to_end_events_per_sec": e2e.map(|s| total as f64 / s),
        "ratio_to_publish_baseline": e2e.map(|s| published / s),
        "rate": args.rate,
        "latency_ms": {
            "p50": percentile(&lat, 0.50),
            "p99": percentile(&lat, 0.99),
            "p999": percentile(&lat, 0.999),
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

/// The `floor` phase: reads every message the events streams of `forces` hold now, one stream
/// after the other, with an ordered consumer that only counts them, and reports the rate: the
/// rate of one bare reader.
async fn floor(js: &jetstream::Context, forces: &[ForceId], timeout: Duration) -> Result<()> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut read = 0;
    for force in forces {
        read += read_stream(js, force, deadline).await?;
    }
    if read == 0 {
        bail!("the events streams of --forces are empty: run `nmc bench --phase publish` first");
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "phase": "floor",
            "events": read,
            "floor_seconds": secs,
            "floor_events_per_sec": read as f64 / secs,
        })
    );
    Ok(())
}

/// Reads every message `force`'s events stream holds now with a bare ordered consumer that only
/// counts them, before `deadline`; returns how many.
async fn read_stream(
    js: &jetstream::Context,
    force: &ForceId,
    deadline: tokio::time::Instant,
) -> Result<u64> {
    let name = subject::events_stream(force);
    let mut stream = crate::bus::provision::open_stream(js, &name).await?;
    let total = stream.info().await?.state.messages;
    if total == 0 {
        return Ok(0);
    }
    let mut reader = bus::ordered_reader(&stream, String::new(), DeliverPolicy::All, false).await?;
    let mut read = 0u64;
    while read < total {
        match tokio::time::timeout_at(deadline, reader.next()).await {
            Ok(Some(Ok(_))) => read += 1,
            Ok(Some(Err(e))) => bail!("reading {name}: {e}"),
            Ok(None) => bail!("the reader of {name} ended"),
            Err(_) => bail!("only {read} of the {total} messages of {name} read in time"),
        }
    }
    Ok(read)
}

/// The `force-floor` phase: reads the events streams of `forces` with one bare ordered consumer
/// each, all at once, as a node's force actors read them, counting only; reports the rate.
async fn force_floor(js: &jetstream::Context, forces: &[ForceId], timeout: Duration) -> Result<()> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let counts =
        futures::future::try_join_all(forces.iter().map(|f| read_stream(js, f, deadline))).await?;
    let read: u64 = counts.iter().sum();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "phase": "force-floor",
            "events": read,
            "forces": forces.len(),
            "force_floor_seconds": secs,
            "force_floor_events_per_sec": read as f64 / secs,
        })
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use nmc_shared::event::Event;

    use super::*;
    use crate::cli::{Cli, Cmd};

    fn args(cli: &[&str]) -> BenchArgs {
        let cli = [&["nmc", "bench"], cli].concat();
        match Cli::try_parse_from(cli).unwrap().cmd {
            Cmd::Bench(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn plan_has_the_probes_and_each_force_in_event_time_order() {
        let a = args(&[
            "--forces",
            "kent,essex",
            "--events",
            "10001",
            "--probe-every",
            "333",
        ]);
        assert_eq!(a.mix, DEFAULT_MIX.parse().unwrap());
        let plan = plan(&a).unwrap();
        let per_force = 10_001 / 2;
        assert_eq!(plan.len(), 2 * per_force);
        for force in ["kent", "essex"] {
            let mine: Vec<_> = plan
                .iter()
                .filter(|m| m.0.starts_with(&format!("nmc.events.{force}.")))
                .collect();
            assert_eq!(mine.len(), per_force);
            let probes = mine.iter().filter(|m| m.2).count();
            assert_eq!(probes, probes_per_force(per_force, 333));
            assert!(mine.last().unwrap().2, "the last event is a probe");
            let mut last = 0;
            for (subject, payload, probe) in mine {
                let kind: SourceKind = subject.rsplit('.').next().unwrap().parse().unwrap();
                let e = Event::parse(kind, payload, 256 * 1024).unwrap();
                assert!(e.time_ms >= last, "{subject}");
                last = e.time_ms;
                let app = e.body["properties"]["appDisplayName"].as_str();
                assert_eq!(*probe, app == Some(PROBE_APP), "{subject}");
            }
        }
        for kind in crate::synth::MIXABLE {
            assert!(plan.iter().any(|m| m.0.ends_with(kind.as_str())), "{kind}");
        }
    }

    #[test]
    fn mix_is_checked_by_the_command_line() {
        let cli = [
            "nmc",
            "bench",
            "--forces",
            "kent",
            "--mix",
            "entra_signin=90",
        ];
        let e = Cli::try_parse_from(cli).unwrap_err().to_string();
        assert!(e.contains("--mix") && e.contains("sum to 90"), "{e}");
    }
}
