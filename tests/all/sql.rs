//! SQL analyses: DataFusion inside the sandbox, with exact expected results,
//! clear errors, and owners approving the query text itself.

use cleanroom_tests::*;

use crate::server::TestServer;

fn run_sql(sql: &str) -> anyhow::Result<String> {
    let dir = tempfile::tempdir().unwrap();
    for (name, csv) in [
        ("st_marys", SITE_A_CSV),
        ("northfield", SITE_B_CSV),
        ("labs", LABS_CSV),
    ] {
        std::fs::write(dir.path().join(format!("{name}.csv")), csv).unwrap();
    }
    let out = dir.path().join("out");
    let engine = sql_engine();
    let mut args: Vec<String> = ["cleanroom", "run-local", "--sql", sql, "--engine"]
        .map(String::from)
        .to_vec();
    args.push(engine.display().to_string());
    for name in ["st_marys", "northfield", "labs"] {
        args.extend([
            "--table".into(),
            format!(
                "{name}={}",
                dir.path().join(format!("{name}.csv")).display()
            ),
        ]);
    }
    args.extend(["--out".into(), out.display().to_string()]);
    cleanroom_cli::run(args)?;
    Ok(std::fs::read_to_string(out.join("result.csv")).unwrap())
}

#[test]
fn group_by_with_aggregates() {
    let csv = run_sql(
        "SELECT diagnosis, COUNT(*) AS n, SUM(died) AS deaths, AVG(age) AS mean_age \
         FROM st_marys GROUP BY diagnosis ORDER BY diagnosis",
    )
    .unwrap();
    assert_eq!(
        csv,
        "diagnosis,n,deaths,mean_age\nE11,1,0,30.0\nI21,3,1,60.0\nJ18,2,1,60.0\n"
    );
}

#[test]
fn join_of_two_owners_tables_on_an_identifier() {
    let csv = run_sql(
        "SELECT s.diagnosis, COUNT(*) AS patients, AVG(l.value) AS mean_hba1c \
         FROM st_marys s JOIN labs l ON s.patient_id = l.patient_id \
         GROUP BY s.diagnosis ORDER BY s.diagnosis",
    )
    .unwrap();
    assert_eq!(csv, "diagnosis,patients,mean_hba1c\nI21,3,7.0\nJ18,2,6.0\n");
    assert!(!csv.contains("A1"), "the identifier stays inside");
}

#[test]
fn window_function() {
    let csv = run_sql(
        "SELECT patient_id, RANK() OVER (PARTITION BY diagnosis ORDER BY age DESC) AS age_rank \
         FROM st_marys ORDER BY patient_id",
    )
    .unwrap();
    assert_eq!(
        csv,
        "patient_id,age_rank\nA1,2\nA2,1\nA3,3\nA4,2\nA5,1\nA6,1\n"
    );
}

#[test]
fn common_table_expression() {
    let csv = run_sql(
        "WITH older AS (SELECT * FROM st_marys WHERE age >= 60), \
              pooled AS (SELECT age FROM older UNION ALL SELECT admit_year - birth_year AS age FROM northfield) \
         SELECT COUNT(*) AS n, MAX(age) AS oldest FROM pooled",
    )
    .unwrap();
    assert_eq!(csv, "n,oldest\n6,80\n");
}

#[test]
fn sql_errors_are_clear() {
    let err = |sql: &str| format!("{:#}", run_sql(sql).unwrap_err());
    let syntax = err("SELEC diagnosis FROM st_marys");
    assert!(
        syntax.contains("SQL error") && syntax.contains("SELEC"),
        "{syntax}"
    );
    let table = err("SELECT * FROM other_hospital");
    assert!(
        table.contains("other_hospital") && table.contains("not found"),
        "{table}"
    );
    let column = err("SELECT weight FROM st_marys");
    assert!(column.contains("weight"), "{column}");
}

#[test]
fn owners_approve_the_query_and_identifiers_never_leave() {
    let s = TestServer::start();
    s.keygen("st_marys");
    s.keygen("lab");
    s.keygen("researcher");
    let trust = s.trust();
    let push = |key: &str, csv: &str, file: &str| {
        std::fs::write(s.path(file), csv).unwrap();
        let path = s.path(file).display().to_string();
        let mut args = vec!["dataset", "push", &path];
        args.extend(trust.iter().map(String::as_str));
        s.cli(Some(key), &args).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let a = push("st_marys", SITE_A_CSV, "a.csv");
    let labs = push("lab", LABS_CSV, "labs.csv");
    let engine = sql_engine().display().to_string();
    let module = s
        .cli(Some("researcher"), &["module", "push", &engine])
        .unwrap()["module"]
        .as_str()
        .unwrap()
        .to_string();
    let aggregate = "SELECT s.diagnosis, COUNT(*) AS patients, AVG(l.value) AS mean_hba1c FROM st_marys s \
                     JOIN labs l ON s.patient_id = l.patient_id GROUP BY s.diagnosis ORDER BY s.diagnosis";
    let leaky =
        "SELECT s.patient_id, l.value FROM st_marys s JOIN labs l ON s.patient_id = l.patient_id";
    // Both owners approve the engine with exactly query `q` (a grant per
    // approved query: approvals of other queries stay).
    let approve = |q: &str, k: &str| {
        for (owner, dataset) in [("st_marys", &a), ("lab", &labs)] {
            let args = [
                "policy",
                "grant",
                "--dataset",
                dataset,
                "--module",
                &module,
                "--sql",
                q,
                "--any-researcher",
            ];
            let rules = [
                "--identifier",
                "patient_id",
                "--min-group",
                k,
                "--unlimited",
            ];
            s.cli(Some(owner), &[&args[..], &rules[..]].concat())
                .unwrap();
        }
    };
    approve(leaky, "2");
    // Only `leaky` is approved now.
    let submit = |q: &str| {
        let st = format!("st_marys={a}");
        let lb = format!("labs={labs}");
        s.cli(
            Some("researcher"),
            &[
                "run", "submit", "--module", &module, "--input", &st, "--input", &lb, "--sql", q,
                "--wait",
            ],
        )
    };
    let err = format!("{:#}", submit(aggregate).unwrap_err());
    assert!(
        err.contains("params"),
        "an unapproved query is refused: {err}"
    );
    let err = format!("{:#}", submit(leaky).unwrap_err());
    assert!(
        err.contains("withheld"),
        "an identifier in the output is never released: {err}"
    );

    approve(aggregate, "3");
    let done = submit(aggregate).unwrap();
    assert_eq!(done["state"], "released");
    let run = done["run"].as_str().unwrap();
    let out = s.path("sql-results");
    let out_s = out.display().to_string();
    let mut args = vec!["result", "fetch", run, "--out", &out_s];
    args.extend(trust.iter().map(String::as_str));
    s.cli(Some("researcher"), &args).unwrap();
    // J18 has 2 linked patients, under the owners' k = 3: suppressed by the enclave.
    assert_eq!(
        std::fs::read_to_string(out.join("result.csv")).unwrap(),
        "diagnosis,patients,mean_hba1c\nI21,3,7.0\n"
    );
}
