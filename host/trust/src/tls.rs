//! Binding the server's TLS key to the attested enclave (attested TLS, RA-TLS style).
//!
//! `cleanroomd` generates a fresh TLS key at every start, inside the enclave, and its
//! attested identity key signs the key's SubjectPublicKeyInfo digest. A client verifies the
//! evidence (fresh, for its own nonce) over a connection whose certificate it recorded,
//! checks that the attested identity endorsed exactly that certificate's key, and from then
//! on accepts only that key. A network attacker cannot complete a handshake for the endorsed
//! key (it never leaves the enclave), so it can neither read nor redirect the session.
//!
//! Why not the evidence in a certificate extension: it needs an X.509 extension OID of our
//! own (an unregistered arc, or `2.25` UUID arcs that the `der` crate cannot parse); the
//! endorsement travels in the attestation answer instead and costs one request per client
//! session.

use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Check, Error, Result};
use crate::evidence::EnclaveKeys;
use crate::identity::EnclaveIdentity;

/// Domain separator of the enclave's signature over its TLS key.
pub const TLS_KEY_DOMAIN: &[u8] = b"cleanroom/tls-key/v1\0";

/// The attested identity's statement: "the TLS key with this SPKI digest is mine".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TlsEndorsement {
    /// Hex SHA-256 of the certificate's DER SubjectPublicKeyInfo.
    pub spki_sha256: String,
    /// Hex Ed25519 signature by the enclave's signing key over [`TLS_KEY_DOMAIN`] and the
    /// 32 digest bytes.
    pub signature: String,
}

impl TlsEndorsement {
    /// The identity's endorsement of a TLS key.
    pub fn sign(identity: &EnclaveIdentity, spki_sha256: [u8; 32]) -> Self {
        Self {
            spki_sha256: hex::encode(spki_sha256),
            signature: hex::encode(identity.sign(&message(&spki_sha256))),
        }
    }

    /// Checks the signature by the attested `keys`, and that it endorses `peer_spki_sha256`
    /// (the key of the certificate the client's connection presented).
    pub fn verify(&self, keys: &EnclaveKeys, peer_spki_sha256: &[u8; 32]) -> Result<()> {
        let fail = |detail: &str| Error::Check {
            check: Check::TlsKey,
            detail: detail.to_string(),
        };
        if hex::encode(peer_spki_sha256) != self.spki_sha256 {
            return Err(fail(
                "the TLS certificate on this connection is not the one the attested enclave \
                 endorsed: someone between you and the enclave answered",
            ));
        }
        let key = VerifyingKey::from_bytes(&keys.signing_public_key)
            .map_err(|_| fail("the attested signing key is not an Ed25519 key"))?;
        let sig: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| fail("the TLS key endorsement is not a hex Ed25519 signature"))?;
        key.verify(&message(peer_spki_sha256), &Signature::from_bytes(&sig))
            .map_err(|_| fail("the TLS key endorsement is not signed by the attested enclave"))
    }
}

fn message(spki_sha256: &[u8; 32]) -> Vec<u8> {
    [TLS_KEY_DOMAIN, spki_sha256.as_slice()].concat()
}

/// SHA-256 of a DER certificate's SubjectPublicKeyInfo.
pub fn spki_sha256(cert_der: &[u8]) -> Result<[u8; 32]> {
    use der::{Decode as _, Encode as _};
    let cert = x509_cert::Certificate::from_der(cert_der).map_err(|e| Error::Malformed {
        what: "TLS certificate",
        detail: e.to_string(),
    })?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| Error::Malformed {
            what: "TLS certificate key",
            detail: e.to_string(),
        })?;
    Ok(Sha256::digest(spki).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{VCEK_DER, assert_check};

    fn identity() -> (tempfile::TempDir, EnclaveIdentity) {
        let dir = tempfile::tempdir().unwrap();
        let id = EnclaveIdentity::load_or_create(dir.path(), &[7; 32]).unwrap();
        (dir, id)
    }

    #[test]
    fn the_endorsed_key_verifies_and_no_other() {
        let (_d, enclave) = identity();
        let key = [1u8; 32];
        let endorsement = TlsEndorsement::sign(&enclave, key);
        endorsement.verify(&enclave.public_keys(), &key).unwrap();
        // A man in the middle presents its own certificate key, relaying the real
        // endorsement: refused.
        assert_check(
            endorsement.verify(&enclave.public_keys(), &[2u8; 32]),
            Check::TlsKey,
        );
        // It endorses its key with its own identity: the attested keys are not its.
        let (_d2, impostor) = identity();
        let forged = TlsEndorsement::sign(&impostor, [2u8; 32]);
        assert_check(
            forged.verify(&enclave.public_keys(), &[2u8; 32]),
            Check::TlsKey,
        );
        // Garbage signatures are refused, not a panic.
        let mut bad = endorsement.clone();
        bad.signature = "zz".into();
        assert_check(bad.verify(&enclave.public_keys(), &key), Check::TlsKey);
    }

    #[test]
    fn spki_digests_come_from_real_certificates() {
        let digest = spki_sha256(VCEK_DER).unwrap();
        assert_ne!(digest, [0; 32]);
        assert!(spki_sha256(b"not a certificate").is_err());
    }
}
