//! The examples end to end, on a small two-hospital fixture whose numbers
//! are worked out by hand in the comments.

use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use cleanroom_runtime::{Limits, RunError, RunOutput};
use cleanroom_tests::*;

use crate::{grants, runtime};

fn fixture_run(module_bytes: &[u8], params: &str) -> Result<RunOutput, RunError> {
    let module = runtime().load(module_bytes).expect("example loads");
    runtime().run(&module, fixture(), params, &Limits::default(), None)
}

/// The two hospitals' fixture tables.
pub(crate) fn fixture() -> cleanroom_runtime::Grants {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.csv"), dir.path().join("b.csv"));
    std::fs::write(&a, SITE_A_CSV).unwrap();
    std::fs::write(&b, SITE_B_CSV).unwrap();
    grants(&[
        ("st_marys", csv_table(Path::new(&a))),
        ("northfield", csv_table(Path::new(&b))),
    ])
}

type Row = (String, i64, f64, f64, f64);

pub(crate) fn rows(out: &RunOutput) -> Vec<Row> {
    let table = out
        .outputs
        .tables
        .iter()
        .find(|t| t.name == "cohort_stats")
        .expect("cohort_stats published");
    let mut rows = Vec::new();
    for batch in &table.batches {
        let group = batch.column_by_name("group").unwrap().as_string::<i32>();
        // Int64 from Rust and Python, Int32 (R's integers) from R.
        let patients = batch.column_by_name("patients").unwrap();
        let patients: Vec<i64> = match patients.data_type() {
            arrow_schema::DataType::Int32 => patients
                .as_primitive::<arrow_array::types::Int32Type>()
                .values()
                .iter()
                .map(|v| i64::from(*v))
                .collect(),
            _ => patients.as_primitive::<Int64Type>().values().to_vec(),
        };
        let f = |n| {
            batch
                .column_by_name(n)
                .unwrap()
                .as_primitive::<Float64Type>()
                .clone()
        };
        let (age, los, mort) = (f("mean_age"), f("mean_los_days"), f("mortality_pct"));
        for (i, patients) in patients.into_iter().enumerate() {
            rows.push((
                group.value(i).to_string(),
                patients,
                age.value(i),
                los.value(i),
                mort.value(i),
            ));
        }
    }
    rows
}

pub(crate) fn assert_by_diagnosis(out: &RunOutput) {
    // I21: A1 A2 A3 B1 -> ages 60 70 50 70, stays 4 8 2 6, one death.
    // J18: A4 A5 B2 B3 -> ages 40 80 60 50, stays 5 10 3 7, two deaths.
    // E11: one patient, below min_group 3: suppressed.
    assert_eq!(
        rows(out),
        vec![
            ("I21".into(), 4, 62.5, 5.0, 25.0),
            ("J18".into(), 4, 57.5, 6.25, 50.0)
        ]
    );
    let summary: serde_json::Value = serde_json::from_str(
        &out.outputs
            .json
            .iter()
            .find(|(n, _)| n == "summary")
            .expect("summary published")
            .1,
    )
    .unwrap();
    assert_eq!(summary["admissions"], 9);
    assert_eq!(summary["groups_suppressed"], 1);
    assert!(
        out.logs
            .iter()
            .any(|l| l.message == "st_marys: 6 admissions"),
        "{:?}",
        out.logs
    );
}

#[test]
fn rust_cohort_stats_by_diagnosis() {
    let out = fixture_run(&program(COHORT_STATS_RUST), r#"{"min_group": 3}"#).unwrap();
    assert_by_diagnosis(&out);
}

#[test]
fn rust_cohort_stats_by_sex_with_default_suppression() {
    // Default min_group is 10: with 4 women and 5 men, everything is suppressed.
    let out = fixture_run(&program(COHORT_STATS_RUST), r#"{"group_by": "sex"}"#).unwrap();
    assert!(rows(&out).is_empty());
    let out = fixture_run(
        &program(COHORT_STATS_RUST),
        r#"{"group_by": "sex", "min_group": 4}"#,
    )
    .unwrap();
    assert_eq!(
        rows(&out)
            .iter()
            .map(|r| (r.0.as_str(), r.1))
            .collect::<Vec<_>>(),
        [("F", 4), ("M", 5)]
    );
}

#[test]
fn rust_cohort_stats_rejects_unknown_params() {
    let err = fixture_run(&program(COHORT_STATS_RUST), r#"{"group": "sex"}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field `group`"), "{err}");
}

#[test]
fn python_cohort_stats_by_diagnosis() {
    let out = fixture_run(&python_program("cohort_stats"), r#"{"min_group": 3}"#).unwrap();
    assert_by_diagnosis(&out);
}

#[test]
fn python_and_rust_agree_by_age_band() {
    let params = r#"{"group_by": "age_band", "min_group": 1}"#;
    let rust = fixture_run(&program(COHORT_STATS_RUST), params).unwrap();
    let python = fixture_run(&python_program("cohort_stats"), params).unwrap();
    assert_eq!(rows(&rust), rows(&python));
    assert_eq!(rows(&rust).len(), 6, "ages 30..80 fall in six bands");
}
