//! Sealing: Arrow record batches in, an envelope out, with bounded memory.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow_array::RecordBatch;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::Schema;
use ed25519_dalek::SigningKey;
use rand_core::{CryptoRng, OsRng, RngCore};
use zeroize::Zeroizing;

use crate::chunk::{ChunkCipher, ChunkHash, TAG_LEN};
use crate::error::{Error, Result};
use crate::id::DatasetId;
use crate::keywrap;
use crate::layout::{FORMAT_VERSION, footer, header};
use crate::manifest::{ChunkEntry, Manifest, ManifestBody};

/// Default target plaintext size of a chunk: 4 MiB.
pub const DEFAULT_CHUNK_SIZE: usize = 4 << 20;

/// Largest chunk (ciphertext and tag) the format allows: 256 MiB.
pub const MAX_CHUNK_LEN: u64 = 256 << 20;

/// Sealing options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterOptions {
    /// Target plaintext bytes per chunk; a chunk is sealed once this many bytes are buffered.
    /// Record batches larger than this are split by rows.
    pub chunk_size: usize,
    /// Creation time in seconds since the Unix epoch; `None` means now.
    pub created_at: Option<u64>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            created_at: None,
        }
    }
}

/// Seals record batches into an envelope written to `W`, holding at most about one chunk
/// of plaintext (plus one encoded batch slice) in memory.
pub struct EnvelopeWriter<W: Write> {
    out: W,
    ipc: StreamWriter<Vec<u8>>,
    cipher: ChunkCipher,
    chunk_hash: ChunkHash,
    owner: SigningKey,
    body: ManifestBody,
    chunk_size: usize,
    max_buffered: usize,
}

impl<W: Write> std::fmt::Debug for EnvelopeWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvelopeWriter")
            .field("dataset_id", &self.body.dataset_id)
            .field("rows", &self.body.row_count)
            .field("chunks", &self.body.chunks.len())
            .finish_non_exhaustive()
    }
}

impl<W: Write> EnvelopeWriter<W> {
    /// Starts an envelope for `schema`, with a fresh random data key wrapped to the
    /// enclave's HPKE public key (take it from verified attestation evidence).
    pub fn new(
        out: W,
        schema: &Schema,
        dataset_id: DatasetId,
        owner: &SigningKey,
        enclave_hpke_pk: &[u8; 32],
    ) -> Result<Self> {
        Self::with_options(
            out,
            schema,
            dataset_id,
            owner,
            enclave_hpke_pk,
            WriterOptions::default(),
        )
    }

    /// [`EnvelopeWriter::new`] with explicit options.
    pub fn with_options(
        out: W,
        schema: &Schema,
        dataset_id: DatasetId,
        owner: &SigningKey,
        enclave_hpke_pk: &[u8; 32],
        options: WriterOptions,
    ) -> Result<Self> {
        let mut rng = OsRng;
        Self::with_rng(
            out,
            schema,
            dataset_id,
            owner,
            enclave_hpke_pk,
            options,
            FORMAT_VERSION,
            &mut rng,
        )
    }

    /// The constructor behind the others; tests pass a fixed generator for test vectors and
    /// an older format version to check that it still opens.
    #[allow(clippy::too_many_arguments)] // crate-private; the public constructors take fewer
    pub(crate) fn with_rng<R: CryptoRng + RngCore>(
        mut out: W,
        schema: &Schema,
        dataset_id: DatasetId,
        owner: &SigningKey,
        enclave_hpke_pk: &[u8; 32],
        options: WriterOptions,
        version: u16,
        rng: &mut R,
    ) -> Result<Self> {
        let chunk_hash = ChunkHash::of_version(version).ok_or(Error::UnsupportedVersion {
            found: version,
            expected: FORMAT_VERSION,
        })?;
        let mut data_key = Zeroizing::new([0u8; 32]);
        rng.try_fill_bytes(&mut data_key[..])
            .map_err(|e| Error::Random(e.to_string()))?;
        let owner_pk = owner.verifying_key().to_bytes();
        let (encapsulated_key, wrapped_key) =
            keywrap::wrap(enclave_hpke_pk, &dataset_id, &owner_pk, &data_key, rng)?;
        let created_at = match options.created_at {
            Some(t) => t,
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let mut ipc = StreamWriter::try_new(Vec::new(), schema)
            .map_err(|e| Error::arrow("encoding the schema", e))?;
        let schema_ipc = std::mem::take(ipc.get_mut());
        out.write_all(&header(version))?;
        Ok(Self {
            out,
            ipc,
            cipher: ChunkCipher::new(&data_key, dataset_id),
            chunk_hash,
            owner: owner.clone(),
            body: ManifestBody {
                version,
                dataset_id,
                owner: owner_pk,
                created_at,
                row_count: 0,
                schema_ipc,
                encapsulated_key,
                wrapped_key,
                chunks: Vec::new(),
            },
            chunk_size: options.chunk_size.max(1),
            max_buffered: 0,
        })
    }

    /// Appends a batch; seals and writes a chunk whenever `chunk_size` bytes are buffered.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = batch.num_rows();
        let size = batch.get_array_memory_size().max(1);
        // Split large batches so that one encoded slice stays about one chunk in size.
        let step = if size > self.chunk_size && rows > 1 {
            (rows as u128 * self.chunk_size as u128 / size as u128).max(1) as usize
        } else {
            rows
        };
        if rows == 0 {
            return self.write_slice(batch);
        }
        let mut offset = 0;
        while offset < rows {
            let len = step.min(rows - offset);
            self.write_slice(&batch.slice(offset, len))?;
            offset += len;
        }
        Ok(())
    }

    /// Seals the last chunk (final flag set), writes the signed manifest and the footer,
    /// and returns the manifest. An envelope always has at least one chunk.
    pub fn finish(mut self) -> Result<Manifest> {
        self.ipc
            .finish()
            .map_err(|e| Error::arrow("ending the stream", e))?;
        self.max_buffered = self.max_buffered.max(self.ipc.get_ref().len());
        self.seal_buffered(true)?;
        let manifest = Manifest::sign(self.body, &self.owner);
        let bytes = manifest.to_bytes();
        self.out.write_all(&bytes)?;
        self.out.write_all(&footer(bytes.len() as u64))?;
        self.out.flush()?;
        Ok(manifest)
    }

    /// The most plaintext bytes buffered at once so far (a memory bound a caller can check).
    pub fn max_buffered_bytes(&self) -> usize {
        self.max_buffered
    }

    fn write_slice(&mut self, slice: &RecordBatch) -> Result<()> {
        self.ipc
            .write(slice)
            .map_err(|e| Error::arrow("encoding a record batch", e))?;
        self.body.row_count += slice.num_rows() as u64;
        self.max_buffered = self.max_buffered.max(self.ipc.get_ref().len());
        if self.ipc.get_ref().len() >= self.chunk_size {
            self.seal_buffered(false)?;
        }
        Ok(())
    }

    fn seal_buffered(&mut self, last: bool) -> Result<()> {
        let mut buf = std::mem::take(self.ipc.get_mut());
        let len = (buf.len() + TAG_LEN) as u64;
        if len > MAX_CHUNK_LEN {
            return Err(Error::ChunkTooLarge {
                len,
                max: MAX_CHUNK_LEN,
            });
        }
        let index = u32::try_from(self.body.chunks.len())
            .map_err(|_| Error::malformed("envelope", "more than 2^32 chunks"))?;
        self.cipher.seal(index, last, &mut buf)?;
        self.out.write_all(&buf)?;
        self.body.chunks.push(ChunkEntry {
            len: len as u32,
            digest: self.chunk_hash.digest(&buf),
        });
        buf.clear();
        *self.ipc.get_mut() = buf;
        Ok(())
    }
}
