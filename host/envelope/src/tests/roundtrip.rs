use std::io::{Cursor, sink};

use arrow_array::{Array as _, RecordBatch};

use super::*;
use crate::DEFAULT_CHUNK_SIZE;

/// Asserts that `batches` are rows 0.. of [`batch`] in order, and returns how many rows.
fn assert_sequential(batches: &[RecordBatch]) -> usize {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let expected = batch(0, rows);
    let mut offset = 0;
    for b in batches {
        assert_eq!(b, &expected.slice(offset, b.num_rows()));
        offset += b.num_rows();
    }
    rows
}

#[test]
fn round_trip_several_batches_in_one_chunk() {
    let input = [batch(0, 10), batch(10, 200), batch(210, 1)];
    let (bytes, manifest) = seal(DatasetId([3; 16]), &input, DEFAULT_CHUNK_SIZE);
    assert_eq!(manifest.chunks().len(), 1);
    assert_eq!(manifest.row_count(), 211);
    let output = open(&bytes).unwrap();
    assert_eq!(output, input);
}

#[test]
fn round_trip_tiny_chunks_gives_many_chunks() {
    let input = [batch(0, 300), batch(300, 50), batch(350, 0), batch(350, 7)];
    let (bytes, manifest) = seal(DatasetId([4; 16]), &input, 512);
    assert!(
        manifest.chunks().len() > 10,
        "{} chunks",
        manifest.chunks().len()
    );
    let output = open(&bytes).unwrap();
    assert_eq!(assert_sequential(&output), 357);
}

#[test]
fn chunk_size_of_one_byte_gives_one_row_per_chunk() {
    let (bytes, manifest) = seal(DatasetId([4; 16]), &[batch(0, 20)], 1);
    assert_eq!(
        manifest.chunks().len(),
        21,
        "20 one-row chunks and the final one"
    );
    assert_eq!(assert_sequential(&open(&bytes).unwrap()), 20);
}

#[test]
fn zero_row_table_round_trips_with_its_schema() {
    let (bytes, manifest) = seal(DatasetId([5; 16]), &[], DEFAULT_CHUNK_SIZE);
    assert_eq!(
        manifest.chunks().len(),
        1,
        "even an empty table has a final chunk"
    );
    let mut reader = EnvelopeReader::open(Cursor::new(&bytes), &ENCLAVE_SK, None).unwrap();
    assert_eq!(reader.schema(), schema());
    assert_eq!(reader.num_rows(), 0);
    assert_eq!(reader.batches().count(), 0);

    let (bytes, _) = seal(DatasetId([5; 16]), &[batch(0, 0)], DEFAULT_CHUNK_SIZE);
    let output = open(&bytes).unwrap();
    assert_eq!(output.len(), 1);
    assert_eq!(output[0].num_rows(), 0);
}

#[test]
fn batches_can_be_read_again_from_the_start() {
    let input = [batch(0, 100), batch(100, 100)];
    let (bytes, _) = seal(DatasetId([6; 16]), &input, 1024);
    let mut reader = EnvelopeReader::open(Cursor::new(&bytes), &ENCLAVE_SK, None).unwrap();
    let first: Vec<_> = reader.batches().take(2).collect::<Result<_>>().unwrap();
    let all: Vec<_> = reader.batches().collect::<Result<_>>().unwrap();
    let again: Vec<_> = reader.batches().collect::<Result<_>>().unwrap();
    assert_eq!(all, again);
    assert_eq!(first[..], all[..2]);
}

#[test]
fn manifest_digest_and_reader_agree_with_the_sealer() {
    let (bytes, manifest) = seal(DatasetId([7; 16]), &[batch(0, 5)], DEFAULT_CHUNK_SIZE);
    let reader = EnvelopeReader::open(Cursor::new(&bytes), &ENCLAVE_SK, None).unwrap();
    assert_eq!(reader.manifest(), &manifest);
    assert_eq!(reader.manifest().digest(), manifest.digest());
    assert_eq!(manifest.dataset_id(), DatasetId([7; 16]));
    assert_eq!(manifest.created_at(), 1_700_000_000);
    assert_eq!(manifest.owner().unwrap(), owner().verifying_key());
    manifest.verify().unwrap();
}

#[test]
fn decoded_columns_borrow_the_decrypted_chunk() {
    let (bytes, manifest) = seal(DatasetId([8; 16]), &[batch(0, 1000)], DEFAULT_CHUNK_SIZE);
    let output = open(&bytes).unwrap();
    let values = output[0].column(1).to_data().buffers()[0].clone();
    // A zero-copy view keeps the whole chunk allocation alive; a copy would own just 8000 bytes.
    assert_eq!(values.len(), 8000);
    assert!(values.capacity() >= manifest.chunks()[0].len as usize - crate::TAG_LEN);
}

#[test]
fn sealing_200_mb_buffers_at_most_two_chunks() {
    let chunk_size = DEFAULT_CHUNK_SIZE;
    let big = batch(0, 1 << 20); // about 8 MiB ids + 8 MiB values + strings
    let size = big.get_array_memory_size();
    let copies = (200 << 20) / size + 1;
    let options = WriterOptions {
        chunk_size,
        created_at: None,
    };
    let id = DatasetId([9; 16]);
    let mut writer =
        EnvelopeWriter::with_options(sink(), &schema(), id, &owner(), &enclave_pk(), options)
            .unwrap();
    for _ in 0..copies {
        writer.write(&big).unwrap();
        assert!(writer.max_buffered_bytes() <= 2 * chunk_size);
    }
    let max = writer.max_buffered_bytes();
    let manifest = writer.finish().unwrap();
    assert!(max <= 2 * chunk_size, "buffered {max} bytes");
    let sealed: u64 = manifest.chunks().iter().map(|c| u64::from(c.len)).sum();
    assert!(sealed >= 200 << 20, "sealed {sealed} bytes");
    assert_eq!(manifest.row_count(), copies as u64 * (1 << 20));
}
