//! The `nmc` binary.

use anyhow::Result;
use clap::Parser;
use nmc_node::cli::{AlertsCmd, Cli, Cmd, DlqCmd, bench, generate, replay, tail};
use nmc_node::config::Config;
use nmc_node::{runtime, telemetry};

fn main() -> Result<()> {
    let cli = Cli::parse();
    let default_filter = match cli.cmd {
        Cmd::Node { .. } => "info",
        _ => "warn",
    };
    let tel = telemetry::init(default_filter)?;
    let sys = actix_rt::System::new();
    let result = sys.block_on(async move {
        match cli.cmd {
            Cmd::Node { config } => {
                let cfg = Config::load(config.as_deref())?;
                runtime::run_node(cfg).await
            }
            Cmd::Replay(a) => replay::run(a).await,
            Cmd::Alerts {
                cmd: AlertsCmd::Tail(a),
            } => tail::run(tail::Kind::Alerts, a).await,
            Cmd::Dlq {
                cmd: DlqCmd::Tail(a),
            } => tail::run(tail::Kind::Dlq, a).await,
            Cmd::Generate(a) => generate::run(a),
            Cmd::Bench(a) => {
                let local = tokio::task::LocalSet::new();
                local.run_until(bench::run(a)).await
            }
        }
    });
    tel.shutdown();
    if let Err(e) = &result {
        eprintln!("nmc: error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}
