//! `cleanroom`: the tool data owners and researchers use outside the enclave.

use std::process::ExitCode;

fn main() -> ExitCode {
    match cleanroom_cli::run(std::env::args_os()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(usage) = e.downcast_ref::<clap::Error>() {
                // --help and --version are "errors" that print and succeed.
                let _ = usage.print();
                return ExitCode::from(if usage.use_stderr() { 2 } else { 0 });
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
