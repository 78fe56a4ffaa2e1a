//! The `nmc` binary: parses the command line and hands it to [`nmc_node::cli::run`].

use std::process::ExitCode;

use clap::Parser;
use nmc_node::cli::{Cli, run};

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nmc: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
