//! The cleanroom dataset envelope: how a data owner seals an Arrow table for the enclave.
//!
//! Shared by the CLI (outside the TEE: seals) and the host (inside the TEE: opens). It does
//! not depend on wasmtime. The byte format is specified in `docs/formats.md`.
//!
//! - The table is an Arrow IPC stream; its schema message goes into the manifest and its
//!   record-batch messages are grouped into chunks of about [`DEFAULT_CHUNK_SIZE`] bytes.
//! - Each chunk is sealed with AES-256-GCM under a fresh random per-dataset data key; the
//!   nonce is the chunk index and the AAD binds the dataset id, the index and a final-chunk
//!   flag, so reordering, truncation, duplication and splicing fail.
//! - The data key is HPKE-sealed (RFC 9180 base mode, X25519/HKDF-SHA256/AES-256-GCM) to the
//!   enclave's attested X25519 key, with the dataset id and the owner key in `info`.
//! - The owner signs (Ed25519) a [`Manifest`]: version, dataset id, owner key, schema, row
//!   count, per-chunk digests (BLAKE3 in format 2, SHA-256 in format 1), the wrapped key and
//!   the creation time. It is written after the chunks, so sealing streams to any [`std::io::Write`] with bounded memory.
//! - Opening needs [`std::io::Read`] + [`std::io::Seek`]: the manifest signature and owner
//!   are checked first, then the key is unwrapped, then chunks are decrypted lazily.
//!
//! ```
//! use std::io::Cursor;
//! use std::sync::Arc;
//!
//! use arrow_array::{Float64Array, RecordBatch};
//! use arrow_schema::{DataType, Field, Schema};
//! use cleanroom_envelope::{DatasetId, EnvelopeReader, EnvelopeWriter, hpke_public_key};
//! use ed25519_dalek::SigningKey;
//!
//! # fn main() -> cleanroom_envelope::Result<()> {
//! let owner = SigningKey::from_bytes(&[7; 32]);
//! let enclave_sk = [9u8; 32]; // inside the enclave only; owners see hpke_public_key(...)
//! let enclave_pk = hpke_public_key(&enclave_sk)?;
//!
//! let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, false)]));
//! let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Float64Array::from(vec![1.5, 2.5]))])
//!     .expect("the column matches the schema");
//!
//! let mut sealed = Vec::new();
//! let mut writer = EnvelopeWriter::new(&mut sealed, &schema, DatasetId::random()?, &owner, &enclave_pk)?;
//! writer.write(&batch)?;
//! let manifest = writer.finish()?;
//!
//! let mut reader = EnvelopeReader::open(Cursor::new(sealed), &enclave_sk, Some(&owner.verifying_key()))?;
//! assert_eq!(reader.manifest().digest(), manifest.digest());
//! let batches = reader.batches().collect::<cleanroom_envelope::Result<Vec<_>>>()?;
//! assert_eq!(batches, vec![batch]);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod chunk;
mod error;
mod id;
mod keywrap;
mod layout;
mod manifest;
mod reader;
mod writer;

#[cfg(test)]
mod tests;

pub use chunk::{CHUNK_AAD_DOMAIN, TAG_LEN};
pub use error::{Error, Result};
pub use id::DatasetId;
pub use keywrap::{ENCAPSULATED_KEY_LEN, WRAP_INFO_DOMAIN, WRAPPED_KEY_LEN, hpke_public_key};
pub use layout::{
    FOOTER_LEN, FOOTER_MAGIC, FORMAT_VERSION, HEADER_LEN, MAGIC, MAX_MANIFEST_LEN,
    READABLE_VERSIONS,
};
pub use manifest::{ChunkEntry, MANIFEST_DOMAIN, Manifest, SIGNATURE_LEN};
pub use reader::{Batches, EnvelopeReader};
pub use writer::{DEFAULT_CHUNK_SIZE, EnvelopeWriter, MAX_CHUNK_LEN, WriterOptions};
