//! The crate's error type.

use std::fmt;

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong while producing or verifying attestation evidence.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A verification check failed: the evidence must not be trusted.
    #[error("attestation check `{check}` failed: {detail}")]
    Check {
        /// The check that failed.
        check: Check,
        /// What was wrong, for a human.
        detail: String,
    },
    /// Evidence, a report or a certificate could not be decoded.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What could not be decoded.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// The TEE device could not be used (the host cannot attest).
    #[error("{context}: {source}")]
    Device {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The simulation backend was requested without the explicit runtime opt-in.
    #[error(
        "the simulation attester is insecure and needs an explicit runtime opt-in; \
         pass the accept-insecure-simulation flag only in development and CI"
    )]
    SimulationNotOptedIn,
    /// A cryptographic operation failed while producing evidence.
    #[error("{0}")]
    Crypto(String),
}

impl Error {
    /// Builds a [`Error::Check`] failure.
    pub(crate) fn check(check: Check, detail: impl Into<String>) -> Self {
        Self::Check {
            check,
            detail: detail.into(),
        }
    }

    /// Builds a [`Error::Malformed`] failure.
    pub(crate) fn malformed(what: &'static str, detail: impl fmt::Display) -> Self {
        Self::Malformed {
            what,
            detail: detail.to_string(),
        }
    }

    /// The failed check, if this error is a verification failure.
    pub fn failed_check(&self) -> Option<Check> {
        match self {
            Self::Check { check, .. } => Some(*check),
            _ => None,
        }
    }
}

/// The verification checks, each of which must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Check {
    /// The report version (or the signature algorithm) is one this verifier knows.
    Version,
    /// ARK (pinned) → ASK/ASVK → VCEK/VLEK.
    CertChain,
    /// The report signature by the VCEK/VLEK.
    Signature,
    /// Re-encoding the parsed report or certificate gives the raw bytes back.
    ReencodedBytes,
    /// Unused bytes of the report signature are zero.
    SignaturePadding,
    /// The VCEK/VLEK TCB extensions equal the report's `reported_tcb`.
    VcekTcb,
    /// The VCEK hwID extension equals the report's `chip_id`.
    VcekHwId,
    /// The report comes from VMPL 0.
    Vmpl,
    /// `report_data` binds the enclave keys and the nonce.
    ReportData,
    /// The client's nonce is the one in the evidence (no replay).
    Nonce,
    /// `host_data` is the expected deployment-configuration digest.
    HostData,
    /// The launch measurement is allowed by the policy.
    Measurement,
    /// The guest policy does not allow debugging.
    Debug,
    /// The guest policy does not allow a migration agent.
    MigrationAgent,
    /// The reported TCB is at or above the policy minimum.
    MinimumTcb,
    /// Simulated evidence is refused unless explicitly accepted.
    Simulation,
    /// The TLS connection's key is the one the attested enclave endorsed.
    TlsKey,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Version => "version",
            Self::CertChain => "cert-chain",
            Self::Signature => "signature",
            Self::ReencodedBytes => "reencoded-bytes",
            Self::SignaturePadding => "signature-padding",
            Self::VcekTcb => "vcek-tcb",
            Self::VcekHwId => "vcek-hwid",
            Self::Vmpl => "vmpl",
            Self::ReportData => "report-data",
            Self::Nonce => "nonce",
            Self::HostData => "host-data",
            Self::Measurement => "measurement",
            Self::Debug => "debug",
            Self::MigrationAgent => "migration-agent",
            Self::MinimumTcb => "minimum-tcb",
            Self::Simulation => "simulation",
            Self::TlsKey => "tls-key",
        };
        f.write_str(name)
    }
}
