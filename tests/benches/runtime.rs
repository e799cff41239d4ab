//! Sandbox runtime benchmarks; results and the machine go in docs/benchmarks.md.
//!
//!     CLEANROOM_PYTHON_GUESTS=... cargo bench -p cleanroom-tests --bench runtime [-- SECTION...]
//!
//! SECTION is any of `empty`, `sum`, `python`, `numpy`, `r` (all when none is named; `r` needs
//! `CLEANROOM_R_ENGINE` from scripts/build-r.sh and native R's `Rscript`).
//!
//! Every guest measurement is paired with a native baseline in the same run.

#![allow(clippy::unwrap_used)] // tests and their helpers fail loudly by design

use std::hint::black_box;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use cleanroom_runtime::{Grants, Limits, MemTable, Module, Runtime, RuntimeConfig, TableSource};
use cleanroom_tests::*;

const SUM_ROWS: usize = 10_000_000;
/// Rows per batch, as `cleanroom run-local` and typical envelopes use.
const BATCH_ROWS: usize = 64 * 1024;

fn main() {
    let runtime = Runtime::new(RuntimeConfig::default()).expect("runtime starts");
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |section: &str| named.is_empty() || named.iter().any(|n| n == section);
    println!("| benchmark | result | goal |");
    println!("|---|---|---|");
    if wanted("empty") {
        empty_rust(&runtime);
    }
    let table = f64_table(SUM_ROWS, BATCH_ROWS);
    if wanted("sum") {
        sum_rust(&runtime, &table);
    }
    if wanted("python") {
        python(&runtime, &table);
    }
    if wanted("numpy") {
        numpy_sum(&runtime, &table, &Limits::default());
    }
    if wanted("r") {
        r_engine();
    }
}

/// GNU R in the sandbox: compiling the engine, start-up to the first statement, `lm` on 100k
/// rows against native R (timed inside R on both sides, data already loaded), and handing a
/// 1M-row table to R as a data frame against native R reading the same rows from CSV.
fn r_engine() {
    use arrow_array::{Float64Array, Int64Array, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    let Some(dir) = std::env::var_os("CLEANROOM_R_ENGINE") else {
        println!("| R | skipped: set CLEANROOM_R_ENGINE (scripts/build-r.sh) | |");
        return;
    };
    let start = Instant::now();
    let engine = cleanroom_r::REngine::load(std::path::Path::new(&dir)).expect("R loads");
    println!(
        "| R engine: compile R.wasm (18 MB, Cranelift) | {:.2} s | once per process |",
        start.elapsed().as_secs_f64()
    );
    let limits = Limits::default();
    let (startup, _) = best_of(3, || {
        engine
            .run(&Grants::new(), "invisible(NULL)", &limits, None)
            .expect("an empty R run")
    });
    println!(
        "| R: start-up to the first statement (boot, side modules, cleanroom API) | {:.0} ms | tens of ms with a snapshot (not built) |",
        startup.as_secs_f64() * 1e3
    );

    // lm on 100k rows.
    let n = 100_000usize;
    let x1: Vec<f64> = (0..n).map(|i| (i % 997) as f64 / 10.0).collect();
    let x2: Vec<f64> = (0..n).map(|i| ((i * 7919) % 1013) as f64).collect();
    let y: Vec<f64> = (0..n)
        .map(|i| 3.0 + 0.5 * x1[i] - 0.01 * x2[i] + ((i * 31) % 17) as f64 / 17.0)
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("x1", DataType::Float64, false),
        Field::new("x2", DataType::Float64, false),
        Field::new("y", DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Float64Array::from(x1.clone())),
            Arc::new(Float64Array::from(x2.clone())),
            Arc::new(Float64Array::from(y.clone())),
        ],
    )
    .unwrap();
    let mut g = Grants::new();
    g.insert(
        "t".into(),
        Arc::new(MemTable::new(schema, vec![batch])) as Arc<dyn TableSource>,
    );
    let fit = "d <- cleanroom::table('t')\n\
        best <- Inf; for (k in 1:5) { t0 <- proc.time()[['elapsed']]; fit <- lm(y ~ x1 + x2, data = d); best <- min(best, proc.time()[['elapsed']] - t0) }\n\
        cleanroom::publish_json('s', best)";
    let out = engine.run(&g, fit, &limits, None).expect("lm runs");
    let inside: f64 = out.outputs.json[0].1.parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("t.csv");
    let mut text = String::from("x1,x2,y\n");
    for i in 0..n {
        text.push_str(&format!("{},{},{}\n", x1[i], x2[i], y[i]));
    }
    std::fs::write(&csv, text).unwrap();
    let native = Command::new("Rscript")
        .arg("-e")
        .arg(format!(
            "d <- read.csv('{}'); best <- Inf; for (k in 1:5) {{ t0 <- proc.time()[['elapsed']]; fit <- lm(y ~ x1 + x2, data = d); best <- min(best, proc.time()[['elapsed']] - t0) }}; cat(best)",
            csv.display()
        ))
        .output();
    match native {
        Ok(o) if o.status.success() => {
            let native: f64 = String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse()
                .unwrap_or(f64::NAN);
            println!(
                "| R: `lm(y ~ x1 + x2)` on 100k rows, best of 5 | {:.0} ms vs {:.0} ms native R ({:.1}×) | within 3× native |",
                inside * 1e3,
                native * 1e3,
                inside / native
            );
        }
        _ => println!(
            "| R: lm on 100k rows | {:.0} ms (native R not installed) | |",
            inside * 1e3
        ),
    }

    // A 1M-row table (a float, an integer and a string column) as a data frame.
    let rows = 1_000_000usize;
    let schema = Arc::new(Schema::new(vec![
        Field::new("value", DataType::Float64, false),
        Field::new("count", DataType::Int64, false),
        Field::new("code", DataType::Utf8, false),
    ]));
    let codes = ["I21", "J18", "I50", "E11", "K35"];
    let batches: Vec<RecordBatch> = (0..rows)
        .step_by(BATCH_ROWS)
        .map(|from| {
            let to = (from + BATCH_ROWS).min(rows);
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Float64Array::from_iter_values(
                        (from..to).map(|i| i as f64 * 0.5),
                    )),
                    Arc::new(Int64Array::from_iter_values(
                        (from..to).map(|i| (i % 1000) as i64),
                    )),
                    Arc::new(StringArray::from_iter_values(
                        (from..to).map(|i| codes[i % 5]),
                    )),
                ],
            )
            .unwrap()
        })
        .collect();
    let mut g = Grants::new();
    g.insert(
        "t".into(),
        Arc::new(MemTable::new(schema, batches)) as Arc<dyn TableSource>,
    );
    let (with_table, _) = best_of(3, || {
        engine
            .run(
                &g,
                "stopifnot(nrow(cleanroom::table('t')) == 1e6)",
                &limits,
                None,
            )
            .expect("delivery")
    });
    let delivery = with_table.saturating_sub(startup);
    let mut text = String::from("value,count,code\n");
    for i in 0..rows {
        text.push_str(&format!(
            "{},{},{}\n",
            i as f64 * 0.5,
            i % 1000,
            codes[i % 5]
        ));
    }
    std::fs::write(&csv, text).unwrap();
    let native = Command::new("Rscript")
        .arg("-e")
        .arg(format!(
            "t0 <- proc.time()[['elapsed']]; d <- read.csv('{}', stringsAsFactors = FALSE); cat(proc.time()[['elapsed']] - t0)",
            csv.display()
        ))
        .output();
    let native = native.ok().filter(|o| o.status.success()).and_then(|o| {
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse::<f64>()
            .ok()
    });
    println!(
        "| R: a 1M-row table (f64, int, string) delivered as a data frame | {:.0} ms{} | |",
        delivery.as_secs_f64() * 1e3,
        native
            .map(|n| format!(
                " vs {:.0} ms for native R's read.csv of the same rows",
                n * 1e3
            ))
            .unwrap_or_default()
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn grants(table: &MemTable) -> Grants {
    let mut g = Grants::new();
    g.insert(
        "data".into(),
        Arc::new(table.clone()) as Arc<dyn TableSource>,
    );
    g
}

/// Wall times of `n` empty-params runs of `module` (after `warmup` runs), sorted.
fn timed_runs(runtime: &Runtime, module: &Module, warmup: usize, n: usize) -> Vec<Duration> {
    let run = || {
        let start = Instant::now();
        runtime
            .run(module, Grants::new(), "", &Limits::default(), None)
            .expect("run succeeds");
        start.elapsed()
    };
    (0..warmup).for_each(|_| {
        run();
    });
    let mut samples: Vec<Duration> = (0..n).map(|_| run()).collect();
    samples.sort();
    samples
}

/// Instantiate + call an empty analysis, many times.
fn empty_rust(runtime: &Runtime) {
    let module = runtime.load(&program(EMPTY)).expect("empty loads");
    let samples = timed_runs(runtime, &module, 200, 5000);
    println!(
        "| empty Rust analysis, instantiate + run (5000 runs) | p50 {} / p99 {} | p50 ≤ 20 µs, p99 ≤ 100 µs |",
        micros(percentile(&samples, 0.5)),
        micros(percentile(&samples, 0.99))
    );
}

fn native_sum(table: &MemTable) -> f64 {
    let mut sum = 0.0;
    for batch in table.batches() {
        let batch = batch.expect("in-memory batch");
        sum += batch
            .column(0)
            .as_primitive::<Float64Type>()
            .values()
            .iter()
            .sum::<f64>();
    }
    sum
}

fn best_of<T>(n: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..n {
        let start = Instant::now();
        let out = f();
        best = best.min(start.elapsed());
        last = Some(out);
    }
    (best, last.expect("n > 0"))
}

/// A 10M-row f64 column summed in the Rust guest vs natively.
fn sum_rust(runtime: &Runtime, table: &MemTable) {
    let module = runtime
        .load(&program(SUM_COLUMN))
        .expect("sum_column loads");
    let limits = Limits::default();
    let (native, expected) = best_of(7, || black_box(native_sum(black_box(table))));
    let (guest, out) = best_of(7, || {
        runtime
            .run(
                &module,
                grants(table),
                r#"{"table":"data","column":"x"}"#,
                &limits,
                None,
            )
            .expect("sum run")
    });
    let published: serde_json::Value =
        serde_json::from_str(&out.outputs.json[0].1).expect("published JSON parses");
    let got = published["sum"].as_f64().expect("sum is a number");
    assert_eq!(got, expected, "guest and native sums differ");
    let bytes = out.stats.bytes_read as f64;
    println!(
        "| sum 10M f64 column, Rust guest vs native (best of 7) | guest {:.2} ms, native {:.2} ms, ratio {:.2}× | ≤ 1.3× native |",
        guest.as_secs_f64() * 1e3,
        native.as_secs_f64() * 1e3,
        guest.as_secs_f64() / native.as_secs_f64()
    );
    println!(
        "| host→guest column bytes, whole run incl. instantiation | {:.2} GB/s ({} MB) | ≥ 8 GB/s |",
        bytes / guest.as_secs_f64() / 1e9,
        bytes as u64 / 1_000_000
    );
}

/// Python: instantiation from a precompiled component, and the same sum vs CPython.
fn python(runtime: &Runtime, table: &MemTable) {
    let bytes = python_program("py_empty");
    let start = Instant::now();
    let compiled = runtime.load(&bytes).expect("python empty compiles");
    let compile = start.elapsed();
    let native_code = compiled.serialize().expect("serialize");
    let fresh = Runtime::new(RuntimeConfig::default()).expect("runtime starts");
    let start = Instant::now();
    // SAFETY: the bytes were produced by `serialize` on an identically configured engine just above.
    let module =
        unsafe { fresh.load_precompiled(compiled.digest(), &native_code) }.expect("deserialize");
    let load = start.elapsed();
    let samples = timed_runs(&fresh, &module, 20, 500);
    let limits = Limits::default();
    println!(
        "| Python component ({} MB): compile / load precompiled | {:.2} s / {:.1} ms | — |",
        bytes.len() / 1_000_000,
        compile.as_secs_f64(),
        load.as_secs_f64() * 1e3
    );
    println!(
        "| empty Python analysis, instantiate + run (500 runs) | p50 {} / p99 {} | p50 ≤ 2 ms |",
        micros(percentile(&samples, 0.5)),
        micros(percentile(&samples, 0.99))
    );

    let module = runtime
        .load(&python_program("py_sum_column"))
        .expect("python sum compiles");
    let (guest, out) = best_of(3, || {
        runtime
            .run(
                &module,
                grants(table),
                r#"{"table":"data","column":"x"}"#,
                &limits,
                None,
            )
            .expect("python sum run")
    });
    let published: serde_json::Value =
        serde_json::from_str(&out.outputs.json[0].1).expect("published JSON parses");
    assert_eq!(published["rows"], SUM_ROWS);
    let script = format!(
        "import array,time\n\
         batches=[array.array('d',map(float,range(s,min(s+{BATCH_ROWS},{SUM_ROWS})))).tobytes() for s in range(0,{SUM_ROWS},{BATCH_ROWS})]\n\
         best=1e9\n\
         for _ in range(3):\n t=time.perf_counter(); total=0.0\n for b in batches: total+=sum(memoryview(b).cast('d'))\n best=min(best,time.perf_counter()-t)\n\
         print(best, total)"
    );
    let native = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&native.stdout);
    let native_secs: f64 = text
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .expect("python3 printed a time");
    println!(
        "| sum 10M f64 column, Python guest vs native CPython {} (best of 3) | guest {:.0} ms, CPython {:.0} ms, ratio {:.2}× | report |",
        String::from_utf8_lossy(
            &Command::new("python3")
                .arg("--version")
                .output()
                .expect("python3")
                .stdout
        )
        .trim(),
        guest.as_secs_f64() * 1e3,
        native_secs * 1e3,
        guest.as_secs_f64() / native_secs
    );
}

/// The same sum with numpy: in the guest over numpy views of each batch's Arrow buffer
/// (`cleanroom.numpy_columns`), natively over numpy arrays of the same batches. The native
/// baseline is numpy 2.4.6 (the version built for the guest) from `CLEANROOM_NUMPY_PYTHON`,
/// default the project venv (`~/.cache/cleanroom-venv/bin/pip install numpy==2.4.6`).
fn numpy_sum(runtime: &Runtime, table: &MemTable, limits: &Limits) {
    let module = runtime
        .load(&python_program("py_numpy_stats"))
        .expect("numpy guest compiles");
    let (guest, out) = best_of(5, || {
        runtime
            .run(
                &module,
                grants(table),
                r#"{"table":"data","column":"x","fit":false}"#,
                limits,
                None,
            )
            .expect("numpy sum run")
    });
    let published: serde_json::Value =
        serde_json::from_str(&out.outputs.json[0].1).expect("published JSON parses");
    assert_eq!(published["rows"], SUM_ROWS);
    let python = std::env::var("CLEANROOM_NUMPY_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/cleanroom-venv/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let script = format!(
        "import numpy as np, time\n\
         batches=[np.arange(s,min(s+{BATCH_ROWS},{SUM_ROWS}),dtype=np.float64) for s in range(0,{SUM_ROWS},{BATCH_ROWS})]\n\
         best=1e9\n\
         for _ in range(5):\n t=time.perf_counter(); total=0.0\n for b in batches: total+=float(b.sum())\n best=min(best,time.perf_counter()-t)\n\
         print(best, np.__version__)"
    );
    let native = Command::new(&python).arg("-c").arg(&script).output();
    let text = native
        .as_ref()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    let mut words = text.split_whitespace();
    match (
        words.next().and_then(|s| s.parse::<f64>().ok()),
        words.next(),
    ) {
        (Some(native_secs), Some(version)) => {
            let compute = published["compute_seconds"].as_f64().expect("compute time");
            println!(
                "| sum 10M f64 column with numpy (numpy 2.4.6 for WASI over views of the Arrow batches) vs native numpy {version}, best of 5: numpy's own work | guest {:.1} ms, native {:.1} ms, ratio {:.2}× | ≤ 1.5× |",
                compute * 1e3,
                native_secs * 1e3,
                compute / native_secs
            );
            println!(
                "| the same, whole run (instantiation, 80 MB handed to the guest, Python objects per batch) | guest {:.1} ms, ratio {:.2}× to native numpy | report |",
                guest.as_secs_f64() * 1e3,
                guest.as_secs_f64() / native_secs
            );
        }
        _ => println!(
            "| sum 10M f64 column with numpy, guest | {:.1} ms (no native numpy in {python}: pip install numpy==2.4.6 there) | ≤ 1.5× |",
            guest.as_secs_f64() * 1e3
        ),
    }
}
