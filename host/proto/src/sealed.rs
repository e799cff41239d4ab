//! Results encrypted to the researcher: HPKE (RFC 9180) base mode with
//! DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and AES-256-GCM.
//!
//! `info` is `cleanroom/result/v1\n` followed by the context
//! ([`crate::run::output_context`]: purpose, run id and output index), so a sealed output only
//! opens for the run, position and purpose it was made for. The sealed bytes are the
//! 32-byte encapsulated key followed by the ciphertext and tag.

use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use rand_core::OsRng;

use crate::error::{Error, Result};
use crate::keys::{Identity, ResultKem};

/// Domain-separation prefix of the HPKE `info`.
pub const RESULT_INFO_PREFIX: &[u8] = b"cleanroom/result/v1\n";
/// Length of the encapsulated key at the start of sealed bytes.
pub const ENCAPPED_KEY_LEN: usize = 32;

/// Encrypts `plaintext` to the holder of the X25519 secret for `recipient_hpke_public`.
pub fn seal_to(
    recipient_hpke_public: &[u8; 32],
    context: &str,
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let public = <ResultKem as hpke::Kem>::PublicKey::from_bytes(recipient_hpke_public)
        .map_err(|e| Error::Seal(format!("invalid recipient key: {e}")))?;
    let (encapped, ciphertext) = hpke::single_shot_seal::<AesGcm256, HkdfSha256, ResultKem, _>(
        &OpModeS::Base,
        &public,
        &info(context),
        plaintext,
        b"",
        &mut OsRng,
    )
    .map_err(|e| Error::Seal(format!("{e}; check the recipient's hpke public key")))?;
    let mut out = encapped.to_bytes().to_vec();
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Decrypts bytes made by [`seal_to`] for `recipient` with the same `context`.
pub fn open_sealed(recipient: &Identity, context: &str, sealed: &[u8]) -> Result<Vec<u8>> {
    if sealed.len() < ENCAPPED_KEY_LEN {
        return Err(Error::Open);
    }
    let (encapped, ciphertext) = sealed.split_at(ENCAPPED_KEY_LEN);
    let encapped =
        <ResultKem as hpke::Kem>::EncappedKey::from_bytes(encapped).map_err(|_| Error::Open)?;
    hpke::single_shot_open::<AesGcm256, HkdfSha256, ResultKem>(
        &OpModeR::Base,
        &recipient.hpke_private_key(),
        &encapped,
        &info(context),
        ciphertext,
        b"",
    )
    .map_err(|_| Error::Open)
}

fn info(context: &str) -> Vec<u8> {
    let mut info = RESULT_INFO_PREFIX.to_vec();
    info.extend_from_slice(context.as_bytes());
    info
}
