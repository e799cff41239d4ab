//! Test vectors: a deterministic sealer (fixed data key and HPKE ephemeral randomness).
//! The same values are in docs/formats.md; a change here is a format change.

use std::sync::Arc;

use arrow_array::{Int32Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest as _, Sha256};

use super::*;
use crate::chunk::ChunkCipher;
use crate::keywrap;

/// Yields 0x00, 0x01, 0x02, ...: the data key is 00..1f, the HPKE ephemeral IKM 20..3f.
struct CountingRng(u8);

impl RngCore for CountingRng {
    fn next_u32(&mut self) -> u32 {
        rand_core::impls::next_u32_via_fill(self)
    }
    fn next_u64(&mut self) -> u64 {
        rand_core::impls::next_u64_via_fill(self)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for b in dest {
            *b = self.0;
            self.0 = self.0.wrapping_add(1);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> std::result::Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for CountingRng {}

const DATASET: DatasetId = DatasetId([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);

fn counting_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    CountingRng(0).fill_bytes(&mut key);
    key
}

#[test]
fn key_vectors() {
    assert_eq!(
        hex::encode(enclave_pk()),
        "ce8d3ad1ccb633ec7b70c17814a5c76ecd029685050d344745ba05870e587d59"
    );
    assert_eq!(
        hex::encode(owner().verifying_key().as_bytes()),
        "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
    );
}

#[test]
fn chunk_aead_vector() {
    let cipher = ChunkCipher::new(&counting_key(), DATASET);
    let mut buf = b"cleanroom chunk".to_vec();
    cipher.seal(7, true, &mut buf).unwrap();
    assert_eq!(
        hex::encode(&buf),
        "8301767e79653195a97f8c47463ada93d35cb156cab7f20ca2baac913a5685"
    );
}

#[test]
fn key_wrap_vector() {
    let data_key = zeroize::Zeroizing::new(counting_key());
    let owner_pk = owner().verifying_key().to_bytes();
    let (enc, wrapped) = keywrap::wrap(
        &enclave_pk(),
        &DATASET,
        &owner_pk,
        &data_key,
        &mut CountingRng(0x20),
    )
    .unwrap();
    assert_eq!(
        hex::encode(enc),
        "693658254630f73ad8da78fb331bf976cd42f90e0e9c9e83f40c51072a6f7417"
    );
    assert_eq!(
        hex::encode(wrapped),
        "f62308b854a010d426a7046161ddc83a0c34da9fe1690fc211aef7e378e2d637a7f6cc1a4e6dc12278f658c43f4b9911"
    );
    let unwrapped = keywrap::unwrap(&ENCLAVE_SK, &DATASET, &owner_pk, &enc, &wrapped).unwrap();
    assert_eq!(*unwrapped, counting_key());
}

#[test]
fn envelope_vector() {
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(Int32Array::from(vec![1, 2, 3]))],
    )
    .unwrap();
    let mut out = Vec::new();
    let options = WriterOptions {
        chunk_size: crate::DEFAULT_CHUNK_SIZE,
        created_at: Some(1_700_000_000),
    };
    let mut writer = EnvelopeWriter::with_rng(
        &mut out,
        &schema,
        DATASET,
        &owner(),
        &enclave_pk(),
        options,
        &mut CountingRng(0),
    )
    .unwrap();
    writer.write(&batch).unwrap();
    let manifest = writer.finish().unwrap();
    // The same generator sequence as key_wrap_vector: data key 00..1f, ephemeral IKM 20..3f.
    assert_eq!(
        hex::encode(manifest.encapsulated_key()),
        "693658254630f73ad8da78fb331bf976cd42f90e0e9c9e83f40c51072a6f7417"
    );
    assert_eq!(
        hex::encode(manifest.digest()),
        "2bb85bf46d0afaeb3435a34140b6bb1191d2791656b288e1c91b821de355d790"
    );
    assert_eq!(
        hex::encode(manifest.signature()),
        "8fefada8f7d31c825ef34bfcf943efe9b99ccd8f7b959e4ee6350b22e358b173e0e5fd5a144432748c39b9ec15db51c9a304d3f2b205a8681d39d218cd2d550a"
    );
    assert_eq!(out.len(), 690);
    assert_eq!(
        hex::encode(Sha256::digest(&out)),
        "dcd95da7bb35e094b9caddced9fbd518a8a2af5e7e54cba72754541ae5742d40"
    );
    assert_eq!(open(&out).unwrap(), vec![batch]);
    let spec: String = SPEC.split_whitespace().collect();
    assert!(
        spec.contains(&hex::encode(&out)),
        "docs/formats.md has another envelope vector"
    );
}

/// The specification, whose vectors must be the ones asserted here.
const SPEC: &str = include_str!("../../../../docs/formats.md");

#[test]
fn spec_lists_these_vectors() {
    let spec: String = SPEC.split_whitespace().collect();
    for vector in [
        "8301767e79653195a97f8c47463ada93d35cb156cab7f20ca2baac913a5685",
        "693658254630f73ad8da78fb331bf976cd42f90e0e9c9e83f40c51072a6f7417",
        "f62308b854a010d426a7046161ddc83a0c34da9fe1690fc211aef7e378e2d637a7f6cc1a4e6dc12278f658c43f4b9911",
        "2bb85bf46d0afaeb3435a34140b6bb1191d2791656b288e1c91b821de355d790",
        "dcd95da7bb35e094b9caddced9fbd518a8a2af5e7e54cba72754541ae5742d40",
    ] {
        assert!(spec.contains(vector), "docs/formats.md lacks {vector}");
    }
}
