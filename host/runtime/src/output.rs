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
pub const MAX_NAME_LEN: usize = 128;

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
    /// Published JSON values.
    pub json: Vec<(String, serde_json::Value)>,
    /// Published files.
    pub files: Vec<(String, Vec<u8>)>,
}

/// Per-run state of the `output` capability.
#[derive(Debug)]
pub struct OutputCtx {
    outputs: Outputs,
    names: BTreeSet<String>,
    used: u64,
    max_bytes: u64,
    max_outputs: u32,
    log: LogBuffer,
}

impl OutputCtx {
    pub(crate) fn new(max_bytes: u64, max_outputs: u32, log: LogBuffer) -> Self {
        OutputCtx {
            outputs: Outputs::default(),
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
        std::mem::take(&mut self.outputs)
    }

    /// Check name and budget; the error is a WIT error or a trap.
    fn admit(&mut self, name: &str, size: usize) -> wasmtime::Result<Result<(), OutputError>> {
        if let Err(e) = validate_name(name) {
            return Ok(Err(OutputError::InvalidName(e)));
        }
        if self.names.contains(name) {
            return Ok(Err(OutputError::DuplicateName(name.to_string())));
        }
        if self.names.len() as u32 >= self.max_outputs {
            return Ok(Err(OutputError::InvalidName(format!(
                "a run may publish at most {} outputs",
                self.max_outputs
            ))));
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
        let value: serde_json::Value = match serde_json::from_str(&json) {
            Ok(v) => v,
            Err(e) => {
                return Ok(Err(OutputError::InvalidPayload(format!(
                    "invalid JSON: {e}"
                ))));
            }
        };
        if let Err(e) = self.ctx.admit(&name, json.len())? {
            return Ok(Err(e));
        }
        self.ctx.outputs.json.push((name, value));
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
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .map_err(|e| format!("invalid table: {e}"))
}

/// Encode one batch as a complete IPC stream.
fn encode_stream(batch: &RecordBatch) -> Result<Vec<u8>, String> {
    let mut writer =
        StreamWriter::try_new(Vec::new(), &batch.schema()).map_err(|e| e.to_string())?;
    writer.write(batch).map_err(|e| e.to_string())?;
    writer.into_inner().map_err(|e| e.to_string())
}

/// Decode a complete IPC stream.
pub fn decode_stream(ipc: &[u8]) -> Result<(SchemaRef, Vec<RecordBatch>), String> {
    let reader =
        StreamReader::try_new(ipc, None).map_err(|e| format!("invalid Arrow IPC stream: {e}"))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid Arrow IPC stream: {e}"))?;
    Ok((schema, batches))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_a_directory_are_refused() {
        for bad in ["", "../x", "a/b", ".hidden", "a\\b", "é", &"x".repeat(129)] {
            assert!(validate_name(bad).is_err(), "{bad:?} should be refused");
        }
        for good in ["cohort.csv", "by-diagnosis", "t_1"] {
            validate_name(good).unwrap();
        }
    }
}
