//! Sample and aggregate (GUPT, Mohan et al., SIGMOD 2012): the privacy units of every table
//! that requires differential privacy are split into disjoint blocks by a keyed hash with a
//! per-run secret, and the module runs once per block in a fresh instance that sees only its
//! block's rows. Nothing a block publishes leaves except its numeric vector, which the
//! policy crate clamps, averages and noises (`cleanroom_policy::dp::sample_aggregate_release`).
//!
//! A row whose unit is null belongs to no block (it cannot be attributed to one person).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{Array as _, BooleanArray, RecordBatch};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::SchemaRef;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::Limits;
use crate::aggregate::Aggregation;
use crate::error::{RunError, RunResult};
use crate::runtime::{CancelToken, Module, Runtime};
use crate::tables::{Grants, TableSource};

/// How a sample-and-aggregate run is split.
#[derive(Clone)]
pub struct BlockPlan {
    /// Number of blocks.
    pub blocks: u32,
    /// The per-run secret of the block assignment (never leaves the host).
    pub key: [u8; 32],
    /// Per granted table that is split: its unit column. Other tables are given whole.
    pub units: BTreeMap<String, String>,
    /// The JSON output each block publishes.
    pub output: String,
    /// How many numbers it must hold.
    pub dimensions: usize,
}

impl std::fmt::Debug for BlockPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockPlan")
            .field("blocks", &self.blocks)
            .field("units", &self.units)
            .field("output", &self.output)
            .field("dimensions", &self.dimensions)
            .finish_non_exhaustive()
    }
}

/// The block a unit falls in.
pub fn block_of(key: &[u8; 32], unit: &str, blocks: u32) -> u32 {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(unit.as_bytes());
    let tag = mac.finalize().into_bytes();
    let head = u64::from_le_bytes(tag[..8].try_into().expect("8 bytes"));
    (head % u64::from(blocks)) as u32
}

/// A block's vector: the JSON output `plan.output` holding an array of numbers, or a table
/// output of that name with one row of numeric columns (what a SQL query publishes).
fn block_vector(outputs: &crate::Outputs, plan: &BlockPlan) -> Option<Vec<f64>> {
    let vector = if let Some((_, text)) = outputs.json.iter().find(|(n, _)| *n == plan.output) {
        serde_json::from_str::<Vec<f64>>(text).ok()?
    } else {
        let table = outputs.tables.iter().find(|t| t.name == plan.output)?;
        let batch = arrow_select::concat::concat_batches(&table.schema, &table.batches).ok()?;
        if batch.num_rows() != 1 {
            return None;
        }
        batch
            .columns()
            .iter()
            .map(|c| {
                let c = arrow_cast::cast(c, &arrow_schema::DataType::Float64).ok()?;
                let c =
                    arrow_array::cast::AsArray::as_primitive::<arrow_array::types::Float64Type>(&c);
                c.is_valid(0).then(|| c.value(0))
            })
            .collect::<Option<Vec<f64>>>()?
    };
    (vector.len() == plan.dimensions).then_some(vector)
}

/// Which block each row of a table is in (`None`: no unit), per batch: computed once per run
/// and shared by every block's view.
type Assignment = Arc<Vec<Vec<Option<u32>>>>;

fn assign(
    table: &dyn TableSource,
    unit: &str,
    key: &[u8; 32],
    blocks: u32,
) -> Result<Assignment, String> {
    let mut out = Vec::new();
    for batch in table.batches() {
        let batch = batch?;
        let col = batch
            .column_by_name(unit)
            .ok_or_else(|| format!("the unit column {unit} is missing"))?;
        let fmt = ArrayFormatter::try_new(col.as_ref(), &FormatOptions::default())
            .map_err(|e| e.to_string())?;
        out.push(
            (0..batch.num_rows())
                .map(|i| {
                    col.is_valid(i)
                        .then(|| block_of(key, &fmt.value(i).to_string(), blocks))
                })
                .collect(),
        );
    }
    Ok(Arc::new(out))
}

/// One block's view of a table.
#[derive(Debug)]
struct BlockTable {
    inner: Arc<dyn TableSource>,
    assignment: Assignment,
    block: u32,
    rows: u64,
}

impl BlockTable {
    fn new(inner: Arc<dyn TableSource>, assignment: Assignment, block: u32) -> Self {
        let rows = assignment
            .iter()
            .flatten()
            .filter(|b| **b == Some(block))
            .count() as u64;
        Self {
            inner,
            assignment,
            block,
            rows,
        }
    }
}

impl TableSource for BlockTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn num_rows(&self) -> u64 {
        self.rows
    }

    fn batches(&self) -> Box<dyn Iterator<Item = Result<RecordBatch, String>> + Send> {
        let (assignment, block) = (self.assignment.clone(), self.block);
        Box::new(self.inner.batches().enumerate().map(move |(i, batch)| {
            let batch = batch?;
            let rows = assignment
                .get(i)
                .filter(|r| r.len() == batch.num_rows())
                .ok_or("the table changed between reads")?;
            let keep: BooleanArray = rows.iter().map(|b| Some(*b == Some(block))).collect();
            arrow_select::filter::filter_record_batch(&batch, &keep).map_err(|e| e.to_string())
        }))
    }
}

impl Runtime {
    /// Run `module` once per block of `plan`, each in a fresh instance on its block's rows,
    /// with `limits` except that the wall-clock limit is shared out between the blocks. A
    /// block that fails, or publishes no vector of the right shape, gives `None`. Only a
    /// cancellation or a host failure ends the whole run.
    pub fn run_blocks(
        &self,
        module: &Module,
        grants: &Grants,
        params: &str,
        limits: &Limits,
        cancel: Option<&CancelToken>,
        plan: &BlockPlan,
    ) -> RunResult<Vec<Option<Vec<f64>>>> {
        // Each block gets an equal share of the run's time, so the blocks together never
        // outlast it; a block over its share gives no vector (the clamped default), like any
        // other failed block. Every block's wall clock starts at the same instant, and its
        // monotonic clock at zero: no block can see how long the blocks before it ran.
        let per_block = Limits {
            timeout: limits.timeout / plan.blocks,
            wall_clock_origin: Some(
                limits
                    .wall_clock_origin
                    .unwrap_or_else(std::time::SystemTime::now),
            ),
            ..limits.clone()
        };
        let mut assignments = BTreeMap::new();
        for (name, unit) in &plan.units {
            if let Some(source) = grants.get(name) {
                let a = assign(source.as_ref(), unit, &plan.key, plan.blocks)
                    .map_err(RunError::Internal)?;
                assignments.insert(name.clone(), a);
            }
        }
        let mut out = Vec::with_capacity(plan.blocks as usize);
        for block in 0..plan.blocks {
            let mut view = Grants::new();
            for (name, source) in grants {
                let source = match assignments.get(name) {
                    Some(a) => Arc::new(BlockTable::new(source.clone(), a.clone(), block))
                        as Arc<dyn TableSource>,
                    None => source.clone(),
                };
                view.insert(name.clone(), source);
            }
            let result = self.run_with(
                module,
                view,
                params,
                &per_block,
                cancel,
                Aggregation::default(),
            );
            out.push(match result {
                Ok(run) => block_vector(&run.outputs, plan),
                Err(RunError::Cancelled) => return Err(RunError::Cancelled),
                Err(RunError::Internal(e)) => return Err(RunError::Internal(e)),
                Err(_) => None,
            });
        }
        Ok(out)
    }
}
