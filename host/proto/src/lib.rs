//! Wire formats and signed objects shared by the `cleanroom` CLI and the `cleanroomd` server.
//!
//! Nothing here depends on wasmtime or an async runtime: it is the code both sides of the trust
//! boundary must agree on.
//!
//! - [`keys`]: a party is an Ed25519 key ([`PartyId`]); an [`Identity`] also holds the X25519
//!   secret that results are sealed to.
//! - [`httpsig`]: API requests signed per RFC 9421 with an RFC 9530 `Content-Digest`.
//! - [`policy`]: owner-signed dataset policies and output rules (decisions: `cleanroom-policy`).
//! - [`run`]: run requests and states; [`receipt`]: enclave-signed run receipts.
//! - [`audit`]: the audit log: an RFC 6962 Merkle log, signed tree heads, inclusion and consistency proofs.
//! - [`sealed`]: HPKE encryption of results to the researcher.
//! - [`api`]: the JSON API's other answers, and module source bundles.
//!
//! Signed and hashed objects use canonical bytes: a domain-separation prefix such as
//! `cleanroom/policy/v1\n` followed by compact JSON with object keys sorted at every level.
//!
//! # Example
//!
//! ```
//! use cleanroom_proto::{
//!     Grant, Identity, OutputRules, Policy, Researchers, SignedPolicy,
//!     httpsig, params_digest,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let owner = Identity::generate();
//! let researcher = Identity::generate();
//! let module = "ab".repeat(32);
//!
//! // The owner approves one module for one researcher and signs the policy.
//! let policy = Policy {
//!     dataset: "d1".into(),
//!     version: 1,
//!     grants: vec![Grant {
//!         module: module.clone(),
//!         researchers: Researchers::Only(vec![researcher.party()]),
//!         params_digest: None,
//!         expires_at: None,
//!         max_runs: Some(3),
//!         note: None,
//!         inputs: None,
//!         unlimited: false,
//!     }],
//!     hidden_columns: vec![],
//!     identifier_columns: vec!["patient_id".into()],
//!     output: OutputRules::default(),
//!     dp: None,
//!     issued_at: 1_700_000_000,
//! };
//! let signed = SignedPolicy::sign(policy, &owner);
//! signed.verify()?;
//!
//! // The researcher signs an API request; the server verifies it (and `cleanroom-policy`
//! // decides whether the run may happen).
//! let body = br#"{"module":"..."}"#;
//! let now = 1_700_000_100;
//! let headers = httpsig::sign_request(
//!     &researcher, "POST", "/v1/runs", body, now, &httpsig::new_nonce(),
//! );
//! let verified = httpsig::verify_request(
//!     "POST",
//!     "/v1/runs",
//!     |name| match name {
//!         "content-digest" => Some(headers.content_digest.clone()),
//!         "signature-input" => Some(headers.signature_input.clone()),
//!         "signature" => Some(headers.signature.clone()),
//!         _ => None,
//!     },
//!     body,
//!     now,
//! )?;
//! assert_eq!(verified.party, researcher.party());
//! assert!(signed.policy.grants[0].researchers.allows(&verified.party));
//! # let _ = params_digest("{}");
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
pub mod audit;
mod canonical;
pub mod codes;
pub mod dp;
pub mod error;
mod fields;
pub mod httpsig;
pub mod image;
pub mod keys;
pub mod pipeline;
pub mod policy;
pub mod receipt;
mod rules;
pub mod run;
pub mod sealed;
pub mod upgrade;

pub use audit::{
    Action, AuditEntry, AuditItem, AuditPage, ConsistencyAnswer, LoggedEntry, MerkleLog,
    SignedHead, verify_consistency, verify_inclusion, verify_items,
};
pub use codes::{Code, Reason};
pub use error::{AuditError, Error, Result, SigError};
pub use httpsig::{SignedHeaders, VerifiedRequest, sign_request, verify_request};
pub use keys::{Identity, PartyId, verify_signature};
pub use policy::{Grant, OutputRules, Policy, Researchers, SignedPolicy, SmallGroups};
pub use receipt::{Receipt, ReceiptInput, ReceiptOutput, ReceiptStep, SignedReceipt};
pub use run::{RunRequest, RunState, params_digest};
pub use sealed::{open_sealed, seal_to};
