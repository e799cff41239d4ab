//! The host's aggregation: contributors are people, not rows, and the guest cannot say who
//! contributed.

#![allow(clippy::unwrap_used)] // tests and their helpers fail loudly by design

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use cleanroom_policy::aggregate::{
    AggregateError, Computed, Mode, Spec, Statistic, compute, computed_rows, rows_of,
};
use cleanroom_proto::Code;
use cleanroom_proto::dp::{DpRequirement, Epsilon};
use cleanroom_proto::policy::OutputRules;

/// (patient, group, value) rows as one batch.
fn table(rows: &[(&str, &str, f64)]) -> RecordBatch {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
    ];
    RecordBatch::try_from_iter(["patient_id", "site", "sbp"].into_iter().zip(cols)).unwrap()
}

fn batches(b: &RecordBatch) -> impl Iterator<Item = Result<RecordBatch, String>> {
    std::iter::once(Ok(b.clone()))
}

fn spec(stats: Vec<Statistic>) -> Spec {
    Spec {
        group_by: vec!["site".into()],
        value: Some("sbp".into()),
        statistics: stats,
        ..Spec::default()
    }
}

fn rules(k: u64) -> OutputRules {
    OutputRules {
        min_group_count: k,
        ..OutputRules::default()
    }
}

fn dp_terms() -> DpRequirement {
    serde_json::from_value(serde_json::json!({
        "unit_column": "patient_id", "epsilon": 10000.0, "max_epsilon_per_run": 10000.0,
        "columns": {"site": {"categories": ["x", "y", "z"]}, "sbp": {"numeric": {"lower": 0.0, "upper": 200.0}}}
    }))
    .unwrap()
}

/// A DP aggregate of `t` under [`dp_terms`], spending `micros` millionths of ε.
fn private(
    t: &RecordBatch,
    s: &Spec,
    micros: u64,
) -> Result<cleanroom_policy::aggregate::Aggregate, AggregateError> {
    let r = rows_of(batches(t), s, Some("patient_id")).unwrap();
    let dp = dp_terms();
    compute(
        r,
        s,
        Mode::Private {
            dp: &dp,
            epsilon: Epsilon::from_micros(micros),
        },
    )
}

/// Almost no noise: ε = 10,000, so counts come out exact.
const EXACT: u64 = 10_000_000_000;

fn counts(batch: &RecordBatch, col: &str) -> Vec<Option<i64>> {
    batch
        .column_by_name(col)
        .unwrap()
        .as_primitive::<Int64Type>()
        .iter()
        .collect()
}

/// A patient with ten rows is one contributor: group x (two people, eleven rows) is
/// suppressed under k = 3; group y (three people) is released.
#[test]
fn small_groups_count_people_not_rows() {
    let mut rows = vec![("p1", "x", 120.0); 10];
    rows.push(("p2", "x", 130.0));
    rows.extend([("p3", "y", 110.0), ("p4", "y", 115.0), ("p5", "y", 121.0)]);
    let t = table(&rows);
    let s = spec(vec![Statistic::Count, Statistic::Mean]);
    let r = rows_of(batches(&t), &s, Some("patient_id")).unwrap();
    let agg = compute(r, &s, Mode::Disclosure(&rules(3))).unwrap();
    assert_eq!(counts(&agg.batch, "count"), vec![None, Some(3)]);
    assert!(agg.codes.contains(&Code::SmallGroupsSuppressed));
    let means: Vec<Option<f64>> = agg
        .batch
        .column_by_name("mean")
        .unwrap()
        .as_primitive::<Float64Type>()
        .iter()
        .collect();
    assert_eq!(means[0], None, "a suppressed cell hides every statistic");
    assert!((means[1].unwrap() - 115.333).abs() < 0.01);
}

/// One contributor making up nearly all of a sum is disclosive even in a big group.
#[test]
fn dominant_contributors_suppress_a_cell() {
    let mut rows: Vec<(String, &str, f64)> = (0..6).map(|i| (format!("p{i}"), "x", 1.0)).collect();
    rows.push(("whale".into(), "x", 1000.0));
    rows.extend((0..6).map(|i| (format!("q{i}"), "y", 10.0 + i as f64)));
    let rows: Vec<(&str, &str, f64)> = rows.iter().map(|(a, b, c)| (a.as_str(), *b, *c)).collect();
    let t = table(&rows);
    let s = spec(vec![Statistic::Count, Statistic::Sum]);
    let r = rows_of(batches(&t), &s, Some("patient_id")).unwrap();
    let agg = compute(r, &s, Mode::Disclosure(&rules(3))).unwrap();
    assert!(agg.codes.contains(&Code::DominantContributors));
    assert_eq!(counts(&agg.batch, "count"), vec![None, Some(6)]);
}

/// The guest names rows, the host names contributors: a guest that attributes 50 computed
/// entries to one table row still has one contributor.
#[test]
fn computed_rows_cannot_forge_contributors() {
    let t = table(&[("p1", "x", 1.0), ("p2", "x", 2.0), ("p3", "x", 3.0)]);
    let computed = Computed {
        key_names: vec!["band".into()],
        rows: vec![0; 50],
        keys: vec![vec!["high".into()]; 50],
        values: vec![],
    };
    let s = Spec {
        statistics: vec![Statistic::Count],
        ..Spec::default()
    };
    let r = computed_rows(batches(&t), computed, Some("patient_id")).unwrap();
    let agg = compute(r, &s, Mode::Disclosure(&rules(3))).unwrap();
    assert_eq!(counts(&agg.batch, "count"), vec![None]);
    let beyond = Computed {
        key_names: vec!["band".into()],
        rows: vec![3],
        keys: vec![vec!["high".into()]],
        values: vec![],
    };
    assert!(matches!(
        computed_rows(batches(&t), beyond, Some("patient_id")),
        Err(AggregateError::Invalid(_))
    ));
}

/// Under DP a person with 1,000 rows moves a count by at most `max_rows_per_unit` (1): with
/// almost no noise (ε = 10,000) the count is 1, not 1,000. Every declared group is present,
/// including the empty one, and undeclared values form no group.
#[test]
fn dp_bounds_each_persons_contribution() {
    let mut rows = vec![("heavy", "x", 150.0); 1000];
    rows.push(("other", "y", 500.0));
    rows.push(("stranger", "w", 100.0));
    let t = table(&rows);
    let s = spec(vec![Statistic::Count, Statistic::Sum]);
    let agg = private(&t, &s, EXACT).unwrap();
    assert_eq!(counts(&agg.batch, "count"), vec![Some(1), Some(1), Some(0)]);
    let sums: Vec<f64> = agg
        .batch
        .column_by_name("sum")
        .unwrap()
        .as_primitive::<Float64Type>()
        .values()
        .to_vec();
    assert!(
        (sums[0] - 150.0).abs() < 1.0,
        "one row of the heavy patient: {}",
        sums[0]
    );
    assert!(
        (sums[1] - 200.0).abs() < 1.0,
        "clamped to the declared bound: {}",
        sums[1]
    );
    assert_eq!(agg.codes, vec![Code::DpNoised]);
    assert!(agg.spent <= Epsilon::from_micros(10_000_000_000));
}

/// Grouping by a column without a declared domain is refused under DP: which groups exist
/// would reveal who is in the table.
#[test]
fn dp_refuses_groups_without_a_public_domain() {
    let t = table(&[("p1", "x", 1.0)]);
    let s = Spec {
        group_by: vec!["patient_id".into()],
        statistics: vec![Statistic::Count],
        ..Spec::default()
    };
    let err = private(&t, &s, 100_000).unwrap_err();
    assert!(matches!(err, AggregateError::NotAllowed(_)), "{err:?}");
}

/// Grouping by a numeric column with declared bounds is a DP histogram: ten bins, every one
/// present, values outside the bounds clamped into the end bins.
#[test]
fn dp_histogram_over_declared_bounds() {
    let rows: Vec<(String, &str, f64)> = (0..300)
        .map(|i| (format!("p{i}"), "x", (i % 300) as f64 * 0.7))
        .collect();
    let rows: Vec<(&str, &str, f64)> = rows.iter().map(|(a, b, c)| (a.as_str(), *b, *c)).collect();
    let t = table(&rows);
    let s = Spec {
        group_by: vec!["sbp".into()],
        statistics: vec![Statistic::Count],
        ..Spec::default()
    };
    let agg = private(&t, &s, EXACT).unwrap();
    assert_eq!(agg.batch.num_rows(), 10);
    let labels = agg.batch.column(0).as_string::<i32>();
    assert_eq!(labels.value(0), "[0, 20)");
    assert_eq!(labels.value(9), "[180, 200]");
    // 0.7 i for i < 300 spans 0..209.3: 29 values per bin of 20, the rest clamped into the last.
    let c = counts(&agg.batch, "count");
    assert_eq!(c[0], Some(29));
    assert_eq!(c.iter().map(|c| c.unwrap()).sum::<i64>(), 300);
}

/// A DP aggregate is released as noised: a cell whose (noisy) count is below the owners'
/// small-group threshold is not suppressed, because suppressing on the true count would
/// reveal it; `decide` adds no small-group rule to a checked aggregate.
#[test]
fn dp_cells_are_never_suppressed_on_their_true_counts() {
    use cleanroom_policy::{Candidate, Content, EgressInput, IdentifierCollector, decide};
    use cleanroom_proto::run::{Disposition, OutputKind};
    let t = table(&[("p1", "x", 100.0), ("p2", "x", 110.0), ("p3", "y", 120.0)]);
    let s = spec(vec![Statistic::Count]);
    let agg = private(&t, &s, EXACT).unwrap();
    let decided = decide(EgressInput {
        outputs: vec![Candidate {
            name: "by_site".into(),
            kind: OutputKind::Table,
            content: Content::Checked {
                schema: agg.batch.schema(),
                batches: vec![agg.batch.clone()],
                codes: agg.codes.clone(),
                refused: agg.refused,
                private: true,
            },
        }],
        rules: &rules(10),
        identifier_columns: &Default::default(),
        identifiers: &IdentifierCollector::new().build(),
        reviewed: false,
    });
    assert_eq!(decided[0].report.disposition, Disposition::Release);
    assert_eq!(decided[0].report.codes, vec![Code::DpNoised]);
    assert_eq!(counts(&agg.batch, "count"), vec![Some(2), Some(1), Some(0)]);
}
