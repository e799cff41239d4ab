//! Governed egress against a real cleanroomd, tried as the adversaries would: a researcher
//! with an approved module, a researcher who uploads a dummy table to become an input owner,
//! anyone with a key, anyone without one.

use std::io::{Read, Write};
use std::time::Duration;

use cleanroom_tests::*;
use serde_json::Value;

use crate::server::{Study, TestServer, err_text, push, push_module, read, signed_get, subscribe};

/// Hospital tables whose identifiers are long enough to be scanned for (≥ 4 bytes).
fn long_ids() -> (String, String) {
    (
        SITE_A_CSV.replace("\nA", "\nNHS-48A"),
        SITE_B_CSV.replace("\nB", "\nMRN-77B"),
    )
}

fn long_id_study() -> Study {
    let (a, b) = long_ids();
    Study::with_data(&a, &b)
}

/// Every file under `dir`, recursively.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn wait_for(st: &Study, run: &str, state: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while st.status(run)["state"] != state {
        assert!(
            std::time::Instant::now() < deadline,
            "run {run} never became {state}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn error_text_is_an_output_and_leaks_nowhere() {
    let st = long_id_study();
    let leak = push_module(&st.s, ERROR_LEAK);
    let events = subscribe(&st.s, "researcher");
    let owner_events = subscribe(&st.s, "st_marys");
    st.grant_both_module(&leak, &[]);
    let run = st.submit(&leak, "{}").unwrap();
    let status = st.expect_end(&run, "failed", "analysis_error");
    let secret = "NHS-48A1";
    assert!(!status.to_string().contains(secret));
    assert!(
        !signed_get(&st.s, "st_marys", &format!("/v1/runs/{run}"))
            .to_string()
            .contains(secret)
    );
    assert!(
        !signed_get(&st.s, "researcher", "/v1/runs")
            .to_string()
            .contains(secret)
    );
    for key in ["researcher", "st_marys", "northfield", "stranger"] {
        assert!(
            !st.audit_text(key).contains(secret),
            "{key}'s audit view leaks it"
        );
    }
    for rx in [events, owner_events] {
        while let Ok(event) = rx.recv_timeout(Duration::from_millis(300)) {
            assert!(
                !event.to_string().contains(secret),
                "an event leaks it: {event}"
            );
        }
    }
    assert!(
        st.fetch(&run).is_err(),
        "nothing was released to the researcher"
    );
    // Not on the operator's disk either: every file of the data directory, byte for byte.
    for file in files(&st.s.dir.path().join("server")) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{} holds the secret in plaintext",
            file.display()
        );
    }
}

#[test]
fn identifiers_are_caught_by_value() {
    let st = long_id_study();
    // The first grant asks for review, dataset-wide: both runs are reviewed.
    for (program, extra) in [
        (FILE_WITH_IDENTIFIERS, &["--review"][..]),
        (RENAMED_IDENTIFIER_COLUMN, &[][..]),
    ] {
        let module = push_module(&st.s, program);
        st.grant_both_module(&module, extra);
        let run = st.submit(&module, "{}").unwrap();
        // The run goes to its reviewers even though its only output is refused, and the
        // researcher learns nothing of which rule refused what until they released it
        // (before, the run ended at once as withheld, naming the rule).
        let (state, status) = st.watch(&run);
        assert_eq!(state, "held_for_review", "{status}");
        assert_eq!(status["outputs"], serde_json::json!([]), "{status}");
        assert!(!status.to_string().contains("identifier"), "{status}");
        let owner = signed_get(&st.s, "st_marys", &format!("/v1/runs/{run}"));
        assert_eq!(owner["outputs"][0]["disposition"], "refuse", "{owner}");
        let codes = owner["outputs"][0]["codes"].to_string();
        assert!(codes.contains("identifier_value"), "{codes}");
        for reviewer in ["st_marys", "northfield"] {
            st.s.cli(Some(reviewer), &["review", "release", &run])
                .unwrap();
        }
        // An output holding identifiers is refused, never held: nothing leaves.
        let status = st.expect_end(&run, "withheld", "identifier_value");
        assert_eq!(status["outputs"][0]["disposition"], "refuse");
    }
}

#[test]
fn review_cannot_be_read_around() {
    let st = Study::new();
    st.grant(
        "st_marys",
        &st.a,
        &st.module,
        &["--identifier", "patient_id", "--min-group", "3"],
    )
    .unwrap();
    st.grant(
        "northfield",
        &st.b,
        &st.module,
        &["--identifier", "mrn", "--review", "--min-group", "3"],
    )
    .unwrap();
    // The researcher becomes an input owner by uploading a dummy table and granting on it.
    let dummy = push(&st.s, "researcher", "x\n1\n", "dummy.csv");
    st.grant("researcher", &dummy, &st.module, &["--min-group", "3"])
        .unwrap();
    let inputs = [
        format!("st_marys={}", st.a),
        format!("northfield={}", st.b),
        format!("dummy={dummy}"),
    ];
    let run =
        st.s.cli(
            Some("researcher"),
            &[
                "run",
                "submit",
                "--module",
                &st.module,
                "--input",
                &inputs[0],
                "--input",
                &inputs[1],
                "--input",
                &inputs[2],
                "--params",
                r#"{"tables":["st_marys","northfield"],"min_group":1}"#,
            ],
        )
        .unwrap()["run"]
            .as_str()
            .unwrap()
            .to_string();
    assert_eq!(st.watch(&run).0, "held_for_review");
    // As an input owner, the researcher sees the run's status: no held content, and not even
    // which rules fired on which output (module-steerable bits) before the review.
    let status = signed_get(&st.s, "researcher", &format!("/v1/runs/{run}"));
    assert!(!status.to_string().contains("I21"), "{status}");
    assert_eq!(status["outputs"], serde_json::json!([]), "{status}");
    let owner_view = signed_get(&st.s, "northfield", &format!("/v1/runs/{run}"));
    assert_eq!(
        owner_view["outputs"].as_array().unwrap().len(),
        3,
        "table, summary, log"
    );
    // Held outputs go only to a pending reviewer, sealed to the key they sign for.
    let err = err_text(st.s.cli(Some("researcher"), &["review", "show", &run]));
    assert!(err.contains("403"), "{err}");
    let err = err_text(st.s.cli(Some("st_marys"), &["review", "show", &run]));
    assert!(err.contains("403"), "{err}");
    let out = st.s.path("northfield-review");
    let out_s = out.display().to_string();
    let trust = st.s.trust();
    let mut show = vec!["review", "show", &run, "--out", &out_s];
    show.extend(trust.iter().map(String::as_str));
    st.s.cli(Some("northfield"), &show).unwrap();
    assert!(read(&out.join("cohort_stats.csv")).contains("I21"));
}

#[test]
fn two_independent_reviewers() {
    let st = Study::new();
    let auditor = st.s.keygen("auditor");
    let northfield = cleanroom_proto::Identity::load(&st.s.path("northfield.json"))
        .unwrap()
        .party()
        .to_string();
    st.grant("st_marys", &st.a, &st.module, &["--min-group", "3"])
        .unwrap();
    st.grant(
        "northfield",
        &st.b,
        &st.module,
        &[
            "--min-group",
            "3",
            "--review",
            "--reviewer",
            &northfield,
            "--reviewer",
            &auditor,
            "--min-reviewers",
            "2",
        ],
    )
    .unwrap();
    let run = st.submit(&st.module, "{}").unwrap();
    assert_eq!(st.watch(&run).0, "held_for_review");
    st.s.cli(Some("northfield"), &["review", "release", &run])
        .unwrap();
    let status = st.status(&run);
    assert_eq!(status["state"], "held_for_review", "one release is not two");
    assert_eq!(status["pending_reviews"], serde_json::json!([auditor]));
    st.s.cli(Some("auditor"), &["review", "release", &run])
        .unwrap();
    assert_eq!(st.status(&run)["state"], "released");
    // The checked table leaves. The JSON summary does not: St Mary's does not review, so
    // it refuses unchecked outputs, and Northfield's reviewers reading St Mary's data is
    // not St Mary's answer (before, merging the rules held it for Northfield's reviewers).
    let out = st.fetch(&run).unwrap();
    assert!(out.join("cohort_stats.csv").exists());
    assert!(!out.join("summary.json").exists());
    let status = st.status(&run);
    let summary = status["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "json")
        .unwrap_or_else(|| panic!("{status}"));
    assert_eq!(summary["disposition"], "refuse", "{summary}");
    assert!(summary["codes"].to_string().contains("unchecked_refused"));
}

#[test]
fn run_limits_count_per_grant_across_researcher_keys() {
    let st = Study::new();
    st.s.keygen("sock1");
    st.s.keygen("sock2");
    st.grant_both(&["--min-group", "3", "--max-runs", "2"]);
    let first = st.submit(&st.module, "{}").unwrap();
    let second = st.submit_as("sock1", &st.module, "{}").unwrap();
    assert_eq!(st.watch(&first).0, "released");
    let watched = st.s.cli(Some("sock1"), &["run", "watch", &second]).unwrap();
    assert_eq!(watched["state"], "released");
    // A fresh key does not get fresh runs: the total is the grant's.
    let err = err_text(st.submit_as("sock2", &st.module, "{}"));
    assert!(err.contains("run_limit_reached"), "{err}");
}

#[test]
fn receipts_name_the_policy_applied_and_revocation_reaches_running_and_held_runs() {
    let st = Study::new();
    let sleeper = push_module(&st.s, SLEEP_FOREVER);
    st.grant_both_module(&sleeper, &[]);
    st.grant_both(&["--min-group", "3"]);
    // Two sleepers hold both workers; the cohort run waits in the queue.
    let s1 = st.submit(&sleeper, "{}").unwrap();
    let s2 = st.submit(&sleeper, "{}").unwrap();
    wait_for(&st, &s1, "running");
    wait_for(&st, &s2, "running");
    let run = st.submit(&st.module, "{}").unwrap();
    let admitted = st.status(&run)["inputs"][0]["policy_version"]
        .as_u64()
        .unwrap();
    // St Mary's publishes a new version (approving another module) while it waits.
    let echo = push_module(&st.s, ECHO);
    st.grant("st_marys", &st.a, &echo, &[]).unwrap();
    // Revoking the sleeper stops the running sleepers, freeing the workers.
    st.s.cli(
        Some("st_marys"),
        &["policy", "revoke", "--dataset", &st.a, "--module", &sleeper],
    )
    .unwrap();
    st.expect_end(&s1, "withheld", "revoked_during_run");
    st.expect_end(&s2, "withheld", "revoked_during_run");
    assert_eq!(st.watch(&run).0, "released");
    let out = st.fetch(&run).unwrap();
    let receipt: Value = serde_json::from_str(&read(&out.join("receipt.json"))).unwrap();
    let applied = receipt["receipt"]["receipt"]["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["dataset"] == st.a.as_str())
        .unwrap()["policy_version"]
        .as_u64()
        .unwrap();
    assert_eq!(
        applied,
        admitted + 2,
        "the receipt names the version the run ran under"
    );

    // A held run is withheld when a grant it needs is revoked, and the review is gone.
    st.grant(
        "northfield",
        &st.b,
        &st.module,
        &["--identifier", "mrn", "--review"],
    )
    .unwrap();
    let held = st.submit(&st.module, "{}").unwrap();
    assert_eq!(st.watch(&held).0, "held_for_review");
    st.s.cli(Some("st_marys"), &["policy", "revoke", "--dataset", &st.a])
        .unwrap();
    st.expect_end(&held, "withheld", "revoked_during_run");
    let err = err_text(st.s.cli(Some("northfield"), &["review", "release", &held]));
    assert!(err.contains("does not await your review"), "{err}");
}

#[test]
fn dataset_listings_show_schemas_only_to_whom_they_concern() {
    let st = Study::new();
    st.grant(
        "st_marys",
        &st.a,
        &st.module,
        &["--researcher", &st.researcher, "--hide", "age"],
    )
    .unwrap();
    let columns = |key: &str| -> Value {
        let list = signed_get(&st.s, key, "/v1/datasets");
        list["datasets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == st.a.as_str())
            .unwrap()["columns"]
            .clone()
    };
    let names = |v: Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|c| c[0].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        names(columns("st_marys")).contains(&"age".to_string()),
        "the owner sees all"
    );
    let granted = names(columns("researcher"));
    assert!(granted.contains(&"diagnosis".to_string()));
    assert!(
        !granted.contains(&"age".to_string()),
        "hidden names are the owner's"
    );
    assert!(columns("stranger").is_null(), "a stranger sees no schema");
    let policy = signed_get(&st.s, "stranger", &format!("/v1/datasets/{}/policy", st.a));
    assert_eq!(policy["type"], "not-found");
}

/// A raw HTTP/1.1 request: headers, then up to `send` bytes of a `declared`-byte body;
/// returns the status line.
fn raw_put(s: &TestServer, path: &str, headers: &str, declared: usize, send: usize) -> String {
    let addr = s.url.trim_start_matches("https://").to_string();
    let mut stream = tls_connect(&addr);
    stream
        .sock
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "PUT {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {declared}\r\n\r\n"
    )
    .unwrap();
    let _ = stream.write_all(&vec![0u8; send]);
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn unauthenticated_uploads_cost_nothing() {
    let st = Study::new();
    let tmp = st.s.dir.path().join("server/tmp");
    let before = files(&st.s.dir.path().join("server/blobs")).len();
    // No signature: refused from the headers, before any of a 4 GiB body is read.
    // (No body bytes are sent: the answer must come without them.)
    let status = raw_put(
        &st.s,
        "/v1/datasets/00112233445566778899aabbccddeeff",
        "",
        4 << 30,
        0,
    );
    assert!(status.contains("401"), "{status}");
    let status = raw_put(&st.s, "/v1/modules", "", 200 << 20, 0);
    assert!(status.contains("401"), "{status}");
    // Signed headers whose digest the body does not match: spooled, then refused and deleted.
    let id = cleanroom_proto::Identity::load(&st.s.path("st_marys.json")).unwrap();
    let path = "/v1/datasets/00112233445566778899aabbccddeeff";
    let h = cleanroom_proto::httpsig::sign_request(
        &id,
        "PUT",
        path,
        b"",
        cleanroomd::now(),
        &cleanroom_proto::httpsig::new_nonce(),
    );
    let headers = format!(
        "content-digest: {}\r\nsignature-input: {}\r\nsignature: {}\r\n",
        h.content_digest, h.signature_input, h.signature
    );
    let status = raw_put(&st.s, path, &headers, 1 << 20, 1 << 20);
    assert!(status.contains("401"), "{status}");
    assert!(files(&tmp).is_empty(), "a refused upload left a spool file");
    assert_eq!(files(&st.s.dir.path().join("server/blobs")).len(), before);
}

pub(crate) fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn the_cli_signs_only_policies_it_verified_and_catches_a_rollback() {
    let st = Study::new();
    st.grant("st_marys", &st.a, &st.module, &["--min-group", "3"])
        .unwrap();
    // The operator snapshots the state at v1 ...
    let s = st.s;
    let dir = s.stop();
    let snapshot = tempfile::tempdir().unwrap();
    copy_dir(&dir.path().join("server"), snapshot.path());
    let s = TestServer::start_in(dir);
    // ... the owner publishes v2 (revoking) and verifies the audit log ...
    s.cli(Some("st_marys"), &["policy", "revoke", "--dataset", &st.a])
        .unwrap();
    let trust = s.trust();
    let mut verify = vec!["audit", "verify"];
    verify.extend(trust.iter().map(String::as_str));
    s.cli(Some("st_marys"), &verify).unwrap();
    // ... and the operator restores v1, reviving the grant.
    let dir = s.stop();
    std::fs::remove_dir_all(dir.path().join("server")).unwrap();
    copy_dir(snapshot.path(), &dir.path().join("server"));
    let s = TestServer::start_in(dir);
    let err = err_text(s.cli(
        Some("st_marys"),
        &[
            "policy",
            "grant",
            "--dataset",
            &st.a,
            "--module",
            &st.module,
            "--any-researcher",
            "--unlimited",
        ],
    ));
    assert!(err.contains("rolled back"), "{err}");
    // The restored log verifies on its own, but not against the head the owner kept.
    let err = err_text(s.cli(Some("st_marys"), &verify));
    assert!(err.contains("truncated, rewritten or forked"), "{err}");
    // `policy sign --from-file` signs what the owner wrote, never below what it signed.
    let policy = serde_json::json!({
        "dataset": st.a, "version": 2, "grants": [], "issued_at": cleanroomd::now(),
    });
    let file = s.path("policy.json");
    std::fs::write(&file, policy.to_string()).unwrap();
    let file_s = file.display().to_string();
    let err = err_text(s.cli(
        Some("st_marys"),
        &["policy", "sign", "--from-file", &file_s],
    ));
    assert!(err.contains("already signed v2"), "{err}");
    let policy = serde_json::json!({
        "dataset": st.a, "version": 3, "grants": [], "issued_at": cleanroomd::now(),
    });
    std::fs::write(&file, policy.to_string()).unwrap();
    s.cli(
        Some("st_marys"),
        &["policy", "sign", "--from-file", &file_s],
    )
    .unwrap();
    let shown = s
        .cli(Some("st_marys"), &["policy", "show", "--dataset", &st.a])
        .unwrap();
    assert_eq!(shown["policy"]["version"], 3);
}

/// Run `sql` on the stopped server's database.
pub(crate) fn edit_db(blobs: &std::path::Path, sql: &str) {
    let db = rusqlite::Connection::open(blobs.parent().unwrap().join("state.db")).unwrap();
    let changed = db.execute(sql, []).unwrap();
    assert!(changed > 0, "{sql} changed nothing");
}

/// Start a server on `dir` and return why it refused.
pub(crate) fn start_error(dir: &tempfile::TempDir) -> String {
    let (_rt, started) = TestServer::try_start(dir);
    format!("{:#}", started.unwrap_err())
}

#[test]
fn rows_edited_on_disk_fail_closed() {
    let st = Study::new();
    let copier = push_module(&st.s, COPY_TABLE);
    st.grant_both_module(&copier, &[]);
    let run = st.submit(&copier, "{}").unwrap();
    st.expect_end(&run, "withheld", "identifier_column");
    // A dataset row edited on disk (its row count): the enclave does not start on it, and
    // says which row.
    let Study { s, a, .. } = st;
    let dir = s.stop();
    let blobs = dir.path().join("server/blobs");
    let db = rusqlite::Connection::open(dir.path().join("server/state.db")).unwrap();
    let dataset: String = db
        .query_row("SELECT body FROM datasets WHERE id = ?1", [&a], |r| {
            r.get(0)
        })
        .unwrap();
    drop(db);
    edit_db(
        &blobs,
        "UPDATE datasets SET body = replace(body, '\"rows\":6', '\"rows\":7')",
    );
    let err = start_error(&dir);
    assert!(
        err.contains(&format!("datasets/{a} is not the version")),
        "{err}"
    );
    let db = rusqlite::Connection::open(dir.path().join("server/state.db")).unwrap();
    db.execute(
        "UPDATE datasets SET body = ?1 WHERE id = ?2",
        [&dataset, &a],
    )
    .unwrap();
    drop(db);
    // The operator turns the withheld run into a released one: the enclave will not start
    // on it, and says which row.
    let db = rusqlite::Connection::open(dir.path().join("server/state.db")).unwrap();
    let saved: String = db
        .query_row("SELECT body FROM runs WHERE id = ?1", [&run], |r| r.get(0))
        .unwrap();
    drop(db);
    edit_db(
        &blobs,
        "UPDATE runs SET body = replace(body, '\"state\":\"withheld\"', '\"state\":\"released\"')",
    );
    let err = start_error(&dir);
    assert!(
        err.contains(&format!("runs/{run} is not the version")),
        "{err}"
    );
    let db = rusqlite::Connection::open(dir.path().join("server/state.db")).unwrap();
    db.execute("UPDATE runs SET body = ?1 WHERE id = ?2", [&saved, &run])
        .unwrap();
    drop(db);
    // A rewritten audit entry: the enclave would otherwise sign a head over it.
    edit_db(
        &blobs,
        "UPDATE audit SET body = replace(body, 'module.uploaded', 'module.uploadex')",
    );
    let err = start_error(&dir);
    assert!(err.contains("audit row"), "{err}");
}

/// The body of `table`'s row `id` (datasets and runs key by `id`).
fn row_body(dir: &tempfile::TempDir, table: &str, id: &str) -> String {
    let db = rusqlite::Connection::open(dir.path().join("server/state.db")).unwrap();
    db.query_row(
        &format!("SELECT body FROM {table} WHERE id = ?1"),
        [id],
        |r| r.get(0),
    )
    .unwrap()
}

/// A copy of the database file, to put back one table at a time.
fn with_db(dir: &tempfile::TempDir, f: impl FnOnce(&rusqlite::Connection)) {
    let db = rusqlite::Connection::open(dir.path().join("server/state.db")).unwrap();
    f(&db);
}

#[test]
fn one_table_rolled_back_deleted_or_truncated_is_caught_by_the_enclave() {
    let st = Study::new();
    // St Mary's reviews; Northfield's grant allows one run.
    st.grant(
        "st_marys",
        &st.a,
        &st.module,
        &["--identifier", "patient_id", "--min-group", "3", "--review"],
    )
    .unwrap();
    st.grant(
        "northfield",
        &st.b,
        &st.module,
        &["--identifier", "mrn", "--min-group", "3", "--max-runs", "1"],
    )
    .unwrap();
    let run = st.submit(&st.module, "{}").unwrap();
    assert_eq!(st.watch(&run).0, "held_for_review");
    let Study {
        s,
        a,
        b,
        module,
        researcher,
    } = st;
    let dir = s.stop();
    let held = row_body(&dir, "runs", &run);
    let s = TestServer::start_in(dir);
    s.cli(Some("st_marys"), &["review", "release", &run])
        .unwrap();
    // St Mary's revokes (policy v2).
    s.cli(Some("st_marys"), &["policy", "revoke", "--dataset", &a])
        .unwrap();
    let dir = s.stop();
    let released = row_body(&dir, "runs", &run);

    // 1. The run row put back to its (validly MAC'd) held version.
    with_db(&dir, |db| {
        db.execute("UPDATE runs SET body = ?1 WHERE id = ?2", [&held, &run])
            .unwrap();
    });
    let err = start_error(&dir);
    assert!(
        err.contains(&format!(
            "runs/{run} is not the version the audit log last wrote"
        )),
        "{err}"
    );
    with_db(&dir, |db| {
        db.execute("UPDATE runs SET body = ?1 WHERE id = ?2", [&released, &run])
            .unwrap();
    });

    // 2. The revocation (the newest policy version) deleted: the grant would come back.
    let (revocation, mac): (String, String) = {
        let db = rusqlite::Connection::open(dir.path().join("server/state.db")).unwrap();
        db.query_row(
            "SELECT body, mac FROM policies WHERE dataset = ?1 AND version = 2",
            [&a],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    };
    edit_db(
        &dir.path().join("server/blobs"),
        &format!("DELETE FROM policies WHERE dataset = '{a}' AND version = 2"),
    );
    let err = start_error(&dir);
    assert!(
        err.contains(&format!("policies/{a} is not the version")),
        "{err}"
    );
    with_db(&dir, |db| {
        db.execute(
            "INSERT INTO policies (dataset, version, body, mac) VALUES (?1, 2, ?2, ?3)",
            [&a, &revocation, &mac],
        )
        .unwrap();
    });

    // 3. The run row deleted.
    let snapshot = tempfile::tempdir().unwrap();
    copy_dir(&dir.path().join("server"), snapshot.path());
    edit_db(
        &dir.path().join("server/blobs"),
        &format!("DELETE FROM runs WHERE id = '{run}'"),
    );
    let err = start_error(&dir);
    assert!(
        err.contains(&format!("runs/{run} was deleted outside the enclave")),
        "{err}"
    );
    std::fs::remove_dir_all(dir.path().join("server")).unwrap();
    copy_dir(snapshot.path(), &dir.path().join("server"));

    // 4. The audit log truncated (its last entry, the revocation, gone).
    edit_db(
        &dir.path().join("server/blobs"),
        "DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit)",
    );
    let err = start_error(&dir);
    assert!(err.contains("outside the enclave"), "{err}");
    std::fs::remove_dir_all(dir.path().join("server")).unwrap();
    copy_dir(snapshot.path(), &dir.path().join("server"));

    // 5. There are no grant counters on disk to delete: the enclave counts runs in memory
    //    from the verified run rows, so after a restart Northfield's one-run grant stays
    //    used up.
    let s = TestServer::start_in(dir);
    let st = Study {
        s,
        a,
        b,
        module,
        researcher,
    };
    st.grant("st_marys", &st.a, &st.module, &["--min-group", "3"])
        .unwrap();
    let err = format!("{:#}", st.submit(&st.module, "{}").unwrap_err());
    assert!(err.contains("run_limit_reached"), "{err}");
}

#[test]
fn simultaneous_submissions_take_a_grants_last_run_once() {
    let st = Study::new();
    st.grant_both(&["--min-group", "3", "--max-runs", "1"]);
    let outcomes: Vec<anyhow::Result<String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| st.submit(&st.module, "{}")))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let admitted: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    assert_eq!(
        admitted.len(),
        1,
        "exactly one run takes the last run of the grant"
    );
    for refused in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        assert!(
            format!("{refused:#}").contains("run_limit_reached"),
            "{refused:#}"
        );
    }
    // And the admitted run is not then refused at start by counting the others.
    assert_eq!(st.watch(admitted[0]).0, "released");
}

/// The operator restores a withheld run's row to the copy it saved while the run was held
/// (MAC'd by the enclave, so it reads as genuine), then a reviewer releases it. Before, the
/// embedded store wrote over any row and the run was released after its withhold; now a run
/// is written only over the version the audit log last wrote, as in PostgreSQL.
#[test]
fn a_run_rolled_back_on_disk_is_not_written_over() {
    let st = Study::new();
    st.grant("st_marys", &st.a, &st.module, &["--min-group", "3"])
        .unwrap();
    st.grant(
        "northfield",
        &st.b,
        &st.module,
        &["--min-group", "3", "--review"],
    )
    .unwrap();
    let run = st.submit(&st.module, "{}").unwrap();
    assert_eq!(st.watch(&run).0, "held_for_review");
    let db = rusqlite::Connection::open(st.s.path("server/state.db")).unwrap();
    let (body, mac): (String, String) = db
        .query_row("SELECT body, mac FROM runs WHERE id = ?1", [&run], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    st.s.cli(
        Some("northfield"),
        &["review", "withhold", &run, "--reason", "small cells"],
    )
    .unwrap();
    assert_eq!(st.status(&run)["state"], "withheld");
    db.execute(
        "UPDATE runs SET body = ?1, mac = ?2 WHERE id = ?3",
        [&body, &mac, &run],
    )
    .unwrap();
    let e = err_text(st.s.cli(Some("northfield"), &["review", "release", &run]));
    assert!(
        e.contains("tampered") || e.contains("not the version"),
        "{e}"
    );
    assert!(st.fetch(&run).is_err(), "nothing was released");
}
