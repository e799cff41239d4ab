//! The researcher's guide (`docs/guide/`), step by step: each language's project as
//! `cleanroom new` writes it builds and runs locally, with the commands the guide shows.

use std::path::Path;

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
    let (_, wasm) = build(&project, None);
    assert_eq!(wasm, project.join("my-analysis.wasm"));
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

/// `cleanroom build PROJECT --target-dir TARGET --json`: the module hash and the component.
fn build(project: &Path, target: Option<&Path>) -> (String, std::path::PathBuf) {
    let mut argv = vec![
        "cleanroom".to_string(),
        "build".into(),
        project.display().to_string(),
        "--json".into(),
    ];
    if let Some(t) = target {
        argv.extend(["--target-dir".into(), t.display().to_string()]);
    }
    // The build's own output goes to the test's stdout; its JSON is the last thing printed.
    let built = cleanroom_cli::run_capture(argv);
    let built = built.unwrap_or_else(|e| panic!("cleanroom build failed: {e:#}"));
    (
        built["module"].as_str().unwrap().to_string(),
        built["wasm"].as_str().unwrap().into(),
    )
}

/// A target directory that outlives the test, so later runs reuse the dependencies.
fn cached_target(name: &str) -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join(name)
}

#[test]
fn the_rust_guide_builds_reproducibly_and_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let project = scaffold(dir.path(), "rust", "my-analysis");
    let (module, wasm) = build(&project, Some(&cached_target("guide-rust")));
    assert_eq!(wasm, project.join("my_analysis.wasm"));
    assert_eq!(
        module,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            std::fs::read(&wasm).unwrap()
        ))
    );
    let out = run_local(
        &project,
        &[wasm.to_str().unwrap(), "--params", r#"{"min_group": 5}"#],
    );
    let result = read(&Path::new(&out).join("by_diagnosis.csv"));
    assert!(result.contains(EXPECTED), "{result}");

    // The same source in another directory, built into another target directory (as an
    // owner rebuilding it would): the same bytes, hence the same module hash.
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("rebuild").join("my-analysis");
    std::fs::create_dir_all(&copy).unwrap();
    let bundle = cleanroom_cli::source_bundle(&project).unwrap();
    assert!(
        bundle.files.contains_key("Cargo.lock"),
        "the lock file travels with the source"
    );
    assert!(
        !bundle.files.keys().any(|f| f.ends_with(".csv")),
        "data never does"
    );
    cleanroom_cli::write_source_bundle(&bundle, &copy).unwrap();
    let (rebuilt, _) = build(&copy, Some(&cached_target("guide-rust-rebuild")));
    assert_eq!(rebuilt, module, "a rebuild elsewhere gives other bytes");

    // `module verify` says so, and says when the source does not build the hash.
    let target = cached_target("guide-rust-rebuild").display().to_string();
    let verify = |module: &str| {
        cleanroom_cli::run_capture([
            "cleanroom",
            "module",
            "verify",
            module,
            copy.to_str().unwrap(),
            "--target-dir",
            &target,
            "--json",
        ])
    };
    let verified = verify(&module).unwrap();
    assert_eq!(verified["matches"], true);
    let lib = copy.join("src/lib.rs");
    let edited = read(&lib).replace("min_group", "min_grp");
    std::fs::write(&lib, edited).unwrap();
    let err = verify(&module).unwrap_err();
    assert!(
        format!("{err:#}").contains("is not what its source builds"),
        "{err:#}"
    );
    assert_eq!(cleanroom_cli::failure::exit_code(&err), 6);
}
