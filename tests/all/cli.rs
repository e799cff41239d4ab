//! `cleanroom run-local`, driven like a researcher would drive it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cleanroom_tests::*;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("st_marys.csv"), SITE_A_CSV).unwrap();
        std::fs::write(dir.path().join("northfield.csv"), SITE_B_CSV).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, module: &str, tables: &[String], extra: &[&str]) -> anyhow::Result<PathBuf> {
        let out = self.path("results");
        let mut args: Vec<String> = vec!["cleanroom".into(), "run-local".into(), module.into()];
        for t in tables {
            args.extend(["--table".into(), t.clone()]);
        }
        args.extend(["--out".into(), out.display().to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        cleanroom_cli::run(args).map(|()| out)
    }

    fn csv_tables(&self) -> Vec<String> {
        vec![
            format!("st_marys={}", self.path("st_marys.csv").display()),
            format!("northfield={}", self.path("northfield.csv").display()),
        ]
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const EXPECTED_CSV: &str = "group,patients,mean_age,mean_los_days,mortality_pct\nI21,4,62.5,5.0,25.0\nJ18,4,57.5,6.25,50.0\n";

#[test]
fn run_local_writes_tables_json_and_log() {
    let f = Fixture::new();
    let out = f
        .run(
            COHORT_STATS_RUST,
            &f.csv_tables(),
            &["--params", r#"{"min_group":3}"#],
        )
        .unwrap();
    assert_eq!(read(&out.join("cohort_stats.csv")), EXPECTED_CSV);
    let summary: serde_json::Value =
        serde_json::from_str(&read(&out.join("summary.json"))).unwrap();
    assert_eq!(summary["groups_suppressed"], 1);
    let ipc = std::fs::File::open(out.join("cohort_stats.arrow")).unwrap();
    let rows: usize = arrow_ipc::reader::FileReader::try_new(ipc, None)
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .sum();
    assert_eq!(rows, 2);
    assert!(read(&out.join("log.txt")).contains("[info] st_marys: 6 admissions"));
    let run: serde_json::Value = serde_json::from_str(&read(&out.join("run.json"))).unwrap();
    assert_eq!(run["module"].as_str().unwrap().len(), 64);
}

#[test]
fn run_local_reads_parquet_and_arrow_ipc_like_csv() {
    let f = Fixture::new();
    // The same two tables, re-encoded as Parquet and as an Arrow IPC file.
    let a = csv_table(&f.path("st_marys.csv"));
    let b = csv_table(&f.path("northfield.csv"));
    let (schema_a, batches_a) = table_batches(&a);
    let parquet = std::fs::File::create(f.path("a.parquet")).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(parquet, schema_a, None).unwrap();
    batches_a.iter().for_each(|batch| w.write(batch).unwrap());
    w.close().unwrap();
    let (schema_b, batches_b) = table_batches(&b);
    let ipc = std::fs::File::create(f.path("b.arrow")).unwrap();
    let mut w = arrow_ipc::writer::FileWriter::try_new(ipc, &schema_b).unwrap();
    batches_b.iter().for_each(|batch| w.write(batch).unwrap());
    w.finish().unwrap();

    let tables = [
        format!("st_marys={}", f.path("a.parquet").display()),
        format!("northfield={}", f.path("b.arrow").display()),
    ];
    let out = f
        .run(
            COHORT_STATS_RUST,
            &tables,
            &["--params", r#"{"min_group":3}"#],
        )
        .unwrap();
    assert_eq!(read(&out.join("cohort_stats.csv")), EXPECTED_CSV);
}

fn table_batches(
    t: &cleanroom_runtime::MemTable,
) -> (Arc<arrow_schema::Schema>, Vec<arrow_array::RecordBatch>) {
    use cleanroom_runtime::TableSource;
    (t.schema(), t.batches().map(|b| b.unwrap()).collect())
}

#[test]
fn run_local_limits_end_runs_with_the_reason() {
    let f = Fixture::new();
    let err = f
        .run(INFINITE_LOOP, &[], &["--timeout", "0.2"])
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("run failed (timeout): analysis timed out after 200ms"),
        "{err:#}"
    );
    let err = f
        .run(MEMORY_BOMB, &[], &["--max-memory", "128"])
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("run failed (memory-limit)"),
        "{err:#}"
    );
    let err = f
        .run(OUTPUT_FLOOD, &[], &["--max-output", "2"])
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("output limit of 2097152 bytes"),
        "{err:#}"
    );
}

#[test]
fn run_local_reports_analysis_errors_and_bad_input() {
    let f = Fixture::new();
    let err = f
        .run(
            COHORT_STATS_RUST,
            &f.csv_tables(),
            &["--params", r#"{"group_by":"ward"}"#],
        )
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("run failed (failed): analysis failed: invalid params"),
        "{err:#}"
    );

    let err = f
        .run(
            COHORT_STATS_RUST,
            &f.csv_tables(),
            &["--params", "{not json"],
        )
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("--params is not valid JSON"),
        "{err:#}"
    );

    let err = f
        .run(COHORT_STATS_RUST, &["x=/no/such/file.csv".into()], &[])
        .unwrap_err();
    assert!(format!("{err:#}").contains("does not exist"), "{err:#}");

    std::fs::write(f.path("notes.xlsx"), "PK").unwrap();
    let err = f
        .run(
            COHORT_STATS_RUST,
            &[f.path("notes.xlsx").display().to_string()],
            &[],
        )
        .unwrap_err();
    assert!(format!("{err:#}").contains("unsupported format"), "{err:#}");

    std::fs::write(f.path("bad.wasm"), "not wasm at all").unwrap();
    let err = f
        .run(f.path("bad.wasm").to_str().unwrap(), &[], &[])
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("not a WebAssembly component"),
        "{err:#}"
    );
    assert!(
        !f.path("results").exists(),
        "a failed run must not leave partial results"
    );
}

#[test]
fn attest_report_checks_real_amd_evidence_offline() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/trust/tests/fixtures");
    let report = fixtures.join("test-report.bin");
    let cert = fixtures.join("test-vcek.der");
    cleanroom_cli::run([
        "cleanroom",
        "attest",
        "report",
        report.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
    ])
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut tampered = std::fs::read(&report).unwrap();
    tampered[0x90] ^= 1; // inside the measurement
    let bad = dir.path().join("tampered.bin");
    std::fs::write(&bad, tampered).unwrap();
    let err = cleanroom_cli::run([
        "cleanroom",
        "attest",
        "report",
        bad.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
    ])
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("does not verify against AMD's pinned roots"),
        "{err:#}"
    );
}

#[test]
fn dataset_seal_streams_into_an_envelope_only_the_enclave_opens() {
    let f = Fixture::new();
    let owner = f.path("owner.json");
    cleanroom_cli::run(["cleanroom", "keygen", "-o", owner.to_str().unwrap()]).unwrap();
    let enclave = cleanroom_proto::Identity::generate();
    let out = f.path("a.envelope");
    let key = hex::encode(enclave.hpke_public());
    let sealed = cleanroom_cli::run_capture([
        "cleanroom",
        "dataset",
        "seal",
        f.path("st_marys.csv").to_str().unwrap(),
        "--enclave-key",
        &key,
        "--key",
        owner.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--json",
    ])
    .unwrap();
    assert_eq!(sealed["rows"], 6);
    let owner_key = *cleanroom_proto::Identity::load(&owner)
        .unwrap()
        .signing_key()
        .as_ref();
    let mut reader = cleanroom_envelope::EnvelopeReader::open(
        std::fs::File::open(&out).unwrap(),
        &enclave.hpke_secret(),
        Some(&owner_key),
    )
    .unwrap();
    assert_eq!(
        reader.manifest().dataset_id().to_string(),
        sealed["dataset"].as_str().unwrap()
    );
    let rows: usize = reader.batches().map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 6);
    let other = cleanroom_proto::Identity::generate();
    assert!(
        cleanroom_envelope::EnvelopeReader::open(
            std::fs::File::open(&out).unwrap(),
            &other.hpke_secret(),
            None
        )
        .is_err(),
        "another key must not open the envelope"
    );

    // Bad input fails with the reason and leaves no partial envelope behind.
    std::fs::write(f.path("bad.csv"), "a,b\n1,2\nx,y,z\n").unwrap();
    let bad_out = f.path("bad.envelope");
    let err = cleanroom_cli::run([
        "cleanroom",
        "dataset",
        "seal",
        f.path("bad.csv").to_str().unwrap(),
        "--enclave-key",
        &key,
        "--key",
        owner.to_str().unwrap(),
        "-o",
        bad_out.to_str().unwrap(),
    ])
    .unwrap_err();
    assert!(format!("{err:#}").contains("cannot read"), "{err:#}");
    assert!(!bad_out.exists());
}

#[test]
fn run_local_policy_shows_what_the_enclave_would_release() {
    let f = Fixture::new();
    let policy = serde_json::json!({
        "dataset": "d00d",
        "version": 1,
        "grants": [],
        "hidden_columns": ["age"],
        "identifier_columns": ["patient_id", "mrn"],
        "output": { "min_group_count": 3 },
        "issued_at": 0,
    });
    std::fs::write(f.path("policy.json"), policy.to_string()).unwrap();
    let policy_path = f.path("policy.json").display().to_string();
    // Hidden columns never reach the analysis locally either.
    let err = f
        .run(
            COHORT_STATS_RUST,
            &f.csv_tables(),
            &["--policy", &policy_path],
        )
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("missing column \"age\""),
        "{err:#}"
    );

    let policy = serde_json::json!({
        "dataset": "d00d",
        "version": 1,
        "grants": [],
        "identifier_columns": ["patient_id", "mrn"],
        "output": { "min_group_count": 5, "rounding": "midpoint6" },
        "issued_at": 0,
    });
    std::fs::write(f.path("policy.json"), policy.to_string()).unwrap();
    let out = f
        .run(
            COHORT_STATS_RUST,
            &f.csv_tables(),
            &["--params", r#"{"min_group":1}"#, "--policy", &policy_path],
        )
        .unwrap();
    let decisions: serde_json::Value =
        serde_json::from_str(&read(&out.join("policy.json"))).unwrap();
    // The declared-count table is released with E11 (1 patient) suppressed and counts
    // rounded; the free-form summary would be refused (nobody reviews); the log withheld.
    assert_eq!(decisions[0][0], "cohort_stats");
    assert_eq!(decisions[0][1]["disposition"], "release");
    assert_eq!(
        decisions[0][1]["codes"],
        serde_json::json!(["small_groups_suppressed", "counts_rounded"])
    );
    assert_eq!(decisions[1][1]["disposition"], "refuse");
    assert_eq!(
        decisions[1][1]["codes"],
        serde_json::json!(["unchecked_refused"])
    );
    assert_eq!(decisions[2][1]["kind"], "log");
    assert_eq!(
        decisions[2][1]["codes"],
        serde_json::json!(["logs_withheld"])
    );
}

#[test]
fn run_local_decides_a_failed_runs_error_text_as_the_enclave_does() {
    // A reviewing owner: the enclave never sends a failed run's error text to review (it is
    // refused with logs_withheld); run-local must say so too, not "held for review", since
    // both call the policy crate's `decide_failed`. The old run-local decided it with
    // `decide` and reported it held.
    let f = Fixture::new();
    let policy = serde_json::json!({
        "dataset": "d00d",
        "version": 1,
        "grants": [],
        "identifier_columns": ["patient_id", "mrn"],
        "output": { "review_required": true, "release_logs": true },
        "issued_at": 0,
    });
    std::fs::write(f.path("policy.json"), policy.to_string()).unwrap();
    let policy_path = f.path("policy.json").display().to_string();
    let err = f
        .run(ERROR_LEAK, &f.csv_tables(), &["--policy", &policy_path])
        .unwrap_err();
    assert!(format!("{err:#}").contains("run failed"), "{err:#}");
    let decisions: serde_json::Value =
        serde_json::from_str(&read(&f.path("results").join("policy.json"))).unwrap();
    let error = decisions
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d[1]["kind"] == "error")
        .unwrap_or_else(|| panic!("no error output in {decisions}"));
    assert_eq!(error[1]["disposition"], "refuse", "{decisions}");
    assert!(
        error[1]["codes"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("logs_withheld")),
        "{decisions}"
    );
}
