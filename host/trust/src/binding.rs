//! What the report's `report_data` and `host_data` fields commit to.

use sha2::{Digest as _, Sha256, Sha512};

use crate::evidence::EnclaveKeys;

/// Domain separator of the `report_data` binding (versioned, NUL-terminated).
pub const REPORT_DATA_DOMAIN: &[u8] = b"cleanroom/report-data/v1\0";

/// The 64 bytes the enclave puts in `report_data`:
/// SHA-512(domain || hpke_pk || ed25519_pk || len(nonce) as u64 big-endian || nonce).
///
/// No nonce hashes as a zero length, so "no nonce" and "empty nonce" bind the same
/// (both mean: not fresh).
pub fn report_data(keys: &EnclaveKeys, nonce: Option<&[u8]>) -> [u8; 64] {
    let nonce = nonce.unwrap_or_default();
    let mut hash = Sha512::new();
    hash.update(REPORT_DATA_DOMAIN);
    hash.update(keys.hpke_public_key);
    hash.update(keys.signing_public_key);
    hash.update((nonce.len() as u64).to_be_bytes());
    hash.update(nonce);
    hash.finalize().into()
}

/// The 32 bytes the operator sets as `host_data` at launch: SHA-256 of the deployment
/// configuration exactly as the host reads it.
pub fn host_data(deployment_config: &[u8]) -> [u8; 32] {
    Sha256::digest(deployment_config).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> EnclaveKeys {
        EnclaveKeys {
            hpke_public_key: [1; 32],
            signing_public_key: [2; 32],
        }
    }

    #[test]
    fn report_data_changes_with_every_input() {
        let base = report_data(&keys(), Some(b"n"));
        let mut other = keys();
        other.hpke_public_key[0] ^= 1;
        assert_ne!(base, report_data(&other, Some(b"n")));
        let mut other = keys();
        other.signing_public_key[31] ^= 1;
        assert_ne!(base, report_data(&other, Some(b"n")));
        assert_ne!(base, report_data(&keys(), Some(b"m")));
        assert_ne!(base, report_data(&keys(), None));
        assert_eq!(report_data(&keys(), None), report_data(&keys(), Some(b"")));
    }

    #[test]
    fn host_data_is_sha256_of_config() {
        assert_eq!(
            hex::encode(host_data(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
