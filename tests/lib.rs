//! Shared helpers for the integration tests and benchmarks: paths of the
//! guest programs built by `build.rs`, and table builders.

#![allow(clippy::unwrap_used)] // tests and their helpers fail loudly by design

use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use cleanroom_runtime::MemTable;

pub mod cluster;

include!(concat!(env!("OUT_DIR"), "/programs.rs"));

/// `f(i)` for every `i` in `0..n`, on `threads` threads at once (thread `t` takes every
/// `threads`-th `i` from `t`): the results, grouped by thread.
pub fn spread<T: Send>(threads: usize, n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let f = &f;
                scope.spawn(move || (t..n).step_by(threads).map(f).collect::<Vec<_>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a worker thread panicked"))
            .collect()
    })
}

/// Bytes of a guest program built by `build.rs`.
pub fn program(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| {
        panic!("guest program {path} missing ({e}); build.rs should have built it")
    })
}

/// A component built from Python by `scripts/build-python.sh`: its path comes
/// from `CLEANROOM_PYTHON_GUESTS` (set by `scripts/test.sh`).
pub fn python_program(name: &str) -> Vec<u8> {
    let dir = std::env::var_os("CLEANROOM_PYTHON_GUESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/python-guests")
        });
    let path = dir.join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "Python guest {} missing ({e}): run scripts/build-python.sh (scripts/test.sh does) \
             or set CLEANROOM_PYTHON_GUESTS",
            path.display()
        )
    })
}

/// A one-column float64 table `x` of `rows` rows in batches of `batch_rows`,
/// with values 0, 1, 2, ... (so the sum is known).
pub fn f64_table(rows: usize, batch_rows: usize) -> MemTable {
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, false)]));
    let batches = (0..rows)
        .step_by(batch_rows)
        .map(|start| {
            let end = (start + batch_rows).min(rows);
            let col: ArrayRef = Arc::new(Float64Array::from_iter_values(
                (start..end).map(|i| i as f64),
            ));
            RecordBatch::try_new(schema.clone(), vec![col]).expect("schema matches the column")
        })
        .collect();
    MemTable::new(schema, batches)
}

/// Load a CSV file as an in-memory table, inferring its schema.
pub fn csv_table(path: &std::path::Path) -> MemTable {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let format = arrow_csv::reader::Format::default().with_header(true);
    let (schema, _) = format.infer_schema(&file, None).expect("infer CSV schema");
    let file = std::fs::File::open(path).expect("reopen CSV");
    let schema = Arc::new(schema);
    let reader = arrow_csv::ReaderBuilder::new(schema.clone())
        .with_format(format)
        .with_batch_size(8192)
        .build(file)
        .expect("CSV reader");
    let batches = reader.collect::<Result<Vec<_>, _>>().expect("read CSV");
    MemTable::new(schema, batches)
}

/// Site A: age, sex, ICD-10 category, dates, died.
pub const SITE_A_CSV: &str = "\
patient_id,age,sex,diagnosis,admit_date,discharge_date,died
A1,60,M,I21,2024-01-01,2024-01-05,0
A2,70,F,I21,2024-01-02,2024-01-10,1
A3,50,M,I21,2024-02-01,2024-02-03,0
A4,40,F,J18,2024-03-01,2024-03-06,0
A5,80,M,J18,2024-03-02,2024-03-12,1
A6,30,F,E11,2024-04-01,2024-04-02,0
";

/// Site B: a different schema for the same facts.
pub const SITE_B_CSV: &str = "\
mrn,birth_year,admit_year,gender,dx_code,los_days,outcome
B1,1954,2024,male,i21.4,6,discharged
B2,1964,2024,female,J18.9,3,deceased
B3,1974,2024,male,j18.1,7,discharged
";

/// Laboratory results for some of site A's patients (another owner's table,
/// linkable on `patient_id`).
pub const LABS_CSV: &str = "\
patient_id,test,value
A1,hba1c,6.0
A2,hba1c,7.0
A3,hba1c,8.0
A4,hba1c,5.5
A5,hba1c,6.5
";

/// The SQL engine component built by `scripts/build-sql.sh`: its path comes
/// from `CLEANROOM_SQL_ENGINE` (set by `scripts/test.sh`).
pub fn sql_engine() -> PathBuf {
    let path = std::env::var_os("CLEANROOM_SQL_ENGINE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/sql-engine/cleanroom_sql.wasm")
        });
    assert!(
        path.exists(),
        "SQL engine {} missing: run scripts/build-sql.sh (scripts/test.sh does) or set CLEANROOM_SQL_ENGINE",
        path.display()
    );
    path
}

/// A TLS connection to a test server for raw HTTP/1.1 (partial bodies, slow clients): these
/// tests exercise the server's HTTP handling, so the certificate is not checked here;
/// `cleanroom_cli::attested_agent` and the CLI check it everywhere else.
pub fn tls_connect(
    addr: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    #[derive(Debug)]
    struct AnyKey(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AnyKey {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::General("TLS 1.3 only".into()))
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyKey(provider)))
        .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), "cleanroomd.invalid".try_into().unwrap())
            .unwrap();
    let sock = std::net::TcpStream::connect(addr).unwrap();
    rustls::StreamOwned::new(conn, sock)
}

/// Sign and send one request as `identity` over `agent` (an attested session) to
/// `base` + `path`: the raw response. Tests and benches that bypass the CLI use it.
pub fn signed_request(
    agent: &ureq::Agent,
    identity: &cleanroom_proto::Identity,
    base: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> ureq::http::Response<ureq::Body> {
    let h = cleanroom_proto::httpsig::sign_request(
        identity,
        method,
        path,
        body,
        cleanroomd::now(),
        &cleanroom_proto::httpsig::new_nonce(),
    );
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header("content-digest", &h.content_digest)
        .header("signature-input", &h.signature_input)
        .header("signature", &h.signature)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .expect("a valid request");
    agent.run(request).expect("the server answers")
}
