//! Throughput of the envelope on one core, printed as a markdown table.
//!
//! `cargo bench -p cleanroom-envelope`

use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Float64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use cleanroom_envelope::{DatasetId, EnvelopeReader, EnvelopeWriter, hpke_public_key};
use ed25519_dalek::SigningKey;
use sha2::{Digest as _, Sha256};

const CHUNK: usize = 4 << 20;
const ROWS: usize = 10_000_000;

fn main() -> anyhow::Result<()> {
    println!("CPU: {} ({})\n", cpu_model(), cpu_flags());
    println!("| operation | size | GB/s (one core) |");
    println!("| --- | --- | --- |");

    let mut buf = vec![0x5a_u8; CHUNK];
    // The same AES-256-GCM with both libraries (the envelope uses aws-lc since format 2).
    macro_rules! aes_rows {
        ($name:literal, $aead:path) => {{
            use $aead as aead;
            let key = aead::LessSafeKey::new(
                aead::UnboundKey::new(&aead::AES_256_GCM, &[7; 32]).expect("32-byte key"),
            );
            let nonce = || aead::Nonce::assume_unique_for_key([0; 12]);
            let rate = measure(CHUNK, || {
                let tag = key
                    .seal_in_place_separate_tag(nonce(), aead::Aad::from(b"aad"), &mut buf)
                    .expect("seal");
                let _ = std::hint::black_box(tag);
            });
            row(
                concat!("AES-256-GCM seal (", $name, ")"),
                "4 MiB chunk",
                rate,
            );
            // Open needs fresh ciphertext each time: time seal-then-open, subtract seal.
            let pair = measure(CHUNK, || {
                let tag = key
                    .seal_in_place_separate_tag(nonce(), aead::Aad::from(b"aad"), &mut buf)
                    .expect("seal");
                buf.extend_from_slice(tag.as_ref());
                let len = key
                    .open_in_place(nonce(), aead::Aad::from(b"aad"), &mut buf)
                    .expect("open what was just sealed")
                    .len();
                buf.truncate(len);
            });
            let open = 1.0 / (1.0 / pair - 1.0 / rate);
            row(
                concat!("AES-256-GCM open (", $name, ")"),
                "4 MiB chunk",
                open,
            );
        }};
    }
    aes_rows!("ring", ring::aead);
    aes_rows!("aws-lc", aws_lc_rs::aead);

    let rate = measure(CHUNK, || {
        std::hint::black_box(Sha256::digest(&buf));
    });
    row("SHA-256 (sha2, format 1 chunk digest)", "4 MiB chunk", rate);
    let rate = measure(CHUNK, || {
        std::hint::black_box(blake3::hash(&buf));
    });
    row(
        "BLAKE3 (blake3, format 2 chunk digest)",
        "4 MiB chunk",
        rate,
    );

    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, false)]));
    let values: Vec<f64> = (0..ROWS).map(|i| i as f64 * 0.25).collect();
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Float64Array::from(values))])?;
    let owner = SigningKey::from_bytes(&[1; 32]);
    let enclave_sk = [2u8; 32];
    let enclave_pk = hpke_public_key(&enclave_sk)?;
    let bytes = ROWS * 8;

    let mut envelope = Vec::with_capacity(bytes + (1 << 20));
    let rate = measure(bytes, || {
        envelope.clear();
        let id = DatasetId::random().expect("random id");
        let mut writer =
            EnvelopeWriter::new(&mut envelope, &schema, id, &owner, &enclave_pk).expect("writer");
        writer.write(&batch).expect("write");
        writer.finish().expect("finish");
    });
    row(
        "envelope seal, format 2 (IPC encode + BLAKE3 + AES-GCM)",
        "10M f64 rows, 80 MB",
        rate,
    );

    let rate = measure(bytes, || {
        let mut reader =
            EnvelopeReader::open(Cursor::new(&envelope), &enclave_sk, None).expect("open");
        let mut rows = 0;
        for batch in reader.batches() {
            rows += batch.expect("batch").num_rows();
        }
        assert_eq!(rows, ROWS);
    });
    row(
        "envelope open, format 2 (verify + BLAKE3 + AES-GCM + IPC decode)",
        "10M f64 rows, 80 MB",
        rate,
    );
    Ok(())
}

/// Bytes per second in GB/s, running `f` for at least a second after one warm-up.
fn measure(bytes: usize, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut runs = 0u32;
    while start.elapsed() < Duration::from_secs(1) || runs < 3 {
        f();
        runs += 1;
    }
    bytes as f64 * f64::from(runs) / start.elapsed().as_secs_f64() / 1e9
}

fn row(what: &str, size: &str, gbps: f64) {
    println!("| {what} | {size} | {gbps:.2} |");
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

fn cpu_flags() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> = info
        .lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    ["aes", "vaes", "vpclmulqdq", "avx2", "avx512f", "sha_ni"]
        .into_iter()
        .filter(|f| flags.contains(f))
        .collect::<Vec<_>>()
        .join(" ")
}
