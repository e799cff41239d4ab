//! The `cleanroom` command line, as a library so tests drive it in-process.
//!
//! ```no_run
//! cleanroom_cli::run(["cleanroom", "run-local", "analysis.wasm", "--table", "patients=p.csv"]).unwrap();
//! ```

mod input;
mod progress;
mod run_local;

use std::ffi::OsString;

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

/// Parse `args` (program name first) and run the command. Usage errors are
/// returned as `clap::Error` inside the `anyhow::Error`.
pub fn run<I, T>(args: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::try_parse_from(args)?;
    match cli.command {
        Command::RunLocal(args) => run_local::run(args),
    }
}
