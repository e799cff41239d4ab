//! The crate's error type: one variant per check, so a refusal says which check caught it.

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong while sealing or opening an envelope.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input does not start with the envelope magic.
    #[error("not a cleanroom envelope (bad magic); check that you uploaded the sealed file")]
    BadMagic,
    /// The envelope's format version is not one this code reads.
    #[error("envelope format version {found} is not supported (expected {expected}); upgrade")]
    UnsupportedVersion {
        /// The version in the envelope.
        found: u16,
        /// The version this code reads.
        expected: u16,
    },
    /// The envelope ends early: the footer or some chunks are missing.
    #[error("the envelope is truncated ({detail}); upload the complete file again")]
    Truncated {
        /// What is missing.
        detail: String,
    },
    /// There are bytes the signed manifest does not account for.
    #[error("the envelope has {extra} bytes the manifest does not account for; refusing it")]
    TrailingData {
        /// How many unexpected bytes.
        extra: u64,
    },
    /// A structure could not be decoded.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What could not be decoded.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// The manifest signature does not verify under the owner key it names.
    #[error("the manifest signature does not verify; the envelope was modified after sealing")]
    BadSignature,
    /// The manifest is validly signed, but by another owner than expected.
    #[error("the manifest is signed by owner {found}, not the expected owner; refusing it")]
    UnexpectedOwner {
        /// The owner key (hex) that signed it.
        found: String,
    },
    /// The wrapped data key does not open with this enclave's private key.
    #[error(
        "the data key does not unwrap with this enclave's key; seal the dataset again to the \
         attested enclave key"
    )]
    UnwrapFailed,
    /// The enclave public key given to the sealer is not a usable X25519 key.
    #[error("the enclave public key is not a valid x25519 key; use the key from verified evidence")]
    InvalidEnclaveKey,
    /// A chunk's ciphertext does not have the digest the manifest commits to.
    #[error("chunk {index} does not match its manifest digest (reordered, replaced or corrupted)")]
    ChunkDigest {
        /// Position of the chunk.
        index: u32,
    },
    /// A chunk fails AEAD authentication (wrong position, dataset or final flag, or tampered).
    #[error("chunk {index} fails authentication (wrong position, dataset or final flag)")]
    ChunkDecrypt {
        /// Position of the chunk.
        index: u32,
    },
    /// A chunk is larger than the format allows.
    #[error("chunk of {len} bytes exceeds the limit of {max} bytes; use smaller record batches")]
    ChunkTooLarge {
        /// The chunk length.
        len: u64,
        /// The limit, [`crate::MAX_CHUNK_LEN`].
        max: u64,
    },
    /// The decoded batches do not add up to the signed row count.
    #[error("the chunks hold {found} rows but the manifest says {expected}; refusing the dataset")]
    RowCount {
        /// Rows in the manifest.
        expected: u64,
        /// Rows decoded.
        found: u64,
    },
    /// Arrow IPC encoding or decoding failed.
    #[error("arrow ipc {context}: {source}")]
    Arrow {
        /// What was being done.
        context: String,
        /// The Arrow error.
        #[source]
        source: arrow_schema::ArrowError,
    },
    /// Reading or writing the envelope failed.
    #[error("envelope i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed: {0}")]
    Random(String),
}

impl Error {
    pub(crate) fn malformed(what: &'static str, detail: impl std::fmt::Display) -> Self {
        Self::Malformed {
            what,
            detail: detail.to_string(),
        }
    }

    pub(crate) fn arrow(context: impl Into<String>, source: arrow_schema::ArrowError) -> Self {
        Self::Arrow {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn truncated(detail: impl Into<String>) -> Self {
        Self::Truncated {
            detail: detail.into(),
        }
    }
}
