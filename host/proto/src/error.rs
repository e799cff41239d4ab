//! The crate's error types: [`Error`] for keys, signed objects and sealing, [`SigError`] for HTTP
//! message signatures and [`AuditError`] for audit-log verification.

use std::path::PathBuf;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong with identities, signed objects and sealed results.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done (`read`, `create`, `write`).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An identity file was asked to be written over an existing file.
    #[error(
        "refusing to overwrite the existing identity file {0}; move it away or choose another path"
    )]
    IdentityExists(PathBuf),
    /// An identity file does not exist.
    #[error("no identity file at {0}; generate an identity first or pass the right path")]
    IdentityMissing(PathBuf),
    /// An identity file exists but cannot be used.
    #[error("identity file {path} is malformed: {detail}")]
    IdentityMalformed {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// A value could not be decoded or does not have the required shape.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What could not be decoded.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// A signature does not verify: the object was altered or signed by another key.
    #[error(
        "the {what} signature does not verify: the {what} was altered or signed by another key"
    )]
    BadSignature {
        /// The kind of object (`policy`, `receipt`, `audit head`, ...).
        what: &'static str,
    },
    /// A signature verifies but was made by a key other than the one expected.
    #[error("the {what} was signed by {found}, not by the expected key {expected}")]
    WrongSigner {
        /// The kind of object.
        what: &'static str,
        /// The expected key (hex).
        expected: String,
        /// The key that signed (hex).
        found: String,
    },
    /// Encrypting a result failed (for example the recipient key is not a usable X25519 key).
    #[error("cannot seal result to the recipient: {0}")]
    Seal(String),
    /// A sealed result could not be opened.
    #[error(
        "cannot open the sealed result: it was sealed to another key or for another run/output, \
         or it was corrupted"
    )]
    Open,
}

impl Error {
    /// Builds an [`Error::Malformed`].
    pub(crate) fn malformed(what: &'static str, detail: impl std::fmt::Display) -> Self {
        Self::Malformed {
            what,
            detail: detail.to_string(),
        }
    }
}

/// Why an HTTP request signature was rejected. Every variant means: deny the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    /// A required header is absent (lowercase header name).
    #[error("missing `{0}` header: sign the request with the cleanroom client")]
    Missing(&'static str),
    /// A signature header is present but not in the accepted shape.
    #[error("malformed request signature: {0}")]
    Malformed(String),
    /// The `created` time is too far from the server's clock.
    #[error(
        "request signature created at {created} is more than {max}s away from the server time \
         {now}; check the client clock and retry",
        max = crate::httpsig::MAX_CLOCK_SKEW_SECS
    )]
    Stale {
        /// The signature's `created` parameter.
        created: u64,
        /// The verifier's clock.
        now: u64,
    },
    /// The `content-digest` header does not match the body received.
    #[error("content-digest does not match the request body: the body was altered in transit")]
    DigestMismatch,
    /// The signature does not verify for the key named in `keyid`.
    #[error("request signature does not verify for its keyid")]
    BadSignature,
    /// The signature uses an algorithm other than `ed25519`.
    #[error("unsupported signature algorithm `{0}`: only ed25519 is accepted")]
    UnsupportedAlgorithm(String),
}

impl SigError {
    /// A stable machine-readable name for the failure, for HTTP error bodies and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Missing(_) => "signature_missing",
            Self::Malformed(_) => "signature_malformed",
            Self::Stale { .. } => "signature_stale",
            Self::DigestMismatch => "digest_mismatch",
            Self::BadSignature => "signature_invalid",
            Self::UnsupportedAlgorithm(_) => "signature_algorithm_unsupported",
        }
    }
}

/// Why an audit log failed verification; each variant names where the log broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// No entries were given.
    #[error("the audit log is empty; fetch the log entries before verifying")]
    Empty,
    /// An entry is out of sequence: one was removed, inserted or reordered.
    #[error(
        "audit entry at index {index} has seq {found}, expected {expected}: an entry was removed, \
         inserted or reordered"
    )]
    Sequence {
        /// Position in the list given.
        index: usize,
        /// The seq that belongs at that position.
        expected: u64,
        /// The seq found there.
        found: u64,
    },
    /// An entry does not hash to the leaf the log lists for it.
    #[error("audit entry {seq} does not hash to its leaf: the entry was edited")]
    EntryHash {
        /// The entry's seq.
        seq: u64,
    },
    /// The entries do not add up to the signed tree head.
    #[error(
        "the audit log's {entries} entries do not hash to the signed tree head of size {size}: \
         entries were removed, added, edited or reordered"
    )]
    Root {
        /// How many entries were given.
        entries: u64,
        /// The head's tree size.
        size: u64,
    },
    /// A newer head does not extend an older one.
    #[error(
        "the log of size {new_size} does not extend the head of size {old_size} you saw before: \
         the log was truncated, rewritten or forked"
    )]
    Inconsistent {
        /// The older head's size.
        old_size: u64,
        /// The newer head's size.
        new_size: u64,
    },
    /// An entry is not in the log the head describes.
    #[error("audit entry {seq} is not included in the signed tree head of size {size}")]
    NotIncluded {
        /// The entry's seq.
        seq: u64,
        /// The head's tree size.
        size: u64,
    },
    /// The signed head itself is invalid (bad signature, wrong key, malformed hash).
    #[error("the signed audit head is invalid: {0}")]
    Head(String),
}
