//! `nmc rules push DIR...`: validate rules and make them the cluster's rule pack.

use std::path::PathBuf;

use anyhow::{Result, bail};
use async_nats::jetstream;

use super::NatsArgs;
use crate::rules::pack::{self, PackFiles};

/// Arguments of `nmc rules push`.
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// Rule files or directories.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// TOML file of `%placeholder%` values used to validate `expand` rules (nodes resolve them
    /// with their own configuration).
    #[arg(long)]
    placeholders: Option<PathBuf>,
    /// NATS connection.
    #[command(flatten)]
    nats: NatsArgs,
}

/// Runs `nmc rules push`: refuses the pack (and changes nothing) if any rule fails to compile.
pub async fn run(args: PushArgs) -> Result<()> {
    let ph = super::hunt::read_placeholders(args.placeholders.as_ref())?;
    let files = PackFiles {
        files: crate::rules::read_texts(&args.dirs)?,
    };
    pack::check_not_empty(&files)?;
    let (set, errors) = crate::rules::compile_texts(&files.files, &ph);
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("{e}");
        }
        bail!(
            "{} rule(s) failed: pack refused, the cluster keeps its current rules",
            errors.len()
        );
    }
    let client = args.nats.connect("nmc rules push").await?;
    let js = jetstream::new(client);
    let packs = pack::open(&js).await?;
    let by = format!(
        "{}@{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
        std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown".into())
    );
    let version = pack::push(&packs, &files, set.len(), &by).await?;
    println!(
        "rule pack {version}: {} files, {} rules and correlations; nodes reload it now",
        files.files.len(),
        set.len()
    );
    Ok(())
}
