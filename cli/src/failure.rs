//! What kind of failure ended a command: one exit code per kind, documented in `docs/cli.md`.
//!
//! Errors stay `anyhow` chains (their text is for people); the kind rides along as context
//! ([`Failure`]) where the failure is recognised, and [`exit_code`] finds it.

use std::fmt;

/// A command's outcome, as its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitKind {
    /// Anything not classified below (a local file, a bug).
    Other = 1,
    /// The command line is wrong (clap's own code).
    Usage = 2,
    /// The server refused the request (4xx): denied by a policy, unknown id, conflict.
    Refused = 3,
    /// A run ended withheld (nothing released).
    Withheld = 4,
    /// A run failed, was rejected or was cancelled.
    RunFailed = 5,
    /// Something did not verify: attestation, attested TLS, a receipt, the audit log, a
    /// policy or held outputs the server served. Do not trust that server's answers.
    Verification = 6,
    /// The server could not be reached (connection, TLS handshake, timeout).
    Network = 7,
    /// The server failed (5xx).
    Server = 8,
}

/// The context that classifies an error.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Its kind.
    pub kind: ExitKind,
    message: String,
}

impl Failure {
    /// A failure of `kind` described by `message`.
    pub fn new(kind: ExitKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// Something did not verify.
    pub fn verification(message: impl Into<String>) -> Self {
        Self::new(ExitKind::Verification, message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The exit status for `error`: the outermost [`Failure`] in its chain, 2 for usage errors,
/// else 1.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    if error.downcast_ref::<clap::Error>().is_some() {
        return ExitKind::Usage as u8;
    }
    if let Some(failure) = error.downcast_ref::<Failure>() {
        return failure.kind as u8;
    }
    error
        .chain()
        .find_map(|cause| cause.downcast_ref::<Failure>())
        .map_or(ExitKind::Other as u8, |f| f.kind as u8)
}
