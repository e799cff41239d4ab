use std::io::Cursor;

use super::*;
use crate::Error;

/// A sealed envelope of 400 rows in several chunks, taken apart.
fn parts(id: DatasetId) -> Parts {
    let (bytes, manifest) = seal(id, &[batch(0, 300), batch(300, 100)], 2048);
    assert!(
        manifest.chunks().len() >= 4,
        "{} chunks",
        manifest.chunks().len()
    );
    let parts = Parts::split(&bytes);
    assert_eq!(parts.join(), bytes);
    parts
}

fn open_err(bytes: &[u8]) -> Error {
    open(bytes).expect_err("tampered envelope must be refused")
}

const ID: DatasetId = DatasetId([0x11; 16]);

#[test]
fn reordered_chunks_fail_their_digest() {
    let mut p = parts(ID);
    p.chunks.swap(0, 1);
    assert!(matches!(
        open_err(&p.join()),
        Error::ChunkDigest { index: 0 }
    ));
}

#[test]
fn reordered_chunks_under_a_resigned_manifest_fail_the_aead_index() {
    let mut p = parts(ID);
    p.chunks.swap(0, 1);
    p.resign(|b| b.chunks.swap(0, 1));
    assert!(matches!(
        open_err(&p.join()),
        Error::ChunkDecrypt { index: 0 }
    ));
}

#[test]
fn dropped_last_chunk_is_truncation() {
    let mut p = parts(ID);
    p.chunks.pop();
    assert!(matches!(open_err(&p.join()), Error::Truncated { .. }));
}

#[test]
fn dropped_last_chunk_under_a_resigned_manifest_fails_the_final_flag() {
    let mut p = parts(ID);
    p.chunks.pop();
    p.resign(|b| {
        b.chunks.pop();
    });
    let last = p.chunks.len() as u32 - 1;
    assert!(matches!(open_err(&p.join()), Error::ChunkDecrypt { index } if index == last));
}

#[test]
fn cut_footer_or_cut_file_is_truncation() {
    let bytes = parts(ID).join();
    for len in [bytes.len() - 1, bytes.len() - 16, bytes.len() / 2, 12, 0] {
        let err = open_err(&bytes[..len]);
        assert!(
            matches!(err, Error::Truncated { .. }),
            "cut at {len}: {err}"
        );
    }
}

#[test]
fn duplicated_chunk_is_trailing_data() {
    let mut p = parts(ID);
    p.chunks.insert(2, p.chunks[1].clone());
    assert!(matches!(open_err(&p.join()), Error::TrailingData { .. }));
}

#[test]
fn duplicated_chunk_under_a_resigned_manifest_fails_the_aead_index() {
    let mut p = parts(ID);
    p.chunks.insert(2, p.chunks[1].clone());
    p.resign(|b| b.chunks.insert(2, b.chunks[1]));
    assert!(matches!(
        open_err(&p.join()),
        Error::ChunkDecrypt { index: 2 }
    ));
}

#[test]
fn chunk_spliced_from_another_dataset_is_refused() {
    let other = parts(DatasetId([0x22; 16]));
    let mut p = parts(ID);
    p.chunks[1] = other.chunks[1].clone();
    assert!(matches!(
        open_err(&p.join()),
        Error::ChunkDigest { index: 1 }
    ));
    // Even if the owner signs the foreign chunk, it is bound to another key and dataset.
    let entry = other.manifest.chunks()[1];
    p.resign(|b| b.chunks[1] = entry);
    assert!(matches!(
        open_err(&p.join()),
        Error::ChunkDecrypt { index: 1 }
    ));
}

#[test]
fn flipped_bit_in_a_chunk_fails_its_digest() {
    let mut p = parts(ID);
    p.chunks[2][5] ^= 0x01;
    assert!(matches!(
        open_err(&p.join()),
        Error::ChunkDigest { index: 2 }
    ));
}

#[test]
fn flipped_bit_in_the_manifest_or_signature_fails_the_signature() {
    let bytes = parts(ID).join();
    let manifest_len = parts(ID).manifest.to_bytes().len();
    let manifest_start = bytes.len() - 16 - manifest_len;
    // version, dataset id, owner key, row count, schema, wrapped key, a digest, signature
    for offset in [1, 2, 20, 60, 80, 200, manifest_len - 80, manifest_len - 1] {
        let mut tampered = bytes.clone();
        tampered[manifest_start + offset] ^= 0x04;
        let err = open_err(&tampered);
        assert!(
            matches!(err, Error::BadSignature | Error::Malformed { .. }),
            "offset {offset}: {err}"
        );
    }
    let mut tampered = bytes.clone();
    tampered[bytes.len() - 16 - 1] ^= 0x80; // last signature byte
    assert!(matches!(open_err(&tampered), Error::BadSignature));
    let mut tampered = bytes;
    tampered[manifest_start + 40] ^= 0x01; // row count region
    assert!(matches!(open_err(&tampered), Error::BadSignature));
}

#[test]
fn wrong_enclave_key_cannot_unwrap_the_data_key() {
    let bytes = parts(ID).join();
    let err = EnvelopeReader::open(Cursor::new(&bytes), &[3; 32], None).unwrap_err();
    assert!(matches!(err, Error::UnwrapFailed));
}

#[test]
fn key_wrapped_for_another_owner_does_not_unwrap() {
    // A thief re-signs someone else's wrapped key under their own owner key.
    let mut p = parts(ID);
    let thief = SigningKey::from_bytes(&[0x66; 32]);
    let mut body = p.manifest.body().clone();
    body.owner = thief.verifying_key().to_bytes();
    p.manifest = Manifest::sign(body, &thief);
    let err = EnvelopeReader::open(Cursor::new(p.join()), &ENCLAVE_SK, None).unwrap_err();
    assert!(matches!(err, Error::UnwrapFailed));
}

#[test]
fn unexpected_owner_is_refused() {
    let bytes = parts(ID).join();
    let someone = SigningKey::from_bytes(&[0x55; 32]).verifying_key();
    let err = EnvelopeReader::open(Cursor::new(&bytes), &ENCLAVE_SK, Some(&someone)).unwrap_err();
    assert!(matches!(err, Error::UnexpectedOwner { .. }));
}

#[test]
fn resigned_wrong_row_count_is_refused_after_the_last_chunk() {
    let mut p = parts(ID);
    p.resign(|b| b.row_count += 1);
    assert!(matches!(
        open_err(&p.join()),
        Error::RowCount {
            expected: 401,
            found: 400
        }
    ));
}

#[test]
fn bad_magic_and_unknown_version_are_refused() {
    let mut bytes = parts(ID).join();
    bytes[9] = 3;
    assert!(matches!(
        open_err(&bytes),
        Error::UnsupportedVersion {
            found: 3,
            expected: 2
        }
    ));
    bytes[0] = b'X';
    assert!(matches!(open_err(&bytes), Error::BadMagic));
    assert!(matches!(
        open_err(b"PAR1 not an envelope at all"),
        Error::BadMagic
    ));
}

/// The operator relabels a version-2 envelope as version 1 (so that chunk digests would be
/// checked as SHA-256) or the reverse: the header alone disagrees with the signed manifest, and
/// a manifest re-signed with the other version lists digests the chunks do not have.
#[test]
fn a_relabelled_format_version_is_refused() {
    let mut bytes = parts(ID).join();
    assert_eq!(bytes[9], 2, "sealers write version 2");
    bytes[9] = 1;
    assert!(matches!(open_err(&bytes), Error::Malformed { .. }));

    let mut p = parts(ID);
    p.header[9] = 1;
    p.resign(|b| b.version = 1);
    assert!(matches!(
        open_err(&p.join()),
        Error::ChunkDigest { index: 0 }
    ));
}
