//! Differential privacy: how accurate sample and aggregate is on a real analysis, and the
//! preview generator for the synthetic-data comparison. Results in docs/benchmarks.md.
//!
//!     cargo bench -p cleanroom-tests --bench dp                     # sample-and-aggregate accuracy
//!     cargo bench -p cleanroom-tests --bench dp -- preview IN.csv DOMAINS.json EPSILON ROWS OUT.csv
//!
//! Accuracy: a cohort of 20,000 patients whose systolic blood pressure rises with age
//! (sbp = 100 + 0.5 age + noise, σ = 12); the analysis is the OLS fit of sbp on age, run by
//! the enclave's own sample-and-aggregate (`Runtime::run_blocks` + the policy crate's
//! release) with b blocks and ε. The baseline is the same module run once on the whole table,
//! in the same process: the non-private answer. Errors are mean absolute errors over 20
//! repetitions (a new block key each time).

#![allow(clippy::unwrap_used)] // tests and their helpers fail loudly by design

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use cleanroom_proto::dp::{DpRequirement, Epsilon};
use cleanroom_runtime::blocks::BlockPlan;
use cleanroom_runtime::{Grants, Limits, MemTable, Runtime, RuntimeConfig, TableSource};
use cleanroom_tests::{BLOCK_REGRESSION, program};
use rand::{Rng, SeedableRng};

const PATIENTS: usize = 20_000;
const REPETITIONS: usize = 20;

fn cohort(rng: &mut impl Rng) -> MemTable {
    let ages: Vec<f64> = (0..PATIENTS).map(|_| rng.gen_range(20.0..90.0)).collect();
    let sbp: Vec<f64> = ages
        .iter()
        .map(|a| {
            // Box–Muller: test data only.
            let (u, v): (f64, f64) = (rng.r#gen(), rng.r#gen());
            let z = (-2.0 * (1.0 - u).ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
            100.0 + 0.5 * a + 12.0 * z
        })
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("patient_id", DataType::Utf8, false),
        Field::new("age", DataType::Float64, false),
        Field::new("sbp", DataType::Float64, false),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            (0..PATIENTS).map(|i| format!("P{i}")),
        )),
        Arc::new(Float64Array::from(ages)),
        Arc::new(Float64Array::from(sbp)),
    ];
    MemTable::new(
        schema.clone(),
        vec![RecordBatch::try_new(schema, cols).unwrap()],
    )
}

fn accuracy() {
    let runtime = Runtime::new(RuntimeConfig::default()).expect("runtime");
    let module = runtime.load(&program(BLOCK_REGRESSION)).expect("module");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let table = cohort(&mut rng);
    let grants: Grants = [("data".to_string(), Arc::new(table) as Arc<dyn TableSource>)].into();
    let params = r#"{"x": "age", "y": "sbp"}"#;
    let limits = Limits::default();
    let start = std::time::Instant::now();
    let whole = runtime
        .run(&module, grants.clone(), params, &limits, None)
        .expect("non-private run");
    let native_ms = start.elapsed().as_secs_f64() * 1e3;
    let truth: Vec<f64> = serde_json::from_str(&whole.outputs.json[0].1).unwrap();
    println!(
        "non-private OLS on all {PATIENTS} patients: intercept {:.3}, slope {:.4} ({native_ms:.1} ms)",
        truth[0], truth[1]
    );
    let bounds = [(50.0, 150.0), (-1.0, 2.0)];
    let epsilons = [0.5, 1.0, 2.0, 5.0];
    println!();
    println!(
        "| blocks b | ε | intercept MAE | slope MAE | slope MAE / |slope| | time per release |"
    );
    println!("|---|---|---|---|---|---|");
    for b in [10u32, 20, 50, 100] {
        let mut errors = vec![(0.0, 0.0); epsilons.len()];
        let mut elapsed = 0.0;
        for _ in 0..REPETITIONS {
            let plan = BlockPlan {
                blocks: b,
                key: rng.r#gen(),
                units: [("data".to_string(), "patient_id".to_string())].into(),
                output: "coefficients".into(),
                dimensions: 2,
            };
            let start = std::time::Instant::now();
            let blocks = runtime
                .run_blocks(&module, &grants, params, &limits, None, &plan)
                .expect("blocks");
            elapsed += start.elapsed().as_secs_f64();
            for (k, e) in epsilons.iter().enumerate() {
                let eps = Epsilon::from_f64(*e).unwrap();
                let out =
                    cleanroom_policy::dp::sample_aggregate_release(&blocks, &bounds, eps).unwrap();
                errors[k].0 += (out[0] - truth[0]).abs() / REPETITIONS as f64;
                errors[k].1 += (out[1] - truth[1]).abs() / REPETITIONS as f64;
            }
        }
        for (k, e) in epsilons.iter().enumerate() {
            println!(
                "| {b} | {e} | {:.2} | {:.4} | {:.1} % | {:.0} ms |",
                errors[k].0,
                errors[k].1,
                100.0 * errors[k].1 / truth[1].abs(),
                elapsed / REPETITIONS as f64 * 1e3
            );
        }
    }
}

/// Compute a preview of a CSV (every column text) with the policy crate, as the enclave does,
/// and write its synthetic table as CSV.
fn preview(args: &[String]) {
    let [input, domains, epsilon, rows, out] = args else {
        panic!("preview IN.csv DOMAINS.json EPSILON ROWS OUT.csv");
    };
    let file = std::fs::File::open(input).expect("open the CSV");
    let format = arrow_csv::reader::Format::default().with_header(true);
    let (inferred, _) = format.infer_schema(&file, Some(1)).expect("header");
    let schema = Arc::new(Schema::new(
        inferred
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let reader = arrow_csv::ReaderBuilder::new(schema.clone())
        .with_header(true)
        .build(std::fs::File::open(input).unwrap())
        .unwrap();
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().unwrap();
    let dp: DpRequirement =
        serde_json::from_str(&std::fs::read_to_string(domains).unwrap()).expect("DP terms");
    let epsilon = Epsilon::from_f64(epsilon.parse().unwrap()).unwrap();
    let start = std::time::Instant::now();
    let parts = cleanroom_policy::preview::compute(
        &schema,
        batches.into_iter().map(Ok),
        &dp,
        epsilon,
        rows.parse().unwrap(),
        &mut rand::thread_rng(),
    )
    .expect("preview");
    eprintln!(
        "preview: {:.2} s, tree {:?}",
        start.elapsed().as_secs_f64(),
        parts.pairs
    );
    let mut w = arrow_csv::WriterBuilder::new()
        .with_header(true)
        .build(std::fs::File::create(out).unwrap());
    w.write(&parts.synthetic).unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args.first().map(String::as_str) {
        Some("preview") => preview(&args[1..]),
        _ => accuracy(),
    }
}
