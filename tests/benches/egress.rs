//! The policy decision point's cost on a large run; results in docs/benchmarks.md.
//!
//!     cargo bench -p cleanroom-tests --bench egress
//!
//! Baseline in the same run: what releasing the table costs without any rule (encoding it as
//! the Arrow IPC stream that is sealed to the researcher). The ratio is what governed egress
//! adds on top.

#![allow(clippy::unwrap_used)] // tests and their helpers fail loudly by design

use std::collections::BTreeSet;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use cleanroom_policy::{Candidate, Content, EgressInput, IdentifierCollector, decide};
use cleanroom_proto::policy::OutputRules;
use cleanroom_proto::run::{Disposition, OutputKind};

/// Patients whose identifiers the run read (as the demo's St Mary's ids).
const IDENTIFIERS: usize = 1_000_000;
/// Rows of the released table.
const ROWS: usize = 100_000;

fn best(n: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..n).map(|_| f()).min().expect("n > 0")
}

fn main() {
    // Collecting: the host taps every identifier value on its way to the guest.
    let ids = StringArray::from_iter_values((0..IDENTIFIERS).map(|i| format!("SM{}", 100_000 + i)));
    let id_batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "patient_id",
            DataType::Utf8,
            false,
        )])),
        vec![Arc::new(ids) as ArrayRef],
    )
    .expect("batch");
    let columns = vec!["patient_id".to_string()];
    let collector = IdentifierCollector::new();
    let start = Instant::now();
    collector.collect(&id_batch, &columns);
    let collect = start.elapsed();
    let start = Instant::now();
    let identifiers = collector.build();
    let build = start.elapsed();

    // A large checked table: group labels and declared counts.
    let schema = Arc::new(Schema::new(vec![
        Field::new("group", DataType::Utf8, false),
        Field::new("n", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(
                (0..ROWS).map(|i| format!("group-{i:07}")),
            )) as ArrayRef,
            Arc::new(Int64Array::from_iter_values(
                (0..ROWS).map(|i| 10 + (i % 1000) as i64),
            )),
        ],
    )
    .expect("table");
    let candidate = || Candidate {
        name: "by_group".into(),
        kind: OutputKind::Table,
        content: Content::Table {
            schema: schema.clone(),
            batches: vec![batch.clone()],
        },
    };
    let rules = OutputRules::default();
    let identifier_columns: BTreeSet<String> = ["patient_id".to_string()].into();
    let governed = best(7, || {
        let c = candidate();
        let start = Instant::now();
        let decided = decide(EgressInput {
            outputs: vec![c],
            rules: &rules,
            identifier_columns: &identifier_columns,
            identifiers: &identifiers,
            reviewed: false,
        });
        let t = start.elapsed();
        assert_eq!(decided[0].report.disposition, Disposition::Release);
        black_box(decided);
        t
    });
    let baseline = best(7, || {
        let start = Instant::now();
        let mut w = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &schema).expect("w");
        w.write(&batch).expect("write");
        black_box(w.into_inner().expect("ipc"));
        start.elapsed()
    });
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    println!("| benchmark | result |");
    println!("|---|---|");
    println!(
        "| collect {IDENTIFIERS} identifier values from input batches | {} |",
        ms(collect)
    );
    println!(
        "| build the Aho–Corasick automaton over them | {} |",
        ms(build)
    );
    println!(
        "| decide a {ROWS}-row checked table (suppression + identifier scan + re-encode), best of 7 | {} |",
        ms(governed)
    );
    println!(
        "| baseline: encode the same table as Arrow IPC, no rules, best of 7 | {} |",
        ms(baseline)
    );
    println!(
        "| governed egress vs ungoverned release | **{:.1}×** |",
        governed.as_secs_f64() / baseline.as_secs_f64()
    );
}
