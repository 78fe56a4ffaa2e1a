//! The node's per-event work without NATS or sled: `nmc bench`'s mix of Entra sign-ins,
//! Microsoft 365 audit and CloudTrail records, evaluated in batches by the force worker's own
//! `force::batch::evaluate` against the rules of `deploy/bench/node.sh`, with each batch's state
//! changes taken as a commit takes them.
//!
//! Deterministic, so that two builds can be compared by instruction count, which this VM's
//! noisy clock cannot give (docs/benchmarks.md):
//!
//! ```text
//! cargo build --release --example evaluate_mix
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
//!     target/release/examples/evaluate_mix 4 5000
//! ```
//!
//! Arguments: forces (4) and events per force (5000). It prints what it evaluated as JSON.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use bytes::Bytes;
use nmc_node::cli::bench::{DEFAULT_MIX, scenario};
use nmc_node::force::batch::{EvalSettings, Outcome, Raw, evaluate};
use nmc_node::synth::{Mix, mixed};
use nmc_shared::correlate::ForceState;
use nmc_shared::onboarding::OnboardingPhase;
use nmc_shared::{ForceId, force, subject};

/// The node's allocator (`node/src/main.rs`): allocation is a good part of the work measured.
#[global_allocator]
static ALLOCATOR: nmc_node::allocator::Mimalloc = nmc_node::allocator::Mimalloc;

/// Events per batch, as a worker with a backlog reads them.
const BATCH: usize = 256;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let forces: usize = args.next().map_or(Ok(4), |a| a.parse())?;
    let per_force: usize = args.next().map_or(Ok(5000), |a| a.parse())?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dirs = [
        root.join("deploy/rules/identity"),
        root.join("deploy/rules/bench"),
        root.join("../shared/datasets/sigma/rules/cloud"),
    ];
    let (rules, broken) = nmc_node::rules::load(&dirs).context("loading the bench rules")?;
    let mix: Mix = DEFAULT_MIX.parse().map_err(anyhow::Error::msg)?;
    let start_ms = nmc_shared::time::parse_timestamp("2026-11-02T08:00:00Z")?;
    let settings = EvalSettings {
        node: "bench".into(),
        epoch: 1,
        rule_pack: "local".into(),
        phase: OnboardingPhase::Cloud,
        max_event_bytes: 1 << 20,
        max_attempts: 3,
        panic_field: None,
        max_future_ms: 0,
        max_past_ms: 0,
        max_header_bytes: 64 * 1024,
        now_ms: 0,
    };
    let lateness = nmc_node::config::Config::default().lateness_ms();
    let (mut events, mut applied, mut alerts, mut dead) = (0, 0, 0, 0);
    let mut taken = std::time::Duration::ZERO;
    for (fi, id) in force::registered().take(forces).enumerate() {
        let raws = raws(&id, &mix, per_force, 42 + fi as u64, start_ms);
        let mut state = ForceState::new().with_lateness(lateness);
        let began = Instant::now();
        for batch in raws.chunks(BATCH) {
            match evaluate(&id, &rules, &mut state, batch, None, &settings) {
                Outcome::Done(done) => {
                    applied += done.applied;
                    alerts += done.raised.len();
                    dead += done.dead.len();
                }
                Outcome::Panicked { seq, message } => {
                    anyhow::bail!("event {seq} of {id} panicked: {message}")
                }
            }
            let changes = state.take_changes(&rules);
            state.reuse_changes(changes);
        }
        taken += began.elapsed();
        events += raws.len();
    }
    println!(
        "{}",
        serde_json::json!({
            "forces": forces,
            "events": events,
            "applied": applied,
            "alerts": alerts,
            "dead_lettered": dead,
            "broken_rules": broken.len(),
            "rules": rules.len(),
            "us_per_event": taken.as_secs_f64() * 1e6 / events.max(1) as f64,
        })
    );
    Ok(())
}

/// The stream of one force, as `nmc bench` publishes it (without its probes).
fn raws(force: &ForceId, mix: &Mix, n: usize, seed: u64, start_ms: i64) -> Vec<Raw> {
    mixed(&scenario(force, n), mix, seed, start_ms)
        .into_iter()
        .enumerate()
        .map(|(i, (t, kind, e))| Raw {
            seq: i as u64 + 1,
            subject: subject::events(force, kind),
            payload: Bytes::from(serde_json::to_vec(&e).expect("a generated event is JSON")),
            ingest_ms: t,
            traceparent: None,
            header_bytes: 0,
        })
        .collect()
}
