//! The researcher's guide (`docs/guide/`), step by step: each language's project as
//! `cleanroom new` writes it builds and runs locally, with the commands the guide shows.

use std::path::Path;
use std::process::Command;

use crate::server::read;

const EXPECTED: &str = "K35,5,42.2";

/// `cleanroom new LANGUAGE NAME` in `dir`.
fn scaffold(dir: &Path, language: &str, name: &str) -> std::path::PathBuf {
    let project = dir.join(name);
    cleanroom_cli::run(["cleanroom", "new", language, project.to_str().unwrap()]).unwrap();
    assert!(project.join("README.md").is_file());
    assert!(project.join("data/patients.csv").is_file());
    project
}

fn run_local(project: &Path, args: &[&str]) -> String {
    let out = project.join("results");
    let mut argv = vec!["cleanroom", "run-local"];
    argv.extend(args);
    let table = format!("patients={}", project.join("data/patients.csv").display());
    let out_s = out.display().to_string();
    argv.extend(["--table", &table, "--out", &out_s]);
    cleanroom_cli::run(argv).unwrap();
    out.display().to_string()
}

#[test]
fn the_sql_guide_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let project = scaffold(dir.path(), "sql", "my-query");
    let query = read(&project.join("query.sql"));
    let out = run_local(&project, &["--sql", &query]);
    let result = read(&Path::new(&out).join("result.csv"));
    assert!(result.contains("diagnosis,patients,mean_age"), "{result}");
    assert!(result.contains(EXPECTED), "{result}");
    // The same table as Parquet, for analysis tools.
    let parquet = std::fs::File::open(Path::new(&out).join("result.parquet")).unwrap();
    let rows: usize =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(parquet)
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap().num_rows())
            .sum();
    assert_eq!(rows, 6);
}

#[test]
fn the_python_guide_builds_and_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let project = scaffold(dir.path(), "python", "my-analysis");
    let wasm = project.join("my-analysis.wasm");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-python.sh");
    let built = Command::new(script)
        .arg(project.join("analysis.py"))
        .arg(&wasm)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let out = run_local(
        &project,
        &[wasm.to_str().unwrap(), "--params", r#"{"min_group": 5}"#],
    );
    let result = read(&Path::new(&out).join("by_diagnosis.csv"));
    assert!(result.contains(EXPECTED), "{result}");
}

#[test]
fn a_new_project_never_overwrites_and_names_must_be_plain() {
    let dir = tempfile::tempdir().unwrap();
    scaffold(dir.path(), "sql", "taken");
    let err = cleanroom_cli::run([
        "cleanroom",
        "new",
        "sql",
        dir.path().join("taken").to_str().unwrap(),
    ])
    .unwrap_err();
    assert!(format!("{err:#}").contains("already exists"), "{err:#}");
    let err = cleanroom_cli::run([
        "cleanroom",
        "new",
        "rust",
        dir.path().join("bad name!").to_str().unwrap(),
    ])
    .unwrap_err();
    assert!(format!("{err:#}").contains("letters, digits"), "{err:#}");
}

#[test]
fn the_rust_guide_builds_and_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let project = scaffold(dir.path(), "rust", "my-analysis");
    // A target directory that outlives the test, so later runs reuse the dependencies.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("guide-rust");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let built = Command::new(cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let wasm = target.join("wasm32-wasip2/release/my_analysis.wasm");
    let out = run_local(
        &project,
        &[wasm.to_str().unwrap(), "--params", r#"{"min_group": 5}"#],
    );
    let result = read(&Path::new(&out).join("by_diagnosis.csv"));
    assert!(result.contains(EXPECTED), "{result}");
}
