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

/// An analysis error: a message that ends the run as failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    /// An error with this message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Error(message.to_string())
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
        Error(format!("arrow: {e}"))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error(format!("json: {e}"))
    }
}

impl From<tables::TableError> for Error {
    fn from(e: tables::TableError) -> Self {
        Error(match e {
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
        Error(match e {
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
        Error(match e {
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
        Error(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error(message.to_string())
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
        Ok(Table { inner, schema })
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

/// Iterator over a table's batches as raw column buffers.
#[derive(Debug)]
pub struct RawBatches<'a> {
    table: &'a Table,
}

impl Iterator for RawBatches<'_> {
    type Item = Result<RawBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.table.inner.next_batch() {
            Ok(Some(inner)) => Some(Ok(RawBatch { inner })),
            Ok(None) => None,
            Err(e) => Some(Err(e.into())),
        }
    }
}

/// One batch, read column by column without decoding IPC.
#[derive(Debug)]
pub struct RawBatch {
    inner: tables::Batch,
}

impl RawBatch {
    /// Rows in the batch.
    pub fn num_rows(&self) -> u64 {
        self.inner.num_rows()
    }

    /// The raw buffers of column `index`.
    pub fn column(&self, index: u32) -> Result<RawColumn> {
        Ok(self.inner.column(index)?)
    }
}

macro_rules! typed_view {
    ($name:ident, $t:ty, $($variant:ident)|+) => {
        /// The values as a typed vector (nulls read as whatever the buffer holds;
        /// check `validity`). Fails if the column is of another type.
        pub fn $name(&self) -> Result<Vec<$t>> {
            match self.data_type {
                $(DataType::$variant { .. })|+ => Ok(self
                    .values
                    .chunks_exact(std::mem::size_of::<$t>())
                    .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk has the type's width")))
                    .collect()),
                ref other => Err(Error(format!(
                    concat!("column is {:?}, not ", stringify!($t)),
                    other
                ))),
            }
        }
    };
}

/// Little-endian values of width `N` from a buffer.
fn le_values<const N: usize>(bytes: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    bytes
        .chunks_exact(N)
        .map(|c| c.try_into().expect("chunk has the type's width"))
}

impl RawColumn {
    typed_view!(to_i32, i32, Int32 | Date32);

    /// The values as `f64`, nulls as `None`. Integer and `float32` columns widen to `f64`
    /// (integers beyond 2^53 round, as in any numeric library).
    pub fn values_f64(&self) -> Result<Vec<Option<f64>>> {
        let values: Vec<f64> = match &self.data_type {
            DataType::Float64 => le_values::<8>(&self.values)
                .map(f64::from_le_bytes)
                .collect(),
            DataType::Float32 => le_values::<4>(&self.values)
                .map(|b| f64::from(f32::from_le_bytes(b)))
                .collect(),
            DataType::Int8 => self.values.iter().map(|&b| f64::from(b as i8)).collect(),
            DataType::Int16 => le_values::<2>(&self.values)
                .map(|b| f64::from(i16::from_le_bytes(b)))
                .collect(),
            DataType::Int32 => le_values::<4>(&self.values)
                .map(|b| f64::from(i32::from_le_bytes(b)))
                .collect(),
            DataType::Int64 => le_values::<8>(&self.values)
                .map(|b| i64::from_le_bytes(b) as f64)
                .collect(),
            DataType::Uint8 => self.values.iter().map(|&b| f64::from(b)).collect(),
            DataType::Uint16 => le_values::<2>(&self.values)
                .map(|b| f64::from(u16::from_le_bytes(b)))
                .collect(),
            DataType::Uint32 => le_values::<4>(&self.values)
                .map(|b| f64::from(u32::from_le_bytes(b)))
                .collect(),
            DataType::Uint64 => le_values::<8>(&self.values)
                .map(|b| u64::from_le_bytes(b) as f64)
                .collect(),
            other => return Err(not_numeric(other, "f64")),
        };
        Ok(self.with_nulls(values))
    }

    /// The values as `f64` (see [`RawColumn::values_f64`] for widening). Fails on a null
    /// value, saying which: use `values_f64()` to see nulls as `None`, or `sum_f64()`.
    pub fn to_f64(&self) -> Result<Vec<f64>> {
        no_nulls(self.values_f64()?, &self.data_type, "values_f64")
    }

    /// The values as `i64`, nulls as `None`: any integer column that fits (`uint64` values
    /// above `i64::MAX` are an error), `date32` (days) and timestamps (in their unit).
    pub fn values_i64(&self) -> Result<Vec<Option<i64>>> {
        let values: Vec<i64> = match &self.data_type {
            DataType::Int64 | DataType::Timestamp(_) => le_values::<8>(&self.values)
                .map(i64::from_le_bytes)
                .collect(),
            DataType::Int32 | DataType::Date32 => le_values::<4>(&self.values)
                .map(|b| i64::from(i32::from_le_bytes(b)))
                .collect(),
            DataType::Int16 => le_values::<2>(&self.values)
                .map(|b| i64::from(i16::from_le_bytes(b)))
                .collect(),
            DataType::Int8 => self.values.iter().map(|&b| i64::from(b as i8)).collect(),
            DataType::Uint8 => self.values.iter().map(|&b| i64::from(b)).collect(),
            DataType::Uint16 => le_values::<2>(&self.values)
                .map(|b| i64::from(u16::from_le_bytes(b)))
                .collect(),
            DataType::Uint32 => le_values::<4>(&self.values)
                .map(|b| i64::from(u32::from_le_bytes(b)))
                .collect(),
            DataType::Uint64 => le_values::<8>(&self.values)
                .map(|b| {
                    i64::try_from(u64::from_le_bytes(b)).map_err(|_| {
                        Error::msg("a uint64 value does not fit i64: call values_f64() instead")
                    })
                })
                .collect::<Result<_>>()?,
            DataType::Float32 | DataType::Float64 => {
                return Err(Error(format!(
                    "column is {:?}, not an integer: call to_f64() or values_f64()",
                    self.data_type
                )));
            }
            other => return Err(not_numeric(other, "i64")),
        };
        Ok(self.with_nulls(values))
    }

    /// The values as `i64` (see [`RawColumn::values_i64`]). Fails on a null value, saying
    /// which: use `values_i64()` to see nulls as `None`.
    pub fn to_i64(&self) -> Result<Vec<i64>> {
        no_nulls(self.values_i64()?, &self.data_type, "values_i64")
    }

    fn with_nulls<T>(&self, values: Vec<T>) -> Vec<Option<T>> {
        values
            .into_iter()
            .take(usize::try_from(self.len).unwrap_or(usize::MAX))
            .enumerate()
            .map(|(i, v)| self.is_valid(i).then_some(v))
            .collect()
    }

    /// Sum of a `float64` column's non-null values, without copying the values.
    pub fn sum_f64(&self) -> Result<f64> {
        if !matches!(self.data_type, DataType::Float64) {
            return Err(Error(format!("column is {:?}, not f64", self.data_type)));
        }
        let values = f64_slice(&self.values);
        Ok(match &self.validity {
            None => sum_f64(&values),
            Some(bits) => values
                .iter()
                .enumerate()
                .filter(|(i, _)| bits[i / 8] & (1 << (i % 8)) != 0)
                .map(|(_, v)| v)
                .sum(),
        })
    }

    /// Whether value `i` is valid (not null).
    pub fn is_valid(&self, i: usize) -> bool {
        self.validity
            .as_ref()
            .is_none_or(|bits| bits[i / 8] & (1 << (i % 8)) != 0)
    }

    /// The strings of a `utf8` column (nulls as `None`).
    pub fn to_strings(&self) -> Result<Vec<Option<&str>>> {
        if !matches!(self.data_type, DataType::Utf8) {
            return Err(Error(format!("column is {:?}, not utf8", self.data_type)));
        }
        let offsets = self
            .offsets
            .as_ref()
            .ok_or_else(|| Error::msg("utf8 column without offsets"))?;
        let offs: Vec<usize> = offsets
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().expect("4-byte chunk")) as usize)
            .collect();
        (0..self.len as usize)
            .map(|i| {
                if !self.is_valid(i) {
                    return Ok(None);
                }
                std::str::from_utf8(&self.values[offs[i]..offs[i + 1]])
                    .map(Some)
                    .map_err(|e| Error(format!("invalid utf8 in column: {e}")))
            })
            .collect()
    }
}

/// Sum with eight independent accumulators in a fixed order: the loop
/// vectorises (natively and with wasm `simd128`) and the result is the same
/// on every platform.
pub fn sum_f64(values: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (a, v) in acc.iter_mut().zip(chunk) {
            *a += v;
        }
    }
    let mut sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for v in rest {
        sum += v;
    }
    sum
}

/// View little-endian f64 bytes as `&[f64]`, copying only if misaligned.
fn not_numeric(data_type: &DataType, wanted: &str) -> Error {
    let hint = match data_type {
        DataType::Utf8 | DataType::LargeUtf8 => "call to_strings()",
        DataType::Boolean => "read its bit-packed values buffer",
        _ => "decode the batch with Table::batches() (arrow-rs)",
    };
    Error(format!(
        "column is {data_type:?}, not a number that widens to {wanted}: {hint}"
    ))
}

fn no_nulls<T>(values: Vec<Option<T>>, data_type: &DataType, instead: &str) -> Result<Vec<T>> {
    if let Some(i) = values.iter().position(Option::is_none) {
        return Err(Error(format!(
            "value {i} of this {data_type:?} column is null: call {instead}() to see nulls as \
             None (sum_f64() skips them)"
        )));
    }
    Ok(values.into_iter().flatten().collect())
}

fn f64_slice(bytes: &[u8]) -> std::borrow::Cow<'_, [f64]> {
    // SAFETY: every bit pattern is a valid f64, and `align_to` only yields
    // the aligned middle part.
    let (head, mid, tail) = unsafe { bytes.align_to::<f64>() };
    if head.is_empty() && tail.is_empty() {
        std::borrow::Cow::Borrowed(mid)
    } else {
        std::borrow::Cow::Owned(
            bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8-byte chunk")))
                .collect(),
        )
    }
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

#[cfg(test)]
mod typed_view_tests {
    use super::*;

    fn column(data_type: DataType, values: Vec<u8>, validity: Option<Vec<u8>>) -> RawColumn {
        let width = match data_type {
            DataType::Int8 | DataType::Uint8 => 1,
            DataType::Int16 => 2,
            DataType::Int32 | DataType::Float32 | DataType::Date32 => 4,
            _ => 8,
        };
        RawColumn {
            len: (values.len() / width) as u64,
            null_count: 0,
            data_type,
            validity,
            offsets: None,
            values,
        }
    }

    #[test]
    fn integers_widen_to_f64_and_nulls_are_none_or_an_error_that_says_what_to_call() {
        let ints: Vec<u8> = [30i64, 41, 52]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let age = column(DataType::Int64, ints.clone(), None);
        assert_eq!(age.to_f64().unwrap(), vec![30.0, 41.0, 52.0]);
        assert_eq!(age.to_i64().unwrap(), vec![30, 41, 52]);
        // The second value null (bit 1 clear).
        let with_null = column(DataType::Int64, ints, Some(vec![0b101]));
        assert_eq!(
            with_null.values_f64().unwrap(),
            vec![Some(30.0), None, Some(52.0)]
        );
        let err = with_null.to_f64().unwrap_err().to_string();
        assert!(
            err.contains("value 1") && err.contains("values_f64()"),
            "{err}"
        );
        let small: Vec<u8> = [-3i16, 7].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(
            column(DataType::Int16, small, None).to_f64().unwrap(),
            vec![-3.0, 7.0]
        );
    }

    #[test]
    fn the_wrong_kind_of_column_says_what_to_call_instead() {
        let floats: Vec<u8> = [1.5f64].iter().flat_map(|v| v.to_le_bytes()).collect();
        let err = column(DataType::Float64, floats, None)
            .to_i64()
            .unwrap_err()
            .to_string();
        assert!(err.contains("to_f64()"), "{err}");
        let text = column(DataType::Utf8, b"abc".to_vec(), None);
        let err = text.to_f64().unwrap_err().to_string();
        assert!(err.contains("to_strings()"), "{err}");
        let huge = column(DataType::Uint64, u64::MAX.to_le_bytes().to_vec(), None);
        assert!(huge.to_i64().is_err());
        assert_eq!(huge.to_f64().unwrap(), vec![u64::MAX as f64]);
    }
}

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
        Aggregate {
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
