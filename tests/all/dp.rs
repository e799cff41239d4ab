//! Differential privacy through cleanroomd, tried as the adversaries would: a researcher who
//! leaves ε out, asks for more than a run may spend, reads the rows of a private table, keeps
//! asking after the budget is spent, or counts "the whole table" under sample and aggregate;
//! an operator who restarts the server hoping the ledger forgets.

use cleanroom_tests::*;
use serde_json::{Value, json};

use crate::server::{Study, err_text, push_module, read, signed_get};

/// `people` patients, every fifth with a second row: patient_id, age, sex.
fn cohort(people: usize) -> String {
    let mut csv = String::from("patient_id,age,sex\n");
    for p in 0..people {
        let (age, sex) = (20 + p % 70, if p % 2 == 0 { "F" } else { "M" });
        let rows = if p % 5 == 0 { 2 } else { 1 };
        for _ in 0..rows {
            csv.push_str(&format!("PAT-{p:05},{age},{sex}\n"));
        }
    }
    csv
}

/// St Mary's grants `module` to any researcher and then requires DP with `terms`.
fn require_dp(st: &Study, module: &str, terms: Value) {
    require_dp_on(st, "st_marys", &st.a, module, terms)
}

/// `owner` grants `module` on `dataset` (patient_id an identifier) to any researcher and then
/// requires DP with `terms`.
fn require_dp_on(st: &Study, owner: &str, dataset: &str, module: &str, terms: Value) {
    st.grant(owner, dataset, module, &["--identifier", "patient_id"])
        .unwrap();
    let shown =
        st.s.cli(Some(owner), &["policy", "show", "--dataset", dataset])
            .unwrap();
    let mut policy = shown["policy"].clone();
    policy["version"] = json!(policy["version"].as_u64().unwrap() + 1);
    policy["dp"] = terms;
    let file = st.s.path("dp-policy.json");
    std::fs::write(&file, policy.to_string()).unwrap();
    st.s.cli(
        Some(owner),
        &["policy", "sign", "--from-file", file.to_str().unwrap()],
    )
    .unwrap();
}

/// Submit `module` on St Mary's table alone, as `key`, with extra flags.
fn submit(
    st: &Study,
    key: &str,
    module: &str,
    params: &str,
    extra: &[&str],
) -> anyhow::Result<String> {
    let input = format!("st_marys={}", st.a);
    let mut args = vec![
        "run", "submit", "--module", module, "--input", &input, "--params", params,
    ];
    args.extend(extra);
    Ok(st.s.cli(Some(key), &args)?["run"]
        .as_str()
        .unwrap()
        .to_string())
}

fn budget(st: &Study, key: &str) -> Value {
    signed_get(&st.s, key, &format!("/v1/datasets/{}/budget", st.a))
}

fn wait(st: &Study, key: &str, run: &str) -> Value {
    let _ = st.s.cli(Some(key), &["run", "watch", run]);
    signed_get(&st.s, key, &format!("/v1/runs/{run}"))
}

#[test]
fn dp_runs_spend_a_ledger_that_refuses_before_running() {
    let st = Study::with_data(&cohort(2000), SITE_B_CSV);
    let stats = push_module(&st.s, AGGREGATE_STATS);
    let peek = push_module(&st.s, DP_PEEK);
    require_dp(
        &st,
        &stats,
        json!({
            "unit_column": "patient_id", "epsilon": 1.0, "max_epsilon_per_run": 0.5,
            "max_epsilon_per_researcher": 0.9,
            "columns": {"sex": {"categories": ["F", "M"]}, "age": {"numeric": {"lower": 0.0, "upper": 110.0}}}
        }),
    );
    st.grant("st_marys", &st.a, &peek, &["--identifier", "patient_id"])
        .unwrap();
    let params =
        json!({"table": "st_marys", "group": "sex", "value": "age", "epsilon": 0.5}).to_string();

    // Leaving ε out, or asking beyond the per-run limit, is refused at submission.
    let e = err_text(submit(&st, "researcher", &stats, &params, &[]));
    assert!(e.contains("dp_required"), "{e}");
    let e = err_text(submit(
        &st,
        "researcher",
        &stats,
        &params,
        &["--epsilon", "0.6"],
    ));
    assert!(e.contains("dp_run_limit"), "{e}");

    // Reading the rows is impossible; the attempt still spends what the run asked for.
    let run = submit(&st, "researcher", &peek, "", &["--epsilon", "0.1"]).unwrap();
    let status = wait(&st, "researcher", &run);
    assert_eq!(status["state"], "failed", "{status}");
    assert!(!status.to_string().contains("PAT-"), "{status}");

    // A DP aggregate is released without review: noisy counts of people, not rows.
    let run = submit(&st, "researcher", &stats, &params, &["--epsilon", "0.5"]).unwrap();
    let status = wait(&st, "researcher", &run);
    assert_eq!(status["state"], "released", "{status}");
    let out = st.fetch(&run).unwrap();
    let table = read(&out.join("by_group.csv"));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "sex,count,mean,q50", "{table}");
    for (line, sex) in lines[1..].iter().zip(["F", "M"]) {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells[0], sex);
        let count: i64 = cells[1].parse().unwrap();
        assert!(
            (count - 1000).abs() < 60,
            "{sex}: {count} people (2,400 rows)"
        );
    }
    assert!(
        !out.join("elapsed_ns.json").exists(),
        "unchecked outputs do not leave"
    );
    let codes = status["outputs"].to_string();
    assert!(codes.contains("dp_noised"), "{codes}");

    let b = budget(&st, "researcher");
    assert_eq!(b["spent"], 0.6, "{b}");
    assert_eq!(b["remaining"], 0.4, "{b}");
    assert_eq!(b["yours"]["remaining"], 0.3, "{b}");
    assert!(budget(&st, "st_marys").get("yours").is_none());

    // Beyond the researcher's share: refused before it runs, nothing charged.
    let e = err_text(submit(
        &st,
        "researcher",
        &stats,
        &params,
        &["--epsilon", "0.4"],
    ));
    assert!(e.contains("dp_budget_exhausted"), "{e}");
    assert_eq!(budget(&st, "researcher")["spent"], 0.6);

    // Another researcher spends the rest of the dataset's budget; then it is exhausted.
    let rest =
        json!({"table": "st_marys", "group": "sex", "value": "age", "epsilon": 0.4}).to_string();
    let run = submit(&st, "stranger", &stats, &rest, &["--epsilon", "0.4"]).unwrap();
    assert_eq!(wait(&st, "stranger", &run)["state"], "released");
    let e = err_text(submit(
        &st,
        "stranger",
        &stats,
        &params,
        &["--epsilon", "0.000001"],
    ));
    assert!(e.contains("dp_budget_exhausted"), "{e}");

    // The ledger is the runs' (MAC'd, logged) rows: a restart does not forget it.
    let st = st.restart(|_| {});
    assert_eq!(budget(&st, "st_marys")["remaining"], 0.0);
    let e = err_text(submit(
        &st,
        "researcher",
        &stats,
        &params,
        &["--epsilon", "0.1"],
    ));
    assert!(e.contains("dp_budget_exhausted"), "{e}");
}

/// Sample and aggregate: the module sees one block of people per instance; what leaves is
/// the clamped, averaged, noised vector. A module counting "the whole table" gets a block's
/// count, about a tenth of it.
#[test]
fn sample_and_aggregate_releases_one_noisy_vector() {
    let st = Study::with_data(&cohort(2000), SITE_B_CSV);
    let module = push_module(&st.s, BLOCK_ESTIMATE);
    require_dp(
        &st,
        &module,
        json!({"unit_column": "patient_id", "epsilon": 1000.0, "max_epsilon_per_run": 1000.0}),
    );
    let params = json!({"table": "st_marys", "column": "age"}).to_string();
    let with_blocks = |spec: &str| {
        let flags = ["--epsilon", "100", "--sample-aggregate", spec];
        submit(&st, "researcher", &module, &params, &flags)
    };
    let e = err_text(with_blocks("1:estimate:0..3000,0..110"));
    assert!(e.contains("blocks must be 2"), "{e}");
    let run = with_blocks("10:estimate:0..3000,0..110").unwrap();
    let status = wait(&st, "researcher", &run);
    assert_eq!(status["state"], "released", "{status}");
    let out = st.fetch(&run).unwrap();
    let table = read(&out.join("estimate.csv"));
    let values: Vec<f64> = table
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(
        (150.0..350.0).contains(&values[0]),
        "a block holds about 240 of the 2,400 rows, not all: {values:?}"
    );
    assert!((values[1] - 54.5).abs() < 5.0, "the mean age: {values:?}");
}

/// A preview is computed once, charged once, served to anyone without spending again, and its
/// synthetic table has the dataset's schema and runs under `run-local`; nobody but the owner
/// can publish one, and never beyond the budget.
#[test]
fn previews_spend_once_and_their_synthetic_rows_run_locally() {
    let st = Study::with_data(&cohort(2000), SITE_B_CSV);
    let module = push_module(&st.s, AGGREGATE_STATS);
    // This owner uses the command line instead of writing the DP terms as JSON.
    st.grant("st_marys", &st.a, &module, &["--identifier", "patient_id"])
        .unwrap();
    let dp = [
        "policy",
        "dp",
        "--dataset",
        &st.a,
        "--unit",
        "patient_id",
        "--epsilon",
        "2",
        "--per-run",
        "1",
        "--categories",
        "sex=F,M",
        "--bounds",
        "age=0..100",
    ];
    st.s.cli(Some("st_marys"), &dp).unwrap();
    let publish = |key: &str, epsilon: &str| {
        st.s.cli(
            Some(key),
            &[
                "dataset",
                "publish-preview",
                &st.a,
                "--epsilon",
                epsilon,
                "--rows",
                "500",
            ],
        )
    };
    let e = err_text(publish("researcher", "0.5"));
    assert!(e.contains("owner"), "{e}");
    let e = err_text(publish("st_marys", "2.5"));
    assert!(e.contains("dp_budget_exhausted"), "{e}");
    publish("st_marys", "0.5").unwrap();
    assert_eq!(budget(&st, "st_marys")["spent"], 0.5);

    let dir = st.s.path("preview");
    let dir_s = dir.display().to_string();
    for key in ["researcher", "stranger", "researcher"] {
        st.s.cli(Some(key), &["dataset", "preview", &st.a, "--out", &dir_s])
            .unwrap();
    }
    assert_eq!(
        budget(&st, "st_marys")["spent"],
        0.5,
        "fetching spends nothing"
    );
    let preview: Value = serde_json::from_str(&read(&dir.join("preview.json"))).unwrap();
    let people = preview["people"].as_u64().unwrap();
    assert!(
        (1800..2200).contains(&people),
        "{people} people (2,400 rows)"
    );
    assert!(
        !preview.to_string().contains("PAT-"),
        "no identifier leaves"
    );
    let sex = &preview["columns"][2]["summary"]["categories"];
    let f = sex[0][1].as_u64().unwrap();
    assert!((850..1150).contains(&f), "{sex}");
    let synthetic = read(&dir.join("synthetic.csv"));
    assert_eq!(synthetic.lines().next().unwrap(), "patient_id,age,sex");
    assert_eq!(synthetic.lines().count(), 501);

    // A researcher develops against the synthetic table exactly as against the real one.
    let out = st.s.path("local");
    let table = format!("st_marys={}", dir.join("synthetic.arrow").display());
    let run_local = |params: &str, extra: &[&str]| {
        let mut argv = vec!["cleanroom", "run-local", AGGREGATE_STATS, "--table", &table];
        argv.extend(["--params", params, "--out", out.to_str().unwrap()]);
        argv.extend(extra);
        cleanroom_cli::run(argv)
    };
    run_local(
        r#"{"table": "st_marys", "group": "sex", "value": "age"}"#,
        &[],
    )
    .unwrap();
    assert!(read(&out.join("by_group.csv")).starts_with("sex,count,mean,q50"));
    // ... and under the owner's policy, as the enclave would run it: rows only through the
    // host's aggregates, noised, within the ε given.
    let shown =
        st.s.cli(Some("st_marys"), &["policy", "show", "--dataset", &st.a])
            .unwrap();
    let policy = st.s.path("policy.json");
    std::fs::write(&policy, shown.to_string()).unwrap();
    let local = |params: &str| {
        run_local(
            params,
            &["--policy", policy.to_str().unwrap(), "--epsilon", "0.5"],
        )
    };
    local(r#"{"table": "st_marys", "epsilon": 0.5}"#).unwrap();
    let decisions = read(&out.join("policy.json"));
    assert!(decisions.contains("dp_noised"), "{decisions}");
    let e = err_text(local(r#"{"table": "st_marys", "epsilon": 0.6}"#));
    assert!(e.contains("left"), "{e}");

    // The ledger keeps the preview's charge across a restart, and the preview stays cached.
    let st = st.restart(|_| {});
    assert_eq!(budget(&st, "st_marys")["spent"], 0.5);
    st.s.cli(
        Some("researcher"),
        &["dataset", "preview", &st.a, "--out", &dir_s],
    )
    .unwrap();
}

/// The review's membership attack, and every other observable of a DP run: the same DP count
/// on two tables that differ by one patient, with the aggregate named after that patient.
/// Before the fix the identifier scan refused the output exactly when the patient was in the
/// table (`identifier_value`), at a thousandth of ε a question. Now the state, reason,
/// per-output codes and dispositions, which outputs exist and the time the outcome appears
/// are the same for both; only the noised numbers differ.
#[test]
fn a_dp_run_looks_the_same_whether_or_not_a_person_is_in_the_table() {
    let with = cohort(400);
    let without: String = with
        .lines()
        .filter(|l| !l.starts_with("PAT-00007,"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(with.contains("PAT-00007,") && !without.contains("PAT-00007,"));
    let st = Study::with_data(&with, &without);
    let stats = push_module(&st.s, AGGREGATE_STATS);
    let terms = json!({
        "unit_column": "patient_id", "epsilon": 1.0, "max_epsilon_per_run": 0.5,
        "columns": {"sex": {"categories": ["F", "M"]}, "age": {"numeric": {"lower": 0.0, "upper": 110.0}}}
    });
    require_dp_on(&st, "st_marys", &st.a, &stats, terms.clone());
    require_dp_on(&st, "northfield", &st.b, &stats, terms);
    let params = json!({
        "table": "t", "group": "sex", "value": "age", "epsilon": 0.001, "name": "PAT-00007"
    })
    .to_string();
    let seen: Vec<(Value, Vec<String>)> = [&st.a, &st.b]
        .into_iter()
        .map(|dataset| {
            let input = format!("t={dataset}");
            let run =
                st.s.cli(
                    Some("researcher"),
                    &[
                        "run",
                        "submit",
                        "--module",
                        &stats,
                        "--input",
                        &input,
                        "--params",
                        &params,
                        "--epsilon",
                        "0.001",
                        "--dp-duration",
                        "3",
                    ],
                )
                .unwrap()["run"]
                    .as_str()
                    .unwrap()
                    .to_string();
            let status = wait(&st, "researcher", &run);
            // The outcome appears on the schedule, never before it (seconds resolution).
            let took = status["updated"].as_u64().unwrap() - status["created"].as_u64().unwrap();
            assert!(
                took >= 2,
                "a DP run ends on its 3 s schedule, not after {took} s: {status}"
            );
            let mut files: Vec<String> = match st.fetch(&run) {
                Ok(dir) => std::fs::read_dir(dir)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect(),
                Err(e) => vec![format!("no result: {e}")],
            };
            files.sort();
            let observed = json!({
                "state": status["state"],
                "reason": status["reason"],
                "outputs": status["outputs"],
                "pending_reviews": status["pending_reviews"],
            });
            (observed, files)
        })
        .collect();
    assert_eq!(seen[0], seen[1], "present and absent look alike");
    assert_eq!(seen[0].0["state"], "released", "{:?}", seen[0]);
    assert!(
        seen[0].1.iter().any(|f| f.starts_with("PAT-00007")),
        "the aggregate is released under the name asked for: {:?}",
        seen[0].1
    );
}

/// A DP run's duration is its schedule's, bounded by the enclave's run limit: asking for
/// more is refused before anything runs or is charged.
#[test]
fn a_dp_schedule_beyond_the_run_limit_is_refused() {
    let st = Study::with_data(&cohort(100), SITE_B_CSV);
    let stats = push_module(&st.s, AGGREGATE_STATS);
    require_dp(
        &st,
        &stats,
        json!({"unit_column": "patient_id", "epsilon": 1.0, "max_epsilon_per_run": 0.5,
               "columns": {"sex": {"categories": ["F", "M"]}, "age": {"numeric": {"lower": 0.0, "upper": 110.0}}}}),
    );
    let params = json!({"table": "st_marys", "epsilon": 0.1}).to_string();
    let e = err_text(submit(
        &st,
        "researcher",
        &stats,
        &params,
        &["--epsilon", "0.1", "--dp-duration", "100000"],
    ));
    assert!(e.contains("dp_run_limit"), "{e}");
    assert_eq!(budget(&st, "researcher")["spent"], 0.0);
}

/// The operator deletes the preview row underneath a running server (or restores an older
/// copy of it). Before the fix the next preview started its total again from the stored row,
/// giving the deleted previews' ε back; the ledger in enclave memory now keeps it.
#[test]
fn deleting_a_preview_row_gives_no_budget_back() {
    let st = Study::with_data(&cohort(300), SITE_B_CSV);
    let module = push_module(&st.s, AGGREGATE_STATS);
    st.grant("st_marys", &st.a, &module, &["--identifier", "patient_id"])
        .unwrap();
    st.s.cli(
        Some("st_marys"),
        &[
            "policy",
            "dp",
            "--dataset",
            &st.a,
            "--unit",
            "patient_id",
            "--epsilon",
            "1",
            "--per-run",
            "1",
            "--categories",
            "sex=F,M",
            "--bounds",
            "age=0..100",
        ],
    )
    .unwrap();
    let publish = |epsilon: &str| {
        st.s.cli(
            Some("st_marys"),
            &[
                "dataset",
                "publish-preview",
                &st.a,
                "--epsilon",
                epsilon,
                "--rows",
                "10",
            ],
        )
    };
    publish("0.5").unwrap();
    let db = rusqlite::Connection::open(st.s.path("server/state.db")).unwrap();
    assert_eq!(db.execute("DELETE FROM previews", []).unwrap(), 1);
    publish("0.4").unwrap();
    assert_eq!(
        budget(&st, "st_marys")["spent"],
        0.9,
        "the deleted preview still counts"
    );
    let e = err_text(publish("0.2"));
    assert!(e.contains("dp_budget_exhausted"), "{e}");
}
