//! Tests of the whole envelope: round trips, every tampering, test vectors.

mod roundtrip;
mod tamper;
mod vectors;

use std::io::Cursor;
use std::sync::Arc;

use arrow_array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use ed25519_dalek::SigningKey;

use crate::manifest::{Manifest, ManifestBody};
use crate::{DatasetId, EnvelopeReader, EnvelopeWriter, Result, WriterOptions, hpke_public_key};

const OWNER_SEED: [u8; 32] = [1; 32];
const ENCLAVE_SK: [u8; 32] = [2; 32];

fn owner() -> SigningKey {
    SigningKey::from_bytes(&OWNER_SEED)
}

fn enclave_pk() -> [u8; 32] {
    hpke_public_key(&ENCLAVE_SK).unwrap()
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("value", DataType::Float64, false),
        Field::new("site", DataType::Utf8, true),
    ]))
}

fn batch(start: i64, rows: usize) -> RecordBatch {
    let ids: Vec<i64> = (start..start + rows as i64).collect();
    let values: Vec<f64> = ids.iter().map(|i| *i as f64 * 0.5).collect();
    let sites: Vec<Option<String>> = ids
        .iter()
        .map(|i| (i % 7 != 0).then(|| format!("site-{}", i % 13)))
        .collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(Float64Array::from(values)),
            Arc::new(StringArray::from(sites)),
        ],
    )
    .unwrap()
}

/// Seals `batches` with the test owner to the test enclave.
fn seal(id: DatasetId, batches: &[RecordBatch], chunk_size: usize) -> (Vec<u8>, Manifest) {
    let mut out = Vec::new();
    let options = WriterOptions {
        chunk_size,
        created_at: Some(1_700_000_000),
    };
    let mut writer =
        EnvelopeWriter::with_options(&mut out, &schema(), id, &owner(), &enclave_pk(), options)
            .unwrap();
    for b in batches {
        writer.write(b).unwrap();
    }
    let manifest = writer.finish().unwrap();
    (out, manifest)
}

/// Opens with the test enclave key, expecting the test owner, and reads every batch.
fn open(bytes: &[u8]) -> Result<Vec<RecordBatch>> {
    let mut reader = EnvelopeReader::open(
        Cursor::new(bytes),
        &ENCLAVE_SK,
        Some(&owner().verifying_key()),
    )?;
    reader.batches().collect()
}

/// An envelope taken apart: header, chunks, manifest, footer.
#[derive(Debug, Clone)]
struct Parts {
    header: Vec<u8>,
    chunks: Vec<Vec<u8>>,
    manifest: Manifest,
}

impl Parts {
    fn split(bytes: &[u8]) -> Self {
        let manifest_len = u64::from_be_bytes(bytes[bytes.len() - 16..][..8].try_into().unwrap());
        let manifest_start = bytes.len() - 16 - manifest_len as usize;
        let manifest = Manifest::from_bytes(&bytes[manifest_start..bytes.len() - 16]).unwrap();
        let mut offset = 12;
        let chunks = manifest
            .chunks()
            .iter()
            .map(|c| {
                let chunk = bytes[offset..offset + c.len as usize].to_vec();
                offset += c.len as usize;
                chunk
            })
            .collect();
        Self {
            header: bytes[..12].to_vec(),
            chunks,
            manifest,
        }
    }

    fn join(&self) -> Vec<u8> {
        let manifest = self.manifest.to_bytes();
        let mut out = self.header.clone();
        out.extend(self.chunks.concat());
        out.extend(&manifest);
        out.extend(crate::layout::footer(manifest.len() as u64));
        out
    }

    /// Replaces the manifest with `edit` applied to its body, signed again by the owner
    /// (what a malicious or buggy owner could produce).
    fn resign(&mut self, edit: impl FnOnce(&mut ManifestBody)) {
        let mut body = self.manifest.body().clone();
        edit(&mut body);
        self.manifest = Manifest::sign(body, &owner());
    }
}
