//! `cleanroom`: the tool data owners and researchers use outside the enclave.

mod input;
mod progress;
mod run_local;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Confidential analyses over hospital data: develop locally, run in the clean room.
#[derive(Debug, Parser)]
#[command(name = "cleanroom", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an analysis component locally on your own test tables, with the
    /// enclave's runtime and limits.
    RunLocal(run_local::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::RunLocal(args) => run_local::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
