//! Write cleanroom analyses in Rust.
//!
//! An analysis is a function from params to `Result<()>` that reads the
//! tables granted to the run and publishes outputs. Build it with
//! `cargo build --release --target wasm32-wasip2` (crate type `cdylib`) and
//! the result is a component for the `cleanroom:analysis` world.
//!
//! ```no_run
//! use cleanroom_guest::{Result, Table};
//!
//! fn run(params: &str) -> Result<()> {
//!     #[derive(serde::Deserialize, Default)]
//!     struct Params { column: Option<String> }
//!     let params: Params = cleanroom_guest::params(params)?;
//!     let column = params.column.as_deref().unwrap_or("age");
//!
//!     let patients = Table::open("patients")?;
//!     let index = patients.column_index(column)?;
//!     let (mut sum, mut n) = (0.0, 0u64);
//!     for batch in patients.raw_batches() {
//!         let values = batch?.column(index)?.to_f64()?;
//!         sum += values.iter().sum::<f64>();
//!         n += values.len() as u64;
//!     }
//!     cleanroom_guest::publish_json("mean", &serde_json::json!({ "column": column, "mean": sum / n as f64 }))?;
//!     cleanroom_guest::info(&format!("averaged {n} rows"));
//!     Ok(())
//! }
//!
//! cleanroom_guest::analysis!(run);
//! ```

#![deny(missing_docs)]

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{ArrowError, SchemaRef};

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "analysis",
        pub_export_macro: true,
        default_bindings_module: "cleanroom_guest::bindings",
        generate_all,
    });
}

use bindings::cleanroom::analysis::{aggregate, output, tables};

pub use bindings::cleanroom::analysis::aggregate::{Aggregated, Cell, Comparison, Statistic};

pub use bindings::cleanroom::analysis::tables::{Column, DataType, RawColumn};

mod raw;
pub use raw::{RawBatch, RawBatches, sum_f64};

/// An analysis error: a message that ends the run as failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    /// An error with this message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self(message.to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<ArrowError> for Error {
    fn from(e: ArrowError) -> Self {
        Self(format!("arrow: {e}"))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Self(format!("json: {e}"))
    }
}

impl From<tables::TableError> for Error {
    fn from(e: tables::TableError) -> Self {
        Self(match e {
            tables::TableError::NotFound(name) => {
                format!("table {name:?} was not granted to this run")
            }
            tables::TableError::TooManyOpen(n) => format!("a run may open at most {n} tables"),
            tables::TableError::InvalidColumn(m) => format!("invalid column: {m}"),
            tables::TableError::ReadFailed(m) => format!("reading the table failed: {m}"),
        })
    }
}

impl From<output::OutputError> for Error {
    fn from(e: output::OutputError) -> Self {
        Self(match e {
            output::OutputError::LimitExceeded(n) => format!("output limit of {n} bytes exceeded"),
            output::OutputError::DuplicateName(n) => format!("output {n:?} was already published"),
            output::OutputError::InvalidName(m) => format!("invalid output name: {m}"),
            output::OutputError::InvalidPayload(m) => format!("invalid output: {m}"),
        })
    }
}

impl From<aggregate::AggregateError> for Error {
    fn from(e: aggregate::AggregateError) -> Self {
        use aggregate::AggregateError as E;
        Self(match e {
            E::NotFound(name) => format!("table {name:?} was not granted to this run"),
            E::Invalid(m) => format!("invalid aggregate: {m}"),
            E::NotAllowed(m) => format!("aggregate not allowed: {m}"),
            E::BudgetExceeded(left) => format!("the run has only ε = {left} left"),
            E::Rejected(m) => format!("the aggregate could not be published: {m}"),
        })
    }
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Self(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Self(message.to_string())
    }
}

/// Result of an analysis step.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Export `run` (a `fn(&str) -> Result<()>`) as the component's analysis.
#[macro_export]
macro_rules! analysis {
    ($run:path) => {
        struct __CleanroomAnalysis;

        impl $crate::bindings::Guest for __CleanroomAnalysis {
            fn run(params: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
                $run(&params).map_err(|e| ::std::string::ToString::to_string(&e))
            }
        }

        $crate::bindings::export!(__CleanroomAnalysis with_types_in $crate::bindings);
    };
}

/// Parse JSON params into `T`; an empty string parses as `{}`.
pub fn params<T: serde::de::DeserializeOwned>(params: &str) -> Result<T> {
    let text = if params.trim().is_empty() {
        "{}"
    } else {
        params
    };
    serde_json::from_str(text).map_err(|e| Error(format!("invalid params: {e}")))
}

/// Names of the tables granted to this run.
pub fn table_names() -> Vec<String> {
    tables::granted()
}

/// A granted table.
#[derive(Debug)]
pub struct Table {
    inner: tables::Table,
    schema: SchemaRef,
}

impl Table {
    /// Open a granted table by name.
    pub fn open(name: &str) -> Result<Self> {
        let inner = tables::open(name)?;
        let schema_ipc = inner.schema_ipc();
        let (message, _) = ipc_message(&schema_ipc)?;
        let schema = Arc::new(arrow_ipc::convert::try_schema_from_flatbuffer_bytes(
            message,
        )?);
        Ok(Self { inner, schema })
    }

    /// The name the table was granted under.
    pub fn name(&self) -> String {
        self.inner.name()
    }

    /// The Arrow schema.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The simple column descriptions.
    pub fn columns(&self) -> Vec<Column> {
        self.inner.columns()
    }

    /// The index of a column by name.
    pub fn column_index(&self, name: &str) -> Result<u32> {
        self.schema
            .index_of(name)
            .map(|i| i as u32)
            .map_err(|_| Error(format!("table {:?} has no column {name:?}", self.name())))
    }

    /// Total number of rows.
    pub fn num_rows(&self) -> u64 {
        self.inner.num_rows()
    }

    /// Iterate the table's batches as Arrow `RecordBatch`es, from the start.
    pub fn batches(&self) -> Batches<'_> {
        self.inner.rewind();
        Batches { table: self }
    }

    /// Iterate the table's batches as raw column buffers, from the start.
    pub fn raw_batches(&self) -> RawBatches<'_> {
        self.inner.rewind();
        RawBatches { table: self }
    }

    /// Read the whole table into memory.
    pub fn read_all(&self) -> Result<Vec<RecordBatch>> {
        self.batches().collect()
    }
}

/// Iterator over a table's record batches.
#[derive(Debug)]
pub struct Batches<'a> {
    table: &'a Table,
}

impl Iterator for Batches<'_> {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        let batch = match self.table.inner.next_batch() {
            Ok(Some(batch)) => batch,
            Ok(None) => return None,
            Err(e) => return Some(Err(e.into())),
        };
        Some(self.decode(batch.ipc()))
    }
}

impl Batches<'_> {
    /// Decode one record-batch message without copying its body.
    fn decode(&mut self, ipc: Vec<u8>) -> Result<RecordBatch> {
        let (_, start) = ipc_message(&ipc)?;
        let buffer = Buffer::from_vec(ipc);
        let (message, _) = ipc_message(&buffer)?;
        let message = arrow_ipc::root_as_message(message)
            .map_err(|e| Error(format!("the host sent an invalid IPC message: {e}")))?;
        let batch = message.header_as_record_batch().ok_or_else(|| {
            Error::msg("the host sent an IPC message that is not a record batch (dictionary-encoded columns are not supported)")
        })?;
        let body = buffer.slice(start);
        Ok(arrow_ipc::reader::read_record_batch(
            &body,
            batch,
            self.table.schema.clone(),
            &HashMap::new(),
            None,
            &message.version(),
        )?)
    }
}

/// Split one encapsulated IPC message into its flatbuffer and the offset of its body.
fn ipc_message(bytes: &[u8]) -> Result<(&[u8], usize)> {
    let word = |at: usize| -> Result<u32> {
        bytes
            .get(at..at + 4)
            .map(|w| u32::from_le_bytes(w.try_into().expect("slice of 4 bytes")))
            .ok_or_else(|| Error::msg("truncated IPC message from the host"))
    };
    let (len, header) = if word(0)? == 0xffff_ffff {
        (word(4)?, 8)
    } else {
        (word(0)?, 4)
    };
    let end = header + len as usize;
    let message = bytes
        .get(header..end)
        .ok_or_else(|| Error::msg("truncated IPC message from the host"))?;
    Ok((message, end))
}

/// Publish batches (all of one schema) as a table output.
pub fn publish_batches(name: &str, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<()> {
    let mut writer = StreamWriter::try_new(Vec::new(), schema)?;
    for batch in batches {
        writer.write(batch)?;
    }
    let ipc = writer.into_inner()?;
    Ok(output::publish_table(name, &ipc)?)
}

/// Publish one record batch as a table output.
pub fn publish_table(name: &str, batch: &RecordBatch) -> Result<()> {
    publish_batches(name, &batch.schema(), std::slice::from_ref(batch))
}

/// A non-null Int64 field declared as a group count (Arrow field metadata
/// `cleanroom:count = "true"`): the data owners' small-group rules apply to it,
/// and a table with a declared count column can be released without review.
pub fn count_field(name: &str) -> arrow_schema::Field {
    arrow_schema::Field::new(name, arrow_schema::DataType::Int64, false).with_metadata(
        [("cleanroom:count".to_string(), "true".to_string())]
            .into_iter()
            .collect::<std::collections::HashMap<String, String>>(),
    )
}

/// Declare columns of a table output (published before or after) as group counts.
pub fn declare_counts(table: &str, columns: &[&str]) {
    let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
    output::declare_counts(table, &columns);
}

/// Publish a serde value as a JSON output.
pub fn publish_json<T: serde::Serialize + ?Sized>(name: &str, value: &T) -> Result<()> {
    let json = serde_json::to_string(value)?;
    Ok(output::publish_json(name, &json)?)
}

/// Publish JSON text as it is (numbers and key order exactly as written).
pub fn publish_json_text(name: &str, json: &str) -> Result<()> {
    Ok(output::publish_json(name, json)?)
}

/// Publish a small file.
pub fn publish_file(name: &str, contents: &[u8]) -> Result<()> {
    Ok(output::publish_file(name, contents)?)
}

/// Log at info level (logs are output: never log row-level data).
pub fn info(message: &str) {
    output::log(output::Level::Info, message);
}

/// Log at warn level.
pub fn warn(message: &str) {
    output::log(output::Level::Warn, message);
}

/// Log at debug level.
pub fn debug(message: &str) {
    output::log(output::Level::Debug, message);
}

/// A schema shared by the SDK and analyses.
pub type Schema = Arc<arrow_schema::Schema>;

/// An aggregate the host computes: counts, sums, means and quantiles per group of a granted
/// table, with the owners' disclosure rules applied per cell (distinct people, dominance,
/// rounding) or, on a table that requires differential privacy, with noise charged to the
/// run's ε. The result is published as a checked output and returned as released.
///
/// ```ignore
/// let by_sex = Aggregate::table("patients")
///     .group_by(&["sex"])
///     .value("sbp")
///     .count()
///     .mean()
///     .bounds(60.0, 250.0)
///     .epsilon(0.2)
///     .publish("sbp_by_sex")?;
/// ```
#[derive(Debug, Clone)]
pub struct Aggregate {
    request: aggregate::Request,
}

impl Aggregate {
    /// Aggregate the granted table `name`.
    pub fn table(name: &str) -> Self {
        Self {
            request: aggregate::Request {
                table: name.to_string(),
                group_by: vec![],
                value: None,
                filter: vec![],
                computed: None,
                statistics: vec![],
                bounds: None,
                epsilon: None,
            },
        }
    }

    /// Group by these columns of the table.
    pub fn group_by(mut self, columns: &[&str]) -> Self {
        self.request.group_by = columns.iter().map(|c| c.to_string()).collect();
        self
    }

    /// The numeric column that sums, means and quantiles are of.
    pub fn value(mut self, column: &str) -> Self {
        self.request.value = Some(column.to_string());
        self
    }

    /// Keep only rows where `column op value` holds.
    pub fn filter(mut self, column: &str, op: Comparison, value: impl fmt::Display) -> Self {
        self.request.filter.push(aggregate::Condition {
            column: column.to_string(),
            op,
            value: value.to_string(),
        });
        self
    }

    /// Aggregate entries computed here instead of columns (not on DP tables): per entry, the
    /// table row it is about (the host takes the contributor from it), its keys and value.
    pub fn computed(
        mut self,
        key_names: &[&str],
        rows: Vec<u64>,
        keys: Vec<Vec<String>>,
        values: Vec<f64>,
    ) -> Self {
        self.request.computed = Some(aggregate::Computed {
            key_names: key_names.iter().map(|c| c.to_string()).collect(),
            rows,
            keys,
            values,
        });
        self
    }

    /// Count rows per group.
    pub fn count(mut self) -> Self {
        self.request.statistics.push(Statistic::Count);
        self
    }

    /// Sum the values per group.
    pub fn sum(mut self) -> Self {
        self.request.statistics.push(Statistic::Sum);
        self
    }

    /// Mean of the values per group.
    pub fn mean(mut self) -> Self {
        self.request.statistics.push(Statistic::Mean);
        self
    }

    /// The `p`-quantile (0 to 1) of the values per group.
    pub fn quantile(mut self, p: f64) -> Self {
        self.request.statistics.push(Statistic::Quantile(p));
        self
    }

    /// Clamp values to `[lower, upper]`.
    pub fn bounds(mut self, lower: f64, upper: f64) -> Self {
        self.request.bounds = Some((lower, upper));
        self
    }

    /// Spend `epsilon` of the run's ε (tables that require differential privacy).
    pub fn epsilon(mut self, epsilon: f64) -> Self {
        self.request.epsilon = Some(epsilon);
        self
    }

    /// Compute, publish as output `name`, and return the aggregate as released.
    pub fn publish(self, name: &str) -> Result<Aggregated> {
        Ok(aggregate::aggregate(name, &self.request)?)
    }
}
