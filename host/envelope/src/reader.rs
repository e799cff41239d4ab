//! Opening: verify the manifest, unwrap the data key, then decrypt and decode lazily.

use std::io::{Read, Seek, SeekFrom};

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::reader::StreamDecoder;
use arrow_schema::SchemaRef;
use ed25519_dalek::VerifyingKey;

use crate::chunk::{ChunkCipher, ChunkHash, TAG_LEN};
use crate::error::{Error, Result};
use crate::keywrap;
use crate::layout::{
    FOOTER_LEN, FOOTER_MAGIC, FORMAT_VERSION, HEADER_LEN, MAGIC, MAX_MANIFEST_LEN,
};
use crate::manifest::Manifest;
use crate::writer::MAX_CHUNK_LEN;

/// An opened envelope: the manifest is verified and the data key unwrapped; chunks are
/// read, checked and decrypted only as [`EnvelopeReader::batches`] is iterated.
pub struct EnvelopeReader<R> {
    input: R,
    manifest: Manifest,
    schema: SchemaRef,
    cipher: ChunkCipher,
    chunk_hash: ChunkHash,
}

impl<R> std::fmt::Debug for EnvelopeReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvelopeReader")
            .field("dataset_id", &self.manifest.dataset_id())
            .field("rows", &self.manifest.row_count())
            .field("chunks", &self.manifest.chunks().len())
            .finish_non_exhaustive()
    }
}

impl<R: Read + Seek> EnvelopeReader<R> {
    /// Opens an envelope, in this order: header; footer; manifest parse; manifest signature;
    /// owner (if `expected_owner` is given); layout against the file length; data key unwrap
    /// with the enclave's HPKE private key; schema. No chunk is decrypted here.
    pub fn open(
        mut input: R,
        enclave_hpke_sk: &[u8; 32],
        expected_owner: Option<&VerifyingKey>,
    ) -> Result<Self> {
        let file_len = input.seek(SeekFrom::End(0))?;
        input.seek(SeekFrom::Start(0))?;
        let mut header = [0u8; HEADER_LEN as usize];
        read_exact_or(&mut input, &mut header, || {
            if file_len == 0 {
                Error::truncated("the file is empty")
            } else {
                Error::BadMagic
            }
        })?;
        if header[..8] != MAGIC {
            return Err(Error::BadMagic);
        }
        let version = u16::from_be_bytes([header[8], header[9]]);
        let chunk_hash = ChunkHash::of_version(version).ok_or(Error::UnsupportedVersion {
            found: version,
            expected: FORMAT_VERSION,
        })?;
        if header[10..] != [0, 0] {
            return Err(Error::malformed("header", "reserved bytes are not zero"));
        }
        if file_len < HEADER_LEN + FOOTER_LEN {
            return Err(Error::truncated("the footer is missing"));
        }
        let mut footer = [0u8; FOOTER_LEN as usize];
        input.seek(SeekFrom::Start(file_len - FOOTER_LEN))?;
        input.read_exact(&mut footer)?;
        if footer[8..] != FOOTER_MAGIC {
            return Err(Error::truncated("the footer is missing"));
        }
        let manifest_len =
            u64::from_be_bytes(footer[..8].try_into().unwrap_or_else(|_| {
                unreachable!("invariant: the footer starts with 8 length bytes")
            }));
        if manifest_len > MAX_MANIFEST_LEN || manifest_len > file_len - HEADER_LEN - FOOTER_LEN {
            return Err(Error::malformed("footer", "manifest length out of range"));
        }
        let manifest_start = file_len - FOOTER_LEN - manifest_len;
        input.seek(SeekFrom::Start(manifest_start))?;
        let mut bytes = vec![0u8; manifest_len as usize];
        input.read_exact(&mut bytes)?;
        let manifest = Manifest::from_bytes(&bytes)?;

        // Authenticity first: nothing below is trusted before the signature verifies.
        manifest.verify()?;
        let owner = manifest.owner()?;
        if let Some(expected) = expected_owner
            && expected != &owner
        {
            return Err(Error::UnexpectedOwner {
                found: hex::encode(owner.as_bytes()),
            });
        }
        if manifest.version() != version {
            return Err(Error::malformed(
                "manifest",
                "version differs from the header's",
            ));
        }
        check_layout(&manifest, manifest_start)?;

        let body = manifest.body();
        let data_key = keywrap::unwrap(
            enclave_hpke_sk,
            &body.dataset_id,
            &body.owner,
            &body.encapsulated_key,
            &body.wrapped_key,
        )?;
        let cipher = ChunkCipher::new(&data_key, body.dataset_id);
        let schema = decode_schema(manifest.schema_ipc())?;
        Ok(Self {
            input,
            manifest,
            schema,
            cipher,
            chunk_hash,
        })
    }

    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The Arrow schema of every batch.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The signed row count.
    pub fn num_rows(&self) -> u64 {
        self.manifest.row_count()
    }

    /// Iterates the record batches from the first chunk; call again to start over.
    ///
    /// Each chunk is read, checked against its manifest digest, decrypted in place and
    /// decoded without copying the plaintext again. The iterator ends with an error if the
    /// IPC stream is incomplete or the rows do not add up to the signed row count; after
    /// an error it yields nothing more.
    pub fn batches(&mut self) -> Batches<'_, R> {
        let mut decoder = StreamDecoder::new();
        let mut schema = Buffer::from(self.manifest.schema_ipc());
        let primed = decoder
            .decode(&mut schema)
            .map_err(|e| Error::arrow("decoding the schema", e));
        Batches {
            reader: self,
            decoder,
            current: Buffer::from(Vec::<u8>::new()),
            next_chunk: 0,
            offset: HEADER_LEN,
            rows: 0,
            pending_error: primed.err(),
            done: false,
        }
    }

    /// Gives the underlying reader back.
    pub fn into_inner(self) -> R {
        self.input
    }
}

/// Lazily decrypted record batches of an envelope; see [`EnvelopeReader::batches`].
pub struct Batches<'a, R> {
    reader: &'a mut EnvelopeReader<R>,
    decoder: StreamDecoder,
    current: Buffer,
    next_chunk: u32,
    offset: u64,
    rows: u64,
    pending_error: Option<Error>,
    done: bool,
}

impl<R> std::fmt::Debug for Batches<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batches")
            .field("next_chunk", &self.next_chunk)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl<R: Read + Seek> Iterator for Batches<'_, R> {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = match self.pending_error.take() {
            Some(e) => Err(e),
            None => self.advance(),
        };
        match item {
            Ok(Some(batch)) => Some(Ok(batch)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl<R: Read + Seek> Batches<'_, R> {
    fn advance(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            while !self.current.is_empty() {
                let index = self.next_chunk.saturating_sub(1);
                let decoded = self
                    .decoder
                    .decode(&mut self.current)
                    .map_err(|e| Error::arrow(format!("decoding chunk {index}"), e))?;
                if let Some(batch) = decoded {
                    self.rows += batch.num_rows() as u64;
                    return Ok(Some(batch));
                }
            }
            let chunks = self.reader.manifest.chunks();
            if self.next_chunk as usize == chunks.len() {
                self.decoder
                    .finish()
                    .map_err(|e| Error::arrow("ending the stream", e))?;
                let expected = self.reader.manifest.row_count();
                if self.rows != expected {
                    return Err(Error::RowCount {
                        expected,
                        found: self.rows,
                    });
                }
                return Ok(None);
            }
            let index = self.next_chunk;
            let entry = chunks[index as usize];
            let last = index as usize + 1 == chunks.len();
            let input = &mut self.reader.input;
            input.seek(SeekFrom::Start(self.offset))?;
            let mut buf = Vec::new();
            buf.try_reserve_exact(entry.len as usize)
                .map_err(|e| Error::malformed("chunk", e))?;
            // Hash each piece right after reading it, while it is in cache: one pass over
            // memory fewer than reading the chunk and then hashing it.
            let mut hasher = self.reader.chunk_hash.hasher();
            let mut remaining = u64::from(entry.len);
            while remaining > 0 {
                let start = buf.len();
                let read = input
                    .by_ref()
                    .take(remaining.min(READ_PIECE))
                    .read_to_end(&mut buf)?;
                if read == 0 {
                    return Err(Error::truncated(format!("chunk {index} is cut short")));
                }
                hasher.update(&buf[start..]);
                remaining -= read as u64;
            }
            if hasher.finalize() != entry.digest {
                return Err(Error::ChunkDigest { index });
            }
            self.reader.cipher.open(index, last, &mut buf)?;
            self.current = Buffer::from_vec(buf);
            self.next_chunk += 1;
            self.offset += u64::from(entry.len);
        }
    }
}

/// How much of a chunk is read (and hashed) at a time: well inside a core's L2 cache.
const READ_PIECE: u64 = 256 << 10;

/// The chunks must exactly fill the space between header and manifest.
fn check_layout(manifest: &Manifest, manifest_start: u64) -> Result<()> {
    let chunks = manifest.chunks();
    if chunks.is_empty() {
        return Err(Error::malformed(
            "manifest",
            "no chunks (even an empty table has one)",
        ));
    }
    let mut total = 0u64;
    for entry in chunks {
        let len = u64::from(entry.len);
        if len < TAG_LEN as u64 || len > MAX_CHUNK_LEN {
            return Err(Error::malformed("manifest", "chunk length out of range"));
        }
        total += len;
    }
    let expected_start = HEADER_LEN + total;
    if manifest_start < expected_start {
        return Err(Error::truncated(format!(
            "{} chunk bytes are missing",
            expected_start - manifest_start
        )));
    }
    if manifest_start > expected_start {
        return Err(Error::TrailingData {
            extra: manifest_start - expected_start,
        });
    }
    Ok(())
}

fn decode_schema(schema_ipc: &[u8]) -> Result<SchemaRef> {
    let malformed = || Error::malformed("manifest", "the schema is not one ipc schema message");
    // The end-of-stream marker makes the decoder finish the (body-less) schema message.
    let mut buf = Buffer::from([schema_ipc, &END_OF_STREAM[..]].concat());
    let mut decoder = StreamDecoder::new();
    if decoder
        .decode(&mut buf)
        .map_err(|e| Error::arrow("decoding the schema", e))?
        .is_some()
    {
        return Err(malformed());
    }
    decoder
        .finish()
        .map_err(|e| Error::arrow("decoding the schema", e))?;
    match decoder.schema() {
        Some(schema) if buf.is_empty() => Ok(schema),
        _ => Err(malformed()),
    }
}

/// The Arrow IPC end-of-stream marker: continuation token, zero length.
const END_OF_STREAM: [u8; 8] = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];

fn read_exact_or<R: Read>(
    input: &mut R,
    buf: &mut [u8],
    err: impl FnOnce() -> Error,
) -> Result<()> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => err(),
        _ => Error::Io(e),
    })
}
