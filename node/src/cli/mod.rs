//! The `nmc` command line: one binary for the node and its tools.

pub mod alert_actions;
pub mod auth;
pub mod bench;
pub mod cluster;
pub mod contacts;
pub mod forces;
pub mod generate;
pub mod hunt;
pub mod replay;
pub mod rules_check;
pub mod rules_push;
pub mod state;
pub mod tail;

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::config::Config;

/// nmc: Sigma correlation cluster for a national police cyber security operations centre.
#[derive(Debug, Parser)]
#[command(name = "nmc", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// NATS connection options shared by the client commands: a configuration file (the node's
/// format: its `nats_*` keys and `require_tls`), overridden by `NMC_*` variables, overridden by
/// these options. Passwords and tokens come from the file or `NMC_NATS_PASSWORD` /
/// `NMC_NATS_TOKEN` only: a command line is visible to every user of the machine.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated [default: the configuration's `nats_url`,
    /// nats://127.0.0.1:4222].
    #[arg(long = "nats", env = "NMC_NATS_URL")]
    pub url: Option<String>,
    /// Configuration file to read the NATS settings from.
    #[arg(long, env = "NMC_CONFIG")]
    pub config: Option<PathBuf>,
    /// NATS `.creds` file.
    #[arg(long, env = "NMC_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// File holding an nkey seed (as `nmc auth nats-config` writes).
    #[arg(long, env = "NMC_NATS_NKEY")]
    pub nats_nkey: Option<PathBuf>,
    /// NATS user (its password from `NMC_NATS_PASSWORD` or the configuration file).
    #[arg(long, env = "NMC_NATS_USER")]
    pub nats_user: Option<String>,
    /// PEM file of the CA that signs the NATS servers' certificates.
    #[arg(long, env = "NMC_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// PEM client certificate (with --nats-tls-key).
    #[arg(long, env = "NMC_NATS_TLS_CERT")]
    pub nats_tls_cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[arg(long, env = "NMC_NATS_TLS_KEY")]
    pub nats_tls_key: Option<PathBuf>,
    /// Refuse a connection without TLS (also `require_tls` in the file, `NMC_REQUIRE_TLS`).
    #[arg(long)]
    pub require_tls: bool,
    /// Prefix of reply subjects: a restricted identity's own (`nmc auth nats-config` says which).
    #[arg(long, env = "NMC_NATS_INBOX_PREFIX")]
    pub nats_inbox_prefix: Option<String>,
}

impl NatsArgs {
    /// The connection settings: file, then `NMC_*` variables, then options.
    pub fn settings(&self) -> Result<crate::bus::NatsConnect> {
        let mut n = crate::bus::NatsConnect::from(&Config::load(self.config.as_deref())?);
        if let Some(u) = &self.url {
            n.urls = u.clone();
        }
        let set = |slot: &mut Option<PathBuf>, v: &Option<PathBuf>| {
            if v.is_some() {
                *slot = v.clone();
            }
        };
        set(&mut n.creds, &self.nats_creds);
        set(&mut n.nkey, &self.nats_nkey);
        set(&mut n.tls_ca, &self.nats_tls_ca);
        set(&mut n.tls_cert, &self.nats_tls_cert);
        set(&mut n.tls_key, &self.nats_tls_key);
        if self.nats_user.is_some() {
            n.user = self.nats_user.clone();
        }
        if self.nats_inbox_prefix.is_some() {
            n.inbox_prefix = self.nats_inbox_prefix.clone();
        }
        n.require_tls |= self.require_tls;
        Ok(n)
    }

    /// Connects as the client `name` with these settings.
    pub async fn connect(&self, name: &str) -> Result<async_nats::Client> {
        crate::bus::connect(&self.settings()?, name, |_| {}).await
    }
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
    /// Identities and credentials on the bus.
    Auth {
        /// What to generate.
        #[command(subcommand)]
        cmd: auth::AuthCmd,
    },
    /// Force contacts and national duty contacts (who is told of alerts).
    Contacts {
        /// What to do with contacts.
        #[command(subcommand)]
        cmd: contacts::ContactsCmd,
    },
    /// The analyst console: a web server over the alerts, their evidence and lifecycle.
    Console {
        /// What to do.
        #[command(subcommand)]
        cmd: ConsoleCmd,
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
// Parsed once per process: boxing the larger arguments would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum RulesCmd {
    /// Parse and compile rules; print each failure and a summary line.
    Check(rules_check::CheckArgs),
    /// Validate rules and make them the cluster's rule pack (nodes hot-reload it).
    Push(rules_push::PushArgs),
}

/// `nmc alerts ...`
#[derive(Debug, Subcommand)]
// Parsed once per process: boxing the larger arguments would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum AlertsCmd {
    /// Print alerts as they arrive, one JSON line each.
    Tail(tail::TailArgs),
    /// Acknowledge an alert (stops its escalation).
    Ack(alert_actions::Target),
    /// Assign an alert to somebody to investigate (acknowledges it).
    Assign {
        /// The alert and who acts.
        #[command(flatten)]
        target: alert_actions::Target,
        /// Who investigates.
        #[arg(long)]
        to: String,
    },
    /// Close an alert with its outcome (acknowledges it).
    Close {
        /// The alert and who acts.
        #[command(flatten)]
        target: alert_actions::Target,
        /// What it turned out to be.
        #[arg(long, value_enum)]
        outcome: alert_actions::OutcomeArg,
    },
    /// Open a closed alert again.
    Reopen(alert_actions::Target),
    /// Print an alert's state, audit trail and delivery records.
    Show {
        /// Alert id.
        id: uuid::Uuid,
        /// The alert's force.
        #[arg(long)]
        force: nmc_shared::ForceId,
        /// NATS connection.
        #[command(flatten)]
        nats: NatsArgs,
    },
}

/// `nmc console ...`
#[derive(Debug, Subcommand)]
pub enum ConsoleCmd {
    /// Serve the console (the file's `[console]` table and `nats_*` keys).
    Serve {
        /// TOML configuration file.
        #[arg(long, short, env = "NMC_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print an argon2id hash of a password read from standard input (for the users file).
    HashPassword,
}

/// `nmc dlq ...`
#[derive(Debug, Subcommand)]
pub enum DlqCmd {
    /// Print dead letters as they arrive, one JSON line each with the reason.
    Tail(tail::TailArgs),
}

impl Cmd {
    /// The log filter when neither `NMC_LOG` nor `RUST_LOG` is set: a node says what it does,
    /// a tool only what goes wrong.
    fn default_log_filter(&self) -> &'static str {
        match self {
            Cmd::Node { .. }
            | Cmd::Console {
                cmd: ConsoleCmd::Serve { .. },
            } => "info",
            _ => "warn",
        }
    }
}

/// Runs one command line: every command is dispatched here, once. Commands that talk to NATS
/// run on an actix system (the node's actors need one; the tools share the set-up).
pub fn run(cli: Cli) -> Result<ExitCode> {
    // One TLS crypto provider for the whole process (ring): the HTTP clients built by
    // dependencies (the OTLP exporter's reqwest) take the process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let telemetry = crate::telemetry::init(cli.cmd.default_log_filter())?;
    let done = match cli.cmd {
        Cmd::Node { config } => {
            Config::load(config.as_deref()).and_then(|cfg| on_actix(crate::node::run(cfg)))
        }
        Cmd::Replay(a) => on_actix(replay::run(a)),
        Cmd::Alerts { cmd } => on_actix(async move {
            use nmc_shared::lifecycle::Action;
            match cmd {
                AlertsCmd::Tail(a) => tail::run(tail::Kind::Alerts, a).await,
                AlertsCmd::Ack(t) => alert_actions::act(t, Action::Acknowledge).await,
                AlertsCmd::Assign { target, to } => {
                    alert_actions::act(target, Action::Assign { to }).await
                }
                AlertsCmd::Close { target, outcome } => {
                    alert_actions::act(
                        target,
                        Action::Close {
                            outcome: outcome.into(),
                        },
                    )
                    .await
                }
                AlertsCmd::Reopen(t) => alert_actions::act(t, Action::Reopen).await,
                AlertsCmd::Show { id, force, nats } => alert_actions::show(id, force, nats).await,
            }
        }),
        Cmd::Dlq {
            cmd: DlqCmd::Tail(a),
        } => on_actix(tail::run(tail::Kind::Dlq, a)),
        Cmd::Generate(a) => generate::run(a),
        Cmd::Bench(a) => on_actix(async {
            // The bench spawns !Send tasks.
            tokio::task::LocalSet::new().run_until(bench::run(a)).await
        }),
        Cmd::Hunt(a) => hunt::run(a),
        Cmd::State { cmd } => state::run(cmd),
        Cmd::Forces { cmd } => on_actix(forces::run(cmd)),
        Cmd::Contacts { cmd } => on_actix(contacts::run(cmd)),
        Cmd::Console {
            cmd: ConsoleCmd::Serve { config },
        } => Config::load(config.as_deref())
            .and_then(|cfg| on_actix(crate::console::server::run(cfg))),
        Cmd::Console {
            cmd: ConsoleCmd::HashPassword,
        } => {
            let mut password = String::new();
            std::io::stdin().read_line(&mut password)?;
            let password = password.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                anyhow::bail!("no password on standard input");
            }
            println!("{}", crate::console::users::hash_password(password)?);
            Ok(())
        }
        Cmd::Cluster { cmd } => on_actix(cluster::run(cmd)),
        Cmd::Auth { cmd } => on_actix(auth::run(cmd)),
        Cmd::Rules {
            cmd: RulesCmd::Push(a),
        } => on_actix(rules_push::run(a)),
        Cmd::Rules {
            cmd: RulesCmd::Check(a),
        } => {
            // 0: every rule compiles; 1: some do not (listed); 2: the check itself failed.
            let code = match rules_check::run(a) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("nmc: error: {e:#}");
                    ExitCode::from(2)
                }
            };
            telemetry.shutdown();
            return Ok(code);
        }
    };
    telemetry.shutdown();
    done.map(|()| ExitCode::SUCCESS)
}

/// Runs `fut` to completion on a new actix system.
fn on_actix(fut: impl Future<Output = Result<()>>) -> Result<()> {
    actix_rt::System::new().block_on(fut)
}
