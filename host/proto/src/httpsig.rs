//! Signed API requests: a subset of RFC 9421 (HTTP Message Signatures) with Ed25519 keys and
//! RFC 9530 `Content-Digest`.
//!
//! A request carries three headers:
//!
//! ```text
//! Content-Digest: sha-256=:<base64 of SHA-256(body)>:
//! Signature-Input: sig1=("@method" "@path" "@query" "content-digest");created=<unix secs>;nonce="<nonce>";keyid="<party hex>";alg="ed25519"
//! Signature: sig1=:<base64 Ed25519 signature over the signature base>:
//! ```
//!
//! The request target (path and query) is covered as RFC 9421 `@path` and `@query`: `@path` has
//! no query string, so `@query` must be covered too or the query could be changed in transit.
//! Replay protection: the verifier bounds `created` to [`MAX_CLOCK_SKEW_SECS`] and returns the
//! nonce; the caller must refuse a nonce it has already seen within that window.

use std::io;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

use crate::error::SigError;
use crate::fields;
use crate::keys::{Identity, PartyId, verify_signature};

/// The signature label used in `Signature-Input` and `Signature`.
pub const SIGNATURE_LABEL: &str = "sig1";
/// How far `created` may be from the verifier's clock, in either direction.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;
/// The only accepted `alg` parameter.
pub const ALGORITHM: &str = "ed25519";
/// The covered components, in order.
pub const COVERED_COMPONENTS: [&str; 4] = ["@method", "@path", "@query", "content-digest"];
/// Shortest accepted nonce.
pub const MIN_NONCE_LEN: usize = 16;
/// Longest accepted nonce.
pub const MAX_NONCE_LEN: usize = 128;
/// Longest accepted `Signature-Input` or `Signature` header value, in bytes.
pub const MAX_HEADER_LEN: usize = 4096;

/// The RFC 9530 `Content-Digest` value for `body`: `sha-256=:<base64>:`.
pub fn content_digest(body: &[u8]) -> String {
    let mut writer = DigestWriter::new();
    writer.update(body);
    writer.finish()
}

/// Computes a `Content-Digest` value incrementally, for bodies streamed to disk.
#[derive(Debug, Clone, Default)]
pub struct DigestWriter {
    hasher: Sha256,
}

impl DigestWriter {
    /// Starts an empty digest.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds more body bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
    }

    /// The `Content-Digest` value of everything fed so far.
    pub fn finish(self) -> String {
        format!("sha-256=:{}:", BASE64.encode(self.hasher.finalize()))
    }
}

impl io::Write for DigestWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A fresh random nonce (22 URL-safe base64 characters, 128 bits).
pub fn new_nonce() -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The header values that sign one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    /// The `Content-Digest` header value.
    pub content_digest: String,
    /// The `Signature-Input` header value.
    pub signature_input: String,
    /// The `Signature` header value.
    pub signature: String,
}

/// Signs a request. `path` is the request target: the path including any query string.
/// `created` is the current Unix time in seconds; `nonce` should come from [`new_nonce`]
/// (a nonce outside 16..=128 characters of `[A-Za-z0-9_-]` makes the request unverifiable).
pub fn sign_request(
    identity: &Identity,
    method: &str,
    path: &str,
    body: &[u8],
    created: u64,
    nonce: &str,
) -> SignedHeaders {
    let digest = content_digest(body);
    let params = signature_params(created, nonce, &identity.party());
    let base = signature_base(method, path, &digest, &params);
    let signature = identity.sign(base.as_bytes());
    SignedHeaders {
        content_digest: digest,
        signature_input: format!("{SIGNATURE_LABEL}={params}"),
        signature: format!("{SIGNATURE_LABEL}=:{}:", BASE64.encode(signature)),
    }
}

/// Like [`sign_request`], for a body already digested with a [`DigestWriter`] (for example
/// a large file about to be streamed).
pub fn sign_request_with_digest(
    identity: &Identity,
    method: &str,
    path: &str,
    digest: &str,
    created: u64,
    nonce: &str,
) -> SignedHeaders {
    let params = signature_params(created, nonce, &identity.party());
    let base = signature_base(method, path, digest, &params);
    let signature = identity.sign(base.as_bytes());
    SignedHeaders {
        content_digest: digest.to_string(),
        signature_input: format!("{SIGNATURE_LABEL}={params}"),
        signature: format!("{SIGNATURE_LABEL}=:{}:", BASE64.encode(signature)),
    }
}

/// Who signed a request that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRequest {
    /// The signer.
    pub party: PartyId,
    /// The signature's `created` time.
    pub created: u64,
    /// The signature's nonce: refuse it if already seen within [`MAX_CLOCK_SKEW_SECS`].
    pub nonce: String,
}

/// Verifies a signed request. `header(name)` returns a header's value given its lowercase name;
/// `path` is the request target including any query string; `now` is the Unix time in seconds.
///
/// Replay detection (refusing a nonce already seen) is the caller's job.
pub fn verify_request(
    method: &str,
    path: &str,
    header: impl Fn(&str) -> Option<String>,
    body: &[u8],
    now: u64,
) -> Result<VerifiedRequest, SigError> {
    verify_request_with_digest(method, path, header, &content_digest(body), now)
}

/// Like [`verify_request`], for a body already digested with a [`DigestWriter`] (for example
/// while streaming it to disk). `computed_digest` is [`DigestWriter::finish`]'s value.
pub fn verify_request_with_digest(
    method: &str,
    path: &str,
    header: impl Fn(&str) -> Option<String>,
    computed_digest: &str,
    now: u64,
) -> Result<VerifiedRequest, SigError> {
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SigError::Malformed(
            "the request method is not a token".into(),
        ));
    }
    if !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SigError::Malformed(
            "the request target has spaces or control characters".into(),
        ));
    }
    let input = header("signature-input").ok_or(SigError::Missing("signature-input"))?;
    let signature = header("signature").ok_or(SigError::Missing("signature"))?;
    let params = fields::signature_params(labelled_member("signature-input", &input)?)
        .map_err(SigError::Malformed)?;
    if params.alg != ALGORITHM {
        return Err(SigError::UnsupportedAlgorithm(params.alg));
    }
    if params.components != COVERED_COMPONENTS {
        return Err(SigError::Malformed(format!(
            "covered components must be exactly {}",
            COVERED_COMPONENTS.map(|c| format!("\"{c}\"")).join(" ")
        )));
    }
    let party: PartyId = params
        .keyid
        .parse()
        .map_err(|_| SigError::Malformed("keyid must be a party id (64 lowercase hex)".into()))?;
    if !valid_nonce(&params.nonce) {
        return Err(SigError::Malformed(format!(
            "nonce must be {MIN_NONCE_LEN} to {MAX_NONCE_LEN} characters of [A-Za-z0-9_-]"
        )));
    }
    if params.created.abs_diff(now) > MAX_CLOCK_SKEW_SECS {
        return Err(SigError::Stale {
            created: params.created,
            now,
        });
    }
    let sig = fields::byte_sequence(labelled_member("signature", &signature)?)
        .map_err(SigError::Malformed)?;
    let sig: [u8; 64] = sig
        .try_into()
        .map_err(|_| SigError::Malformed("an ed25519 signature is 64 bytes".into()))?;
    let digest = header("content-digest").ok_or(SigError::Missing("content-digest"))?;
    if digest != computed_digest {
        return Err(SigError::DigestMismatch);
    }
    let base = signature_base(method, path, &digest, &params.serialized);
    verify_signature(&party, base.as_bytes(), &sig).map_err(|_| SigError::BadSignature)?;
    Ok(VerifiedRequest {
        party,
        created: params.created,
        nonce: params.nonce,
    })
}

/// The [`SIGNATURE_LABEL`] member of a signature header (a structured dictionary).
fn labelled_member(name: &'static str, value: &str) -> Result<sfv::ListEntry, SigError> {
    if value.len() > MAX_HEADER_LEN {
        return Err(SigError::Malformed(format!(
            "{name} is longer than {MAX_HEADER_LEN} bytes"
        )));
    }
    fields::member(value, SIGNATURE_LABEL).map_err(|e| SigError::Malformed(format!("{name}: {e}")))
}

fn valid_nonce(nonce: &str) -> bool {
    (MIN_NONCE_LEN..=MAX_NONCE_LEN).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The `@signature-params` value this crate signs.
fn signature_params(created: u64, nonce: &str, party: &PartyId) -> String {
    fields::signature_input(
        &COVERED_COMPONENTS,
        created,
        nonce,
        &party.to_string(),
        ALGORITHM,
    )
    // Our own parameters are always serialisable: a nonce outside the allowed alphabet
    // yields an input the verifier refuses, as documented on `sign_request`.
    .unwrap_or_default()
}

/// The RFC 9421 signature base over [`COVERED_COMPONENTS`].
fn signature_base(method: &str, target: &str, digest: &str, params: &str) -> String {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, query),
        None => (target, ""),
    };
    let path = if path.is_empty() { "/" } else { path };
    format!(
        "\"@method\": {method}\n\"@path\": {path}\n\"@query\": ?{query}\n\
         \"content-digest\": {digest}\n\"@signature-params\": {params}"
    )
}
