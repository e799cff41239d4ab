//! `cleanroom`: the tool data owners and researchers use outside the enclave.

use std::process::ExitCode;

fn main() -> ExitCode {
    restore_sigpipe();
    match cleanroom_cli::run(std::env::args_os()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(usage) = e.downcast_ref::<clap::Error>() {
                // --help and --version are "errors" that print and succeed.
                let _ = usage.print();
                return ExitCode::from(if usage.use_stderr() { 2 } else { 0 });
            }
            eprintln!("error: {e:#}");
            ExitCode::from(cleanroom_cli::failure::exit_code(&e))
        }
    }
}

/// A closed pipe ends the CLI quietly, as it ends any Unix tool (`cleanroom audit verify |
/// head -1`): Rust ignores SIGPIPE by default, which turns every later `println!` into a
/// "failed printing to stdout" panic. Stable Rust has no attribute for this yet.
#[cfg(unix)]
fn restore_sigpipe() {
    // SAFETY: called first thing in `main`, before any other thread exists; it only resets
    // one signal's disposition to the default.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn restore_sigpipe() {}
