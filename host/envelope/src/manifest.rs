//! The signed manifest: what the owner commits to, in one canonical byte encoding.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::id::DatasetId;
use crate::keywrap::{ENCAPSULATED_KEY_LEN, WRAPPED_KEY_LEN};

/// Domain separator prepended to the manifest body to form the signed message.
pub const MANIFEST_DOMAIN: &[u8] = b"cleanroom/envelope/manifest/v1\0";

/// Length of the Ed25519 signature that follows the manifest body.
pub const SIGNATURE_LEN: usize = 64;

/// Upper bound on the encoded schema (a schema message is a few KiB at most).
const MAX_SCHEMA_LEN: usize = 16 << 20;

/// One chunk as the manifest commits to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkEntry {
    /// Length of the chunk on the wire: ciphertext plus the 16-byte tag.
    pub len: u32,
    /// Digest of those bytes: BLAKE3-256 in format 2, SHA-256 in format 1.
    pub digest: [u8; 32],
}

/// The manifest fields before signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ManifestBody {
    pub(crate) version: u16,
    pub(crate) dataset_id: DatasetId,
    pub(crate) owner: [u8; 32],
    pub(crate) created_at: u64,
    pub(crate) row_count: u64,
    pub(crate) schema_ipc: Vec<u8>,
    pub(crate) encapsulated_key: [u8; ENCAPSULATED_KEY_LEN],
    pub(crate) wrapped_key: [u8; WRAPPED_KEY_LEN],
    pub(crate) chunks: Vec<ChunkEntry>,
}

impl ManifestBody {
    /// The canonical encoding (all integers big-endian, see docs/formats.md).
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(150 + self.schema_ipc.len() + 36 * self.chunks.len());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(self.dataset_id.as_bytes());
        out.extend_from_slice(&self.owner);
        out.extend_from_slice(&self.created_at.to_be_bytes());
        out.extend_from_slice(&self.row_count.to_be_bytes());
        out.extend_from_slice(&(self.schema_ipc.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.schema_ipc);
        out.extend_from_slice(&self.encapsulated_key);
        out.extend_from_slice(&self.wrapped_key);
        out.extend_from_slice(&(self.chunks.len() as u32).to_be_bytes());
        for chunk in &self.chunks {
            out.extend_from_slice(&chunk.len.to_be_bytes());
            out.extend_from_slice(&chunk.digest);
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Cursor(bytes);
        let version = u16::from_be_bytes(r.array()?);
        let dataset_id = DatasetId(r.array()?);
        let owner = r.array()?;
        let created_at = u64::from_be_bytes(r.array()?);
        let row_count = u64::from_be_bytes(r.array()?);
        let schema_len = u32::from_be_bytes(r.array()?) as usize;
        if schema_len > MAX_SCHEMA_LEN {
            return Err(Error::malformed("manifest", "schema is too large"));
        }
        let schema_ipc = r.take(schema_len)?.to_vec();
        let encapsulated_key = r.array()?;
        let wrapped_key = r.array()?;
        let count = u32::from_be_bytes(r.array()?) as usize;
        if count.saturating_mul(36) > r.0.len() {
            return Err(Error::malformed("manifest", "chunk table is cut short"));
        }
        let chunks = (0..count)
            .map(|_| {
                Ok(ChunkEntry {
                    len: u32::from_be_bytes(r.array()?),
                    digest: r.array()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if !r.0.is_empty() {
            return Err(Error::malformed("manifest", "bytes after the chunk table"));
        }
        Ok(Self {
            version,
            dataset_id,
            owner,
            created_at,
            row_count,
            schema_ipc,
            encapsulated_key,
            wrapped_key,
            chunks,
        })
    }

    /// The signed message: domain || body.
    fn message(&self) -> Vec<u8> {
        [MANIFEST_DOMAIN, &self.encode()].concat()
    }
}

/// An owner-signed manifest as it appears in an envelope. Parsing does not verify it:
/// call [`Manifest::verify`] (the reader does, before anything else).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    body: ManifestBody,
    signature: [u8; SIGNATURE_LEN],
}

impl Manifest {
    /// Signs `body` with the owner's key (which must match `body.owner`).
    pub(crate) fn sign(body: ManifestBody, owner: &SigningKey) -> Self {
        let signature = owner.sign(&body.message()).to_bytes();
        Self { body, signature }
    }

    /// Parses the wire form (body || signature) without verifying the signature.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let split = bytes
            .len()
            .checked_sub(SIGNATURE_LEN)
            .ok_or_else(|| Error::malformed("manifest", "shorter than a signature"))?;
        let (body, signature) = bytes.split_at(split);
        let signature = signature
            .try_into()
            .unwrap_or_else(|_| unreachable!("invariant: split leaves 64 signature bytes"));
        Ok(Self {
            body: ManifestBody::decode(body)?,
            signature,
        })
    }

    /// The wire form: body || Ed25519 signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        [&self.body.encode()[..], &self.signature].concat()
    }

    /// Verifies the signature (strict Ed25519) under the owner key the manifest names.
    pub fn verify(&self) -> Result<()> {
        let owner = self.owner()?;
        owner
            .verify_strict(
                &self.body.message(),
                &Signature::from_bytes(&self.signature),
            )
            .map_err(|_| Error::BadSignature)
    }

    /// SHA-256 of the signed message (domain || body): the dataset's identity in receipts.
    /// It does not cover the signature bytes, so it is the same for any valid signature.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.body.message()).into()
    }

    /// The format version.
    pub fn version(&self) -> u16 {
        self.body.version
    }

    /// The dataset id.
    pub fn dataset_id(&self) -> DatasetId {
        self.body.dataset_id
    }

    /// The owner's Ed25519 public key.
    pub fn owner(&self) -> Result<VerifyingKey> {
        VerifyingKey::from_bytes(&self.body.owner).map_err(|_| Error::BadSignature)
    }

    /// Creation time, seconds since the Unix epoch (as the owner's clock said).
    pub fn created_at(&self) -> u64 {
        self.body.created_at
    }

    /// Total number of rows.
    pub fn row_count(&self) -> u64 {
        self.body.row_count
    }

    /// The Arrow schema as an encapsulated IPC schema message.
    pub fn schema_ipc(&self) -> &[u8] {
        &self.body.schema_ipc
    }

    /// The chunks, in order.
    pub fn chunks(&self) -> &[ChunkEntry] {
        &self.body.chunks
    }

    /// The HPKE encapsulated key.
    pub fn encapsulated_key(&self) -> &[u8; ENCAPSULATED_KEY_LEN] {
        &self.body.encapsulated_key
    }

    /// The data key, HPKE-sealed to the enclave.
    pub fn wrapped_key(&self) -> &[u8; WRAPPED_KEY_LEN] {
        &self.body.wrapped_key
    }

    /// The owner's signature over domain || body.
    pub fn signature(&self) -> &[u8; SIGNATURE_LEN] {
        &self.signature
    }

    pub(crate) fn body(&self) -> &ManifestBody {
        &self.body
    }
}

/// A bounds-checked reader over the manifest body.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(Error::malformed(
                "manifest",
                "ends in the middle of a field",
            ));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let bytes = self.take(N)?;
        Ok(bytes
            .try_into()
            .unwrap_or_else(|_| unreachable!("invariant: take returned N bytes")))
    }
}
