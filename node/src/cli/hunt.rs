//! `nmc hunt`: run rules over exported logs, alerts to stdout as JSON lines.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nmc_shared::{ForceId, SourceKind};

use crate::hunt::{Hunt, input_files};

/// Arguments of `nmc hunt`.
#[derive(Debug, clap::Args)]
pub struct HuntArgs {
    /// Rule files or directories.
    #[arg(long, required = true, num_args = 1..)]
    rules: Vec<PathBuf>,
    /// Event files or directories (`.json`, `.jsonl`, `.ndjson`).
    #[arg(long, required = true, num_args = 1..)]
    events: Vec<PathBuf>,
    /// Read every event with this source's mapping instead of detecting it per event.
    #[arg(long)]
    source: Option<SourceKind>,
    /// Force id written on alerts.
    #[arg(long, default_value = "hunt")]
    force: ForceId,
    /// TOML file of `%placeholder%` values for `expand` (`name = ["v1", "v2"]`).
    #[arg(long)]
    placeholders: Option<PathBuf>,
    /// How far out of event-time order the input may be, in seconds (events are reordered
    /// within this; later ones are applied as they come and counted as late).
    #[arg(long, default_value_t = 300)]
    lateness: u64,
    /// Threads that parse records and match their detection rules (0: every core);
    /// correlation stays on one thread, in file order, so the alerts are the same whatever
    /// this is.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Print at most this many per-record problems to stderr.
    #[arg(long, default_value_t = 20)]
    show_problems: u64,
}

/// Reads a placeholders file (`name = ["value", ...]`).
pub fn read_placeholders(path: Option<&PathBuf>) -> Result<nmc_shared::sigma::Placeholders> {
    let Some(p) = path else {
        return Ok(Default::default());
    };
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    toml::from_str(&text)
        .with_context(|| format!("{}: expected `name = [\"value\", ...]` lines", p.display()))
}

/// Runs `nmc hunt`.
pub fn run(args: HuntArgs) -> Result<()> {
    let ph = read_placeholders(args.placeholders.as_ref())?;
    let (rules, errors) = crate::rules::load_with(&args.rules, &ph)?;
    for e in &errors {
        eprintln!("rule not loaded: {e}");
    }
    if rules.is_empty() {
        anyhow::bail!("no rule loaded from {:?}", args.rules);
    }
    let files = input_files(&args.events)?;
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mut hunt = Hunt::new(rules, args.force.clone(), args.source)
        .with_lateness(args.lateness as i64 * 1000)
        .with_threads(threads);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let progress = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last = Instant::now();
    let mut shown = 0u64;
    let mut write_err: Option<std::io::Error> = None;
    for f in &files {
        hunt.file(
            f,
            &mut |a| {
                let line = serde_json::to_string(&a).expect("alerts serialize");
                if let Err(e) = writeln!(out, "{line}") {
                    write_err.get_or_insert(e);
                }
            },
            &mut |file, line, problem| {
                if shown < args.show_problems {
                    eprintln!("{file}:{line}: {problem}");
                }
                shown += 1;
            },
        )?;
        if let Some(e) = write_err.take() {
            return Err(e).context("writing alerts");
        }
        if progress && last.elapsed() > Duration::from_millis(200) {
            last = Instant::now();
            let s = &hunt.stats;
            eprint!(
                "\r{} files, {} records, {} alerts, {:.0} records/s   ",
                s.files,
                s.records,
                s.alerts,
                s.records as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    out.flush()?;
    let s = &hunt.stats;
    if progress {
        eprint!("\r");
    }
    eprintln!(
        "hunt: {} files, {} records, {} evaluated, {} alerts, {} unrecognised, {} bad, {} late, {} bad values, {} timed by ingest time, {:.2}s",
        s.files,
        s.records,
        s.evaluated,
        s.alerts,
        s.undetected,
        s.bad,
        s.late,
        s.bad_values,
        s.ingest_time,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
