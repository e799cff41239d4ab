//! The `output` capability: everything an analysis publishes, held by the host.
//!
//! Outputs are validated (tables must be well-formed Arrow IPC, JSON must
//! parse), named uniquely and charged against the run's output budget. They
//! leave the sandbox only as a [`Outputs`] value, for the caller (the
//! governance layer, or `run-local`) to apply the owners' rules to.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{Field, Schema, SchemaRef};
use wasmtime::component::{HasData, Linker};

use crate::error::RunError;
use crate::log::{LogBuffer, LogSource};
use crate::raw::array_from_raw;
use crate::world::output::{self, Level, OutputError};
use crate::world::tables::RawColumn;

/// Longest output name.
pub const MAX_NAME_LEN: usize = 64;

/// A published table.
#[derive(Debug, Clone)]
pub struct TableOutput {
    /// Output name.
    pub name: String,
    /// Its schema.
    pub schema: SchemaRef,
    /// Its batches, decoded (and so validated) from the guest's IPC.
    pub batches: Vec<RecordBatch>,
    /// The guest's IPC stream, byte for byte.
    pub ipc: Vec<u8>,
}

impl TableOutput {
    /// Total rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Everything a run published, in publication order per kind.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    /// Published tables.
    pub tables: Vec<TableOutput>,
    /// Published JSON documents, byte for byte as the guest wrote them (validated as JSON;
    /// kept as text so numbers and key order survive exactly).
    pub json: Vec<(String, String)>,
    /// Published files.
    pub files: Vec<(String, Vec<u8>)>,
    /// Aggregates the host computed and checked.
    pub aggregates: Vec<crate::aggregate::AggregateOutput>,
}

/// Per-run state of the `output` capability.
#[derive(Debug)]
pub struct OutputCtx {
    outputs: Outputs,
    /// Count columns declared per table output with `declare-counts`.
    declared: std::collections::BTreeMap<String, BTreeSet<String>>,
    names: BTreeSet<String>,
    used: u64,
    max_bytes: u64,
    max_outputs: u32,
    log: LogBuffer,
}

impl OutputCtx {
    pub(crate) fn new(max_bytes: u64, max_outputs: u32, log: LogBuffer) -> Self {
        Self {
            outputs: Outputs::default(),
            declared: Default::default(),
            names: BTreeSet::new(),
            used: 0,
            max_bytes,
            max_outputs,
            log,
        }
    }

    /// Bytes published so far.
    pub fn bytes_used(&self) -> u64 {
        self.used
    }

    pub(crate) fn take(&mut self) -> Outputs {
        let mut outputs = std::mem::take(&mut self.outputs);
        for table in &mut outputs.tables {
            if let Some(columns) = self.declared.get(&table.name) {
                declare(table, columns);
            }
        }
        outputs
    }

    /// Check name and budget without charging; the error is a WIT error or a trap.
    fn check(&mut self, name: &str, size: usize) -> wasmtime::Result<Result<(), OutputError>> {
        if let Err(e) = validate_name(name) {
            return Ok(Err(OutputError::InvalidName(e)));
        }
        if self.used.saturating_add(size as u64) > self.max_bytes {
            return Err(wasmtime::Error::new(RunError::OutputLimit(self.max_bytes)));
        }
        Ok(Ok(()))
    }

    /// Check name and budget, and charge; the error is a WIT error or a trap.
    pub(crate) fn admit(
        &mut self,
        name: &str,
        size: usize,
    ) -> wasmtime::Result<Result<(), OutputError>> {
        if let Err(e) = self.may_publish(name) {
            return Ok(Err(e));
        }
        let size = size as u64;
        if self.used + size > self.max_bytes {
            // Exceeding the budget ends the run: a guest that ignores the
            // error must not keep producing.
            return Err(wasmtime::Error::new(RunError::OutputLimit(self.max_bytes)));
        }
        self.used += size;
        self.names.insert(name.to_string());
        Ok(Ok(()))
    }
}

impl OutputCtx {
    /// Whether an output called `name` could be published at all (its name, and the count
    /// of outputs), before anything is computed for it: the host's aggregates check this
    /// first, so a guest cannot make the host read a table again and again for nothing.
    pub(crate) fn may_publish(&self, name: &str) -> Result<(), OutputError> {
        validate_name(name).map_err(OutputError::InvalidName)?;
        if self.names.contains(name) {
            return Err(OutputError::DuplicateName(name.to_string()));
        }
        if self.names.len() as u32 >= self.max_outputs {
            return Err(OutputError::InvalidName(format!(
                "a run may publish at most {} outputs",
                self.max_outputs
            )));
        }
        Ok(())
    }
}

/// Field metadata that declares a count column (read by the policy decision point).
pub const COUNT_METADATA: &str = "cleanroom:count";
/// Most count columns a run may declare with `declare-counts`.
pub const MAX_DECLARED_COUNTS: usize = 256;

/// Mark `columns` of `table` as counts in its schema's field metadata.
fn declare(table: &mut TableOutput, columns: &BTreeSet<String>) {
    let fields: Vec<Field> = table
        .schema
        .fields()
        .iter()
        .map(|f| {
            let mut f = f.as_ref().clone();
            if columns.contains(f.name()) {
                let mut meta = f.metadata().clone();
                meta.insert(COUNT_METADATA.to_string(), "true".to_string());
                f = f.with_metadata(meta);
            }
            f
        })
        .collect();
    let schema = Arc::new(Schema::new_with_metadata(
        fields,
        table.schema.metadata().clone(),
    ));
    let batches: Result<Vec<RecordBatch>, _> = table
        .batches
        .iter()
        .map(|b| RecordBatch::try_new(schema.clone(), b.columns().to_vec()))
        .collect();
    if let Ok(batches) = batches {
        table.schema = schema;
        table.batches = batches;
    }
}

/// Checks an output name: it becomes a file name in `run-local`, so only
/// a conservative character set is accepted.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!(
            "output names must be 1 to {MAX_NAME_LEN} bytes long"
        ));
    }
    if name.starts_with('.') {
        return Err(format!("output name {name:?} must not start with '.'"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "output name {name:?} may only contain ASCII letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

/// What the generated bindings call into.
#[derive(Debug)]
pub struct OutputCtxView<'a> {
    /// The run's output state.
    pub ctx: &'a mut OutputCtx,
}

/// Access to an [`OutputCtxView`] from the store's data.
pub trait OutputView: Send {
    /// The view.
    fn output(&mut self) -> OutputCtxView<'_>;
}

struct HasOutput;

impl HasData for HasOutput {
    type Data<'a> = OutputCtxView<'a>;
}

/// Link the `output` interface.
pub fn add_to_linker<T: OutputView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    output::add_to_linker::<T, HasOutput>(linker, |t| t.output())
}

impl output::Host for OutputCtxView<'_> {
    fn publish_table(
        &mut self,
        name: String,
        ipc: Vec<u8>,
    ) -> wasmtime::Result<Result<(), OutputError>> {
        if let Err(e) = self.ctx.check(&name, ipc.len())? {
            return Ok(Err(e));
        }
        let (schema, batches) = match decode_stream(&ipc) {
            Ok(decoded) => decoded,
            Err(e) => return Ok(Err(OutputError::InvalidPayload(e))),
        };
        if let Err(e) = self.ctx.admit(&name, ipc.len())? {
            return Ok(Err(e));
        }
        self.ctx.outputs.tables.push(TableOutput {
            name,
            schema,
            batches,
            ipc,
        });
        Ok(Ok(()))
    }

    fn publish_columns(
        &mut self,
        name: String,
        columns: Vec<(String, RawColumn)>,
    ) -> wasmtime::Result<Result<(), OutputError>> {
        let size: usize = columns
            .iter()
            .map(|(n, c)| {
                n.len()
                    + c.values.len()
                    + c.offsets.as_ref().map_or(0, Vec::len)
                    + c.validity.as_ref().map_or(0, Vec::len)
            })
            .sum();
        let batch = match batch_from_raw(columns) {
            Ok(batch) => batch,
            Err(e) => return Ok(Err(OutputError::InvalidPayload(e))),
        };
        let ipc = match encode_stream(&batch) {
            Ok(ipc) => ipc,
            Err(e) => return Ok(Err(OutputError::InvalidPayload(e))),
        };
        if let Err(e) = self.ctx.admit(&name, size.max(ipc.len()))? {
            return Ok(Err(e));
        }
        self.ctx.outputs.tables.push(TableOutput {
            name,
            schema: batch.schema(),
            batches: vec![batch],
            ipc,
        });
        Ok(Ok(()))
    }

    fn publish_json(
        &mut self,
        name: String,
        json: String,
    ) -> wasmtime::Result<Result<(), OutputError>> {
        // Budget first: a multi-GiB text is refused before anything parses it.
        if let Err(e) = self.ctx.check(&name, json.len())? {
            return Ok(Err(e));
        }
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&json) {
            return Ok(Err(OutputError::InvalidPayload(format!(
                "invalid JSON: {e}"
            ))));
        }
        if let Err(e) = self.ctx.admit(&name, json.len())? {
            return Ok(Err(e));
        }
        self.ctx.outputs.json.push((name, json));
        Ok(Ok(()))
    }

    fn publish_file(
        &mut self,
        name: String,
        contents: Vec<u8>,
    ) -> wasmtime::Result<Result<(), OutputError>> {
        if let Err(e) = self.ctx.admit(&name, contents.len())? {
            return Ok(Err(e));
        }
        self.ctx.outputs.files.push((name, contents));
        Ok(Ok(()))
    }

    fn declare_counts(&mut self, table: String, columns: Vec<String>) -> wasmtime::Result<()> {
        let declared: usize = self.ctx.declared.values().map(BTreeSet::len).sum();
        // Bounded in number and in bytes (a column name is at most 256 bytes here).
        if declared + columns.len() > MAX_DECLARED_COUNTS
            || validate_name(&table).is_err()
            || columns.iter().any(|c| c.is_empty() || c.len() > 256)
        {
            // Ignored, not fatal: an undeclared table is only ever checked more strictly.
            return Ok(());
        }
        self.ctx.declared.entry(table).or_default().extend(columns);
        Ok(())
    }

    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let source = match level {
            Level::Debug => LogSource::Debug,
            Level::Info => LogSource::Info,
            Level::Warn => LogSource::Warn,
            Level::Error => LogSource::Error,
        };
        self.ctx
            .log
            .line(source, message)
            .map_err(wasmtime::Error::new)
    }
}

/// A record batch from named raw columns.
fn batch_from_raw(columns: Vec<(String, RawColumn)>) -> Result<RecordBatch, String> {
    let mut fields = Vec::with_capacity(columns.len());
    let mut arrays = Vec::with_capacity(columns.len());
    for (name, raw) in columns {
        let nullable = raw.validity.is_some();
        let array = array_from_raw(raw).map_err(|e| format!("column {name:?}: {e}"))?;
        fields.push(Field::new(name, array.data_type().clone(), nullable));
        arrays.push(array);
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .map_err(|e| format!("invalid table: {e}"))?;
    check_rows(&batch)?;
    Ok(batch)
}

/// Encode one batch as a complete IPC stream.
fn encode_stream(batch: &RecordBatch) -> Result<Vec<u8>, String> {
    let mut writer =
        StreamWriter::try_new(Vec::new(), &batch.schema()).map_err(|e| e.to_string())?;
    writer.write(batch).map_err(|e| e.to_string())?;
    writer.into_inner().map_err(|e| e.to_string())
}

/// Decode a complete IPC stream, refusing batches whose declared row count their buffers do
/// not back (see [`check_rows`]).
pub fn decode_stream(ipc: &[u8]) -> Result<(SchemaRef, Vec<RecordBatch>), String> {
    let reader =
        StreamReader::try_new(ipc, None).map_err(|e| format!("invalid Arrow IPC stream: {e}"))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid Arrow IPC stream: {e}"))?;
    for batch in &batches {
        check_rows(batch)?;
    }
    Ok((schema, batches))
}

/// Rows a column may declare per byte of its buffers, plus slack for tiny arrays.
const ROWS_PER_BYTE: usize = 8;
const ROW_SLACK: usize = 1024;

/// A batch's declared row count must be backed by real buffers: a zero-column batch, a `Null`
/// column or a run-end-encoded column can claim 2^40 rows in a few bytes, and whatever then
/// sizes anything by the row count (a suppression mask, a CSV writer) would allocate that.
pub fn check_rows(batch: &RecordBatch) -> Result<(), String> {
    let rows = batch.num_rows();
    if batch.num_columns() == 0 {
        if rows > 0 {
            return Err(format!("a batch with no columns cannot have {rows} rows"));
        }
        return Ok(());
    }
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let bytes = column.to_data().get_slice_memory_size().unwrap_or(0);
        if rows
            > bytes
                .saturating_mul(ROWS_PER_BYTE)
                .saturating_add(ROW_SLACK)
        {
            return Err(format!(
                "column {:?} declares {rows} rows that its buffers do not hold",
                field.name()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_a_directory_are_refused() {
        for bad in ["", "../x", "a/b", ".hidden", "a\\b", "é", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?} should be refused");
        }
        for good in ["cohort.csv", "by-diagnosis", "t_1"] {
            validate_name(good).unwrap();
        }
    }
}
