//! `nmc forces add|remove|list|set-phase|reset-state`: phased onboarding of forces, live (nodes
//! react within a second, without restart).

use anyhow::{Context, Result, bail};
use async_nats::jetstream;
use nmc_shared::ForceId;
use nmc_shared::onboarding::OnboardingPhase;

use super::NatsArgs;
use crate::cluster::{self, onboarding};
use crate::forces_file::{self, Change, ForcesFile};

/// `nmc forces ...`
#[derive(Debug, clap::Subcommand)]
pub enum ForcesCmd {
    /// Onboard a force (its events are processed from then on; the backlog in its events stream too).
    Add {
        /// Force id (e.g. `kent`).
        force: ForceId,
        /// Onboarding phase.
        #[arg(long, value_enum, default_value = "cloud")]
        phase: PhaseArg,
        /// Relative size of the force (recorded for capacity planning).
        #[arg(long, default_value_t = 1)]
        weight: u32,
        /// NATS connection.
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Offboard a force: its owner hands it off and stops; its events are dead-lettered.
    Remove {
        /// Force id.
        force: ForceId,
        /// NATS connection.
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Move a force to another onboarding phase.
    SetPhase {
        /// Force id.
        force: ForceId,
        /// The new phase.
        #[arg(value_enum)]
        phase: PhaseArg,
        /// NATS connection.
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Discard a force's state everywhere and read its stream from the start: the way back
    /// after a node refuses a stream that was deleted and created again (docs/operations.md).
    /// Open correlation windows start again empty; alerts already raised stay.
    ResetState {
        /// Force id.
        force: ForceId,
        /// Confirms the reset (without it, nothing changes).
        #[arg(long)]
        yes: bool,
        /// NATS connection.
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Make the onboarded forces match a forces file: add, update and, with --prune, remove.
    /// Idempotent: applying the same file again changes nothing.
    Apply {
        /// The forces file (YAML: `forces:` with `id`, `phase`, `weight`).
        file: std::path::PathBuf,
        /// Also offboard onboarded forces that the file does not list.
        #[arg(long)]
        prune: bool,
        /// Print the changes without making them.
        #[arg(long)]
        dry_run: bool,
        /// NATS connection.
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// List onboarded forces and their phases (JSON lines with --json).
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// NATS connection.
        #[command(flatten)]
        nats: NatsArgs,
    },
}

/// Onboarding phase on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PhaseArg {
    /// Cloud sources only (Entra ID, Microsoft 365, Azure, AWS).
    Cloud,
    /// Cloud and on-premise sources.
    CloudAndOnprem,
}

impl From<PhaseArg> for OnboardingPhase {
    fn from(p: PhaseArg) -> Self {
        match p {
            PhaseArg::Cloud => OnboardingPhase::Cloud,
            PhaseArg::CloudAndOnprem => OnboardingPhase::CloudAndOnprem,
        }
    }
}

async fn buckets(nats: &NatsArgs) -> Result<cluster::Buckets> {
    let client = nats.connect("nmc forces").await?;
    let js = jetstream::new(client);
    cluster::open_buckets(&js)
        .await
        .context("opening the coordination buckets")
}

/// Runs `nmc forces ...`.
pub async fn run(cmd: ForcesCmd) -> Result<()> {
    match cmd {
        ForcesCmd::Add {
            force,
            phase,
            weight,
            nats,
        } => {
            let b = buckets(&nats).await?;
            if nmc_shared::force::lookup(force.as_str()).is_none() {
                bail!("`{force}` is not in the force registry");
            }
            if onboarding::add(&b.forces, &force, phase.into(), weight).await? {
                println!("{force} onboarded ({:?})", OnboardingPhase::from(phase));
            } else {
                println!("{force} was already onboarded (unchanged; use set-phase)");
            }
        }
        ForcesCmd::Remove { force, nats } => {
            let b = buckets(&nats).await?;
            onboarding::remove(&b.forces, &force).await?;
            println!("{force} offboarded");
        }
        ForcesCmd::SetPhase { force, phase, nats } => {
            let b = buckets(&nats).await?;
            onboarding::set_phase(&b.forces, &force, phase.into()).await?;
            println!("{force} now in phase {:?}", OnboardingPhase::from(phase));
        }
        ForcesCmd::ResetState { force, yes, nats } => {
            if !yes {
                bail!(
                    "resetting {force} discards its correlation state and cursor on every node and in its checkpoint, and its stream NMC_EVENTS_{force} is read again from the start: run again with --yes"
                );
            }
            let b = buckets(&nats).await?;
            let generation = onboarding::reset_state(&b.forces, &force).await?;
            println!(
                "{force}: state generation {generation}; its holder discards the earlier state and reads NMC_EVENTS_{force} from the start"
            );
        }
        ForcesCmd::Apply {
            file,
            prune,
            dry_run,
            nats,
        } => {
            let wanted = ForcesFile::read(&file)?;
            let b = buckets(&nats).await?;
            let changes = forces_file::plan(&onboarding::list(&b.forces).await?, &wanted, prune);
            for c in &changes {
                println!("{c}");
                if dry_run {
                    continue;
                }
                match c {
                    Change::Add(e) => {
                        onboarding::add(&b.forces, &e.id, e.phase, e.weight).await?;
                    }
                    Change::Update { id, to, .. } => {
                        let (phase, weight) = *to;
                        onboarding::update(&b.forces, id, |r| {
                            r.phase = phase;
                            r.weight = weight;
                        })
                        .await?;
                    }
                    Change::Remove(id) => onboarding::remove(&b.forces, id).await?,
                }
            }
            let verb = if dry_run { "would change" } else { "changed" };
            println!(
                "{} forces in the file, {} {verb}",
                wanted.forces.len(),
                changes.len()
            );
            let lists = wanted.contact_lists();
            if !lists.is_empty() {
                let client = nats.connect("nmc forces").await?;
                let directory = crate::contacts::open(&jetstream::new(client)).await?;
                let mut changed = 0;
                for (scope, want) in lists {
                    let mut sorted = want.to_vec();
                    sorted.sort_by(|a, b| (a.tier, &a.name).cmp(&(b.tier, &b.name)));
                    if directory.list(&scope).await? == sorted {
                        continue;
                    }
                    changed += 1;
                    println!("~ contacts of {scope} ({} contacts)", want.len());
                    if !dry_run {
                        directory
                            .update(&scope, |l| {
                                *l = want.to_vec();
                                Ok(())
                            })
                            .await?;
                    }
                }
                println!("contact lists: {changed} {verb}");
            }
        }
        ForcesCmd::List { json, nats } => {
            let b = buckets(&nats).await?;
            for (f, r) in onboarding::list(&b.forces).await? {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"force": f, "phase": r.phase, "weight": r.weight, "added_ms": r.added_ms, "state_generation": r.state_generation})
                    );
                } else {
                    let reset = match r.state_generation {
                        0 => String::new(),
                        g => format!(" state generation {g}"),
                    };
                    println!(
                        "{f:<24} {:<18} weight {}{reset}",
                        format!("{:?}", r.phase),
                        r.weight
                    );
                }
            }
        }
    }
    Ok(())
}
