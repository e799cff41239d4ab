//! Run requests and run states.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::canonical::sha256_hex;
use crate::error::Result;
use crate::keys::decode_hex32;

/// What a researcher asks to run. The request body is covered by the HTTP request signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// What the run spends of the budgets of inputs that require differential privacy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp: Option<crate::dp::DpRun>,
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Every state.
    pub const ALL: [Self; 9] = [
        Self::Submitted,
        Self::Rejected,
        Self::Queued,
        Self::Running,
        Self::Failed,
        Self::HeldForReview,
        Self::Released,
        Self::Withheld,
        Self::Cancelled,
    ];

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

/// The kinds of output a run can publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// An Arrow IPC stream.
    Table,
    /// A JSON document, byte for byte as the module published it.
    Json,
    /// A file.
    File,
    /// The module's log lines (and stdout/stderr).
    Log,
    /// The module's own error text, when `run` returned an error.
    Error,
}

impl OutputKind {
    fn tag(self) -> u8 {
        match self {
            Self::Table => 1,
            Self::Json => 2,
            Self::File => 3,
            Self::Log => 4,
            Self::Error => 5,
        }
    }

    fn from_tag(tag: u8) -> Option<Self> {
        Some(match tag {
            1 => Self::Table,
            2 => Self::Json,
            3 => Self::File,
            4 => Self::Log,
            5 => Self::Error,
            _ => return None,
        })
    }
}

/// What the policy decided for one output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// Released (after any suppression and rounding).
    Release,
    /// Held for the owners' review.
    Hold,
    /// Never released.
    Refuse,
}

/// One output's fate, as every party to the run sees it: position, kind, decision and the
/// codes of the rules that fired. No name, size or digest: those are the module's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OutputReport {
    /// Position among the run's outputs.
    pub index: u32,
    /// Its kind.
    pub kind: OutputKind,
    /// What the policy decided.
    pub disposition: Disposition,
    /// Every rule that fired.
    pub codes: Vec<crate::Code>,
}

/// A run as the API reports it to its researcher and input owners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RunStatus {
    /// The run id.
    pub run: String,
    /// Its state.
    pub state: RunState,
    /// Why it is in that state, if it did not simply succeed.
    pub reason: Option<crate::Reason>,
    /// Who submitted it.
    pub researcher: crate::PartyId,
    /// The module id.
    pub module: String,
    /// Inputs with the policies applied (at admission, then at start).
    pub inputs: Vec<crate::ReceiptInput>,
    /// SHA-256 hex of the params.
    pub params_digest: String,
    /// Reviewers whose decision is still awaited.
    pub pending_reviews: Vec<crate::PartyId>,
    /// What the policy decided per output.
    pub outputs: Vec<OutputReport>,
    /// The enclave's receipt once final.
    pub receipt: Option<crate::SignedReceipt>,
    /// Submission time (Unix seconds).
    pub created: u64,
    /// Last change (Unix seconds).
    pub updated: u64,
}

/// A reviewer's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ReviewDecision {
    /// Release the held outputs (once every required reviewer has).
    Release,
    /// Withhold them: the run ends withheld.
    Withhold,
}

/// The body of `POST /v1/runs/{id}/review`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Review {
    /// The decision.
    pub decision: ReviewDecision,
    /// Why, for the audit log.
    #[serde(default)]
    pub reason: Option<String>,
}

/// The params of the SQL engine module: the query the owners approve, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SqlParams {
    /// The query.
    pub sql: String,
}

impl SqlParams {
    /// The canonical params text for `sql` (what grants pin and runs send).
    pub fn canonical(sql: &str) -> String {
        serde_json::to_string(&Self {
            sql: sql.to_string(),
        })
        .expect("a string always serialises")
    }
}

/// One output sealed to one recipient (the researcher, or a reviewer). The name, kind and bytes
/// are all inside the ciphertext; see [`seal_output`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SealedOutput {
    /// Position among the run's outputs.
    pub index: u32,
    /// HPKE ciphertext, base64.
    pub sealed: String,
}

/// What `GET /v1/runs/{id}/result` returns to the researcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ResultBundle {
    /// The run id.
    pub run: String,
    /// The receipt (its output digests are over the `sealed` bytes).
    pub receipt: crate::SignedReceipt,
    /// The released outputs.
    pub outputs: Vec<SealedOutput>,
    /// The run's final audit entry (naming the receipt's digest), a signed tree head and the
    /// entry's inclusion proof: the release is in the log every party checks.
    pub logged: crate::audit::LoggedEntry,
}

/// What `GET /v1/runs/{id}/held` returns to a pending reviewer: every output the run produced
/// (including held error text and logs), sealed to the reviewer's key, and signed by the
/// enclave: anyone can HPKE-seal to a reviewer's public key, so without the signature whoever
/// answers could show the reviewer harmless outputs while the real ones wait for release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HeldBundle {
    /// The run id.
    pub run: String,
    /// What the policy decided per output.
    pub reports: Vec<OutputReport>,
    /// The outputs.
    pub outputs: Vec<SealedOutput>,
    /// Hex Ed25519 signature by the enclave over [`HELD_DOMAIN`] and the other fields.
    #[serde(default)]
    pub signature: String,
}

/// Domain-separation prefix of a held bundle's signed bytes.
pub const HELD_DOMAIN: &[u8] = b"cleanroom/held/v1\n";

impl HeldBundle {
    fn signed_bytes(&self) -> Vec<u8> {
        let unsigned = Self {
            signature: String::new(),
            ..self.clone()
        };
        crate::canonical::canonical_bytes(HELD_DOMAIN, &unsigned)
    }

    /// Sign with the enclave's key.
    pub fn sign(mut self, enclave: &ed25519_dalek::SigningKey) -> Self {
        use ed25519_dalek::Signer;
        self.signature = hex::encode(enclave.sign(&self.signed_bytes()).to_bytes());
        self
    }

    /// Check the enclave's signature (`enclave`: the key from a verified attestation).
    pub fn verify(&self, enclave: &crate::PartyId) -> Result<()> {
        let sig = crate::policy::decode_signature(&self.signature)?;
        crate::keys::verify_signature(enclave, &self.signed_bytes(), &sig).map_err(|_| {
            crate::Error::BadSignature {
                what: "held outputs",
            }
        })
    }
}

/// An output in the clear: what a recipient gets back from [`open_output`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainOutput {
    /// The module's name for it.
    pub name: String,
    /// Its kind.
    pub kind: OutputKind,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// The HPKE context string of output `index` of `run` for `purpose` (`result` or `review`).
pub fn output_context(run: &str, purpose: &str, index: u32) -> String {
    format!("cleanroom/output/v1/{purpose}/{run}/{index}")
}

/// Smallest padded size of a sealed output's plaintext.
pub const MIN_PADDED_OUTPUT: usize = 1024;

/// The size an output frame of `len` bytes is padded to: the next power of two, at least
/// [`MIN_PADDED_OUTPUT`]. Ciphertext sizes (on disk and on the wire) then reveal only the
/// order of magnitude of what a module published, not its exact size.
pub fn padded_len(len: usize) -> usize {
    len.max(MIN_PADDED_OUTPUT).next_power_of_two()
}

/// Seal an output to `recipient` (X25519 public key): the plaintext is
/// `kind (1 byte) | name length (2, big-endian) | name | bytes length (8, big-endian) | bytes |
/// zeros`, padded to [`padded_len`].
pub fn seal_output(recipient: &[u8; 32], context: &str, output: &PlainOutput) -> Result<Vec<u8>> {
    let name = output.name.as_bytes();
    let len = u16::try_from(name.len())
        .map_err(|_| crate::Error::malformed("output name", "longer than 65535 bytes"))?;
    let frame = 1 + 2 + name.len() + 8 + output.bytes.len();
    let mut plain = Vec::with_capacity(padded_len(frame));
    plain.push(output.kind.tag());
    plain.extend_from_slice(&len.to_be_bytes());
    plain.extend_from_slice(name);
    plain.extend_from_slice(&(output.bytes.len() as u64).to_be_bytes());
    plain.extend_from_slice(&output.bytes);
    plain.resize(padded_len(frame), 0);
    crate::sealed::seal_to(recipient, context, &plain)
}

/// Open what [`seal_output`] sealed (the padding must be zeros).
pub fn open_output(
    recipient: &crate::Identity,
    context: &str,
    sealed: &[u8],
) -> Result<PlainOutput> {
    let plain = crate::sealed::open_sealed(recipient, context, sealed)?;
    let bad = |why: &str| crate::Error::malformed("sealed output", why.to_string());
    let (&tag, rest) = plain.split_first().ok_or_else(|| bad("empty"))?;
    let kind = OutputKind::from_tag(tag).ok_or_else(|| bad("unknown kind"))?;
    let (name_len, rest) = rest.split_at_checked(2).ok_or_else(|| bad("truncated"))?;
    let name_len = u16::from_be_bytes([name_len[0], name_len[1]]) as usize;
    let (name, rest) = rest
        .split_at_checked(name_len)
        .ok_or_else(|| bad("truncated name"))?;
    let name = String::from_utf8(name.to_vec()).map_err(|_| bad("name is not UTF-8"))?;
    let (bytes_len, rest) = rest.split_at_checked(8).ok_or_else(|| bad("truncated"))?;
    let bytes_len = u64::from_be_bytes(bytes_len.try_into().expect("8 bytes"));
    let bytes_len = usize::try_from(bytes_len).map_err(|_| bad("length out of range"))?;
    let (bytes, padding) = rest
        .split_at_checked(bytes_len)
        .ok_or_else(|| bad("truncated bytes"))?;
    if padding.iter().any(|&b| b != 0) {
        return Err(bad("padding is not zeros"));
    }
    Ok(PlainOutput {
        name,
        kind,
        bytes: bytes.to_vec(),
    })
}

/// One dataset as `GET /v1/datasets` shows it to the signer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DatasetInfo {
    /// Dataset id.
    pub id: String,
    /// The owner's party id.
    pub owner: String,
    /// Row count, to the owner and researchers granted on it.
    pub rows: Option<u64>,
    /// `(name, Arrow type)` per column, to the owner and granted researchers; hidden columns
    /// only to the owner.
    pub columns: Option<Vec<(String, String)>>,
    /// SHA-256 hex of the signed manifest.
    pub manifest_digest: String,
    /// Current policy version, if any.
    pub policy_version: Option<u64>,
    /// Upload time (Unix seconds).
    pub created: u64,
}

/// `GET /v1/datasets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DatasetList {
    /// The datasets.
    pub datasets: Vec<DatasetInfo>,
}
