//! What may leave, as tables of cases: every shape a module could use to carry small groups
//! or identifiers out, and the statistical disclosure rules owners can select.

#![allow(clippy::unwrap_used)] // tests and their helpers fail loudly by design

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, StructArray};
use arrow_schema::{DataType, Field, Schema};
use cleanroom_policy::{
    Candidate, Content, Decided, EgressInput, IdentifierCollector, IdentifierSet, decide,
};
use cleanroom_proto::Code;
use cleanroom_proto::policy::{OutputRules, Rounding, SmallGroups, Unchecked};
use cleanroom_proto::run::{Disposition, OutputKind};
use rstest::rstest;

/// Decide `outputs`; `reviewed` runs have an input whose owner requires review, as the
/// merged rules then say.
fn run(
    outputs: Vec<Candidate>,
    rules: &OutputRules,
    ids: &IdentifierSet,
    reviewed: bool,
) -> Vec<Decided> {
    let columns: BTreeSet<String> = ["patient_id".to_string()].into();
    let rules = OutputRules {
        review_required: rules.review_required || reviewed,
        ..rules.clone()
    };
    decide(EgressInput {
        outputs,
        rules: &rules,
        identifier_columns: &columns,
        identifiers: ids,
        reviewed,
    })
}

fn bytes(kind: OutputKind, name: &str, text: &str) -> Candidate {
    Candidate {
        name: name.into(),
        kind,
        content: Content::Bytes(text.as_bytes().to_vec()),
    }
}

fn table(name: &str, fields: Vec<Field>, columns: Vec<ArrayRef>) -> Candidate {
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    Candidate {
        name: name.into(),
        kind: OutputKind::Table,
        content: Content::Table {
            schema,
            batches: vec![batch],
        },
    }
}

fn counted(name: &str, groups: &[&str], counts: &[i64]) -> Candidate {
    table(
        name,
        vec![
            Field::new("group", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
        ],
        vec![
            Arc::new(StringArray::from(groups.to_vec())),
            Arc::new(Int64Array::from(counts.to_vec())),
        ],
    )
}

/// The released table's count column and group column.
fn released(d: &Decided) -> (Vec<Option<i64>>, Vec<String>) {
    let (_, batches) = cleanroom_runtime_free_decode(&d.output.bytes);
    let mut counts = Vec::new();
    let mut groups = Vec::new();
    for b in batches {
        let n = b.column_by_name("n").unwrap();
        let n = n.as_any().downcast_ref::<Int64Array>().unwrap();
        counts.extend(n.iter());
        let g = b.column_by_name("group").unwrap();
        let g = g.as_any().downcast_ref::<StringArray>().unwrap();
        groups.extend(g.iter().map(|s| s.unwrap().to_string()));
    }
    (counts, groups)
}

fn cleanroom_runtime_free_decode(ipc: &[u8]) -> (arrow_schema::SchemaRef, Vec<RecordBatch>) {
    let reader = arrow_ipc::reader::StreamReader::try_new(ipc, None).unwrap();
    let schema = reader.schema();
    (schema, reader.collect::<Result<Vec<_>, _>>().unwrap())
}

/// Point 2 of the review: JSON shapes that carried small groups past the old name-based check.
/// JSON is free-form: the host cannot check it, so it is held for review or refused.
#[rstest]
#[case::object_of_counts(r#"{"T40": 3}"#)]
#[case::pairs(r#"[["T40",3]]"#)]
#[case::count_as_string(r#"{"n":"3"}"#)]
#[case::nested(r#"{"group":"T40","stats":{"n":3}}"#)]
fn json_is_unchecked(#[case] json: &str) {
    let rules = OutputRules::default();
    let none = IdentifierSet::empty();
    let d = run(
        vec![bytes(OutputKind::Json, "summary", json)],
        &rules,
        &none,
        false,
    );
    assert_eq!(d[0].report.disposition, Disposition::Refuse);
    assert_eq!(d[0].report.codes, vec![Code::UncheckedRefused]);
    let d = run(
        vec![bytes(OutputKind::Json, "summary", json)],
        &rules,
        &none,
        true,
    );
    assert_eq!(d[0].report.disposition, Disposition::Hold);
    assert_eq!(
        d[0].output.bytes,
        serde_json::to_vec(&serde_json::from_str::<serde_json::Value>(json).unwrap()).unwrap(),
        "held bytes are the canonical form the reviewer sees"
    );
    let refuse = OutputRules {
        unchecked: Some(Unchecked::Refuse),
        ..OutputRules::default()
    };
    let d = run(
        vec![bytes(OutputKind::Json, "summary", json)],
        &refuse,
        &none,
        true,
    );
    assert_eq!(
        d[0].report.disposition,
        Disposition::Refuse,
        "owners may refuse even reviewed"
    );
}

#[rstest]
#[case::file(bytes(OutputKind::File, "plot.png", "PNG"))]
#[case::undeclared_table(table(
    "t",
    vec![Field::new("num", DataType::Int64, false)],
    vec![Arc::new(Int64Array::from(vec![3]))],
))]
#[case::nested_table(table(
    "t",
    vec![
        Field::new("n", DataType::Int64, false),
        Field::new("s", DataType::Struct(vec![Field::new("group", DataType::Utf8, false)].into()), false),
    ],
    vec![
        Arc::new(Int64Array::from(vec![30])),
        Arc::new(StructArray::from(vec![(
            Arc::new(Field::new("group", DataType::Utf8, false)),
            Arc::new(StringArray::from(vec!["T40"])) as ArrayRef,
        )])),
    ],
))]
fn what_the_host_cannot_check_is_unchecked(#[case] candidate: Candidate) {
    let d = run(
        vec![candidate],
        &OutputRules::default(),
        &IdentifierSet::empty(),
        false,
    );
    assert_eq!(d[0].report.disposition, Disposition::Refuse);
    assert_eq!(d[0].report.codes, vec![Code::UncheckedRefused]);
}

#[rstest]
// k = 10 by default: 3 and 0 go, 40 stays.
#[case::suppress(OutputRules::default(), Disposition::Release, vec![Some(40)], vec!["I21"], vec![Code::SmallGroupsSuppressed])]
#[case::refuse(OutputRules { small_groups: SmallGroups::Refuse, ..OutputRules::default() }, Disposition::Refuse, vec![], vec![], vec![Code::SmallGroupsRefused])]
// Structural zeros released where the owner says zeros are not disclosive.
#[case::zeros_allowed(OutputRules { zeros_disclosive: false, ..OutputRules::default() }, Disposition::Release, vec![Some(40), Some(0)], vec!["I21", "Z99"], vec![Code::SmallGroupsSuppressed])]
// OpenSAFELY: k = 1 leaves 3 and 0 to the rounding: ≤ 7 redacted, 40 stays 40.
#[case::redact_round(OutputRules { min_group_count: 1, zeros_disclosive: false, rounding: Rounding::Redact7Round5, ..OutputRules::default() }, Disposition::Release, vec![Some(40), None, None], vec!["I21", "T40", "Z99"], vec![Code::CountsRounded])]
#[case::midpoint6(OutputRules { min_group_count: 1, zeros_disclosive: false, rounding: Rounding::Midpoint6, ..OutputRules::default() }, Disposition::Release, vec![Some(39), Some(3), Some(0)], vec!["I21", "T40", "Z99"], vec![Code::CountsRounded])]
fn small_cells(
    #[case] rules: OutputRules,
    #[case] disposition: Disposition,
    #[case] counts: Vec<Option<i64>>,
    #[case] groups: Vec<&str>,
    #[case] codes: Vec<Code>,
) {
    let d = run(
        vec![counted("by_dx", &["I21", "T40", "Z99"], &[40, 3, 0])],
        &rules,
        &IdentifierSet::empty(),
        false,
    );
    assert_eq!(d[0].report.disposition, disposition);
    assert_eq!(d[0].report.codes, codes);
    if disposition == Disposition::Release {
        let (got_counts, got_groups) = released(&d[0]);
        assert_eq!(got_counts, counts);
        assert_eq!(got_groups, groups);
    }
}

#[test]
fn redact_then_round_recomputes_declared_totals() {
    let total = Field::new("total", DataType::Int64, false).with_metadata(HashMap::from([(
        "cleanroom:total_of".to_string(),
        "a,b".to_string(),
    )]));
    let c = table(
        "t",
        vec![
            Field::new("a", DataType::Int64, false).with_metadata(HashMap::from([(
                "cleanroom:count".to_string(),
                "true".to_string(),
            )])),
            Field::new("b", DataType::Int64, false).with_metadata(HashMap::from([(
                "cleanroom:count".to_string(),
                "true".to_string(),
            )])),
            total,
        ],
        vec![
            Arc::new(Int64Array::from(vec![12, 23])),
            Arc::new(Int64Array::from(vec![6, 31])),
            Arc::new(Int64Array::from(vec![18, 54])),
        ],
    );
    let rules = OutputRules {
        min_group_count: 1,
        rounding: Rounding::Redact7Round5,
        ..OutputRules::default()
    };
    let d = run(vec![c], &rules, &IdentifierSet::empty(), false);
    assert_eq!(
        d[0].report.codes,
        vec![Code::CountsRounded, Code::TotalsRecomputed]
    );
    let (_, batches) = cleanroom_runtime_free_decode(&d[0].output.bytes);
    let col = |name: &str| -> Vec<Option<i64>> {
        let c = batches[0].column_by_name(name).unwrap();
        c.as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .iter()
            .collect()
    };
    assert_eq!(col("a"), vec![Some(10), Some(25)]);
    assert_eq!(col("b"), vec![None, Some(30)], "6 is redacted");
    // Totals are recomputed from the rounded cells, never rounded on their own (18 would
    // round to 20 and reveal b = 6 next to a = 10).
    assert_eq!(col("total"), vec![Some(10), Some(55)]);
}

#[rstest]
#[case::too_few_df("100", "95", Disposition::Refuse, vec![Code::ResidualDf])]
#[case::enough_df("100", "5", Disposition::Hold, vec![Code::UncheckedHeld])]
fn model_outputs_need_residual_degrees_of_freedom(
    #[case] n: &str,
    #[case] params: &str,
    #[case] disposition: Disposition,
    #[case] codes: Vec<Code>,
) {
    let schema = Schema::new(vec![Field::new("coef", DataType::Int64, false)]).with_metadata(
        HashMap::from([
            ("cleanroom:model_n".to_string(), n.to_string()),
            ("cleanroom:model_params".to_string(), params.to_string()),
        ]),
    );
    let schema = Arc::new(schema);
    let batch =
        RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![2]))]).unwrap();
    let c = Candidate {
        name: "model".into(),
        kind: OutputKind::Table,
        content: Content::Table {
            schema,
            batches: vec![batch],
        },
    };
    let d = run(
        vec![c],
        &OutputRules::default(),
        &IdentifierSet::empty(),
        true,
    );
    assert_eq!(d[0].report.disposition, disposition);
    assert_eq!(d[0].report.codes, codes);
}

/// Identifiers caught by value: renamed columns, files, JSON, names; and by column name.
#[rstest]
#[case::renamed_column(counted("by_group", &["NHS-48213"], &[100]), Code::IdentifierValue)]
#[case::in_a_file(
    bytes(OutputKind::File, "notes.csv", "ref\nNHS-48213\n"),
    Code::IdentifierValue
)]
#[case::in_json(
    bytes(OutputKind::Json, "s", r#"{"x":"a NHS-48213 b"}"#),
    Code::IdentifierValue
)]
#[case::in_the_name(
    bytes(OutputKind::File, "NHS-48213.txt", "nothing"),
    Code::IdentifierValue
)]
#[case::in_the_log(
    bytes(OutputKind::Log, "log", "saw NHS-48213\n"),
    Code::IdentifierValue
)]
#[case::in_error_text(
    bytes(OutputKind::Error, "error", "KeyError: 'NHS-48213'"),
    Code::IdentifierValue
)]
#[case::other_case(
    bytes(OutputKind::File, "notes.csv", "ref\nnhs-48213\n"),
    Code::IdentifierValue
)]
#[case::binary_cells(table(
    "t",
    vec![Field::new("b", DataType::Binary, false), Field::new("n", DataType::Int64, false)],
    vec![
        Arc::new(arrow_array::BinaryArray::from(vec![&b"NHS-48213"[..]])),
        Arc::new(Int64Array::from(vec![50])),
    ],
), Code::IdentifierValue)]
#[case::by_column_name(table(
    "t",
    vec![Field::new("PATIENT_ID", DataType::Utf8, false), Field::new("n", DataType::Int64, false)],
    vec![Arc::new(StringArray::from(vec!["x"])), Arc::new(Int64Array::from(vec![50]))],
), Code::IdentifierColumn)]
fn identifiers_never_leave(#[case] candidate: Candidate, #[case] code: Code) {
    let collector = IdentifierCollector::new();
    collector.insert("NHS-48213");
    // Shorter than the minimum: not scanned (it would match everywhere).
    collector.insert("A1");
    let ids = collector.build();
    let rules = OutputRules {
        release_logs: true,
        ..OutputRules::default()
    };
    for reviewed in [false, true] {
        let d = run(vec![candidate.clone()], &rules, &ids, reviewed);
        assert_eq!(d[0].report.disposition, Disposition::Refuse);
        assert!(d[0].report.codes.contains(&code), "{:?}", d[0].report.codes);
        assert!(
            d[0].output.bytes.is_empty() && !d[0].reviewable,
            "one owner's identifiers are not shown to another owner's reviewer"
        );
    }
}

#[test]
fn short_identifiers_are_not_scanned() {
    let collector = IdentifierCollector::new();
    collector.insert("A1");
    let ids = collector.build();
    assert!(ids.is_empty());
    let d = run(
        vec![counted("t", &["A1"], &[50])],
        &OutputRules::default(),
        &ids,
        false,
    );
    assert_eq!(d[0].report.disposition, Disposition::Release);
}

#[rstest]
#[case::logs_withheld(false, false, Disposition::Refuse, vec![Code::LogsWithheld])]
#[case::logs_released(true, false, Disposition::Release, vec![])]
#[case::logs_reviewed(true, true, Disposition::Hold, vec![])]
fn error_text_follows_the_log_rules(
    #[case] release_logs: bool,
    #[case] reviewed: bool,
    #[case] disposition: Disposition,
    #[case] codes: Vec<Code>,
) {
    let rules = OutputRules {
        release_logs,
        ..OutputRules::default()
    };
    let d = run(
        vec![bytes(OutputKind::Error, "error", "KeyError: 'x'")],
        &rules,
        &IdentifierSet::empty(),
        reviewed,
    );
    assert_eq!(d[0].report.disposition, disposition);
    assert_eq!(d[0].report.codes, codes);
}

#[test]
fn output_count_and_total_size_are_capped() {
    let rules = OutputRules {
        max_outputs: 2,
        ..OutputRules::default()
    };
    let many: Vec<Candidate> = (0..3)
        .map(|i| counted(&format!("t{i}"), &["I21"], &[50]))
        .collect();
    let d = run(many, &rules, &IdentifierSet::empty(), false);
    assert!(d.iter().all(|d| d.report.disposition == Disposition::Refuse
        && d.report.codes.contains(&Code::TooManyOutputs)));

    let small = OutputRules {
        max_output_bytes: 10,
        ..OutputRules::default()
    };
    let d = run(
        vec![counted("t", &["I21"], &[50])],
        &small,
        &IdentifierSet::empty(),
        false,
    );
    assert_eq!(d[0].report.codes, vec![Code::OutputTooLarge]);
}

#[test]
fn field_metadata_never_leaves() {
    // An identifier in field metadata: the canonical form drops metadata the host does not
    // read, so it is neither shown to a reviewer nor released (it used to be refused when
    // the identifier was known, and released otherwise).
    let candidate = table(
        "t",
        vec![
            Field::new("g", DataType::Utf8, false).with_metadata(HashMap::from([(
                "note".to_string(),
                "NHS-48213".to_string(),
            )])),
            Field::new("n", DataType::Int64, false),
        ],
        vec![
            Arc::new(StringArray::from(vec!["x"])),
            Arc::new(Int64Array::from(vec![50])),
        ],
    );
    let collector = IdentifierCollector::new();
    collector.insert("NHS-48213");
    let ids = collector.build();
    for ids in [&ids, &IdentifierSet::empty()] {
        let d = run(vec![candidate.clone()], &OutputRules::default(), ids, true);
        let bytes = &d[0].output.bytes;
        assert!(!bytes.is_empty(), "{:?}", d[0].report);
        assert!(
            !bytes.windows(9).any(|w| w == b"NHS-48213"),
            "metadata left with the table"
        );
    }
}
