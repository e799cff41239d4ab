//! Pipelines through cleanroomd: two hospitals' differently shaped patient tables are
//! harmonised, linked probabilistically (no shared identifier) and analysed; only aggregates
//! leave. Derived tables stay inside, lineage consent and revocation hold, and a re-run
//! repeats only what changed.

use std::path::{Path, PathBuf};
use std::process::Command;

use cleanroom_tests::*;
use serde_json::Value;

use crate::server::{TestServer, err_text, push, read};

/// Two hospitals' tables from one synthetic population (scripts/gen-linkage.py).
fn generate(dir: &Path, records: u32, seed: u32) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/gen-linkage.py");
    let status = Command::new("python3")
        .arg(script)
        .args(["--out", dir.to_str().unwrap()])
        .args([
            "--records",
            &records.to_string(),
            "--seed",
            &seed.to_string(),
        ])
        .status()
        .expect("python3 runs the generator");
    assert!(status.success());
}

/// The example pipeline, beside a copy of the linkage engine it names.
fn pipeline_file(s: &TestServer) -> PathBuf {
    let dir = s.path("pipeline");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(LINKAGE_ENGINE, dir.join("cleanroom_linkage.wasm")).unwrap();
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/linkage-pipeline/pipeline.toml");
    let file = dir.join("pipeline.toml");
    std::fs::copy(example, &file).unwrap();
    file
}

/// `cleanroom pipeline show FILE --json` (no server involved).
fn show(file: &Path, extra: &[&str]) -> anyhow::Result<Value> {
    let mut args = vec![
        "cleanroom",
        "pipeline",
        "show",
        file.to_str().unwrap(),
        "--json",
    ];
    args.extend(extra);
    cleanroom_cli::run_capture(args)
}

fn submit(s: &TestServer, file: &Path, a: &str, b: &str) -> anyhow::Result<String> {
    let engine = sql_engine().display().to_string();
    let (a, b) = (format!("st_marys={a}"), format!("northfield={b}"));
    let out = s.cli(
        Some("researcher"),
        &[
            "pipeline",
            "submit",
            file.to_str().unwrap(),
            "--engine",
            &engine,
            "--input",
            &a,
            "--input",
            &b,
        ],
    )?;
    Ok(out["run"].as_str().unwrap().to_string())
}

fn watch(s: &TestServer, run: &str) -> Value {
    let _ = s.cli(Some("researcher"), &["run", "watch", run]);
    crate::server::signed_get(s, "researcher", &format!("/v1/runs/{run}"))
}

fn fetch(s: &TestServer, run: &str) -> PathBuf {
    let out = s.path(&format!("results-{run}"));
    let trust = s.trust();
    let out_s = out.display().to_string();
    let mut args = vec!["result", "fetch", run, "--out", &out_s];
    args.extend(trust.iter().map(String::as_str));
    s.cli(Some("researcher"), &args).unwrap();
    out
}

fn grant(
    s: &TestServer,
    owner: &str,
    dataset: &str,
    module: &str,
    researcher: &str,
    identifiers: &[&str],
) {
    let mut args = vec![
        "policy",
        "grant",
        "--dataset",
        dataset,
        "--module",
        module,
        "--researcher",
        researcher,
        "--min-group",
        "5",
    ];
    for id in identifiers {
        args.extend(["--identifier", id]);
    }
    s.cli(Some(owner), &args).unwrap();
}

fn derived(s: &TestServer, key: &str) -> Vec<Value> {
    s.cli(Some(key), &["derived", "list"]).unwrap()["derived"]
        .as_array()
        .unwrap()
        .clone()
}

fn reused(status: &Value) -> Vec<bool> {
    status["receipt"]["receipt"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["reused"].as_bool().unwrap())
        .collect()
}

/// A server with both hospitals' tables (`records` each) uploaded; no grants yet.
struct Setup {
    s: TestServer,
    a: String,
    b: String,
    file: PathBuf,
    digest: String,
    researcher: String,
}

fn setup(records: u32) -> Setup {
    let s = TestServer::start();
    s.keygen("st_marys");
    s.keygen("northfield");
    s.keygen("stranger");
    let researcher = s.keygen("researcher");
    let data = s.path("data");
    generate(&data, records, 5);
    let a = push(
        &s,
        "st_marys",
        &read(&data.join("st_marys_patients.csv")),
        "a.csv",
    );
    let b = push(
        &s,
        "northfield",
        &read(&data.join("northfield_patients.csv")),
        "b.csv",
    );
    let file = pipeline_file(&s);
    let engine = sql_engine().display().to_string();
    let shown = show(&file, &["--engine", &engine]).unwrap();
    let digest = shown["pipeline"].as_str().unwrap().to_string();
    Setup {
        s,
        a,
        b,
        file,
        digest,
        researcher,
    }
}

/// Each owner approves the pipeline once, by digest, with its identifiers (names, birth
/// dates, postcodes and record numbers never leave, whatever a step renames them to).
fn grant_pipeline(st: &Setup) {
    let st_marys = [
        "patient_id",
        "given_name",
        "family_name",
        "birth_date",
        "postcode",
    ];
    grant(
        &st.s,
        "st_marys",
        &st.a,
        &st.digest,
        &st.researcher,
        &st_marys,
    );
    let northfield = ["mrn", "name", "dob", "post_code"];
    grant(
        &st.s,
        "northfield",
        &st.b,
        &st.digest,
        &st.researcher,
        &northfield,
    );
}

#[test]
fn harmonise_link_analyse_releases_only_aggregates_under_lineage_consent() {
    let st = setup(300);
    let Setup {
        s,
        a,
        b,
        file,
        digest,
        researcher,
    } = &st;
    let engine = sql_engine().display().to_string();

    // Without the owners' approval of this pipeline, nothing runs.
    let err = err_text(submit(s, file, a, b));
    assert!(
        err.contains("module_not_granted") || err.contains("no policy"),
        "{err}"
    );
    grant_pipeline(&st);
    let run = submit(s, file, a, b).unwrap();
    let status = watch(s, &run);
    assert_eq!(status["state"], "released", "{status}");

    // One receipt covers the chain: the pipeline, each step's module and params, the derived
    // tables kept.
    let receipt = &status["receipt"]["receipt"];
    assert_eq!(receipt["module"], digest.as_str());
    let steps = receipt["steps"].as_array().unwrap();
    let ids: Vec<&str> = steps.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "harmonise_st_marys",
            "harmonise_northfield",
            "link",
            "analyse"
        ]
    );
    let kept = &steps[2]["kept"];
    assert!(
        kept["links"].is_string() && kept["clusters"].is_string(),
        "{steps:?}"
    );
    assert_eq!(reused(&status), [false, false, false, false]);

    // Released: the aggregate cohort table (and the weight histogram, a count table). The
    // linkage statistics are free-form JSON (refused without review); the link and cluster
    // tables were never outputs at all.
    let out = fetch(s, &run);
    let result = read(&out.join("analyse.result.csv"));
    assert!(
        result.starts_with("diagnosis,treated_at,patients,mortality_pct\n"),
        "{result}"
    );
    assert!(
        result.contains("both hospitals"),
        "the linkage found shared patients: {result}"
    );
    let released: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !released
            .iter()
            .any(|n| n.contains("links") || n.contains("clusters")),
        "{released:?}"
    );
    for entry in std::fs::read_dir(&out).unwrap() {
        let text =
            String::from_utf8_lossy(&std::fs::read(entry.unwrap().path()).unwrap()).into_owned();
        assert!(
            !text.contains("SM2000") && !text.contains("NF7000"),
            "a record key left"
        );
    }
    // The patients released add up to the people seen (each person once, after linkage):
    // fewer than the 600 records, more than the 300 of one hospital.
    let patients: u64 = result
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().parse::<u64>().unwrap_or(0))
        .sum();
    assert!(
        (300..600).contains(&patients),
        "{patients} people in {result}"
    );

    // Every upstream owner sees the derived datasets and where they came from; others don't.
    let seen = derived(s, "st_marys");
    assert_eq!(
        seen.len(),
        3,
        "St Mary's sees what derives from its table: {seen:?}"
    );
    assert!(
        seen.iter()
            .all(|d| d["usable"] == true && d["provenance"]["pipeline"] == digest.as_str())
    );
    assert_eq!(derived(s, "northfield").len(), 3);
    assert!(derived(s, "stranger").is_empty());

    // The same chain again reuses every kept table and runs only the analysis.
    let again = watch(s, &submit(s, file, a, b).unwrap());
    assert_eq!(again["state"], "released", "{again}");
    assert_eq!(reused(&again), [true, true, true, false]);

    // Northfield uploads a new version of its table: St Mary's harmonisation is reused, the
    // rest runs again.
    generate(&s.path("data2"), 300, 6);
    let b2 = push(
        s,
        "northfield",
        &read(&s.path("data2").join("northfield_patients.csv")),
        "b2.csv",
    );
    grant(
        s,
        "northfield",
        &b2,
        digest,
        researcher,
        &["mrn", "name", "dob", "post_code"],
    );
    let newer = watch(s, &submit(s, file, a, &b2).unwrap());
    assert_eq!(newer["state"], "released", "{newer}");
    assert_eq!(reused(&newer), [true, false, false, false]);

    // A derived dataset used on its own needs every upstream owner's grant of that module.
    let clusters = kept["clusters"].as_str().unwrap().to_string();
    let sql_module = crate::server::push_module(s, &engine);
    let count = |input: &str| {
        s.cli(
            Some("researcher"),
            &[
                "run",
                "submit",
                "--module",
                &sql_module,
                "--sql",
                "SELECT COUNT(DISTINCT cluster) AS people FROM clusters",
                "--input",
                input,
            ],
        )
    };
    let input = format!("clusters={clusters}");
    let err = err_text(count(&input));
    assert!(err.contains("module_not_granted"), "{err}");
    grant(s, "st_marys", a, &sql_module, researcher, &["patient_id"]);
    let err = err_text(count(&input));
    assert!(
        err.contains("module_not_granted"),
        "one owner is not enough: {err}"
    );
    grant(s, "northfield", b, &sql_module, researcher, &["mrn"]);
    let run = count(&input).unwrap()["run"].as_str().unwrap().to_string();
    let status = watch(s, &run);
    assert_eq!(status["state"], "released", "{status}");
    let roots: Vec<&str> = status["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["via"].as_str().unwrap())
        .collect();
    assert_eq!(
        roots,
        [clusters.as_str(), clusters.as_str()],
        "read through the derived dataset"
    );

    // St Mary's revokes the pipeline: everything derived from its table becomes unusable,
    // even by a module it still grants.
    s.cli(
        Some("st_marys"),
        &["policy", "revoke", "--dataset", a, "--module", digest],
    )
    .unwrap();
    // Lineage is per table: Northfield's own harmonisations do not depend on St Mary's.
    let seen = derived(s, "northfield");
    for d in &seen {
        let roots = d["roots"].as_array().unwrap();
        let own = roots.iter().all(|r| r == b.as_str() || r == b2.as_str());
        assert_eq!(d["usable"], own, "{d}");
    }
    assert!(
        seen.iter().filter(|d| d["usable"] == false).count() >= 4,
        "{seen:?}"
    );
    let err = err_text(count(&input));
    assert!(err.contains("derived_revoked"), "{err}");
    let err = err_text(submit(s, file, a, b));
    assert!(err.contains("module_not_granted"), "{err}");
}

#[test]
fn malformed_pipelines_are_refused_before_anything_runs() {
    let s = TestServer::start();
    s.keygen("researcher");
    let dir = s.path("p");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("p.toml");
    // A step reading a table no earlier step keeps.
    std::fs::write(
        &file,
        "name = \"x\"\ninputs = [\"a\"]\n[[step]]\nid = \"one\"\nmodule = \"".to_string()
            + &"ab".repeat(32)
            + "\"\ninputs = { t = \"two.result\" }\n",
    )
    .unwrap();
    let err = err_text(show(&file, &[]));
    assert!(err.contains("no earlier step keeps"), "{err}");
    // An unknown field is refused, not ignored.
    std::fs::write(&file, "name = \"x\"\ninputs = []\nsteps = []\n").unwrap();
    let err = err_text(show(&file, &[]));
    assert!(err.contains("not a pipeline file"), "{err}");
    // The server checks too: a pipeline naming a module nobody uploaded is refused.
    let pipeline = cleanroom_proto::pipeline::Pipeline {
        name: "x".into(),
        inputs: vec!["a".into()],
        steps: vec![cleanroom_proto::pipeline::Step {
            id: "one".into(),
            module: "ab".repeat(32),
            params: String::new(),
            inputs: [("t".to_string(), "a".to_string())].into(),
            keep: vec![],
        }],
    };
    let resp = crate::server::signed_request_raw(
        &s,
        "researcher",
        "PUT",
        "/v1/pipelines",
        &serde_json::to_vec(&pipeline).unwrap(),
    );
    assert_eq!(resp.status(), 400);
}

#[test]
fn the_operator_cannot_swap_or_edit_derived_tables() {
    let st = setup(120);
    grant_pipeline(&st);
    let Setup { s, a, b, file, .. } = &st;
    let first = watch(s, &submit(s, file, a, b).unwrap());
    assert_eq!(first["state"], "released", "{first}");
    let released = read(&fetch(s, first["run"].as_str().unwrap()).join("analyse.result.csv"));

    // The operator flips a byte in every sealed derived table: none unseals, so nothing is
    // reused: every step runs again and the result is the same.
    let blobs = s.path("server/blobs/derived");
    let mut flipped = 0;
    for entry in std::fs::read_dir(&blobs).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        // What the operator sees of its size is the padded order of magnitude (the sealed
        // blob adds a 18-byte header and a 16-byte tag).
        let plain = bytes.len() - 34;
        assert!(
            plain.is_power_of_two() && plain >= 1024,
            "{}: {} bytes",
            path.display(),
            bytes.len()
        );
        let at = bytes.len() / 2;
        bytes[at] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        flipped += 1;
    }
    assert_eq!(flipped, 4);
    let again = watch(s, &submit(s, file, a, b).unwrap());
    assert_eq!(again["state"], "released", "{again}");
    assert_eq!(reused(&again), [false, false, false, false]);
    let run = again["run"].as_str().unwrap();
    assert_eq!(read(&fetch(s, run).join("analyse.result.csv")), released);

    // A derived row edited on disk (its provenance rewritten to another researcher): the
    // enclave does not start on it, and says which row.
    let Setup { s, .. } = st;
    let dir = s.stop();
    let db = rusqlite::Connection::open(dir.path().join("server/state.db")).unwrap();
    let changed = db
        .execute(
            "UPDATE derived SET body = replace(body, '\"step\":\"link\"', '\"step\":\"other\"')",
            [],
        )
        .unwrap();
    assert!(changed > 0);
    drop(db);
    let (_rt, started) = TestServer::try_start(&dir);
    let err = format!("{:#}", started.unwrap_err());
    assert!(
        err.contains("derived/") && err.contains("is not the version"),
        "{err}"
    );
}

#[test]
fn an_identifier_renamed_in_a_kept_table_never_leaves_even_when_reused() {
    // A researcher's approved pipeline keeps St Mary's patient ids under another name, then
    // publishes them from the kept table in a later step.
    let st = setup(60);
    let Setup {
        s, a, researcher, ..
    } = &st;
    let file = s.path("pipeline/leak.toml");
    std::fs::write(
        &file,
        r#"name = "rename and leak"
inputs = ["st_marys"]

[[step]]
id = "rename"
sql = "SELECT patient_id AS x FROM st_marys"
inputs = { st_marys = "st_marys" }
keep = ["result"]

[[step]]
id = "leak"
sql = "SELECT x FROM t ORDER BY x LIMIT 3"
inputs = { t = "rename.result" }
"#,
    )
    .unwrap();
    let engine = sql_engine().display().to_string();
    let digest = show(&file, &["--engine", &engine]).unwrap()["pipeline"]
        .as_str()
        .unwrap()
        .to_string();
    grant(s, "st_marys", a, &digest, researcher, &["patient_id"]);
    let leak = || {
        let input = format!("st_marys={a}");
        let out = s
            .cli(
                Some("researcher"),
                &[
                    "pipeline",
                    "submit",
                    file.to_str().unwrap(),
                    "--engine",
                    &engine,
                    "--input",
                    &input,
                ],
            )
            .unwrap();
        watch(s, out["run"].as_str().unwrap())
    };
    // The value check catches the renamed column: the ids were collected when step one read
    // them, and travel with the kept table when a later run reuses it instead of reading them.
    for expect_reused in [[false, false], [true, false]] {
        let status = leak();
        assert_eq!(status["state"], "withheld", "{status}");
        let table = status["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["kind"] == "table")
            .unwrap();
        assert_eq!(table["disposition"], "refuse", "{status}");
        assert!(
            table["codes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == "identifier_value"),
            "{status}"
        );
        assert_eq!(reused(&status), expect_reused);
    }
}
