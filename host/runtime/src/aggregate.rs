//! The `aggregate` capability: the guest says what to aggregate, the host computes it with
//! `cleanroom-policy::aggregate` under the terms of the table's policy, publishes it as a
//! checked output and hands the released result back.
//!
//! The time the host spends in an aggregate is hidden from the guest's clocks (both stand
//! still during the call): how long an aggregate takes depends on how many rows a table
//! has, and a guest must not learn that from a stopwatch when the table's rows are private.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use cleanroom_policy::aggregate::{
    self as agg, AggregateError as PolicyError, Computed, Condition, Mode, Op, Spec, Statistic,
};
use cleanroom_proto::Code;
use cleanroom_proto::dp::{DpRequirement, Epsilon};
use cleanroom_proto::policy::OutputRules;
use wasmtime::component::{HasData, Linker};

use crate::output::OutputCtx;
use crate::tables::TablesCtx;
use crate::world::cleanroom::analysis::aggregate::{
    self as wit, AggregateError, Aggregated, Cell, Comparison, Request,
};

/// How the host aggregates one granted table.
#[derive(Debug, Clone)]
pub struct TableTerms {
    /// The column naming who a row is about (`None`: each row is its own contributor).
    pub unit_column: Option<String>,
    /// Disclosure control or differential privacy.
    pub mode: TableMode,
}

/// The rules of a table's aggregates.
#[derive(Debug, Clone)]
pub enum TableMode {
    /// The owners' disclosure rules per cell.
    Disclosure(OutputRules),
    /// Differential privacy: the guest cannot open the table, only aggregate it.
    Private(DpRequirement),
}

/// The aggregation terms of a run: per granted table, and the run's ε.
#[derive(Debug, Clone, Default)]
pub struct Aggregation {
    /// Terms per granted table name; a table not named is aggregated under the default
    /// disclosure rules with each row its own contributor.
    pub tables: BTreeMap<String, TableTerms>,
    /// The ε the run may spend on private aggregates, in total.
    pub epsilon: Epsilon,
}

impl Aggregation {
    /// Whether the guest may read `table` row by row.
    pub fn readable(&self, table: &str) -> bool {
        !matches!(
            self.tables.get(table).map(|t| &t.mode),
            Some(TableMode::Private(_))
        )
    }
}

/// A published aggregate.
#[derive(Debug, Clone)]
pub struct AggregateOutput {
    /// Output name.
    pub name: String,
    /// The table as released.
    pub batch: RecordBatch,
    /// What was applied.
    pub codes: Vec<Code>,
    /// Whether the owners' rules refuse it.
    pub refused: bool,
    /// Whether it was computed under differential privacy.
    pub private: bool,
}

/// Per-run state of the `aggregate` capability.
#[derive(Debug)]
pub struct AggregateCtx {
    terms: Aggregation,
    remaining: Epsilon,
    /// Nanoseconds spent in the host's aggregates, which the guest's clocks skip.
    pub(crate) hidden: Arc<AtomicU64>,
    pub(crate) published: Vec<AggregateOutput>,
}

impl AggregateCtx {
    pub(crate) fn new(terms: Aggregation) -> Self {
        Self {
            remaining: terms.epsilon,
            terms,
            hidden: Arc::new(AtomicU64::new(0)),
            published: Vec::new(),
        }
    }

    /// ε left for the run's private aggregates.
    pub fn remaining(&self) -> Epsilon {
        self.remaining
    }
}

/// What the generated bindings call into: the aggregate state with the tables and outputs.
#[derive(Debug)]
pub struct AggregateCtxView<'a> {
    /// Aggregation terms and budget.
    pub ctx: &'a mut AggregateCtx,
    /// The granted tables.
    pub tables: &'a TablesCtx,
    /// Outputs, where the aggregate is published.
    pub output: &'a mut OutputCtx,
}

/// Access to an [`AggregateCtxView`] from the store's data.
pub trait AggregateView: Send {
    /// The view.
    fn aggregate(&mut self) -> AggregateCtxView<'_>;
}

struct HasAggregate;

impl HasData for HasAggregate {
    type Data<'a> = AggregateCtxView<'a>;
}

/// Link the `aggregate` interface.
pub fn add_to_linker<T: AggregateView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasAggregate>(linker, |t| t.aggregate())
}

fn spec_of(request: &Request) -> Spec {
    Spec {
        group_by: request.group_by.clone(),
        value: request.value.clone(),
        filter: request
            .filter
            .iter()
            .map(|c| Condition {
                column: c.column.clone(),
                op: match c.op {
                    Comparison::Eq => Op::Eq,
                    Comparison::Ne => Op::Ne,
                    Comparison::Lt => Op::Lt,
                    Comparison::Le => Op::Le,
                    Comparison::Gt => Op::Gt,
                    Comparison::Ge => Op::Ge,
                    Comparison::IsNull => Op::IsNull,
                    Comparison::NotNull => Op::NotNull,
                },
                value: c.value.clone(),
            })
            .collect(),
        statistics: request
            .statistics
            .iter()
            .map(|s| match s {
                wit::Statistic::Count => Statistic::Count,
                wit::Statistic::Sum => Statistic::Sum,
                wit::Statistic::Mean => Statistic::Mean,
                wit::Statistic::Quantile(p) => Statistic::Quantile(*p),
            })
            .collect(),
        bounds: request.bounds,
        epsilon: None,
    }
}

fn from_policy(e: PolicyError) -> AggregateError {
    match e {
        PolicyError::Invalid(m) => AggregateError::Invalid(m),
        PolicyError::NotAllowed(m) => AggregateError::NotAllowed(m),
        PolicyError::Budget { remaining } => AggregateError::BudgetExceeded(remaining.as_f64()),
    }
}

/// The released table as the guest sees it.
fn aggregated(batch: &RecordBatch, private: bool, spent: Epsilon) -> Aggregated {
    let schema = batch.schema();
    let mut key_names = Vec::new();
    let mut statistic_names = Vec::new();
    let mut cells: Vec<Cell> = (0..batch.num_rows())
        .map(|_| Cell {
            keys: vec![],
            values: vec![],
        })
        .collect();
    for (field, col) in schema.fields().iter().zip(batch.columns()) {
        match col.data_type() {
            DataType::Utf8 => {
                key_names.push(field.name().clone());
                for (cell, v) in cells.iter_mut().zip(col.as_string::<i32>().iter()) {
                    cell.keys.push(v.map(str::to_string));
                }
            }
            DataType::Int64 => {
                statistic_names.push(field.name().clone());
                for (cell, v) in cells.iter_mut().zip(col.as_primitive::<Int64Type>().iter()) {
                    cell.values.push(v.map(|v| v as f64));
                }
            }
            _ => {
                statistic_names.push(field.name().clone());
                let values = col.as_primitive::<Float64Type>();
                for (i, cell) in cells.iter_mut().enumerate() {
                    cell.values
                        .push(values.is_valid(i).then(|| values.value(i)));
                }
            }
        }
    }
    Aggregated {
        key_names,
        statistic_names,
        cells,
        private,
        epsilon_spent: spent.as_f64(),
    }
}

fn ipc_size(batch: &RecordBatch) -> usize {
    let mut buf = Vec::new();
    if let Ok(mut w) = arrow_ipc::writer::StreamWriter::try_new(&mut buf, &batch.schema()) {
        let _ = w.write(batch);
        let _ = w.finish();
    }
    buf.len()
}

impl AggregateCtxView<'_> {
    fn compute(
        &mut self,
        name: String,
        request: Request,
    ) -> wasmtime::Result<Result<Aggregated, AggregateError>> {
        let Some(source) = self.tables.source(&request.table) else {
            return Ok(Err(AggregateError::NotFound(request.table)));
        };
        let default_terms = TableTerms {
            unit_column: None,
            mode: TableMode::Disclosure(OutputRules::default()),
        };
        let terms = self
            .ctx
            .terms
            .tables
            .get(&request.table)
            .unwrap_or(&default_terms)
            .clone();
        if let Err(e) = self.output.may_publish(&name) {
            return Ok(Err(AggregateError::Rejected(format!("{e:?}"))));
        }
        let spec = spec_of(&request);
        let unit = terms.unit_column.as_deref();
        let (mode, asked) = match &terms.mode {
            TableMode::Disclosure(rules) => (Mode::Disclosure(rules), Epsilon::ZERO),
            TableMode::Private(dp) => {
                if request.computed.is_some() {
                    return Ok(Err(AggregateError::NotAllowed(
                        "this table requires differential privacy: aggregate its columns, not \
                         computed entries (a computed value could depend on other people's rows)"
                            .into(),
                    )));
                }
                let Some(epsilon) = request
                    .epsilon
                    .and_then(Epsilon::from_f64)
                    .filter(|e| *e > Epsilon::ZERO)
                else {
                    return Ok(Err(AggregateError::Invalid(
                        "this table requires differential privacy: say how much ε the aggregate \
                         spends (a positive number with at most six decimals)"
                            .into(),
                    )));
                };
                if epsilon > self.ctx.remaining {
                    return Ok(Err(AggregateError::BudgetExceeded(
                        self.ctx.remaining.as_f64(),
                    )));
                }
                (Mode::Private { dp, epsilon }, epsilon)
            }
        };
        let rows = match request.computed {
            Some(c) => agg::computed_rows(
                source.batches(),
                Computed {
                    key_names: c.key_names,
                    rows: c.rows,
                    keys: c.keys,
                    values: c.values,
                },
                unit,
            ),
            None => agg::rows_of(source.batches(), &spec, unit),
        };
        let result = match rows.and_then(|rows| agg::compute(rows, &spec, mode)) {
            Ok(result) => result,
            Err(e) => return Ok(Err(from_policy(e))),
        };
        debug_assert!(result.spent <= asked);
        if let Err(e) = self.output.admit(&name, ipc_size(&result.batch))? {
            return Ok(Err(AggregateError::Rejected(format!("{e:?}"))));
        }
        self.ctx.remaining = self.ctx.remaining.minus(result.spent);
        let private = matches!(terms.mode, TableMode::Private(_));
        let released = aggregated(&result.batch, private, result.spent);
        self.ctx.published.push(AggregateOutput {
            name,
            batch: result.batch,
            codes: result.codes,
            refused: result.refused,
            private,
        });
        Ok(Ok(released))
    }
}

impl wit::Host for AggregateCtxView<'_> {
    fn aggregate(
        &mut self,
        name: String,
        request: Request,
    ) -> wasmtime::Result<Result<Aggregated, AggregateError>> {
        let start = Instant::now();
        let result = self.compute(name, request);
        self.ctx
            .hidden
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        result
    }
}
