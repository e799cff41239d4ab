//! A SQL engine for cleanroom: the run's params carry the query, the granted
//! tables are the SQL tables, and the result is published as a table.
//!
//! Params: `{"sql": "SELECT ...", "output": "result"}` (`output` optional).
//! The engine is a component like any analysis, so owners approve the
//! engine's hash *and* pin the query by its params digest.
//!
//! With `"epsilon": E` (a table that requires differential privacy) or `"host_aggregate":
//! true`, the query is not run here: a grouped aggregate (`SELECT keys, COUNT(*), SUM(v),
//! AVG(v), MEDIAN(v) FROM t [WHERE col op literal AND ...] GROUP BY keys`) is translated into
//! one request to the host's `aggregate` interface, which reads the rows, applies the owners'
//! rules per cell or adds DP noise, and publishes the result.

use std::sync::Arc;

use std::collections::HashSet;

use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::arrow::ipc::reader::StreamDecoder;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::prelude::{SessionConfig, SessionContext};
use serde::Deserialize;

wit_bindgen::generate!({
    path: "../../wit",
    world: "analysis",
    generate_all,
});

use cleanroom::analysis::{output, tables};

mod host_aggregate;
use host_aggregate::translate;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// The query.
    sql: String,
    /// Name of the published result table.
    #[serde(default = "default_output")]
    output: String,
    /// Spend this much ε: have the host compute the aggregate under DP.
    #[serde(default)]
    epsilon: Option<f64>,
    /// Have the host compute the aggregate under the owners' disclosure rules.
    #[serde(default)]
    host_aggregate: bool,
    /// Clamp the aggregated values to `[lower, upper]` (host aggregates).
    #[serde(default)]
    bounds: Option<(f64, f64)>,
}

fn default_output() -> String {
    "result".into()
}

struct Engine;

impl Guest for Engine {
    fn run(params: String) -> Result<(), String> {
        let params: Params = serde_json::from_str(&params)
            .map_err(|e| format!("invalid params: {e}; expected {{\"sql\": \"SELECT ...\"}}"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| format!("cannot start the engine: {e}"))?;
        if params.epsilon.is_some() || params.host_aggregate {
            return host_aggregate(&params);
        }
        runtime.block_on(query(params))
    }
}

/// Translate the query into one request to the host's aggregate interface and send it.
fn host_aggregate(params: &Params) -> Result<(), String> {
    let request = translate(&params.sql, params.epsilon, params.bounds)?;
    let released = cleanroom::analysis::aggregate::aggregate(&params.output, &request)
        .map_err(|e| format!("aggregate refused: {e:?}"))?;
    output::log(
        output::Level::Info,
        &format!(
            "the host computed {} groups ({}; ε spent {})",
            released.cells.len(),
            if released.private {
                "differentially private"
            } else {
                "disclosure rules applied"
            },
            released.epsilon_spent
        ),
    );
    Ok(())
}

export!(Engine);

async fn query(params: Params) -> Result<(), String> {
    // One partition, one thread: the sandbox is single-threaded anyway.
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    let start = std::time::Instant::now();
    for name in tables::granted() {
        let (schema, batches) = read_table(&name)?;
        let table =
            MemTable::try_new(schema, vec![batches]).map_err(|e| format!("table {name}: {e}"))?;
        ctx.register_table(name.as_str(), Arc::new(table))
            .map_err(|e| format!("table {name}: {e}"))?;
    }
    let loaded = start.elapsed();
    let frame = ctx
        .sql(&params.sql)
        .await
        .map_err(|e| format!("SQL error: {e}"))?;
    let counts = count_columns(frame.logical_plan());
    let schema = Arc::new(declare_counts(frame.schema().as_arrow(), &counts));
    let batches = frame
        .collect()
        .await
        .map_err(|e| format!("SQL error: {e}"))?
        .into_iter()
        .map(|b| RecordBatch::try_new(schema.clone(), b.columns().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("SQL error: {e}"))?;
    output::log(
        output::Level::Info,
        &format!(
            "tables loaded in {:.3} ms; query ran in {:.3} ms",
            loaded.as_secs_f64() * 1e3,
            (start.elapsed() - loaded).as_secs_f64() * 1e3
        ),
    );
    let mut writer = StreamWriter::try_new(Vec::new(), &schema).map_err(|e| e.to_string())?;
    for batch in &batches {
        writer.write(batch).map_err(|e| e.to_string())?;
    }
    let ipc = writer.into_inner().map_err(|e| e.to_string())?;
    output::publish_table(&params.output, &ipc).map_err(|e| format!("publishing the result: {e:?}"))
}

/// Output columns of `plan` that are `COUNT` aggregates, aliased or not, followed through
/// projections, sorts, filters and limits. They are declared as counts (field metadata
/// `cleanroom:count`), so the data owners' small-group rules apply to them.
fn count_columns(plan: &LogicalPlan) -> HashSet<String> {
    match plan {
        LogicalPlan::Aggregate(agg) => {
            let groups = agg.group_expr.len();
            agg.aggr_expr
                .iter()
                .enumerate()
                .filter(|(_, e)| is_count(e))
                .map(|(i, _)| agg.schema.field(groups + i).name().clone())
                .collect()
        }
        LogicalPlan::Projection(p) => {
            let inner = count_columns(&p.input);
            p.expr
                .iter()
                .enumerate()
                .filter(|(_, e)| {
                    let mut e: &Expr = e;
                    while let Expr::Alias(alias) = e {
                        e = &alias.expr;
                    }
                    match e {
                        Expr::Column(c) => inner.contains(&c.name),
                        other => is_count(other),
                    }
                })
                .map(|(i, _)| p.schema.field(i).name().clone())
                .collect()
        }
        LogicalPlan::Sort(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Distinct(_) => plan
            .inputs()
            .first()
            .map(|input| count_columns(input))
            .unwrap_or_default(),
        _ => HashSet::new(),
    }
}

fn is_count(expr: &Expr) -> bool {
    let mut e = expr;
    while let Expr::Alias(alias) = e {
        e = &alias.expr;
    }
    matches!(e, Expr::AggregateFunction(f) if f.func.name().eq_ignore_ascii_case("count"))
}

/// `schema` with `counts` marked as count columns.
fn declare_counts(schema: &Schema, counts: &HashSet<String>) -> Schema {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let f = f.as_ref().clone();
            if counts.contains(f.name()) {
                let mut meta = f.metadata().clone();
                meta.insert("cleanroom:count".into(), "true".into());
                f.with_metadata(meta)
            } else {
                f
            }
        })
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// Read a granted table: its schema message followed by every batch message
/// is one Arrow IPC stream.
fn read_table(
    name: &str,
) -> Result<(datafusion::arrow::datatypes::SchemaRef, Vec<RecordBatch>), String> {
    let fail = |e: &dyn std::fmt::Display| format!("table {name}: {e}");
    let table = tables::open(name).map_err(|e| format!("table {name}: {e:?}"))?;
    // Each batch's IPC message is decoded in place: its arrays are views of the bytes the host
    // handed over (no concatenated stream, no second decode buffer).
    let mut decoder = StreamDecoder::new();
    let mut schema = Buffer::from_vec(table.schema_ipc());
    if decoder.decode(&mut schema).map_err(|e| fail(&e))?.is_some() {
        return Err(fail(&"the schema message carried a batch"));
    }
    let mut batches = Vec::new();
    while let Some(batch) = table
        .next_batch()
        .map_err(|e| format!("table {name}: {e:?}"))?
    {
        let mut message = Buffer::from_vec(batch.ipc());
        while !message.is_empty() {
            if let Some(decoded) = decoder.decode(&mut message).map_err(|e| fail(&e))? {
                batches.push(decoded);
            }
        }
    }
    let schema = decoder
        .schema()
        .ok_or_else(|| fail(&"the host sent no schema"))?;
    Ok((schema, batches))
}
