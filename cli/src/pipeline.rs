//! `cleanroom pipeline`: chains of analyses whose intermediate tables stay inside.
//!
//! A pipeline file (TOML) names its inputs and steps; each step is a module (a `.wasm` file
//! or a module id) with params, or a SQL query run by the SQL engine:
//!
//! ```toml
//! name = "harmonise, link, analyse"
//! inputs = ["st_marys", "northfield"]
//!
//! [[step]]
//! id = "harmonise_st_marys"
//! sql = "SELECT patient_id AS record_key, ... FROM st_marys"
//! inputs = { st_marys = "st_marys" }
//! keep = ["result"]
//!
//! [[step]]
//! id = "link"
//! wasm = "cleanroom_linkage.wasm"
//! params = '{"key": "record_key", "model": {...}}'
//! inputs = { a = "harmonise_st_marys.result", b = "harmonise_northfield.result" }
//! keep = ["links", "clusters"]
//! ```
//!
//! The file resolves to a [`Pipeline`] of module ids, whose digest owners grant.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use cleanroom_policy::{Candidate, Content};
use cleanroom_proto::api::{DerivedList, ModuleStored, PipelineStored, RunAccepted};
use cleanroom_proto::pipeline::{Pipeline, Step};
use cleanroom_proto::run::RunRequest;
use cleanroom_runtime::output::TableOutput;
use cleanroom_runtime::pipeline::{Plan, Steps, run_chain};
use cleanroom_runtime::{Grants, Limits, MemTable, RunError, Runtime, TableSource};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::remote::Conn;

/// A pipeline file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: String,
    inputs: Vec<String>,
    #[serde(rename = "step")]
    steps: Vec<FileStep>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStep {
    id: String,
    /// A component file, relative to the pipeline file.
    #[serde(default)]
    wasm: Option<PathBuf>,
    /// A module id already uploaded.
    #[serde(default)]
    module: Option<String>,
    /// A SQL query (the SQL engine runs it; its result is the output `result`).
    #[serde(default)]
    sql: Option<String>,
    #[serde(default)]
    params: Option<String>,
    inputs: BTreeMap<String, String>,
    #[serde(default)]
    keep: Vec<String>,
}

/// A resolved pipeline and where its modules' bytes are.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub(crate) pipeline: Pipeline,
    /// Module id -> component file (for modules given as files or SQL).
    pub(crate) files: BTreeMap<String, PathBuf>,
}

/// Where the SQL engine is, for SQL steps.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct EngineArg {
    /// The SQL engine component, for SQL steps (default: the one `scripts/build-sql.sh`
    /// builds).
    #[arg(long)]
    engine: Option<PathBuf>,
}

fn module_id(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Read and resolve a pipeline file.
pub(crate) fn resolve(path: &Path, engine: &EngineArg) -> Result<Resolved> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: File = toml::from_str(&text)
        .with_context(|| format!("{} is not a pipeline file", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut files = BTreeMap::new();
    let mut steps = Vec::new();
    for s in file.steps {
        let (module, params) = match (&s.wasm, &s.module, &s.sql) {
            (Some(wasm), None, None) => {
                let path = base.join(wasm);
                let id = module_id(&path)?;
                files.insert(id.clone(), path);
                (id, s.params.clone().unwrap_or_default())
            }
            (None, Some(id), None) => (id.clone(), s.params.clone().unwrap_or_default()),
            (None, None, Some(sql)) => {
                if s.params.is_some() {
                    bail!("step {:?}: a SQL step takes sql, not params", s.id);
                }
                let path = match &engine.engine {
                    Some(p) => p.clone(),
                    None => crate::run_local::find_engine()?,
                };
                let id = module_id(&path)?;
                files.insert(id.clone(), path);
                (id, crate::run_local::sql_params(sql))
            }
            _ => bail!("step {:?} needs exactly one of wasm, module or sql", s.id),
        };
        steps.push(Step {
            id: s.id,
            module,
            params,
            inputs: s.inputs,
            keep: s.keep,
        });
    }
    let pipeline = Pipeline {
        name: file.name,
        inputs: file.inputs,
        steps,
    };
    pipeline
        .validate()
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(Resolved { pipeline, files })
}

/// `cleanroom pipeline show`.
#[derive(Debug, clap::Args)]
pub(crate) struct ShowArgs {
    /// The pipeline file.
    file: PathBuf,
    #[command(flatten)]
    engine: EngineArg,
    /// Print the resolved pipeline as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn show(args: ShowArgs) -> Result<()> {
    let resolved = resolve(&args.file, &args.engine)?;
    let p = &resolved.pipeline;
    let digest = p.digest();
    crate::report(
        args.json,
        &serde_json::json!({ "pipeline": digest, "definition": p }),
        || describe(p, &digest),
    );
    Ok(())
}

/// What an owner reads before granting a pipeline.
fn describe(p: &Pipeline, digest: &str) -> String {
    let mut out = format!(
        "pipeline {:?}\ndigest {digest}\ninputs: {}\n",
        p.name,
        p.inputs.join(", ")
    );
    for s in &p.steps {
        let inputs: Vec<String> = s.inputs.iter().map(|(n, f)| format!("{n}={f}")).collect();
        out.push_str(&format!(
            "step {}: module {} reads {}; keeps inside: {}\n  params: {}\n",
            s.id,
            s.module,
            inputs.join(", "),
            if s.keep.is_empty() {
                "nothing".into()
            } else {
                s.keep.join(", ")
            },
            if s.params.is_empty() {
                "(none)"
            } else {
                &s.params
            },
        ));
    }
    out.push_str("grant it with: cleanroom policy grant --module <digest> ...");
    out
}

/// `cleanroom pipeline push` and `submit`.
#[derive(Debug, clap::Args)]
pub(crate) struct PushArgs {
    /// The pipeline file.
    file: PathBuf,
    #[command(flatten)]
    engine: EngineArg,
}

fn push_resolved(
    client: &crate::remote::client::Client,
    resolved: &Resolved,
) -> Result<PipelineStored> {
    for (id, path) in &resolved.files {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let stored: ModuleStored = client.signed("PUT", "/v1/modules", &bytes)?;
        if &stored.module != id {
            bail!(
                "the server stored {} as {}, not {id}",
                path.display(),
                stored.module
            );
        }
    }
    client.signed(
        "PUT",
        "/v1/pipelines",
        &serde_json::to_vec(&resolved.pipeline)?,
    )
}

pub(crate) fn push(conn: &Conn, args: PushArgs) -> Result<()> {
    let resolved = resolve(&args.file, &args.engine)?;
    let client = conn.client()?;
    let stored = push_resolved(&client, &resolved)?;
    conn.print(&stored, || {
        format!(
            "pipeline {} ({} steps) stored\nask every input's owner to grant this digest",
            stored.pipeline, stored.steps
        )
    });
    Ok(())
}

/// `cleanroom pipeline submit`.
#[derive(Debug, clap::Args)]
pub(crate) struct SubmitArgs {
    #[command(flatten)]
    push: PushArgs,
    /// An input as NAME=DATASET (a pipeline input name); repeat.
    #[arg(long = "input", value_name = "NAME=DATASET")]
    inputs: Vec<String>,
}

pub(crate) fn submit(conn: &Conn, args: SubmitArgs) -> Result<()> {
    let resolved = resolve(&args.push.file, &args.push.engine)?;
    let inputs = crate::remote::runs::parse_inputs(&args.inputs)?;
    let client = conn.client()?;
    let stored = push_resolved(&client, &resolved)?;
    let identity = client.identity()?;
    let request = RunRequest {
        module: stored.pipeline.clone(),
        inputs,
        params: String::new(),
        researcher_hpke: hex::encode(identity.hpke_public()),
        review_note: None,
        dp: None,
    };
    let answer: RunAccepted = client.signed("POST", "/v1/runs", &serde_json::to_vec(&request)?)?;
    conn.print(&answer, || {
        format!(
            "pipeline run {} queued (pipeline {})",
            answer.run, stored.pipeline
        )
    });
    Ok(())
}

/// `cleanroom derived list`.
pub(crate) fn derived(conn: &Conn) -> Result<()> {
    let client = conn.client()?;
    let list: DerivedList = client.signed("GET", "/v1/derived", b"")?;
    conn.print(&list, || {
        if list.derived.is_empty() {
            return "no derived datasets you can see".into();
        }
        list.derived
            .iter()
            .map(|d| {
                format!(
                    "{}  {}.{} of pipeline {}… (run {}, researcher {}){}",
                    d.id,
                    d.provenance.step,
                    d.provenance.output,
                    &d.provenance.pipeline[..12],
                    d.provenance.run,
                    d.provenance.researcher.short(),
                    if d.usable {
                        ""
                    } else {
                        "  UNUSABLE: an upstream owner revoked it"
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}

/// `cleanroom pipeline run-local`.
#[derive(Debug, clap::Args)]
pub(crate) struct RunLocalArgs {
    /// The pipeline file (its steps must be wasm files or SQL).
    file: PathBuf,
    #[command(flatten)]
    engine: EngineArg,
    /// A table as NAME=FILE (CSV, Parquet or Arrow IPC), one per pipeline input.
    #[arg(long = "table", value_name = "NAME=FILE")]
    tables: Vec<String>,
    /// Where final outputs are written (kept tables too, under `kept/`).
    #[arg(long, default_value = "pipeline-results")]
    out: PathBuf,
    /// Print a JSON summary.
    #[arg(long)]
    json: bool,
}

struct LocalSteps<'a> {
    runtime: &'a Runtime,
    files: &'a BTreeMap<String, PathBuf>,
    out: PathBuf,
}

impl Steps for LocalSteps<'_> {
    fn plan(&mut self, step: &Step) -> Result<Plan, RunError> {
        let path = self.files.get(&step.module).ok_or_else(|| {
            RunError::Internal(format!(
                "step {}: module {} is an id, not a file: run-local needs wasm files or sql",
                step.id, step.module
            ))
        })?;
        let bytes = std::fs::read(path)
            .map_err(|e| RunError::Internal(format!("{}: {e}", path.display())))?;
        crate::run_local::load_cached(self.runtime, &bytes)
            .map(Plan::Run)
            .map_err(|e| RunError::Internal(format!("{}: {e:#}", path.display())))
    }

    fn keep(&mut self, step: &Step, table: TableOutput) -> Result<Arc<dyn TableSource>, RunError> {
        // Locally, kept tables are written for inspection; in the enclave they never leave.
        let dir = self.out.join("kept");
        std::fs::create_dir_all(&dir)
            .map_err(|e| RunError::Internal(format!("{}: {e}", dir.display())))?;
        crate::tables::write_copies(
            &dir,
            &format!("{}.{}", step.id, table.name),
            &table.schema,
            &table.batches,
        )
        .map_err(|e| RunError::Internal(format!("{e:#}")))?;
        Ok(Arc::new(MemTable::new(table.schema, table.batches)))
    }
}

pub(crate) fn run_local(args: RunLocalArgs) -> Result<()> {
    let resolved = resolve(&args.file, &args.engine)?;
    let mut grants = Grants::new();
    for spec in &args.tables {
        let (name, path) = crate::run_local::table_spec(spec)?;
        let table = Arc::new(crate::input::read_table(&path)?) as Arc<dyn TableSource>;
        if grants.insert(name.clone(), table).is_some() {
            bail!("table {name:?} is given twice");
        }
    }
    for input in &resolved.pipeline.inputs {
        if !grants.contains_key(input) {
            bail!("pipeline input {input:?} has no --table {input}=FILE");
        }
    }
    let limits = Limits::default();
    let runtime = crate::run_local::local_runtime(&limits)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut steps = LocalSteps {
        runtime: &runtime,
        files: &resolved.files,
        out: args.out.clone(),
    };
    let chain = run_chain(
        &runtime,
        &resolved.pipeline,
        &grants,
        &limits,
        None,
        &mut steps,
    )
    .map_err(|f| anyhow!("step {} failed ({}): {}", f.step, f.error.kind(), f.error))?;
    let mut written = BTreeMap::new();
    for candidate in &chain.finals {
        written.insert(candidate.name.clone(), write_final(&args.out, candidate)?);
    }
    let summary = serde_json::json!({
        "pipeline": resolved.pipeline.digest(),
        "steps": chain.steps.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
        "outputs": written,
    });
    std::fs::write(
        args.out.join("pipeline.json"),
        serde_json::to_vec_pretty(&summary)?,
    )?;
    crate::report(args.json, &summary, || {
        let mut out = format!(
            "pipeline ran {} steps; final outputs in {}:",
            chain.steps.len(),
            args.out.display()
        );
        for (name, what) in &written {
            out.push_str(&format!("\n  {name}: {what}"));
        }
        out
    });
    Ok(())
}

fn write_final(dir: &Path, candidate: &Candidate) -> Result<String> {
    match &candidate.content {
        Content::Table { schema, batches }
        | Content::Checked {
            schema, batches, ..
        } => {
            crate::tables::write_copies(dir, &candidate.name, schema, batches)?;
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            Ok(format!("table, {rows} rows"))
        }
        Content::Bytes(bytes) => {
            let ext = match candidate.kind {
                cleanroom_proto::run::OutputKind::Json => "json",
                _ => "txt",
            };
            std::fs::write(dir.join(format!("{}.{ext}", candidate.name)), bytes)?;
            Ok(format!("{}, {} bytes", ext, bytes.len()))
        }
    }
}
