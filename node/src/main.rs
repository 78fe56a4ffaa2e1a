//! The `nmc` binary.

use anyhow::Result;
use clap::Parser;
use nmc_node::cli::{
    AlertsCmd, Cli, Cmd, DlqCmd, RulesCmd, bench, cluster, forces, generate, hunt, replay,
    rules_check, rules_push, state, tail,
};
use nmc_node::config::Config;
use nmc_node::{runtime, telemetry};

fn main() -> Result<()> {
    let cli = Cli::parse();
    // Offline commands need no runtime.
    match cli.cmd {
        Cmd::Hunt(a) => return exit_on_error(telemetry::init("warn").and_then(|_| hunt::run(a))),
        Cmd::State { cmd } => return exit_on_error(state::run(cmd)),
        Cmd::Rules {
            cmd: RulesCmd::Check(a),
        } => match rules_check::run(a) {
            Ok(clean) => std::process::exit(if clean { 0 } else { 1 }),
            Err(e) => {
                eprintln!("nmc: error: {e:#}");
                std::process::exit(2);
            }
        },
        _ => {}
    }
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
            Cmd::Forces { cmd } => forces::run(cmd).await,
            Cmd::Cluster { cmd } => cluster::run(cmd).await,
            Cmd::Rules {
                cmd: RulesCmd::Push(a),
            } => rules_push::run(a).await,
            Cmd::Bench(a) => {
                let local = tokio::task::LocalSet::new();
                local.run_until(bench::run(a)).await
            }
            Cmd::Hunt(_)
            | Cmd::Rules {
                cmd: RulesCmd::Check(_),
            }
            | Cmd::State { .. } => unreachable!("handled above"),
        }
    });
    tel.shutdown();
    exit_on_error(result)
}

fn exit_on_error(result: Result<()>) -> Result<()> {
    if let Err(e) = &result {
        eprintln!("nmc: error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}
