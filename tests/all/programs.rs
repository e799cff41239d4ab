//! Every guest program in tests/programs has a test here, named after it
//! (enforced by `foreach_program!`). Hostile programs must end in their
//! typed error, and a normal run must succeed right after on the same
//! runtime.

use std::time::{Duration, Instant};

use cleanroom_runtime::{CancelToken, Limits, RunError, RunOutput};
use cleanroom_tests::*;

use crate::{grants, runtime, tight_limits};

macro_rules! assert_test_exists {
    ($name:ident) => {
        #[allow(unused_imports)]
        use self::$name as _;
    };
}
cleanroom_tests::foreach_program!(assert_test_exists);

fn run(path: &str, params: &str, limits: &Limits) -> Result<RunOutput, RunError> {
    run_loaded(&load(path), params, limits)
}

/// Compile (or fetch from the cache) a test program.
fn load(path: &str) -> std::sync::Arc<cleanroom_runtime::Module> {
    runtime().load(&program(path)).expect("program loads")
}

/// Run an already-loaded program: timing a run this way leaves compilation (which a busy
/// machine can slow down arbitrarily) out of what is measured.
fn run_loaded(
    module: &cleanroom_runtime::Module,
    params: &str,
    limits: &Limits,
) -> Result<RunOutput, RunError> {
    runtime().run(
        module,
        grants(&[("data", f64_table(1000, 100))]),
        params,
        limits,
        None,
    )
}

/// Output `i`'s JSON text, parsed.
fn json(out: &RunOutput, i: usize) -> serde_json::Value {
    serde_json::from_str(&out.outputs.json[i].1).expect("published JSON parses")
}

/// The runtime keeps serving: a well-behaved program succeeds right after.
fn assert_next_run_works() {
    let out =
        run(ECHO, "{}", &Limits::default()).expect("a normal run succeeds after a hostile one");
    assert_eq!(json(&out, 0)["tables"]["data"], 1000);
}

#[test]
fn empty() {
    let out = run(EMPTY, "", &Limits::default()).unwrap();
    assert!(out.outputs.tables.is_empty() && out.outputs.json.is_empty());
}

#[test]
fn echo() {
    let out = run(ECHO, "{\"a\":1}", &Limits::default()).unwrap();
    assert_eq!(out.outputs.json[0].0, "echo");
    assert_eq!(json(&out, 0)["params_len"], 7);
    assert_eq!(
        out.logs[0].message, "echo saw 7 bytes of params",
        "stdout is captured into the log"
    );
}

#[test]
fn sum_column() {
    let module = runtime().load(&program(SUM_COLUMN)).unwrap();
    let table = f64_table(100_000, 8192);
    let out = runtime()
        .run(
            &module,
            grants(&[("data", table)]),
            r#"{"table":"data","column":"x"}"#,
            &Limits::default(),
            None,
        )
        .unwrap();
    let sum = &json(&out, 0);
    assert_eq!(sum["rows"], 100_000);
    assert_eq!(sum["sum"], 99_999.0 * 100_000.0 / 2.0);
    assert_eq!(
        out.stats.bytes_read, 800_000,
        "only the column's values crossed"
    );
}

#[test]
fn state_leak() {
    let module = runtime().load(&program(STATE_LEAK)).unwrap();
    for params in ["first", "second"] {
        let out = runtime()
            .run(&module, grants(&[]), params, &Limits::default(), None)
            .unwrap();
        assert_eq!(
            json(&out, 0),
            serde_json::Value::Null,
            "a run saw what an earlier run left in memory"
        );
    }
}

#[test]
fn infinite_loop() {
    let limits = Limits {
        timeout: Duration::from_millis(300),
        ..tight_limits()
    };
    let module = load(INFINITE_LOOP);
    let start = Instant::now();
    let err = run_loaded(&module, "", &limits).unwrap_err();
    assert!(
        matches!(err, RunError::Timeout(t) if t == limits.timeout),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "the timeout was not enforced promptly"
    );
    assert_next_run_works();
}

#[test]
fn infinite_loop_cancelled() {
    let module = runtime().load(&program(INFINITE_LOOP)).unwrap();
    let token = CancelToken::new();
    let canceller = token.clone();
    let handle = std::thread::spawn(move || {
        runtime().run(&module, grants(&[]), "", &Limits::default(), Some(&token))
    });
    std::thread::sleep(Duration::from_millis(50));
    canceller.cancel();
    let err = handle.join().unwrap().unwrap_err();
    assert!(matches!(err, RunError::Cancelled), "{err}");
    assert_next_run_works();
}

#[test]
fn memory_bomb() {
    let err = run(MEMORY_BOMB, "", &tight_limits()).unwrap_err();
    match &err {
        RunError::MemoryLimit { limit_bytes } => assert_eq!(*limit_bytes, 256 << 20),
        other => panic!("expected a memory-limit error, got {other}"),
    }
    // The message names the limit, never what the module asked for (a module-chosen figure
    // is a channel out of the sandbox).
    assert_eq!(
        err.to_string().matches(char::is_numeric).count(),
        (256u64 << 20).to_string().len()
    );
    assert_next_run_works();
}

#[test]
fn deep_recursion() {
    let err = run(DEEP_RECURSION, "", &tight_limits()).unwrap_err();
    assert!(matches!(err, RunError::StackOverflow), "{err}");
    assert_next_run_works();
}

#[test]
fn explicit_trap() {
    let err = run(EXPLICIT_TRAP, "", &tight_limits()).unwrap_err();
    assert!(matches!(err, RunError::Trap(_)), "{err}");
    assert_next_run_works();
}

#[test]
fn ungranted_table() {
    // A table that exists elsewhere but was not granted looks exactly like a
    // table that does not exist anywhere.
    let ungranted = run(UNGRANTED_TABLE, "other_hospital", &tight_limits()).unwrap_err();
    let missing = run(UNGRANTED_TABLE, "no_such_table", &tight_limits()).unwrap_err();
    let ungranted = ungranted.to_string();
    assert_eq!(
        ungranted,
        "analysis failed: table \"other_hospital\" was not granted to this run"
    );
    assert_eq!(
        missing
            .to_string()
            .replace("no_such_table", "other_hospital"),
        ungranted
    );
    run(UNGRANTED_TABLE, "data", &tight_limits()).expect("a granted table opens");
}

#[test]
fn read_files() {
    let err = run(READ_FILES, "", &tight_limits()).unwrap_err();
    let RunError::Failed(message) = err else {
        panic!("expected the analysis to fail, got {err}")
    };
    assert!(message.starts_with("read_dir /:"), "{message}");
    assert_next_run_works();
}

#[test]
fn read_env() {
    let err = run(READ_ENV, "", &tight_limits()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "analysis failed: no environment, no arguments, empty stdin"
    );
}

#[test]
fn open_socket() {
    // A real listener on loopback: a guest must not reach it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let err = run(OPEN_SOCKET, &addr, &tight_limits()).unwrap_err();
    let RunError::Failed(message) = err else {
        panic!("expected the connect to fail, got {err}")
    };
    assert!(
        message.starts_with(&format!("connect {addr}:")),
        "{message}"
    );
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener.accept().is_err(),
        "the guest's connection reached the listener"
    );
}

#[test]
fn output_flood() {
    let err = run(OUTPUT_FLOOD, "", &tight_limits()).unwrap_err();
    assert!(
        matches!(err, RunError::OutputLimit(n) if n == 4 << 20),
        "{err}"
    );
    assert_next_run_works();
}

#[test]
fn log_flood() {
    let err = run(LOG_FLOOD, "", &tight_limits()).unwrap_err();
    assert!(
        matches!(err, RunError::LogLimit(n) if n == 64 << 10),
        "{err}"
    );
    assert_next_run_works();
}

#[test]
fn stdout_flood() {
    let err = run(STDOUT_FLOOD, "", &tight_limits()).unwrap_err();
    assert!(
        matches!(err, RunError::LogLimit(n) if n == 64 << 10),
        "{err}"
    );
    assert_next_run_works();
}

#[test]
fn huge_params_are_refused_before_running() {
    let params = "x".repeat(Limits::default().max_params_bytes + 1);
    let err = run(ECHO, &params, &Limits::default()).unwrap_err();
    assert!(matches!(err, RunError::ParamsTooLarge { .. }), "{err}");
    assert_next_run_works();
}

#[test]
fn copy_table() {
    // In run-local nothing is withheld: the owners' rules apply in the clean room.
    let out = run(COPY_TABLE, "", &Limits::default()).unwrap();
    assert_eq!(out.outputs.tables[0].name, "copy-data");
    assert_eq!(out.outputs.tables[0].num_rows(), 1000);
}

#[test]
fn sleep_forever() {
    let limits = Limits {
        timeout: Duration::from_millis(300),
        ..tight_limits()
    };
    let module = load(SLEEP_FOREVER);
    let start = Instant::now();
    let err = run_loaded(&module, "", &limits).unwrap_err();
    assert!(matches!(err, RunError::Timeout(_)), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "a WASI sleep outlived the run's deadline"
    );
    // And a cancel reaches a sleeping guest too, long before its deadline.
    let module = runtime().load(&program(SLEEP_FOREVER)).unwrap();
    let token = CancelToken::new();
    let canceller = token.clone();
    let handle = std::thread::spawn(move || {
        runtime().run(&module, grants(&[]), "", &Limits::default(), Some(&token))
    });
    std::thread::sleep(Duration::from_millis(100));
    canceller.cancel();
    let err = handle.join().unwrap().unwrap_err();
    assert!(matches!(err, RunError::Cancelled), "{err}");
    assert_next_run_works();
}

#[test]
fn hoard_handles() {
    let module = runtime().load(&program(HOARD_HANDLES)).unwrap();
    // 4,000 one-row batches: the hoard passes the live-handle limit in the first pass.
    let err = runtime()
        .run(
            &module,
            grants(&[("data", f64_table(4000, 1))]),
            "",
            &tight_limits(),
            None,
        )
        .unwrap_err();
    assert!(
        matches!(err, RunError::ResourceLimit { limit, .. } if limit == u64::from(Limits::default().max_live_batches)),
        "{err}"
    );
    assert_next_run_works();
}

#[test]
fn rewind_loop() {
    let err = run(REWIND_LOOP, "", &tight_limits()).unwrap_err();
    assert!(
        matches!(err, RunError::ResourceLimit { what: "rewinds", limit } if limit == u64::from(Limits::default().max_rewinds)),
        "{err}"
    );
    assert_next_run_works();
}

#[test]
fn json_bomb() {
    // 65 MiB of nesting against the default 64 MiB budget: refused by size, unparsed.
    let err = run(JSON_BOMB, "65", &Limits::default()).unwrap_err();
    assert!(matches!(err, RunError::OutputLimit(_)), "{err}");
    assert_next_run_works();
}

#[test]
fn row_count_lie() {
    for shape in ["columns", "null"] {
        let err = run(ROW_COUNT_LIE, shape, &tight_limits()).unwrap_err();
        let RunError::Failed(message) = &err else {
            panic!("expected the publish to be refused, got {err}")
        };
        assert!(message.contains("2147483648 rows"), "{shape}: {message}");
    }
    assert_next_run_works();
}

#[test]
fn error_leak() {
    // The runtime hands the text back typed; the policy layer decides who sees it
    // (tests/all/egress.rs and server.rs check that nobody else does).
    let err = run(ERROR_LEAK, "", &tight_limits()).unwrap_err();
    assert!(
        err.module_text().is_some_and(|t| t.starts_with("KeyError")),
        "{err}"
    );
}

#[test]
fn file_with_identifiers() {
    let out = run(FILE_WITH_IDENTIFIERS, "", &tight_limits()).unwrap();
    assert_eq!(out.outputs.files[0].0, "notes.csv");
}

#[test]
fn renamed_identifier_column() {
    let err = run(RENAMED_IDENTIFIER_COLUMN, "", &tight_limits()).unwrap_err();
    assert!(err.to_string().contains("st_marys"), "{err}");
}

#[test]
fn publish_params() {
    // Numbers and key order survive byte for byte (a float that does not round-trip
    // through f64 formatting, and keys out of order).
    let text = r#"{"z":0.9495842121635739,"a":123456789012345678901234567890,"m":[1,2]}"#;
    let out = run(PUBLISH_PARAMS, text, &tight_limits()).unwrap();
    assert_eq!(out.outputs.json[0].1, text);
}

/// `n` people with three rows each: `patient_id`, `sex` (F/M alternating by person), `age`.
fn patients(n: usize) -> cleanroom_runtime::MemTable {
    use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray};
    let rows: Vec<usize> = (0..n).flat_map(|p| [p, p, p]).collect();
    let cols: Vec<ArrayRef> = vec![
        std::sync::Arc::new(StringArray::from_iter_values(
            rows.iter().map(|p| format!("P{p}")),
        )),
        std::sync::Arc::new(StringArray::from_iter_values(
            rows.iter().map(|p| if p % 2 == 0 { "F" } else { "M" }),
        )),
        std::sync::Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|p| 20.0 + (p % 60) as f64),
        )),
    ];
    let batch =
        RecordBatch::try_from_iter(["patient_id", "sex", "age"].into_iter().zip(cols)).unwrap();
    cleanroom_runtime::MemTable::new(batch.schema(), vec![batch])
}

fn private_terms(epsilon: f64) -> cleanroom_runtime::Aggregation {
    let dp: cleanroom_proto::dp::DpRequirement = serde_json::from_value(serde_json::json!({
        "unit_column": "patient_id", "epsilon": 10.0, "max_epsilon_per_run": 10.0,
        "columns": {"sex": {"categories": ["F", "M", "X"]}, "age": {"numeric": {"lower": 0.0, "upper": 100.0}}}
    }))
    .unwrap();
    cleanroom_runtime::Aggregation {
        tables: [(
            "data".to_string(),
            cleanroom_runtime::TableTerms {
                unit_column: Some("patient_id".into()),
                mode: cleanroom_runtime::TableMode::Private(dp),
            },
        )]
        .into(),
        epsilon: cleanroom_proto::dp::Epsilon::from_f64(epsilon).unwrap(),
    }
}

/// The host computes the aggregate; under DP it adds noise, every declared group is there
/// (including the empty one), people count once although they have three rows, a second
/// aggregate beyond the run's ε is refused, and the guest's clock stood still meanwhile.
#[test]
fn aggregate_stats() {
    let module = load(AGGREGATE_STATS);
    let run = |params: &str, terms| {
        runtime().run_with(
            &module,
            grants(&[("data", patients(30_000))]),
            params,
            &Limits::default(),
            None,
            terms,
        )
    };
    let out = run(r#"{"epsilon": 1.0}"#, private_terms(1.0)).unwrap();
    let agg = &out.outputs.aggregates[0];
    assert_eq!(agg.name, "by_group");
    assert_eq!(agg.codes, vec![cleanroom_proto::Code::DpNoised]);
    assert_eq!(agg.batch.num_rows(), 3, "F, M and the empty X");
    let counts = agg.batch.column_by_name("count").unwrap();
    let counts = arrow_array::cast::AsArray::as_primitive::<arrow_array::types::Int64Type>(counts);
    for (i, c) in counts.values().iter().enumerate().take(2) {
        assert!(
            (*c - 15_000).abs() < 100,
            "group {i}: {c} is about 15,000 people, not 45,000 rows"
        );
    }
    // The host's work on 90,000 rows is most of the run; the guest's stopwatch around it sees
    // only its own few microseconds of marshalling, which do not depend on the rows.
    let seen = json(&out, 0).as_u64().unwrap();
    let run_ns = out.stats.elapsed.as_nanos() as u64;
    assert!(
        seen * 4 < run_ns,
        "the guest timed the aggregate at {seen} ns of a {run_ns} ns run: its clock ran"
    );

    let err = run(r#"{"epsilon": 0.6, "again": 0.6}"#, private_terms(1.0)).unwrap_err();
    assert!(
        matches!(&err, RunError::Failed(m) if m.contains("ε = 0.4 left")),
        "{err:?}"
    );
    // Without DP terms the same request is disclosure-controlled: exact, people counted once.
    let out = run("{}", cleanroom_runtime::Aggregation::default()).unwrap();
    assert!(
        out.outputs.aggregates[0]
            .codes
            .contains(&cleanroom_proto::Code::HostAggregated)
    );
}

/// A table whose rows only the host may read cannot be opened by the guest at all.
#[test]
fn dp_peek() {
    let err = runtime()
        .run_with(
            &load(DP_PEEK),
            grants(&[("data", patients(10))]),
            "",
            &Limits::default(),
            None,
            private_terms(1.0),
        )
        .unwrap_err();
    assert!(
        matches!(&err, RunError::Failed(m) if m.contains("requires differential privacy")),
        "{err:?}"
    );
    assert_next_run_works();
}

/// Sample and aggregate: every block runs in its own instance on its own people; the blocks
/// are disjoint and together cover everyone, and no block sees the whole table.
/// `module` under sample and aggregate: `blocks` blocks of `people` patients by `key`,
/// each publishing a `dimensions`-number `estimate`.
fn blocks_of(
    module: &cleanroom_runtime::Module,
    people: usize,
    blocks: u32,
    key: u8,
    dimensions: usize,
    params: &str,
) -> Vec<Option<Vec<f64>>> {
    let plan = cleanroom_runtime::blocks::BlockPlan {
        blocks,
        key: [key; 32],
        units: [("data".to_string(), "patient_id".to_string())].into(),
        output: "estimate".into(),
        dimensions,
    };
    runtime()
        .run_blocks(
            module,
            &grants(&[("data", patients(people))]),
            params,
            &Limits::default(),
            None,
            &plan,
        )
        .unwrap()
}

#[test]
fn block_estimate() {
    let module = load(BLOCK_ESTIMATE);
    let blocks = blocks_of(&module, 1000, 10, 9, 2, r#"{"column": "age"}"#);
    let rows: Vec<f64> = blocks.iter().map(|b| b.as_ref().unwrap()[0]).collect();
    assert_eq!(
        rows.iter().sum::<f64>(),
        3000.0,
        "blocks cover every row once"
    );
    assert!(
        rows.iter().all(|r| *r < 600.0 && r % 3.0 == 0.0),
        "{rows:?}: whole people, one block each"
    );
    // A different per-run key splits people differently.
    assert_ne!(
        blocks,
        blocks_of(&module, 1000, 10, 8, 2, r#"{"column": "age"}"#)
    );
}

/// The Python SDK's `cleanroom.aggregate` reaches the same host aggregation: under DP terms
/// the table cannot be read, the aggregate is noised and people count once.
#[test]
fn python_aggregate_through_the_host() {
    let module = runtime()
        .load(&python_program("py_aggregate_stats"))
        .expect("the Python guest loads");
    let out = runtime()
        .run_with(
            &module,
            grants(&[("data", patients(1000))]),
            r#"{"epsilon": 1.0}"#,
            &Limits::default(),
            None,
            private_terms(1.0),
        )
        .unwrap();
    let agg = &out.outputs.aggregates[0];
    assert_eq!(agg.codes, vec![cleanroom_proto::Code::DpNoised]);
    let names: Vec<String> = agg
        .batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["sex", "count", "mean", "q50"]);
    let counts = agg.batch.column_by_name("count").unwrap();
    let counts = arrow_array::cast::AsArray::as_primitive::<arrow_array::types::Int64Type>(counts);
    assert!((counts.value(0) - 500).abs() < 60, "{counts:?}");
}

/// numpy (built for WASI by scripts/build-numpy.sh) inside the sandbox: columns arrive as
/// numpy views of their Arrow buffers, batch by batch and whole, and numpy's arithmetic and
/// bundled LAPACK give the exact answers.
#[test]
fn python_numpy_over_arrow_buffers() {
    let module = runtime()
        .load(&python_program("py_numpy_stats"))
        .expect("the numpy guest loads");
    let out = runtime()
        .run(
            &module,
            grants(&[("data", f64_table(1000, 100))]),
            r#"{"column": "x"}"#,
            &Limits::default(),
            None,
        )
        .unwrap();
    let stats = json(&out, 0);
    assert_eq!(stats["rows"], 1000);
    assert_eq!(stats["sum"], 499_500.0);
    assert_eq!(stats["mean"], 499.5);
    // Population standard deviation of 0..999: sqrt((n² − 1) / 12).
    let std = stats["std"].as_f64().unwrap();
    assert!((std - (999_999.0f64 / 12.0).sqrt()).abs() < 1e-9, "{stats}");
    // y = 2x + 1, recovered by least squares.
    assert!(
        (stats["slope"].as_f64().unwrap() - 2.0).abs() < 1e-9,
        "{stats}"
    );
    assert!(
        (stats["intercept"].as_f64().unwrap() - 1.0).abs() < 1e-6,
        "{stats}"
    );
    assert_eq!(stats["version"], "2.4.6");
}

/// Sample and aggregate takes a one-row numeric table as a block's vector, so a SQL query
/// (the SQL engine, unchanged) can be the analysis.
#[test]
fn sql_query_under_sample_and_aggregate() {
    let engine = runtime()
        .load(&std::fs::read(sql_engine()).expect("the SQL engine is built"))
        .expect("the SQL engine loads");
    let params = serde_json::json!({
        "sql": "SELECT COUNT(*) AS n, AVG(age) AS mean_age FROM data",
        "output": "estimate"
    })
    .to_string();
    let blocks = blocks_of(&engine, 500, 5, 3, 2, &params);
    let rows: f64 = blocks
        .iter()
        .map(|b| b.as_ref().expect("a vector")[0])
        .sum();
    assert_eq!(rows, 1500.0, "{blocks:?}");
}

/// The OLS fit the sample-and-aggregate benchmark runs: exact on a line (y = x).
#[test]
fn block_regression() {
    let out = runtime()
        .run(
            &load(BLOCK_REGRESSION),
            grants(&[("data", patients(200))]),
            r#"{"x": "age", "y": "age"}"#,
            &Limits::default(),
            None,
        )
        .unwrap();
    let c: Vec<f64> = serde_json::from_str(&out.outputs.json[0].1).unwrap();
    assert!(c[0].abs() < 1e-9 && (c[1] - 1.0).abs() < 1e-12, "{c:?}");
}

/// SQL over a table that requires DP: the engine hands a grouped aggregate to the host, which
/// noises it; a query of another shape gets a clear error, and the plain SQL path cannot read
/// the table.
#[test]
fn sql_query_as_a_dp_aggregate() {
    let engine = runtime()
        .load(&std::fs::read(sql_engine()).expect("the SQL engine is built"))
        .expect("the SQL engine loads");
    let run = |params: serde_json::Value| {
        runtime().run_with(
            &engine,
            grants(&[("data", patients(1200))]),
            &params.to_string(),
            &Limits::default(),
            None,
            private_terms(1.0),
        )
    };
    let out = run(serde_json::json!({
        "sql": "SELECT sex, COUNT(*) AS n, AVG(age) FROM data WHERE age >= 30 GROUP BY sex",
        "epsilon": 1.0,
        "output": "by_sex"
    }))
    .unwrap();
    let agg = &out.outputs.aggregates[0];
    assert_eq!(agg.name, "by_sex");
    assert_eq!(agg.codes, vec![cleanroom_proto::Code::DpNoised]);
    let counts = agg.batch.column_by_name("count").unwrap();
    let counts = arrow_array::cast::AsArray::as_primitive::<arrow_array::types::Int64Type>(counts);
    // 1,200 people, 5 in 6 aged 30 or more, half of them F: 500 (not 1,500 rows).
    assert!((counts.value(0) - 500).abs() < 40, "{counts:?}");

    let err = run(serde_json::json!({
        "sql": "SELECT a.sex, COUNT(*) FROM data a JOIN data b ON a.patient_id = b.patient_id GROUP BY a.sex",
        "epsilon": 1.0
    }))
    .unwrap_err();
    assert!(
        matches!(&err, RunError::Failed(m) if m.contains("no joins")),
        "{err:?}"
    );
    let err = run(serde_json::json!({"sql": "SELECT COUNT(*) FROM data"})).unwrap_err();
    assert!(
        matches!(&err, RunError::Failed(m) if m.contains("requires differential privacy")),
        "{err:?}"
    );
}

/// Sample and aggregate with synthetic clocks: every block's wall clock starts at the same
/// instant, so a block cannot read from the clock how long the blocks before it (and so
/// their people) took. Each block here works 100 ms first; with the host's clock the tenth
/// would see its origin ≥ 900 ms after the first's.
#[test]
fn block_clock() {
    let module = load(BLOCK_CLOCK);
    let blocks = blocks_of(&module, 200, 10, 3, 1, r#"{"busy_ms": 100}"#);
    let origins: Vec<f64> = blocks.iter().map(|b| b.as_ref().unwrap()[0]).collect();
    let spread = origins.iter().cloned().fold(f64::MIN, f64::max)
        - origins.iter().cloned().fold(f64::MAX, f64::min);
    assert!(
        spread < 50.0,
        "every block's wall clock starts at the run's start: {origins:?}"
    );
}
