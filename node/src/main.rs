//! The `nmc` binary: parses the command line and hands it to [`nmc_node::cli::run`].

use std::process::ExitCode;

use clap::Parser;
use nmc_node::cli::{Cli, run};

/// mimalloc: events are parsed on one thread and freed on another (the parallel `nmc hunt`,
/// the node's pumps and actors), which glibc's allocator makes slow.
#[global_allocator]
static ALLOCATOR: nmc_node::allocator::Mimalloc = nmc_node::allocator::Mimalloc;

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nmc: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
