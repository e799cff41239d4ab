//! The enclave identity: an HPKE X25519 key (data keys are wrapped to it) and an Ed25519
//! signing key (receipts, the audit log), created at first boot and sealed to the disk so
//! the same measurement on the same chip gets them back after a restart.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer as _, SigningKey};
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable as _, Kem as _, Serializable as _};
use rand_core::{OsRng, RngCore as _};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::evidence::EnclaveKeys;
use crate::sealing::{Purpose, Sealer};

/// File name of the sealed identity inside the data directory.
pub const IDENTITY_FILE: &str = "identity.sealed";

/// Associated data of the sealed identity (names the plaintext layout version).
const IDENTITY_AAD: &[u8] = b"cleanroom/identity/v1: hpke-x25519-sk || ed25519-seed";

/// The enclave's private keys. Never leaves the enclave except sealed.
pub struct EnclaveIdentity {
    hpke_secret: Zeroizing<[u8; 32]>,
    hpke_public: [u8; 32],
    signing: SigningKey,
}

impl std::fmt::Debug for EnclaveIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnclaveIdentity")
            .field("public_keys", &self.public_keys())
            .finish_non_exhaustive()
    }
}

impl EnclaveIdentity {
    /// Restores the identity from `data_dir/identity.sealed`, or creates and seals a new one
    /// if that file does not exist. Fails closed if the file exists but does not open (another
    /// measurement or chip, or tampering): it never silently replaces an identity that owners
    /// have wrapped data keys to.
    pub fn load_or_create(data_dir: &Path, sealing_key: &[u8; 32]) -> Result<Self> {
        let sealer = Sealer::new(sealing_key);
        let path = data_dir.join(IDENTITY_FILE);
        match fs::read(&path) {
            Ok(blob) => {
                let plain = Zeroizing::new(
                    sealer
                        .open(Purpose::Identity, IDENTITY_AAD, &blob)
                        .map_err(|e| unseal_error(&path, e))?,
                );
                let keys: &[u8; 64] = plain[..].try_into().map_err(|_| {
                    Error::malformed("sealed identity", "the plaintext is not 64 bytes")
                })?;
                Self::from_secrets(&keys[..32], &keys[32..])
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut secrets = Zeroizing::new([0u8; 64]);
                OsRng.try_fill_bytes(&mut secrets[..]).map_err(|e| {
                    Error::Crypto(format!("the system random number generator failed: {e}"))
                })?;
                let identity = Self::from_secrets(&secrets[..32], &secrets[32..])?;
                let blob = sealer.seal(Purpose::Identity, IDENTITY_AAD, &secrets[..])?;
                write_atomically(data_dir, &path, &blob)?;
                tracing::info!(path = %path.display(), "created and sealed a new enclave identity");
                Ok(identity)
            }
            Err(e) => Err(io_error(format!("reading {}", path.display()), e)),
        }
    }

    fn from_secrets(hpke_secret: &[u8], signing_seed: &[u8]) -> Result<Self> {
        let hpke_secret: [u8; 32] = hpke_secret
            .try_into()
            .map_err(|_| Error::malformed("sealed identity", "hpke key is not 32 bytes"))?;
        let seed: &[u8; 32] = signing_seed
            .try_into()
            .map_err(|_| Error::malformed("sealed identity", "signing seed is not 32 bytes"))?;
        let sk = <X25519HkdfSha256 as hpke::Kem>::PrivateKey::from_bytes(&hpke_secret)
            .map_err(|e| Error::Crypto(format!("invalid hpke private key: {e}")))?;
        let hpke_public = X25519HkdfSha256::sk_to_pk(&sk).to_bytes().into();
        Ok(Self {
            hpke_secret: Zeroizing::new(hpke_secret),
            hpke_public,
            signing: SigningKey::from_bytes(seed),
        })
    }

    /// The public keys, as bound into attestation evidence.
    pub fn public_keys(&self) -> EnclaveKeys {
        EnclaveKeys {
            hpke_public_key: self.hpke_public,
            signing_public_key: self.signing.verifying_key().to_bytes(),
        }
    }

    /// Signs `message` with the enclave's Ed25519 key.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// The Ed25519 key that signs receipts and audit heads (never leaves the enclave).
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// The HPKE private key (X25519), for unwrapping dataset keys.
    pub fn hpke_secret(&self) -> &[u8; 32] {
        &self.hpke_secret
    }
}

fn unseal_error(path: &Path, e: Error) -> Error {
    Error::Crypto(format!(
        "the sealed enclave identity {} does not open ({e}); this host runs another \
         measurement or chip than the one that sealed it, or the file was modified. \
         Refusing to start rather than create a new identity: run the image that sealed it, \
         or move the file away only to abandon that identity and every dataset wrapped to it",
        path.display()
    ))
}

fn io_error(context: String, e: std::io::Error) -> Error {
    Error::Device {
        context,
        source: Box::new(e),
    }
}

/// Writes `path` so that a crash leaves either the old file or the complete new one:
/// temp file, fsync, rename, fsync the directory.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| io_error(format!("creating {}", dir.display()), e))?;
    let tmp: PathBuf = dir.join(format!("{IDENTITY_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| io_error(format!("writing {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "cleanroom-identity-{name}-{}-{}",
            std::process::id(),
            OsRng.next_u64()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn restart_restores_the_same_keys() {
        let dir = temp_dir("restart");
        let first = EnclaveIdentity::load_or_create(&dir, &[7; 32]).unwrap();
        let again = EnclaveIdentity::load_or_create(&dir, &[7; 32]).unwrap();
        assert_eq!(first.public_keys(), again.public_keys());
        assert_eq!(first.hpke_secret(), again.hpke_secret());
        assert_eq!(first.sign(b"receipt"), again.sign(b"receipt"));
        assert!(!dir.join(format!("{IDENTITY_FILE}.tmp")).exists());
        let other = EnclaveIdentity::load_or_create(&temp_dir("fresh"), &[7; 32]).unwrap();
        assert_ne!(
            first.public_keys(),
            other.public_keys(),
            "each first boot is random"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn another_sealing_key_fails_closed_and_keeps_the_file() {
        let dir = temp_dir("other-key");
        EnclaveIdentity::load_or_create(&dir, &[7; 32]).unwrap();
        let sealed = fs::read(dir.join(IDENTITY_FILE)).unwrap();
        let err = EnclaveIdentity::load_or_create(&dir, &[8; 32]).unwrap_err();
        assert!(err.to_string().contains("does not open"), "{err}");
        assert_eq!(
            fs::read(dir.join(IDENTITY_FILE)).unwrap(),
            sealed,
            "never regenerated"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn flipped_bit_fails_closed() {
        let dir = temp_dir("flip");
        EnclaveIdentity::load_or_create(&dir, &[7; 32]).unwrap();
        let path = dir.join(IDENTITY_FILE);
        let mut sealed = fs::read(&path).unwrap();
        let last = sealed.len() - 20;
        sealed[last] ^= 0x10;
        fs::write(&path, &sealed).unwrap();
        assert!(EnclaveIdentity::load_or_create(&dir, &[7; 32]).is_err());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn signatures_verify_under_the_published_key() {
        let dir = temp_dir("sign");
        let id = EnclaveIdentity::load_or_create(&dir, &[7; 32]).unwrap();
        let pk =
            ed25519_dalek::VerifyingKey::from_bytes(&id.public_keys().signing_public_key).unwrap();
        let sig = ed25519_dalek::Signature::from_bytes(&id.sign(b"m"));
        pk.verify_strict(b"m", &sig).unwrap();
        fs::remove_dir_all(dir).unwrap();
    }
}
