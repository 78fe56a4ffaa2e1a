//! The `nmc` command line: one binary for the node and its tools.

pub mod bench;
pub mod cluster;
pub mod forces;
pub mod generate;
pub mod hunt;
pub mod replay;
pub mod rules_check;
pub mod rules_push;
pub mod state;
pub mod tail;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// nmc: Sigma correlation cluster for a national police cyber security operations centre.
#[derive(Debug, Parser)]
#[command(name = "nmc", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// NATS connection options shared by the client commands.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL.
    #[arg(
        long = "nats",
        env = "NMC_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub url: String,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run a cluster node (config file, overridden by NMC_* environment variables).
    Node {
        /// TOML configuration file.
        #[arg(long, short, env = "NMC_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Publish JSON-lines event files to nmc.events.<force>.<source>.
    Replay(replay::ReplayArgs),
    /// Alerts.
    Alerts {
        /// What to do with alerts.
        #[command(subcommand)]
        cmd: AlertsCmd,
    },
    /// Dead-lettered input.
    Dlq {
        /// What to do with dead letters.
        #[command(subcommand)]
        cmd: DlqCmd,
    },
    /// Generate synthetic Entra ID sign-in telemetry (normal users plus attacks).
    Generate(generate::GenerateArgs),
    /// Load generator: publish generated events to a running node, report throughput and latency.
    Bench(bench::BenchArgs),
    /// Run rules over exported logs offline; alerts to stdout as JSON lines.
    Hunt(hunt::HuntArgs),
    /// Force state: export and import checkpoints.
    State {
        /// What to do with state.
        #[command(subcommand)]
        cmd: state::StateCmd,
    },
    /// Onboarded forces and their phases.
    Forces {
        /// What to do with forces.
        #[command(subcommand)]
        cmd: forces::ForcesCmd,
    },
    /// The cluster: nodes, force owners, lag, rule pack.
    Cluster {
        /// What to show.
        #[command(subcommand)]
        cmd: cluster::ClusterCmd,
    },
    /// Sigma rules.
    Rules {
        /// What to do with rules.
        #[command(subcommand)]
        cmd: RulesCmd,
    },
}

/// `nmc rules ...`
#[derive(Debug, Subcommand)]
pub enum RulesCmd {
    /// Parse and compile rules; print each failure and a summary line.
    Check(rules_check::CheckArgs),
    /// Validate rules and make them the cluster's rule pack (nodes hot-reload it).
    Push(rules_push::PushArgs),
}

/// `nmc alerts ...`
#[derive(Debug, Subcommand)]
pub enum AlertsCmd {
    /// Print alerts as they arrive, one JSON line each.
    Tail(tail::TailArgs),
}

/// `nmc dlq ...`
#[derive(Debug, Subcommand)]
pub enum DlqCmd {
    /// Print dead letters as they arrive, one JSON line each with the reason.
    Tail(tail::TailArgs),
}
