//! `cleanroom run-local`: the enclave's runtime and limits, on your machine.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use arrow_array::RecordBatch;
use cleanroom_policy::{Candidate, EgressInput, IdentifierCollector};
use cleanroom_proto::dp::Epsilon;
use cleanroom_proto::policy::{Policy, SignedPolicy};
use cleanroom_proto::run::{Disposition, OutputReport};
use cleanroom_runtime::limits::{
    DEFAULT_MAX_MEMORY_BYTES, DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_TIMEOUT,
};
use cleanroom_runtime::output::TableOutput;
use cleanroom_runtime::tables::Tapped;
use cleanroom_runtime::{
    Aggregation, Grants, Limits, MemTable, RunOutput, Runtime, RuntimeConfig, TableMode,
    TableSource, TableTerms,
};
use sha2::{Digest, Sha256};

use crate::{input, progress};

/// Arguments of `run-local`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The analysis component (.wasm), or an R script (.R) run by the R engine. Not needed
    /// with --sql.
    #[arg(required_unless_present = "sql")]
    module: Option<PathBuf>,
    /// Run this SQL query with the SQL engine component instead of a module;
    /// each --table is a SQL table of that name, the result is table `result`.
    #[arg(long, conflicts_with = "params")]
    sql: Option<String>,
    /// The SQL engine component (built by scripts/build-sql.sh). By default the one
    /// scripts/build-sql.sh built: under $CARGO_TARGET_DIR or ~/.cache/cleanroom-target.
    #[arg(long, env = "CLEANROOM_SQL_ENGINE")]
    engine: Option<PathBuf>,
    /// The R engine's directory (what scripts/build-r.sh prints), for .R analyses.
    #[arg(long, env = "CLEANROOM_R_ENGINE")]
    r_engine: Option<PathBuf>,
    /// A table to grant, as NAME=FILE (or FILE, named after its stem). CSV,
    /// Parquet or Arrow IPC. Repeat for several tables.
    #[arg(long = "table", short = 't', value_name = "NAME=FILE")]
    tables: Vec<String>,
    /// The run's params: JSON text, or @FILE to read them from a file.
    #[arg(long, short = 'p', default_value = "")]
    params: String,
    /// Directory for the outputs (created if missing; existing outputs of the
    /// same names are replaced).
    #[arg(long, short = 'o', default_value = "results")]
    out: PathBuf,
    /// Wall-clock limit in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_TIMEOUT.as_secs_f64())]
    timeout: f64,
    /// Memory limit in MiB.
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_MAX_MEMORY_BYTES >> 20)]
    max_memory: u64,
    /// Output limit in MiB.
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_MAX_OUTPUT_BYTES >> 20)]
    max_output: u64,
    /// Print the run summary as JSON on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// A dataset policy (JSON, signed or not) to apply as the enclave would: hidden columns
    /// are withheld from the analysis, and each output is reported as released, held for
    /// review or refused, with the codes of the rules that fired.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// With a policy that requires differential privacy: the ε this run may spend on
    /// aggregates (default: the policy's per-run maximum). The tables are then readable only
    /// through the aggregate interface, as in the enclave.
    #[arg(long, requires = "policy")]
    epsilon: Option<f64>,
}

/// The aggregation terms the enclave would give every table under `policy`: its DP terms, or
/// its disclosure rules with the first identifier column naming each row's person.
fn aggregation(policy: &Policy, epsilon: Option<f64>, tables: &Grants) -> Result<Aggregation> {
    let (mode, unit) = match &policy.dp {
        Some(dp) => (TableMode::Private(dp.clone()), Some(dp.unit_column.clone())),
        None => (
            TableMode::Disclosure(policy.output.clone()),
            policy.identifier_columns.first().cloned(),
        ),
    };
    let epsilon = match (epsilon, &policy.dp) {
        (Some(e), _) => Epsilon::from_f64(e).with_context(|| {
            format!("--epsilon {e}: a positive number with at most six decimals")
        })?,
        (None, Some(dp)) => dp.max_epsilon_per_run,
        (None, None) => Epsilon::ZERO,
    };
    let terms = TableTerms {
        unit_column: unit,
        mode,
    };
    Ok(Aggregation {
        tables: tables
            .keys()
            .map(|name| (name.clone(), terms.clone()))
            .collect(),
        epsilon,
    })
}

/// Read a policy file: a `SignedPolicy` (as `cleanroom policy show --json` prints) or a bare
/// `Policy`.
fn read_policy(path: &Path) -> Result<Policy> {
    let text =
        std::fs::read(path).with_context(|| format!("cannot read policy {}", path.display()))?;
    if let Ok(signed) = serde_json::from_slice::<SignedPolicy>(&text) {
        return Ok(signed.policy);
    }
    serde_json::from_slice::<Policy>(&text)
        .with_context(|| format!("{} is neither a signed policy nor a policy", path.display()))
}

/// A table with the policy's hidden columns projected away.
fn hide(table: MemTable, hidden: &[String]) -> Result<MemTable> {
    let schema = table.schema();
    let keep: Vec<usize> = (0..schema.fields().len())
        .filter(|i| {
            !hidden
                .iter()
                .any(|h| h.eq_ignore_ascii_case(schema.field(*i).name()))
        })
        .collect();
    let batches = table
        .batches()
        .map(|b| {
            b.map_err(|e| anyhow!(e))
                .and_then(|b| b.project(&keep).map_err(Into::into))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(MemTable::new(Arc::new(schema.project(&keep)?), batches))
}

/// Where scripts/build-sql.sh leaves the engine.
fn engine_candidates() -> Vec<PathBuf> {
    if let Some(engine) = std::env::var_os("CLEANROOM_SQL_ENGINE") {
        return vec![PathBuf::from(engine)];
    }
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        dirs.push(PathBuf::from(dir));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cache/cleanroom-target"));
    }
    dirs.into_iter()
        .map(|d| d.join("sql-engine").join("cleanroom_sql.wasm"))
        .collect()
}

pub(crate) fn find_engine() -> Result<PathBuf> {
    let candidates = engine_candidates();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            anyhow!(
                "--sql needs the SQL engine component, and it is not in {}: build it with \
             scripts/build-sql.sh (in the cleanroom repository), or pass --engine PATH",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            )
        })
}

pub(crate) fn run(args: Args) -> Result<()> {
    let limits = limits(&args)?;
    let (module_path, params) = match (&args.sql, &args.module) {
        (Some(sql), _) => {
            let engine = match args.engine.clone() {
                Some(engine) => engine,
                None => find_engine()?,
            };
            (engine, sql_params(sql))
        }
        (None, Some(module)) => {
            let params = match args.params.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read params from {path}"))?,
                None => args.params.clone(),
            };
            (module.clone(), params)
        }
        (None, None) => bail!("give an analysis component, or --sql QUERY"),
    };
    if !params.trim().is_empty() {
        serde_json::from_str::<serde_json::Value>(&params)
            .context("--params is not valid JSON (pass JSON text, or @FILE)")?;
    }

    let policy = args.policy.as_deref().map(read_policy).transpose()?;
    let collector = Arc::new(IdentifierCollector::new());
    let mut grants = Grants::new();
    for spec in &args.tables {
        let (name, path) = table_spec(spec)?;
        if grants.contains_key(&name) {
            bail!("table {name:?} is given twice");
        }
        let mut table = input::read_table(&path)?;
        let source: Arc<dyn TableSource> = match &policy {
            Some(p) => {
                table = hide(table, &p.hidden_columns)?;
                Arc::new(Tapped::new(
                    Arc::new(table),
                    p.identifier_columns.clone(),
                    collector.clone(),
                ))
            }
            None => Arc::new(table),
        };
        grants.insert(name, source);
    }

    let is_r = module_path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("r"));
    let (module_id, params, result) = if is_r {
        // An R script: the params are the script, the module is the R engine.
        if !params.is_empty() {
            bail!("an R analysis takes no --params: the script is what owners approve");
        }
        let script = std::fs::read_to_string(&module_path)
            .with_context(|| format!("cannot read {}", module_path.display()))?;
        let dir = args.r_engine.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "an R analysis needs the R engine: build it with scripts/build-r.sh (in the \
                 cleanroom repository) and pass the directory it prints as --r-engine DIR or \
                 CLEANROOM_R_ENGINE"
            )
        })?;
        if policy.as_ref().is_some_and(|p| p.dp.is_some()) {
            bail!("R analyses cannot run on a table that requires differential privacy yet");
        }
        let bar = progress::spinner("compiling the R engine".to_string());
        let engine = cleanroom_r::REngine::load(&dir)?;
        bar.set_message(format!("running {}", module_path.display()));
        let result = engine.run(&grants, &script, &limits, None);
        bar.finish_and_clear();
        (engine.id().to_string(), script, result)
    } else {
        let bytes = std::fs::read(&module_path)
            .with_context(|| format!("cannot read {}", module_path.display()))?;
        let bar = progress::spinner(format!("compiling {}", module_path.display()));
        let runtime = local_runtime(&limits)?;
        let module = load_cached(&runtime, &bytes)
            .with_context(|| format!("cannot load {}", module_path.display()))?;
        bar.set_message(format!("running {}", module_path.display()));
        let aggregation = match &policy {
            Some(p) => aggregation(p, args.epsilon, &grants)?,
            None => Aggregation::default(),
        };
        let result = runtime.run_with(&module, grants, &params, &limits, None, aggregation);
        bar.finish_and_clear();
        (module.id(), params, result)
    };
    let output = match (result, &policy) {
        (Ok(output), _) => output,
        (Err(e), None) => bail!("run failed ({}): {e}", e.kind()),
        (Err(e), Some(policy)) => {
            // What the parties would see, and what would happen to the error text.
            let reports = egress(policy, &collector, e.error_output(), true);
            write_decisions(&args.out, &reports)?;
            eprintln!("{}", describe(&reports, &args.out));
            bail!("run failed ({}): {e}", e.kind());
        }
    };

    let written = write_outputs(&args.out, &output)?;
    let decisions = match &policy {
        Some(policy) => {
            let reports = egress(policy, &collector, output.clone_candidates(), false);
            write_decisions(&args.out, &reports)?;
            Some(reports)
        }
        None => None,
    };
    let summary = serde_json::json!({
        "module": module_id,
        "params_sha256": hex::encode(Sha256::digest(params.as_bytes())),
        "elapsed_ms": output.stats.elapsed.as_secs_f64() * 1e3,
        "bytes_read": output.stats.bytes_read,
        "bytes_published": output.stats.bytes_published,
        "outputs": written,
        "log_lines": output.logs.len(),
        "policy": decisions,
    });
    std::fs::write(
        args.out.join("run.json"),
        serde_json::to_vec_pretty(&summary)?,
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&args.out, &module_id, &output);
        if let Some(reports) = &decisions {
            println!("{}", describe(reports, &args.out));
        }
    }
    Ok(())
}

/// Write what the policy decision point decided to `policy.json` in `out`.
fn write_decisions(out: &Path, reports: &[(String, OutputReport)]) -> Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("policy.json"), serde_json::to_vec_pretty(reports)?)?;
    Ok(())
}

/// What the policy decision point would decide for these outputs (`failed`: the error text and
/// log of a failed run, which the enclave decides with `decide_failed`: nothing of a failed
/// run is reviewed). The same functions as in the enclave, not a copy of them.
fn egress(
    policy: &Policy,
    collector: &IdentifierCollector,
    outputs: Vec<Candidate>,
    failed: bool,
) -> Vec<(String, OutputReport)> {
    let identifier_columns: BTreeSet<String> = policy
        .identifier_columns
        .iter()
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let identifiers = collector.build();
    let names: Vec<String> = outputs.iter().map(|c| c.name.clone()).collect();
    let input = EgressInput {
        outputs,
        rules: &policy.output,
        identifier_columns: &identifier_columns,
        identifiers: &identifiers,
        reviewed: policy.output.review_required,
    };
    let decided = if failed {
        cleanroom_policy::decide_failed(input)
    } else {
        cleanroom_policy::decide(input)
    };
    decided
        .into_iter()
        .zip(names)
        .map(|(d, name)| (name, d.report))
        .collect()
}

fn describe(reports: &[(String, OutputReport)], dir: &Path) -> String {
    let mut out = String::from("under the policy, in the enclave:\n");
    for (name, r) in reports {
        let verdict = match r.disposition {
            Disposition::Release => "released",
            Disposition::Hold => "held for review",
            Disposition::Refuse => "REFUSED",
        };
        let codes: Vec<String> = r.codes.iter().map(ToString::to_string).collect();
        out.push_str(&format!(
            "  {:<6} {:<24} {verdict}{}\n",
            format!("{:?}", r.kind).to_lowercase(),
            name,
            if codes.is_empty() {
                String::new()
            } else {
                format!(" ({})", codes.join(", "))
            }
        ));
    }
    out.push_str(&format!(
        "(decisions in {})",
        dir.join("policy.json").display()
    ));
    out
}

/// The user's cache directory for cleanroom (`$XDG_CACHE_HOME/cleanroom` or `~/.cache/cleanroom`).
fn user_cache() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("cleanroom"))
}

/// The sandbox on the researcher's machine: one run at a time, and Cranelift's incremental
/// cache in the user's cache directory, so a rebuilt analysis recompiles only the functions
/// that changed (a Python analysis is mostly the same CPython every time).
pub(crate) fn local_runtime(limits: &Limits) -> Result<Runtime> {
    Ok(Runtime::new(RuntimeConfig {
        max_memory_bytes: limits.max_memory_bytes,
        max_concurrent_runs: 1,
        compile_cache: user_cache().map(|d| d.join("functions")),
        perf_map: false,
    })?)
}

/// Compile `bytes`, reusing native code cached under the user's cache
/// directory (keyed by the component's SHA-256 and the engine's
/// compatibility key). This is the researcher's own machine; the enclave
/// instead seals its artifacts.
pub(crate) fn load_cached(
    runtime: &Runtime,
    bytes: &[u8],
) -> Result<Arc<cleanroom_runtime::Module>> {
    let digest: [u8; 32] = Sha256::digest(bytes).into();
    let dir = user_cache().map(|d| d.join("compiled"));
    let path = dir.as_ref().map(|d| {
        d.join(format!(
            "{}-{}.cwasm",
            hex::encode(digest),
            runtime.compatibility_key()
        ))
    });
    if let Some(path) = &path
        && let Ok(native) = std::fs::read(path)
    {
        // SAFETY: written below by `serialize` on an engine with the same
        // compatibility key, in the user's own cache directory.
        if let Ok(module) = unsafe { runtime.load_precompiled(digest, &native) } {
            return Ok(module);
        }
    }
    let module = runtime.load(bytes)?;
    if let (Some(dir), Some(path)) = (&dir, &path)
        && let Ok(native) = module.serialize()
        && std::fs::create_dir_all(dir).is_ok()
    {
        let tmp = path.with_extension("tmp");
        if std::fs::write(&tmp, native).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }
    Ok(module)
}

/// The params of a SQL run: what owners pin when they approve a query.
pub(crate) fn sql_params(sql: &str) -> String {
    cleanroom_proto::run::SqlParams::canonical(sql)
}

fn limits(args: &Args) -> Result<Limits> {
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        bail!("--timeout must be a positive number of seconds");
    }
    if args.max_memory == 0 || args.max_memory > 4096 {
        bail!("--max-memory must be between 1 and 4096 MiB (wasm32 addresses at most 4 GiB)");
    }
    Ok(Limits {
        timeout: Duration::from_secs_f64(args.timeout),
        max_memory_bytes: args.max_memory << 20,
        max_output_bytes: args.max_output << 20,
        ..Limits::default()
    })
}

/// `NAME=FILE` or `FILE`.
pub(crate) fn table_spec(spec: &str) -> Result<(String, PathBuf)> {
    let (name, path) = match spec.split_once('=') {
        Some((name, path)) => (name.to_string(), PathBuf::from(path)),
        None => {
            let path = PathBuf::from(spec);
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .ok_or_else(|| anyhow!("cannot name table {spec:?}; use NAME=FILE"))?;
            (stem.to_string(), path)
        }
    };
    if name.is_empty() {
        bail!("table name in {spec:?} is empty; use NAME=FILE");
    }
    if !path.exists() {
        bail!("table file {} does not exist", path.display());
    }
    Ok((name, path))
}

/// Write every output into `dir`: tables as Arrow IPC files plus CSV and Parquet copies,
/// JSON values as `.json`, files under `files/`, and the log.
fn write_outputs(dir: &Path, output: &RunOutput) -> Result<BTreeMap<String, String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = BTreeMap::new();
    for table in &output.outputs.tables {
        let arrow = dir.join(format!("{}.arrow", table.name));
        write_ipc_file(&arrow, table)?;
        crate::tables::write_copies(dir, &table.name, &table.schema, &table.batches)?;
        written.insert(
            table.name.clone(),
            format!("table, {} rows", table.num_rows()),
        );
    }
    for a in &output.outputs.aggregates {
        let schema = a.batch.schema();
        crate::tables::write_copies(dir, &a.name, &schema, std::slice::from_ref(&a.batch))?;
        written.insert(
            a.name.clone(),
            format!("aggregate, {} rows", a.batch.num_rows()),
        );
    }
    for (name, text) in &output.outputs.json {
        std::fs::write(dir.join(format!("{name}.json")), text)?;
        written.insert(name.clone(), "json".into());
    }
    if !output.outputs.files.is_empty() {
        std::fs::create_dir_all(dir.join("files"))?;
    }
    for (name, contents) in &output.outputs.files {
        // Names were validated by the host: no separators, no leading dot.
        std::fs::write(dir.join("files").join(name), contents)?;
        written.insert(name.clone(), format!("file, {} bytes", contents.len()));
    }
    let log: String = output
        .logs
        .iter()
        .map(|l| {
            format!(
                "[{}] {}\n",
                serde_json::to_value(l.source)
                    .unwrap_or_default()
                    .as_str()
                    .unwrap_or("?"),
                l.message
            )
        })
        .collect();
    std::fs::write(dir.join("log.txt"), log)?;
    Ok(written)
}

fn write_ipc_file(path: &Path, table: &TableOutput) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut writer = arrow_ipc::writer::FileWriter::try_new(file, &table.schema)?;
    for batch in &table.batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    Ok(())
}

fn print_summary(dir: &Path, module_id: &str, output: &RunOutput) {
    let stats = &output.stats;
    println!(
        "run succeeded in {:.1} ms (module {}…, {} read, {} published)",
        stats.elapsed.as_secs_f64() * 1e3,
        &module_id[..12],
        human(stats.bytes_read),
        human(stats.bytes_published),
    );
    for a in &output.outputs.aggregates {
        println!(
            "  aggregate {:<21} {} groups (computed by the host)",
            a.name,
            a.batch.num_rows()
        );
        if let Ok(text) = arrow_cast::pretty::pretty_format_batches(std::slice::from_ref(&a.batch))
        {
            for line in text.to_string().lines() {
                println!("         {line}");
            }
        }
    }
    for table in &output.outputs.tables {
        println!(
            "  table  {:<24} {} rows × {} columns",
            table.name,
            table.num_rows(),
            table.schema.fields().len()
        );
        let preview: Vec<RecordBatch> = table
            .batches
            .iter()
            .take(1)
            .map(|b| b.slice(0, b.num_rows().min(10)))
            .collect();
        if let Ok(text) = arrow_cast::pretty::pretty_format_batches(&preview) {
            for line in text.to_string().lines() {
                println!("         {line}");
            }
        }
    }
    for (name, text) in &output.outputs.json {
        let short: String = text.chars().take(100).collect();
        println!(
            "  json   {:<24} {short}{}",
            name,
            if text.len() > short.len() { "…" } else { "" }
        );
    }
    for (name, contents) in &output.outputs.files {
        println!("  file   {:<24} {} bytes", name, contents.len());
    }
    if !output.logs.is_empty() {
        println!("  log    {} lines (log.txt)", output.logs.len());
    }
    println!("outputs written to {}", dir.display());
}

fn human(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}
