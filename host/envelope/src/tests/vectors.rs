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

/// Seals the three-row vector table in format `version` with the deterministic sealer.
fn seal_vector(version: u16) -> (RecordBatch, crate::Manifest, Vec<u8>) {
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
        version,
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
    (batch, manifest, out)
}

/// Asserts one whole-envelope vector and that docs/formats.md lists its bytes.
fn assert_envelope_vector(version: u16, digest: &str, signature: &str, file_sha256: &str) {
    let (batch, manifest, out) = seal_vector(version);
    assert_eq!(manifest.version(), version);
    assert_eq!(hex::encode(manifest.digest()), digest);
    assert_eq!(hex::encode(manifest.signature()), signature);
    assert_eq!(out.len(), 690);
    assert_eq!(hex::encode(Sha256::digest(&out)), file_sha256);
    assert_eq!(open(&out).unwrap(), vec![batch]);
    let spec: String = SPEC.split_whitespace().collect();
    assert!(
        spec.contains(&hex::encode(&out)),
        "docs/formats.md has another version {version} envelope vector"
    );
}

#[test]
fn envelope_vector() {
    assert_envelope_vector(
        crate::FORMAT_VERSION,
        "9f40ed4987a89ebb9b387fbee298e3800189de98e3d8075fd21044701d4a710c",
        "7ba750ee8770365ff22d567d5ed995493f103381a1386c639c15136e9b46065548f6d3ef47e1d88813df0cc4bd12d5abd156be321a32689d0dfa7bfe407f110e",
        "008964ba43c78f52c2c663fd8557961d5b89539b8a9afd1580c26faf7bcc14f9",
    );
}

/// Version 1 (SHA-256 chunk digests) is still read: envelopes sealed before version 2 open.
#[test]
fn version_1_envelope_vector_still_opens() {
    assert_envelope_vector(
        1,
        "2bb85bf46d0afaeb3435a34140b6bb1191d2791656b288e1c91b821de355d790",
        "8fefada8f7d31c825ef34bfcf943efe9b99ccd8f7b959e4ee6350b22e358b173e0e5fd5a144432748c39b9ec15db51c9a304d3f2b205a8681d39d218cd2d550a",
        "dcd95da7bb35e094b9caddced9fbd518a8a2af5e7e54cba72754541ae5742d40",
    );
}

/// Printing aid for regenerating the vectors after a format change:
/// `cargo test -p cleanroom-envelope print_vectors -- --ignored --nocapture`.
#[test]
#[ignore]
fn print_vectors() {
    for version in crate::READABLE_VERSIONS {
        let (_, manifest, out) = seal_vector(version);
        println!("version {version}");
        println!("manifest digest {}", hex::encode(manifest.digest()));
        println!("signature {}", hex::encode(manifest.signature()));
        println!("file sha256 {}", hex::encode(Sha256::digest(&out)));
        println!("file {}", hex::encode(&out));
    }
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
        "9f40ed4987a89ebb9b387fbee298e3800189de98e3d8075fd21044701d4a710c",
        "008964ba43c78f52c2c663fd8557961d5b89539b8a9afd1580c26faf7bcc14f9",
    ] {
        assert!(spec.contains(vector), "docs/formats.md lacks {vector}");
    }
}
