//! Parties and their keys: a [`PartyId`] is an Ed25519 verifying key; an [`Identity`] holds the
//! Ed25519 signing key and the X25519 secret that results are sealed to.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hpke::{Deserializable, Kem, Serializable};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};

/// The HPKE KEM used for sealed results.
pub(crate) type ResultKem = hpke::kem::X25519HkdfSha256;

/// The identity file format version written by [`Identity::save`].
pub const IDENTITY_FILE_VERSION: u32 = 1;

/// A party (owner, researcher or enclave), named by its Ed25519 verifying key.
///
/// Its text form (`Display`, `FromStr`, serde) is 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartyId(pub [u8; 32]);

impl PartyId {
    /// The Ed25519 verifying key, or an error if the bytes are not a valid curve point.
    pub fn verifying_key(&self) -> Result<VerifyingKey> {
        VerifyingKey::from_bytes(&self.0).map_err(|_| {
            Error::malformed("party id", "not a valid ed25519 public key; check the id")
        })
    }

    /// The first 12 hex characters, for logs and terminal output.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl From<VerifyingKey> for PartyId {
    fn from(key: VerifyingKey) -> Self {
        Self(key.to_bytes())
    }
}

impl fmt::Display for PartyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PartyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PartyId({self})")
    }
}

impl FromStr for PartyId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(Self(decode_hex32("party id", s)?))
    }
}

/// A party id in the OpenAPI document: the string form.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for PartyId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[0-9a-f]{64}$"))
            .description(Some("A party: its Ed25519 public key, 64 lowercase hex"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for PartyId {}

impl Serialize for PartyId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PartyId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Decodes exactly 64 lowercase hex characters into 32 bytes.
pub(crate) fn decode_hex32(what: &'static str, s: &str) -> Result<[u8; 32]> {
    if !is_hex64(s) {
        return Err(Error::malformed(
            what,
            format!(
                "expected 64 lowercase hex characters, got {:?}",
                truncate(s)
            ),
        ));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|e| Error::malformed(what, e))?;
    Ok(out)
}

/// Whether `s` is 64 lowercase hex characters (a SHA-256 digest or a 32-byte key).
pub fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Verifies an Ed25519 signature by `party` over `msg` (strict verification: no malleable or
/// small-order signatures).
pub fn verify_signature(party: &PartyId, msg: &[u8], sig: &[u8; 64]) -> Result<()> {
    let key = party.verifying_key()?;
    key.verify_strict(msg, &Signature::from_bytes(sig))
        .map_err(|_| Error::BadSignature { what: "message" })
}

/// A party's secrets: the Ed25519 signing key and the X25519 secret for sealed results.
///
/// `Debug` shows only the party id; the secrets are zeroed on drop.
pub struct Identity {
    signing: SigningKey,
    hpke_secret: Zeroizing<[u8; 32]>,
}

impl Identity {
    /// Generates a fresh identity from the operating system's random source.
    pub fn generate() -> Self {
        let mut signing = Zeroizing::new([0u8; 32]);
        let mut hpke_secret = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(signing.as_mut());
        OsRng.fill_bytes(hpke_secret.as_mut());
        Self {
            signing: SigningKey::from_bytes(&signing),
            hpke_secret,
        }
    }

    /// Builds an identity from its two secrets.
    pub fn from_secrets(signing_key: [u8; 32], hpke_secret: [u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(&signing_key),
            hpke_secret: Zeroizing::new(hpke_secret),
        }
    }

    /// This identity's public name.
    pub fn party(&self) -> PartyId {
        PartyId(self.signing.verifying_key().to_bytes())
    }

    /// The Ed25519 signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// Signs `msg` with Ed25519.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.signing.sign(msg).to_bytes()
    }

    /// The X25519 public key that results are sealed to (see [`crate::sealed`]).
    pub fn hpke_public(&self) -> [u8; 32] {
        let public = <ResultKem as Kem>::sk_to_pk(&self.hpke_private_key());
        let mut out = [0u8; 32];
        out.copy_from_slice(&public.to_bytes());
        out
    }

    /// The X25519 secret key bytes. Handle with care: whoever holds them can open results.
    pub fn hpke_secret(&self) -> [u8; 32] {
        *self.hpke_secret
    }

    pub(crate) fn hpke_private_key(&self) -> <ResultKem as Kem>::PrivateKey {
        <ResultKem as Kem>::PrivateKey::from_bytes(self.hpke_secret.as_ref())
            .expect("invariant: any 32 bytes are a valid X25519 secret key")
    }

    /// Writes the identity as JSON `{"version":1,"signing_key":hex,"hpke_secret":hex}` to a new
    /// file readable only by its owner (mode 0600). Refuses to overwrite an existing file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let file = IdentityFile {
            version: IDENTITY_FILE_VERSION,
            signing_key: hex::encode(self.signing.to_bytes()),
            hpke_secret: hex::encode(*self.hpke_secret),
        };
        let mut json = Zeroizing::new(
            serde_json::to_vec_pretty(&file)
                .expect("invariant: an identity file serializes to JSON"),
        );
        json.push(b'\n');
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut out = options.open(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                Error::IdentityExists(path.to_path_buf())
            } else {
                io_error("create", path, source)
            }
        })?;
        out.write_all(&json)
            .and_then(|()| out.sync_all())
            .map_err(|source| io_error("write", path, source))
    }

    /// Reads an identity written by [`Identity::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let text = Zeroizing::new(fs::read(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                Error::IdentityMissing(path.to_path_buf())
            } else {
                io_error("read", path, source)
            }
        })?);
        let malformed = |detail: String| Error::IdentityMalformed {
            path: path.to_path_buf(),
            detail,
        };
        let file: IdentityFile =
            serde_json::from_slice(&text).map_err(|e| malformed(e.to_string()))?;
        if file.version != IDENTITY_FILE_VERSION {
            return Err(malformed(format!(
                "version {} is not supported (expected {IDENTITY_FILE_VERSION})",
                file.version
            )));
        }
        let mut signing =
            decode_hex32("signing_key", &file.signing_key).map_err(|e| malformed(e.to_string()))?;
        let mut hpke_secret =
            decode_hex32("hpke_secret", &file.hpke_secret).map_err(|e| malformed(e.to_string()))?;
        let identity = Self::from_secrets(signing, hpke_secret);
        signing.zeroize();
        hpke_secret.zeroize();
        Ok(identity)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("party", &self.party())
            .finish_non_exhaustive()
    }
}

fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The on-disk identity format.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityFile {
    /// Always [`IDENTITY_FILE_VERSION`].
    version: u32,
    /// Ed25519 secret key, 64 lowercase hex.
    signing_key: String,
    /// X25519 secret key, 64 lowercase hex.
    hpke_secret: String,
}

impl Drop for IdentityFile {
    fn drop(&mut self) {
        self.signing_key.zeroize();
        self.hpke_secret.zeroize();
    }
}
