//! `nmc generate`: write synthetic sign-in telemetry as `<force>.entra_signin.jsonl` files.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use nmc_shared::time::parse_timestamp;
use nmc_shared::{ForceId, SourceKind};

use crate::synth::{Scenario, generate};

/// Arguments of `nmc generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Forces to generate for (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    forces: Vec<ForceId>,
    /// Output directory.
    #[arg(long, short)]
    out: PathBuf,
    /// Users per force.
    #[arg(long, default_value_t = 200)]
    users: usize,
    /// Normal sign-ins per force.
    #[arg(long, default_value_t = 2000)]
    normal: usize,
    /// Forces that suffer a password spray.
    #[arg(long, value_delimiter = ',')]
    spray: Vec<ForceId>,
    /// Forces where one account is brute-forced.
    #[arg(long, value_delimiter = ',')]
    brute_force: Vec<ForceId>,
    /// Forces with three legacy-protocol (IMAP) sign-ins.
    #[arg(long, value_delimiter = ',')]
    legacy: Vec<ForceId>,
    /// Start of the scenario (RFC 3339).
    #[arg(long, default_value = "2026-11-02T08:00:00Z")]
    start: String,
    /// Length of the scenario in minutes.
    #[arg(long, default_value_t = 240)]
    minutes: i64,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Runs `nmc generate`.
pub fn run(args: GenerateArgs) -> Result<()> {
    let start = parse_timestamp(&args.start).context("--start")?;
    std::fs::create_dir_all(&args.out)?;
    for force in &args.forces {
        let s = Scenario {
            force: force.clone(),
            users: args.users,
            normal: args.normal,
            span_ms: args.minutes * 60_000,
            spray: args.spray.contains(force),
            brute_force: args.brute_force.contains(force),
            legacy: if args.legacy.contains(force) { 3 } else { 0 },
        };
        let events = generate(&s, args.seed, start);
        let path = args
            .out
            .join(format!("{force}.{}.jsonl", SourceKind::EntraSignin));
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for e in &events {
            serde_json::to_writer(&mut f, e)?;
            f.write_all(b"\n")?;
        }
        f.flush()?;
        eprintln!("{}: {} events", path.display(), events.len());
    }
    Ok(())
}
