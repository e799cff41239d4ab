//! Producing evidence inside the TEE: one [`Attester`] per backend, each behind a cargo
//! feature. There is no fallback between backends: a host that cannot open its TEE device
//! fails to start.

use crate::error::Result;
use crate::evidence::{EnclaveKeys, Evidence};

#[cfg(feature = "snp")]
pub mod snp;

#[cfg(any(test, feature = "simulation"))]
pub mod simulation;

#[cfg(any(test, feature = "snp", feature = "simulation"))]
/// HKDF info label that turns a backend's raw key into the host's sealing key.
pub(crate) const SEALING_KEY_INFO: &[u8] = b"cleanroom/sealing-key/v1";

/// A TEE backend: attests the enclave's keys and derives its sealing key.
pub trait Attester: Send + Sync + std::fmt::Debug {
    /// Evidence binding `keys` (and the client's `nonce`, if any) into the report.
    fn evidence(&self, keys: &EnclaveKeys, nonce: Option<&[u8]>) -> Result<Evidence>;

    /// A 32-byte key only this measurement and guest policy (on this chip) can derive; used
    /// to seal the enclave's identity keys and cached artifacts at rest.
    fn sealing_key(&self) -> Result<[u8; 32]>;
}

#[cfg(any(test, feature = "snp", feature = "simulation"))]
/// HKDF-SHA256 expansion of a backend secret into the sealing key.
pub(crate) fn expand_sealing_key(ikm: &[u8], salt: &[u8]) -> [u8; 32] {
    let mut key = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(Some(salt), ikm)
        .expand(SEALING_KEY_INFO, &mut key)
        .unwrap_or_else(|_| {
            unreachable!("invariant: 32 bytes is a valid HKDF-SHA256 output length")
        });
    key
}
