//! R analyses: GNU R (webR's build) in the sandbox — tables in as data frames with the types R
//! users expect, outputs out through the same checks, the same numbers as native R, and
//! hostile scripts contained.

use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use arrow_array::types::Int32Type;
use arrow_array::{
    Array, ArrayRef, BooleanArray, Date32Array, DictionaryArray, Float64Array, Int64Array,
    RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use cleanroom_r::REngine;
use cleanroom_runtime::{Grants, Limits, MemTable, RunError, RunOutput};

/// The R engine built by `scripts/build-r.sh`, from `CLEANROOM_R_ENGINE` (set by
/// `scripts/test.sh`), compiled once for all tests.
static ENGINE: LazyLock<REngine> =
    LazyLock::new(|| {
        let dir = std::env::var_os("CLEANROOM_R_ENGINE").map(PathBuf::from).expect(
        "CLEANROOM_R_ENGINE is not set: run scripts/build-r.sh (scripts/test.sh does) and set \
         it to the directory it prints",
    );
        REngine::load(&dir).expect("the R engine loads")
    });

fn run(grants: &Grants, script: &str, limits: &Limits) -> Result<RunOutput, RunError> {
    ENGINE.run(grants, script, limits, None)
}

fn table(name: &str, batch: RecordBatch) -> Grants {
    let mut grants = Grants::new();
    grants.insert(
        name.into(),
        Arc::new(MemTable::new(batch.schema(), vec![batch])),
    );
    grants
}

fn json(out: &RunOutput, name: &str) -> serde_json::Value {
    let (_, text) = out
        .outputs
        .json
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no JSON output {name}"));
    serde_json::from_str(text).unwrap()
}

/// One table with every kind of column R users meet, nulls included.
fn typed_table() -> RecordBatch {
    let dict: DictionaryArray<Int32Type> = vec![Some("J18"), Some("I21"), None, Some("J18")]
        .into_iter()
        .collect();
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "count",
            Arc::new(Int64Array::from(vec![Some(1), None, Some(3), Some(4)])),
        ),
        (
            "big",
            Arc::new(Int64Array::from(vec![1, 2, 3, 5_000_000_000])),
        ),
        (
            "x",
            Arc::new(Float64Array::from(vec![
                Some(0.5),
                Some(-1.25),
                None,
                Some(1e300),
            ])),
        ),
        (
            "name",
            Arc::new(StringArray::from(vec![
                Some("Ann"),
                Some("Bö"),
                Some(""),
                None,
            ])),
        ),
        ("code", Arc::new(dict)),
        (
            "died",
            Arc::new(BooleanArray::from(vec![
                Some(true),
                Some(false),
                None,
                Some(true),
            ])),
        ),
        (
            "admitted",
            Arc::new(Date32Array::from(vec![
                Some(19723),
                None,
                Some(0),
                Some(-1),
            ])),
        ),
        (
            "seen",
            Arc::new(
                TimestampMicrosecondArray::from(vec![
                    Some(1_700_000_000_250_000),
                    None,
                    Some(0),
                    Some(1),
                ])
                .with_timezone("UTC"),
            ),
        ),
    ];
    let fields: Vec<Field> = columns
        .iter()
        .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
        .collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap()
}

#[test]
fn r_sees_tables_as_data_frames_and_publishes_typed_outputs() {
    let script = r#"
        t <- cleanroom::table("t")
        stopifnot(identical(cleanroom::tables(), "t"), is.data.frame(t), nrow(t) == 4L)
        classes <- vapply(t, function(col) class(col)[1], "")
        cleanroom::publish_json("classes", as.list(classes))
        cleanroom::publish_json("na", lapply(t, function(col) which(is.na(col))))
        stopifnot(identical(levels(t$code), c("I21", "J18")), t$name[2] == "Bö",
                  format(t$admitted[1]) == "2024-01-01", format(t$seen[1], "%Y-%m-%d %H:%M:%OS3") == "2023-11-14 22:13:20.250")
        cleanroom::publish_table("back", t)
        cleanroom::publish_file("note.txt", c("one", "two"))
        cleanroom::log("rows: ", nrow(t))
    "#;
    let out = run(&table("t", typed_table()), script, &Limits::default()).unwrap();
    assert_eq!(
        json(&out, "classes"),
        serde_json::json!({"count": "integer", "big": "numeric", "x": "numeric", "name": "character",
            "code": "factor", "died": "logical", "admitted": "Date", "seen": "POSIXct"})
    );
    assert_eq!(
        json(&out, "na"),
        serde_json::json!({"count": 2, "big": [], "x": 3, "name": 4, "code": 3, "died": 3,
            "admitted": 2, "seen": 2})
    );
    let back = &out.outputs.tables[0];
    let types: Vec<DataType> = back
        .schema
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    assert_eq!(
        types,
        [
            DataType::Int32,
            DataType::Float64,
            DataType::Float64,
            DataType::Utf8,
            DataType::Utf8,
            DataType::Boolean,
            DataType::Date32,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        ]
    );
    let b = &back.batches[0];
    assert_eq!(b.column(0).null_count(), 1);
    let big = b.column(1).as_any().downcast_ref::<Float64Array>().unwrap();
    assert_eq!(big.value(3), 5e9);
    let name = b.column(3).as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(
        (name.value(1), name.value(2), name.is_null(3)),
        ("Bö", "", true)
    );
    let seen = b
        .column(7)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .unwrap();
    assert_eq!(seen.value(0), 1_700_000_000_250_000);
    assert_eq!(
        out.outputs.files,
        [("note.txt".to_string(), b"one\ntwo".to_vec())]
    );
    assert!(
        out.logs.iter().any(|l| l.message == "rows: 4"),
        "{:?}",
        out.logs
    );
}

/// The same script on the same CSV, inside the sandbox and in native R (Debian's
/// `r-base-core`): the logistic regression's coefficients agree to 1e-10.
#[test]
fn r_gives_the_numbers_native_r_gives() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("admissions.csv");
    let mut text = String::from("age,sex,diagnosis,died\n");
    for i in 0..400u32 {
        let age = 20 + (i * 37 % 70);
        let sex = if i % 3 == 0 { "F" } else { "M" };
        let dx = ["I21", "J18", "I50"][(i % 7 % 3) as usize];
        let died = u32::from((age + i % 11) % 9 == 0 || (dx == "I50" && i % 5 == 0));
        text.push_str(&format!("{age},{sex},{dx},{died}\n"));
    }
    std::fs::write(&csv, &text).unwrap();
    let analysis = r#"
        d <- cleanroom::table("admissions")
        fit <- glm(died ~ age + sex + diagnosis, family = binomial, data = d)
        lin <- lm(age ~ sex + diagnosis, data = d)
        cat(sprintf("%s %.17g\n", c(names(coef(fit)), names(coef(lin))), c(coef(fit), coef(lin))), sep = "")
    "#;
    // Inside: the CSV as the CLI reads it, through the cleanroom API.
    let schema = Arc::new(Schema::new(vec![
        Field::new("age", DataType::Int64, true),
        Field::new("sex", DataType::Utf8, true),
        Field::new("diagnosis", DataType::Utf8, true),
        Field::new("died", DataType::Int64, true),
    ]));
    let reader = arrow_csv::ReaderBuilder::new(schema.clone())
        .with_header(true)
        .build(std::fs::File::open(&csv).unwrap())
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    let mut grants = Grants::new();
    grants.insert(
        "admissions".into(),
        Arc::new(MemTable::new(schema, batches)),
    );
    let out = run(&grants, analysis, &Limits::default()).unwrap();
    let inside: Vec<String> = out.logs.iter().map(|l| l.message.clone()).collect();
    // Natively: the same API defined by the same prelude, the table read by read.csv.
    let native_script = dir.path().join("native.R");
    std::fs::write(
        &native_script,
        format!(
            "{}\ncleanroom:::.adopt(\"admissions\", as.list(read.csv({:?}, stringsAsFactors = FALSE)), rep(\"\", 4))\n{analysis}",
            include_str!("../../guest-sdk/r/cleanroom.R"),
            csv.display().to_string()
        ),
    )
    .unwrap();
    let native = std::process::Command::new("Rscript")
        .arg("--vanilla")
        .arg(&native_script)
        .output()
        .expect("native R (Debian's r-base-core; scripts/test.sh installs it)");
    assert!(
        native.status.success(),
        "{}",
        String::from_utf8_lossy(&native.stderr)
    );
    let native: Vec<String> = String::from_utf8(native.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(inside.len(), 9, "{inside:?}");
    assert_eq!(inside.len(), native.len(), "{inside:?} vs {native:?}");
    for (a, b) in inside.iter().zip(&native) {
        let (na, va) = a.split_once(' ').unwrap();
        let (nb, vb) = b.split_once(' ').unwrap();
        assert_eq!(na, nb);
        let (va, vb): (f64, f64) = (va.parse().unwrap(), vb.parse().unwrap());
        assert!(
            (va - vb).abs() <= 1e-10 * vb.abs().max(1.0),
            "{na}: {va} inside vs {vb} native"
        );
    }
}

/// Hostile R: each attempt is contained (a typed error or an R error), and R runs normally
/// again right after.
#[test]
fn hostile_r_is_contained() {
    // A small memory limit for every case; a short time limit only where the script loops
    // (the others must finish on a busy machine however slow R's start-up is there).
    let quick = Limits {
        max_memory_bytes: 256 << 20,
        ..Limits::default()
    };
    let looping = Limits {
        timeout: Duration::from_secs(5),
        ..quick.clone()
    };
    let none = Grants::new();
    let cases: [(&str, &str); 8] = [
        ("repeat {}", "timeout"),
        ("x <- numeric(1e9)", "cannot allocate"),
        ("f <- function(n) f(n + 1); f(1)", "nested too deeply|stack"),
        ("system('cat /etc/passwd', intern = TRUE)", "error|Error"),
        ("readLines(file('/etc/passwd'))", "cannot open"),
        (
            "readLines(url('http://example.com'))",
            "sandbox does not provide|cannot open|error|Error",
        ),
        ("writeLines('x', '/usr/lib/R/etc/Renviron')", "cannot open"),
        // Native code the script wrote is never linked (only the engine's own libraries).
        (
            "writeBin(as.raw(c(0, 0x61, 0x73, 0x6d, 1, 0, 0, 0)), '/tmp/x.so'); dyn.load('/tmp/x.so')",
            "unable to load",
        ),
    ];
    for (script, expected) in cases {
        let limits = if script.starts_with("repeat") {
            &looping
        } else {
            &quick
        };
        let err = run(&none, script, limits).expect_err(script);
        let text = err.to_string();
        assert!(
            expected.split('|').any(|e| text.contains(e)),
            "{script}: {text}"
        );
        if script.starts_with("repeat") {
            assert!(matches!(err, RunError::Timeout(_)), "{err:?}");
        }
        // The next run is unaffected.
        let ok = run(&none, "cleanroom::publish_json('ok', 1 + 1)", &quick).unwrap();
        assert_eq!(ok.outputs.json[0].1, "2");
    }
    // The environment is the sandbox's, not the host's.
    let env = run(
        &none,
        "cleanroom::publish_json('env', as.list(Sys.getenv()))",
        &quick,
    )
    .unwrap();
    let env = json(&env, "env");
    assert_eq!(env["HOME"], "/home/cleanroom");
    assert!(env.get("CLEANROOM_R_ENGINE").is_none(), "{env}");
    // Outputs are checked like every guest's.
    let twice = run(
        &none,
        "cleanroom::publish_json('a', 1); cleanroom::publish_json('a', 2)",
        &quick,
    )
    .expect_err("a name published twice");
    assert!(twice.to_string().contains("twice"), "{twice}");
    let bad = run(&none, "cleanroom::publish_json('../x', 1)", &quick).expect_err("a bad name");
    assert!(matches!(bad, RunError::Failed(_)), "{bad:?}");
    // A data frame that is small inside R and huge outside: 100,000 references to one 1 MB
    // string would be 100 GB once copied out. The output budget stops it while the table is
    // built, before the host holds more than the budget; the host lives on.
    let bomb = run(
        &none,
        "x <- rep(strrep('a', 1e6), 1e5); cleanroom::publish_table('big', data.frame(x = x))",
        &quick,
    )
    .expect_err("a 100 GB table");
    assert!(matches!(bomb, RunError::OutputLimit(_)), "{bomb:?}");
    let ok = run(&none, "cleanroom::publish_json('ok', 1 + 1)", &quick).unwrap();
    assert_eq!(ok.outputs.json[0].1, "2");
}

/// An R analysis through cleanroomd: requested, granted (the R engine's id, the script
/// pinned), run, held, reviewed, released, decrypted and its receipt verified; another
/// script on the same grant is refused.
#[test]
fn an_r_analysis_runs_through_cleanroomd_end_to_end() {
    use crate::server::{TestServer, push};
    let dir = tempfile::tempdir().unwrap();
    let engine = std::env::var_os("CLEANROOM_R_ENGINE")
        .map(PathBuf::from)
        .unwrap();
    let s = TestServer::start_configured(dir, |c| c.r_engine = Some(engine));
    s.keygen("northfield");
    let researcher = s.keygen("researcher");
    let dataset = push(&s, "northfield", cleanroom_tests::SITE_A_CSV, "b.csv");
    let script = s.path("analysis.R");
    std::fs::write(
        &script,
        "d <- cleanroom::table('patients')\n\
         counts <- as.data.frame(table(sex = d$sex), stringsAsFactors = FALSE)\n\
         names(counts)[2] <- 'patients'\n\
         cleanroom::publish_table('by_sex', counts)\n",
    )
    .unwrap();
    let script = script.display().to_string();
    let input = format!("patients={dataset}");
    s.cli(
        Some("researcher"),
        &["run", "request", "--r", &script, "--input", &input],
    )
    .unwrap();
    s.cli(
        Some("northfield"),
        &[
            "policy",
            "grant",
            "--dataset",
            &dataset,
            "--r",
            &script,
            "--researcher",
            &researcher,
            "--max-runs",
            "3",
            "--review",
            "--min-group",
            "1",
        ],
    )
    .unwrap();
    let run = s
        .cli(
            Some("researcher"),
            &["run", "submit", "--r", &script, "--input", &input],
        )
        .unwrap()["run"]
        .as_str()
        .unwrap()
        .to_string();
    let watched = s.cli(Some("researcher"), &["run", "watch", &run]).unwrap();
    assert_eq!(watched["state"], "held_for_review", "{watched}");
    s.cli(
        Some("northfield"),
        &["review", "release", &run, "--reason", "counts by sex"],
    )
    .unwrap();
    let out = s.path("results");
    let fetched = s
        .cli(
            Some("researcher"),
            &["result", "fetch", &run, "--out", out.to_str().unwrap()],
        )
        .unwrap();
    assert_eq!(fetched["receipt"]["receipt"]["state"], "released");
    let csv = std::fs::read_to_string(out.join("by_sex.csv")).unwrap();
    assert!(csv.starts_with("sex,patients\n"), "{csv}");
    s.cli(
        None,
        &[
            "receipt",
            "verify",
            out.join("receipt.json").to_str().unwrap(),
        ],
    )
    .unwrap();

    // The researcher with an approved R grant tries another script: refused, it never runs.
    let other = s.path("other.R");
    std::fs::write(
        &other,
        "cleanroom::publish_table('rows', cleanroom::table('patients'))\n",
    )
    .unwrap();
    let err = format!(
        "{:#}",
        s.cli(
            Some("researcher"),
            &[
                "run",
                "submit",
                "--r",
                other.to_str().unwrap(),
                "--input",
                &input
            ],
        )
        .expect_err("another script is not granted")
    );
    assert!(err.contains("params"), "{err}");
}

/// The R twin of the cohort-statistics example gives the Rust example's numbers, and the
/// logistic-regression example releases its coefficient table.
#[test]
fn r_examples_give_the_same_numbers_as_rust() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let twin = std::fs::read_to_string(root.join("examples/cohort-stats-r/analysis.R")).unwrap();
    // The fixture's groups are small: the same suppression threshold as the Rust test.
    let twin = twin.replace("min_group <- 10L", "min_group <- 3L");
    let out = run(&crate::examples::fixture(), &twin, &Limits::default()).unwrap();
    crate::examples::assert_by_diagnosis(&out);
    let table = &out.outputs.tables[0];
    assert_eq!(
        table
            .schema
            .field_with_name("patients")
            .unwrap()
            .metadata()
            .get("cleanroom:count"),
        Some(&"true".to_string()),
        "patients is a declared count column"
    );

    let glm = std::fs::read_to_string(root.join("examples/mortality-glm-r/analysis.R")).unwrap();
    let out = run(&crate::examples::fixture(), &glm, &Limits::default()).unwrap();
    let coefficients = &out.outputs.tables[0];
    assert_eq!(coefficients.name, "coefficients");
    assert_eq!(json(&out, "model")["admissions"], 9);
}
