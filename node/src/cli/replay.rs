//! `nmc replay`: publish JSON-lines files to a force's events subject, every line acknowledged.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use async_nats::jetstream;
use bytes::Bytes;
use nmc_shared::{ForceId, SourceKind, subject};

use super::NatsArgs;
use crate::bus::Pipelined;

/// Arguments of `nmc replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Force to publish for (default: from file names `<force>.<source>.jsonl`).
    #[arg(long)]
    force: Option<ForceId>,
    /// Source of the events (default: from file names).
    #[arg(long)]
    source: Option<SourceKind>,
    /// Most unacknowledged publishes.
    #[arg(long, default_value_t = 2048)]
    max_in_flight: usize,
    /// Files, or directories of `*.jsonl` files.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

/// Where a file's events go: the explicit flags, else `<force>.<source>.jsonl`.
fn target(args: &ReplayArgs, file: &std::path::Path) -> Result<(ForceId, SourceKind)> {
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let mut parts = name.split('.');
    let from_name = (parts.next(), parts.next());
    let force = match (&args.force, from_name.0) {
        (Some(f), _) => f.clone(),
        (None, Some(f)) => ForceId::new(f).with_context(|| {
            format!(
                "{}: pass --force or name the file <force>.<source>.jsonl",
                file.display()
            )
        })?,
        (None, None) => bail!("{}: pass --force", file.display()),
    };
    let source = match (args.source, from_name.1) {
        (Some(s), _) => s,
        (None, Some(s)) => s.parse().with_context(|| {
            format!(
                "{}: pass --source or name the file <force>.<source>.jsonl",
                file.display()
            )
        })?,
        (None, None) => bail!("{}: pass --source", file.display()),
    };
    Ok((force, source))
}

fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
                .collect();
            v.sort();
            out.extend(v);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Runs `nmc replay`.
pub async fn run(args: ReplayArgs) -> Result<()> {
    let client = args.nats.connect("nmc replay").await?;
    let js = jetstream::new(client);
    let mut pipe = Pipelined::new(js, args.max_in_flight);
    let mut acked = 0u64;
    let mut done = |_, _| acked += 1;
    let started = Instant::now();
    let mut sent = 0u64;
    for file in files(&args.paths)? {
        let (force, source) = target(&args, &file)?;
        let subj = subject::events(&force, source);
        let f =
            std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
        let mut n = 0u64;
        for line in std::io::BufReader::new(f).split(b'\n') {
            let line = line?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            pipe.send(subj.clone(), Bytes::from(line), (), &mut done)
                .await?;
            n += 1;
        }
        sent += n;
        eprintln!("{}: {n} events -> {subj}", file.display());
    }
    pipe.finish(&mut done).await?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "published {sent} events ({acked} acknowledged) in {secs:.2}s ({:.0}/s)",
        sent as f64 / secs.max(1e-9)
    );
    Ok(())
}
