//! Attestation for cleanroom: SEV-SNP evidence, its offline verifier, and the attesters.
//!
//! Shared by the CLI (outside the TEE: verifies evidence before a data owner wraps a key to
//! the enclave) and the host (inside the TEE: produces evidence, derives its sealing key).
//! It does not depend on wasmtime.
//!
//! - [`binding`]: what `report_data` (enclave keys + nonce) and `host_data` (deployment
//!   configuration) commit to.
//! - [`Evidence`]: the JSON the host sends — raw report, VCEK/VLEK, optional ASK/ARK, the
//!   enclave's public keys, the deployment digest, the client's nonce.
//! - [`Verifier`]: every check required — report version and exact encoding, the chain to
//!   AMD's ARK *pinned per CPU generation* (Milan, Genoa, Turin), the report signature, the
//!   VCEK TCB and hwID extensions, VMPL 0, the key binding, `host_data`, the measurement
//!   allow-list, debug and migration-agent bits, the minimum TCB, and refusal of simulated
//!   evidence unless [`Policy::accept_simulation`]. Failures name the [`Check`] that failed.
//! - [`verify_report`]: the hardware checks only, for inspecting a raw report offline.
//! - [`EnclaveIdentity`]: the enclave's HPKE and Ed25519 keys, created at first boot and
//!   sealed to disk with [`Sealer`] (per-purpose subkeys of [`attester::Attester::sealing_key`]).
//! - [`attester`]: `snp` (feature `snp`, default) and `simulation` (feature `simulation` and
//!   a runtime opt-in; INSECURE).
//!
//! Not checked (yet): certificate validity dates and AMD's CRLs (evidence travels offline, and
//! the committed AMD fixtures have expired VLEKs); AMD's ASVK (the VLEK intermediate) is not
//! embedded, so VLEK evidence must carry it and it must chain to the pinned ARK.
//!
//! ```
//! use cleanroom_trust::{Check, Evidence, Measurement, Policy, Tcb, Verifier};
//!
//! fn accept(evidence_json: &[u8], my_nonce: &[u8]) -> cleanroom_trust::Result<[u8; 32]> {
//!     let policy = Policy {
//!         allowed_measurements: vec![Measurement([0x5a; 48])],
//!         minimum_tcb: Tcb { bootloader: 3, tee: 0, snp: 8, microcode: 115, fmc: None },
//!         host_data: cleanroom_trust::binding::host_data(b"deployment.toml contents"),
//!         accept_simulation: false,
//!     };
//!     let evidence = Evidence::from_json(evidence_json)?;
//!     let claims = Verifier::new(policy).verify(&evidence, Some(my_nonce))?;
//!     // Only now is it safe to wrap a data key to the attested HPKE key.
//!     let keys = claims.enclave_keys.expect("full verification returns the bound keys");
//!     Ok(keys.hpke_public_key)
//! }
//!
//! let err = accept(b"{}", b"nonce").unwrap_err();
//! assert!(err.to_string().contains("malformed evidence json"));
//! # let _ = Check::Measurement;
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod attester;
pub mod binding;
mod certs;
mod endorsement;
mod error;
mod evidence;
mod identity;
pub mod measure;
mod policy;
mod report;
mod roots;
mod sealing;
#[cfg(any(test, feature = "simulation"))]
mod simulation;
mod tcb;
pub mod tls;
mod verifier;

#[cfg(test)]
mod tests;

pub use endorsement::{SIMULATION_CHIP_ID_PREFIX, forget_verified_chains};
pub use error::{Check, Error, Result};
pub use evidence::{EVIDENCE_FORMAT_VERSION, EnclaveKeys, Evidence};
pub use identity::{EnclaveIdentity, IDENTITY_FILE};
pub use policy::{DEFAULT_ACCEPT_SIMULATION, Measurement, Policy, VerifiedClaims};
pub use report::{REPORT_LEN, Report, SigningKey};
pub use sealing::{Purpose, SEALED_HEADER_LEN, SEALED_MAGIC, SEALED_VERSION, Sealer};
pub use tcb::{Generation, Tcb};
pub use verifier::{Verifier, verify_report};
