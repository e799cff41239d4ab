//! Sealing data at rest to this enclave: AES-256-GCM under per-purpose subkeys of the
//! attester's sealing key, so the host's (hostile) disk only ever holds authenticated
//! ciphertext that this measurement on this chip can open.
//!
//! Blob layout: magic `CRSL` (4) || version (1) || purpose (1) || nonce (12) || ciphertext
//! || tag (16). The AEAD's associated data is the 18-byte header followed by the caller's
//! `aad` (for example the module hash of a precompiled artifact), so a blob opens only for the
//! purpose and context it was sealed for. Nonces are random (96 bits): keep each purpose key
//! under 2^32 seals.

use rand_core::{OsRng, RngCore as _};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::error::{Error, Result};

/// HKDF salt separating the sealing subkeys from other uses of the sealing key.
const SEAL_SALT: &[u8] = b"cleanroom/seal";

/// First bytes of every sealed blob.
pub const SEALED_MAGIC: [u8; 4] = *b"CRSL";

/// The sealed-blob format version.
pub const SEALED_VERSION: u8 = 1;

/// Length of the sealed-blob header: magic, version, purpose, nonce.
pub const SEALED_HEADER_LEN: usize = 4 + 1 + 1 + NONCE_LEN;

/// Length of the tag after the ciphertext.
const TAG_LEN: usize = 16;

/// What a sealed blob is for; each purpose has its own subkey.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Purpose {
    /// The enclave identity (HPKE and signing keys).
    Identity,
    /// Host state (the metadata database).
    State,
    /// Precompiled wasm artifacts (native code: never load one that does not open).
    Artifact,
}

impl Purpose {
    const ALL: [Self; 3] = [Self::Identity, Self::State, Self::Artifact];

    /// The HKDF-SHA256 `info` label of this purpose's subkey.
    pub fn label(self) -> &'static str {
        match self {
            Self::Identity => "cleanroom/seal/identity/v1",
            Self::State => "cleanroom/seal/state/v1",
            Self::Artifact => "cleanroom/seal/artifact/v1",
        }
    }

    fn id(self) -> u8 {
        match self {
            Self::Identity => 1,
            Self::State => 2,
            Self::Artifact => 3,
        }
    }
}

/// Seals and opens blobs with subkeys derived from the attester's sealing key.
pub struct Sealer {
    keys: [LessSafeKey; 3],
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").finish_non_exhaustive()
    }
}

impl Sealer {
    /// Derives one subkey per [`Purpose`]: HKDF-SHA256(salt `cleanroom/seal`,
    /// ikm = `sealing_key`, info = [`Purpose::label`]).
    pub fn new(sealing_key: &[u8; 32]) -> Self {
        let hkdf = hkdf::Hkdf::<sha2::Sha256>::new(Some(SEAL_SALT), sealing_key);
        let keys = Purpose::ALL.map(|purpose| {
            let mut okm = zeroize::Zeroizing::new([0u8; 32]);
            hkdf.expand(purpose.label().as_bytes(), &mut okm[..])
                .unwrap_or_else(|_| {
                    unreachable!("invariant: 32 bytes is a valid HKDF-SHA256 output length")
                });
            let key = UnboundKey::new(&AES_256_GCM, &okm[..])
                .unwrap_or_else(|_| unreachable!("invariant: 32 bytes is an AES-256 key"));
            LessSafeKey::new(key)
        });
        Self { keys }
    }

    fn key(&self, purpose: Purpose) -> &LessSafeKey {
        &self.keys[usize::from(purpose.id() - 1)]
    }

    /// Encrypts and authenticates `plaintext` for `purpose`, bound to `aad`.
    pub fn seal(&self, purpose: Purpose, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.try_fill_bytes(&mut nonce).map_err(|e| {
            Error::Crypto(format!("the system random number generator failed: {e}"))
        })?;
        let mut blob = Vec::with_capacity(SEALED_HEADER_LEN + plaintext.len() + TAG_LEN);
        blob.extend_from_slice(&SEALED_MAGIC);
        blob.push(SEALED_VERSION);
        blob.push(purpose.id());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(plaintext);
        let full_aad = [&blob[..SEALED_HEADER_LEN], aad].concat();
        let (header, body) = blob.split_at_mut(SEALED_HEADER_LEN);
        debug_assert_eq!(header.len(), SEALED_HEADER_LEN);
        let tag = self
            .key(purpose)
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&full_aad[..]),
                body,
            )
            .map_err(|_| Error::Crypto("the plaintext is too large to seal".to_owned()))?;
        blob.extend_from_slice(tag.as_ref());
        Ok(blob)
    }

    /// Authenticates and decrypts a blob sealed for `purpose` with the same `aad`. Fails
    /// closed on any difference: another sealing key (measurement or chip), another
    /// purpose or context, or a modified byte.
    pub fn open(&self, purpose: Purpose, aad: &[u8], blob: &[u8]) -> Result<Vec<u8>> {
        if blob.len() < SEALED_HEADER_LEN + TAG_LEN || blob[..4] != SEALED_MAGIC {
            return Err(Error::malformed(
                "sealed blob",
                "not a sealed blob (bad magic or too short)",
            ));
        }
        if blob[4] != SEALED_VERSION {
            return Err(Error::malformed(
                "sealed blob",
                format!("version {} is not supported; upgrade the host", blob[4]),
            ));
        }
        if blob[5] != purpose.id() {
            return Err(Error::Crypto(format!(
                "the blob was sealed for another purpose than {}; refusing it",
                purpose.label()
            )));
        }
        let nonce: [u8; NONCE_LEN] = blob[6..SEALED_HEADER_LEN]
            .try_into()
            .unwrap_or_else(|_| unreachable!("invariant: the header holds a 12-byte nonce"));
        let full_aad = [&blob[..SEALED_HEADER_LEN], aad].concat();
        let mut body = blob[SEALED_HEADER_LEN..].to_vec();
        let len = self
            .key(purpose)
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&full_aad[..]),
                &mut body,
            )
            .map_err(|_| {
                Error::Crypto(format!(
                    "sealed {} blob does not open: it was sealed by another measurement or \
                     chip, for another context, or modified; refusing it",
                    purpose.label()
                ))
            })?
            .len();
        body.truncate(len);
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODULE_A: &[u8] = b"sha256:aaaa";

    #[test]
    fn seal_open_round_trip_per_purpose() {
        let sealer = Sealer::new(&[1; 32]);
        let blob = sealer.seal(Purpose::State, b"db", b"state").unwrap();
        assert_eq!(sealer.open(Purpose::State, b"db", &blob).unwrap(), b"state");
        assert_ne!(
            blob,
            sealer.seal(Purpose::State, b"db", b"state").unwrap(),
            "fresh nonce"
        );
        assert!(sealer.open(Purpose::Artifact, b"db", &blob).is_err());
    }

    #[test]
    fn modified_artifact_is_refused() {
        let sealer = Sealer::new(&[1; 32]);
        let blob = sealer
            .seal(Purpose::Artifact, MODULE_A, b"\x7fELF native code")
            .unwrap();
        for i in [0, 4, 5, 6, SEALED_HEADER_LEN, blob.len() - 1] {
            let mut tampered = blob.clone();
            tampered[i] ^= 0x01;
            assert!(
                sealer.open(Purpose::Artifact, MODULE_A, &tampered).is_err(),
                "byte {i}"
            );
        }
        assert!(
            sealer
                .open(Purpose::Artifact, MODULE_A, &blob[..blob.len() - 1])
                .is_err()
        );
    }

    #[test]
    fn artifact_for_another_module_hash_is_refused() {
        let sealer = Sealer::new(&[1; 32]);
        let blob = sealer.seal(Purpose::Artifact, MODULE_A, b"code").unwrap();
        let err = sealer
            .open(Purpose::Artifact, b"sha256:bbbb", &blob)
            .unwrap_err();
        assert!(err.to_string().contains("does not open"), "{err}");
    }

    #[test]
    fn another_sealing_key_fails_closed() {
        let blob = Sealer::new(&[1; 32])
            .seal(Purpose::State, b"", b"x")
            .unwrap();
        assert!(
            Sealer::new(&[2; 32])
                .open(Purpose::State, b"", &blob)
                .is_err()
        );
    }
}
