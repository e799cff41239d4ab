//! Run requests and run states.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::canonical::sha256_hex;
use crate::error::Result;
use crate::keys::decode_hex32;

/// What a researcher asks to run. The request body is covered by the HTTP request signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// The module id (SHA-256 hex of the component bytes).
    pub module: String,
    /// Table name the guest sees -> dataset id.
    pub inputs: BTreeMap<String, String>,
    /// Parameters passed to the module, verbatim.
    pub params: String,
    /// The researcher's X25519 public key (hex) that results are sealed to.
    pub researcher_hpke: String,
    /// A note for the data owners who review the outputs.
    #[serde(default)]
    pub review_note: Option<String>,
}

impl RunRequest {
    /// The digest of [`RunRequest::params`], as pinned in grants.
    pub fn params_digest(&self) -> String {
        params_digest(&self.params)
    }

    /// The decoded [`RunRequest::researcher_hpke`] key.
    pub fn researcher_hpke_key(&self) -> Result<[u8; 32]> {
        decode_hex32("researcher_hpke", &self.researcher_hpke)
    }
}

/// SHA-256 (lowercase hex) of a run's parameters.
pub fn params_digest(params: &str) -> String {
    sha256_hex(params.as_bytes())
}

/// Where a run is in its life: submitted -> rejected | queued -> running -> failed |
/// held_for_review -> released | withheld; cancelled from any non-final state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Received, not yet checked against the policies.
    Submitted,
    /// Refused by a policy (final).
    Rejected,
    /// Allowed and waiting for a worker.
    Queued,
    /// Executing in the sandbox.
    Running,
    /// The module trapped, hit a limit or its output broke the rules (final).
    Failed,
    /// Outputs wait for the owners' review.
    HeldForReview,
    /// Outputs were released to the researcher (final).
    Released,
    /// Outputs were withheld by a reviewer or a rule (final).
    Withheld,
    /// Cancelled before finishing (final).
    Cancelled,
}

impl RunState {
    /// Whether the run can no longer change state.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Self::Rejected | Self::Failed | Self::Released | Self::Withheld | Self::Cancelled
        )
    }

    /// The snake_case name, as in JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Submitted => "submitted",
            Self::Rejected => "rejected",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Failed => "failed",
            Self::HeldForReview => "held_for_review",
            Self::Released => "released",
            Self::Withheld => "withheld",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
