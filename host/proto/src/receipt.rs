//! Enclave-signed run receipts, checkable later by any party.

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};

use crate::canonical::{canonical_bytes, sha256_hex};
use crate::error::{Error, Result};
use crate::keys::{PartyId, verify_signature};
use crate::policy::decode_signature;
use crate::run::{OutputKind, RunState};

/// Domain-separation prefix of a receipt's signed bytes.
pub const RECEIPT_DOMAIN: &[u8] = b"cleanroom/receipt/v1\n";

/// What ran, on what, under which policies, and what came out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// The run id.
    pub run_id: String,
    /// The module id (SHA-256 hex).
    pub module: String,
    /// Who asked for the run.
    pub researcher: PartyId,
    /// Each input with the policy version it ran under.
    pub inputs: Vec<ReceiptInput>,
    /// SHA-256 hex of the run's parameters.
    pub params_digest: String,
    /// Each released output.
    pub outputs: Vec<ReceiptOutput>,
    /// The run's state when the receipt was issued.
    pub state: RunState,
    /// The enclave's launch measurement (hex).
    pub measurement: String,
    /// The enclave's signing key, bound to the measurement by attestation.
    pub enclave_key: PartyId,
    /// When the receipt was issued (Unix seconds).
    pub issued_at: u64,
    /// For a pipeline run (`module` is the pipeline's digest): each step, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<ReceiptStep>,
}

/// One step of a pipeline run, in its receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReceiptStep {
    /// The step id.
    pub id: String,
    /// Its module.
    pub module: String,
    /// SHA-256 hex of its params.
    pub params_digest: String,
    /// The derived datasets it kept (output name -> derived dataset id).
    pub kept: std::collections::BTreeMap<String, String>,
    /// Whether it was not run again because its kept tables existed from an earlier run on
    /// the same content.
    pub reused: bool,
}

/// One input of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReceiptInput {
    /// The table name the guest saw.
    pub name: String,
    /// The dataset id.
    pub dataset: String,
    /// SHA-256 hex of the dataset's manifest.
    pub manifest_digest: String,
    /// The policy version applied when the run started (what it actually ran under).
    pub policy_version: u64,
    /// [`crate::SignedPolicy::digest`] of that policy.
    pub policy_digest: String,
    /// [`crate::Grant::digest`] of the grant that allowed the run.
    pub grant_digest: String,
    /// SHA-256 hex of the terms the run is held to: that grant, the policy's output rules,
    /// hidden and identifier columns. A new policy version with the same terms lets in-flight
    /// runs finish; changed terms stop or withhold them.
    pub terms_digest: String,
    /// The derived dataset this root was read through, when the run's input was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// One released output of a run. Its name and size are inside the ciphertext: the receipt is
/// seen by every input owner, and names and sizes are module-chosen outputs too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReceiptOutput {
    /// Position in the result bundle.
    pub index: u32,
    /// What kind of output.
    pub kind: OutputKind,
    /// SHA-256 hex of the sealed ciphertext (a digest of the plaintext would let anyone who
    /// sees the receipt confirm a guessed low-entropy result).
    pub ciphertext_sha256: String,
}

impl Receipt {
    /// The bytes the enclave signs: [`RECEIPT_DOMAIN`] followed by canonical JSON.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        canonical_bytes(RECEIPT_DOMAIN, self)
    }
}

/// A receipt with the enclave's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignedReceipt {
    /// The receipt.
    pub receipt: Receipt,
    /// Hex Ed25519 signature by `receipt.enclave_key` over [`Receipt::canonical_bytes`].
    pub signature: String,
}

impl SignedReceipt {
    /// Signs `receipt` with the enclave key. `receipt.enclave_key` is set to that key.
    pub fn sign(mut receipt: Receipt, enclave: &SigningKey) -> Self {
        receipt.enclave_key = PartyId::from(enclave.verifying_key());
        let signature = hex::encode(enclave.sign(&receipt.canonical_bytes()).to_bytes());
        Self { receipt, signature }
    }

    /// Checks the signature, and that the signer is `expected_enclave` if given (the key from
    /// a verified attestation). Without an expected key this only proves integrity.
    pub fn verify(&self, expected_enclave: Option<&PartyId>) -> Result<()> {
        let signer = &self.receipt.enclave_key;
        if let Some(expected) = expected_enclave
            && expected != signer
        {
            return Err(Error::WrongSigner {
                what: "receipt",
                expected: expected.to_string(),
                found: signer.to_string(),
            });
        }
        let sig = decode_signature(&self.signature)?;
        verify_signature(signer, &self.receipt.canonical_bytes(), &sig)
            .map_err(|_| Error::BadSignature { what: "receipt" })
    }

    /// SHA-256 hex of the signed bytes, to name the receipt in the audit log.
    pub fn digest(&self) -> String {
        sha256_hex(&self.receipt.canonical_bytes())
    }
}

/// A receipt with the proof that its run's final entry is in the audit log: what
/// `cleanroom result fetch` saves as `receipt.json` and `cleanroom receipt verify` checks
/// offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LoggedReceipt {
    /// The signed receipt.
    pub receipt: SignedReceipt,
    /// The run's final audit entry, a signed tree head and the inclusion proof.
    pub logged: crate::audit::LoggedEntry,
}

/// The part of a final run entry's detail that names the receipt.
#[derive(Deserialize)]
struct FinalDetail {
    #[serde(default)]
    receipt: Option<String>,
}

impl LoggedReceipt {
    /// Checks the receipt's signature, that the log entry is this run's final entry naming
    /// exactly this receipt, that the tree head is signed by the same enclave, and that the
    /// entry is included in that head. `expected_enclave` pins the enclave (from attestation).
    pub fn verify(&self, expected_enclave: Option<&PartyId>) -> Result<()> {
        self.receipt.verify(expected_enclave)?;
        let receipt = &self.receipt.receipt;
        let entry = &self.logged.entry;
        let names: Option<FinalDetail> = serde_json::from_value(entry.detail.clone()).ok();
        let expected_action = format!("run.{}", receipt.state);
        if entry.subject != receipt.run_id
            || entry.action != expected_action
            || names.and_then(|d| d.receipt) != Some(self.receipt.digest())
        {
            return Err(Error::malformed(
                "logged receipt",
                format!(
                    "the log entry #{} ({} {}) is not run {}'s final entry naming this receipt",
                    entry.seq, entry.action, entry.subject, receipt.run_id
                ),
            ));
        }
        self.logged
            .verify(Some(&receipt.enclave_key))
            .map_err(|e| Error::malformed("logged receipt", e.to_string()))
    }
}
