//! Wrapping the data key to the enclave: HPKE (RFC 9180) base mode,
//! DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM.

use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable as _, OpModeR, OpModeS, Serializable as _};
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::chunk::DataKey;
use crate::error::{Error, Result};
use crate::id::DatasetId;

/// Domain separator at the start of the HPKE `info` (versioned, NUL-terminated).
pub const WRAP_INFO_DOMAIN: &[u8] = b"cleanroom/envelope/data-key/v1\0";

/// Length of the HPKE encapsulated key (an X25519 public key).
pub const ENCAPSULATED_KEY_LEN: usize = 32;

/// Length of the wrapped data key: 32 key bytes and a 16-byte tag.
pub const WRAPPED_KEY_LEN: usize = 48;

/// HPKE `info`: domain || dataset id || owner's Ed25519 public key.
pub(crate) fn wrap_info(id: &DatasetId, owner: &[u8; 32]) -> Vec<u8> {
    [WRAP_INFO_DOMAIN, id.as_bytes(), owner].concat()
}

/// Seals `data_key` to the enclave's X25519 public key.
pub(crate) fn wrap<R: CryptoRng + RngCore>(
    enclave_pk: &[u8; 32],
    id: &DatasetId,
    owner: &[u8; 32],
    data_key: &DataKey,
    rng: &mut R,
) -> Result<([u8; ENCAPSULATED_KEY_LEN], [u8; WRAPPED_KEY_LEN])> {
    let pk = <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(enclave_pk)
        .map_err(|_| Error::InvalidEnclaveKey)?;
    let (enc, wrapped) = hpke::single_shot_seal::<AesGcm256, HkdfSha256, X25519HkdfSha256, _>(
        &OpModeS::Base,
        &pk,
        &wrap_info(id, owner),
        &data_key[..],
        &[],
        rng,
    )
    .map_err(|_| Error::InvalidEnclaveKey)?;
    let wrapped: [u8; WRAPPED_KEY_LEN] = wrapped.try_into().unwrap_or_else(|_| {
        unreachable!("invariant: AES-256-GCM of 32 bytes is 48 bytes");
    });
    Ok((enc.to_bytes().into(), wrapped))
}

/// Opens the wrapped data key with the enclave's X25519 private key.
pub(crate) fn unwrap(
    enclave_sk: &[u8; 32],
    id: &DatasetId,
    owner: &[u8; 32],
    enc: &[u8; ENCAPSULATED_KEY_LEN],
    wrapped: &[u8; WRAPPED_KEY_LEN],
) -> Result<DataKey> {
    let sk = <X25519HkdfSha256 as hpke::Kem>::PrivateKey::from_bytes(enclave_sk)
        .map_err(|_| Error::UnwrapFailed)?;
    let enc = <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(enc)
        .map_err(|_| Error::UnwrapFailed)?;
    let key = Zeroizing::new(
        hpke::single_shot_open::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
            &OpModeR::Base,
            &sk,
            &enc,
            &wrap_info(id, owner),
            wrapped,
            &[],
        )
        .map_err(|_| Error::UnwrapFailed)?,
    );
    let mut out = Zeroizing::new([0u8; 32]);
    if key.len() != out.len() {
        return Err(Error::UnwrapFailed);
    }
    out.copy_from_slice(&key);
    Ok(out)
}

/// The X25519 public key of an HPKE private key (what the enclave publishes).
pub fn hpke_public_key(enclave_sk: &[u8; 32]) -> Result<[u8; 32]> {
    let sk = <X25519HkdfSha256 as hpke::Kem>::PrivateKey::from_bytes(enclave_sk)
        .map_err(|_| Error::InvalidEnclaveKey)?;
    Ok(<X25519HkdfSha256 as hpke::Kem>::sk_to_pk(&sk)
        .to_bytes()
        .into())
}
