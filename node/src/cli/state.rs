//! `nmc state export|import`: move a force's whole state between nodes (the node must be
//! stopped: sled allows one process per data directory).

use std::path::PathBuf;

use anyhow::{Context, Result};
use nmc_shared::ForceId;
use nmc_shared::state::Checkpoint;

use crate::store::Store;

/// `nmc state ...`
#[derive(Debug, clap::Subcommand)]
pub enum StateCmd {
    /// Write a force's state (cursor, correlation state, outbox) to a checkpoint file.
    Export {
        /// The node's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// The force.
        #[arg(long)]
        force: ForceId,
        /// Checkpoint file to write.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Replace a force's state by a checkpoint file.
    Import {
        /// The node's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// The force.
        #[arg(long)]
        force: ForceId,
        /// Checkpoint file to read.
        file: PathBuf,
        /// Rule directories the node runs: the checkpoint's correlation state must load under
        /// them (without it, only the checkpoint's structure is checked).
        #[arg(long, num_args = 1..)]
        rules: Vec<PathBuf>,
    },
}

/// Runs a state command.
pub fn run(cmd: StateCmd) -> Result<()> {
    match cmd {
        StateCmd::Export {
            data_dir,
            force,
            out,
        } => {
            let c = Store::open(&data_dir)?.force(&force)?.export(&force)?;
            std::fs::write(&out, c.to_bytes())
                .with_context(|| format!("writing {}", out.display()))?;
            eprintln!(
                "{force}: state at sequence {} ({} entries) -> {}",
                c.seq,
                c.entries.len(),
                out.display()
            );
        }
        StateCmd::Import {
            data_dir,
            force,
            file,
            rules,
        } => {
            let rules = if rules.is_empty() {
                None
            } else {
                let (set, errors) = crate::rules::load(&rules)?;
                for e in &errors {
                    eprintln!("rule not loaded: {e}");
                }
                Some(set)
            };
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let c = Checkpoint::from_bytes(&bytes).context("not an nmc checkpoint")?;
            let store = Store::open(&data_dir)?;
            store.force(&force)?.import(&force, &c, rules.as_ref())?;
            store.flush_blocking()?;
            eprintln!(
                "{force}: state at sequence {} imported into {}",
                c.seq,
                data_dir.display()
            );
        }
    }
    Ok(())
}
