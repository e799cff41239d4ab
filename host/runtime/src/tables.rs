//! The `tables` capability: read access to exactly the run's granted tables.
//!
//! Shape: [`TablesCtx`] is the per-run state, [`TablesView`] the view the
//! generated bindings call into, and [`add_to_linker`] links it once per
//! engine.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_ipc::writer::{
    DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions, StreamWriter,
};
use arrow_schema::SchemaRef;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use crate::raw::{RawColumnOut, raw_column, wit_type};
use crate::world::tables::{self, Column, RawColumn, TableError};

/// A source of record batches for one granted table.
///
/// Implementations decide where bytes come from (memory, a sealed envelope
/// decrypted batch by batch); the sandbox only ever sees the batches.
pub trait TableSource: Send + Sync + fmt::Debug {
    /// The table's schema.
    fn schema(&self) -> SchemaRef;
    /// Total number of rows.
    fn num_rows(&self) -> u64;
    /// A fresh reader from the first batch.
    fn batches(&self) -> Box<dyn Iterator<Item = Result<RecordBatch, String>> + Send>;
}

/// A table held in memory.
#[derive(Debug, Clone)]
pub struct MemTable {
    schema: SchemaRef,
    batches: Arc<Vec<RecordBatch>>,
    num_rows: u64,
}

impl MemTable {
    /// A table from its schema and batches (all batches must have that schema).
    pub fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        let num_rows = batches.iter().map(|b| b.num_rows() as u64).sum();
        Self {
            schema,
            batches: Arc::new(batches),
            num_rows,
        }
    }
}

impl TableSource for MemTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn num_rows(&self) -> u64 {
        self.num_rows
    }

    fn batches(&self) -> Box<dyn Iterator<Item = Result<RecordBatch, String>> + Send> {
        let batches = self.batches.clone();
        Box::new((0..batches.len()).map(move |i| Ok(batches[i].clone())))
    }
}

/// The tables granted to one run, by the name the guest opens them under.
pub type Grants = BTreeMap<String, Arc<dyn TableSource>>;

/// Per-run state of the `tables` capability.
#[derive(Debug)]
pub struct TablesCtx {
    granted: Grants,
    /// Tables only the host may read (they require differential privacy).
    unreadable: std::collections::BTreeSet<String>,
    max_open: u32,
    opened: u32,
    bytes_read: u64,
    live_batches: u32,
    max_live_batches: u32,
    rewinds: u32,
    max_rewinds: u32,
}

impl TablesCtx {
    pub(crate) fn new(
        granted: Grants,
        limits: &crate::Limits,
        aggregation: &crate::aggregate::Aggregation,
    ) -> Self {
        Self {
            unreadable: granted
                .keys()
                .filter(|name| !aggregation.readable(name))
                .cloned()
                .collect(),
            granted,
            max_open: limits.max_open_tables,
            opened: 0,
            bytes_read: 0,
            live_batches: 0,
            max_live_batches: limits.max_live_batches,
            rewinds: 0,
            max_rewinds: limits.max_rewinds,
        }
    }

    /// A granted table, for the host's own reads (aggregates).
    pub(crate) fn source(&self, name: &str) -> Option<Arc<dyn TableSource>> {
        self.granted.get(name).cloned()
    }

    /// Bytes handed to the guest so far (IPC and raw column reads).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }
}

/// An open table in the guest's resource table.
pub struct TableHandle {
    name: String,
    source: Arc<dyn TableSource>,
    reader: Box<dyn Iterator<Item = Result<RecordBatch, String>> + Send>,
}

impl fmt::Debug for TableHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableHandle")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A batch the guest holds.
#[derive(Debug)]
pub struct BatchHandle {
    batch: RecordBatch,
}

/// What the generated bindings call into: the ctx plus the resource table.
#[derive(Debug)]
pub struct TablesCtxView<'a> {
    /// The run's tables state.
    pub ctx: &'a mut TablesCtx,
    /// The store's resource table.
    pub table: &'a mut ResourceTable,
}

/// Access to a [`TablesCtxView`] from the store's data.
pub trait TablesView: Send {
    /// The view.
    fn tables(&mut self) -> TablesCtxView<'_>;
}

struct HasTables;

impl HasData for HasTables {
    type Data<'a> = TablesCtxView<'a>;
}

/// Link the `tables` interface.
pub fn add_to_linker<T: TablesView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    tables::add_to_linker::<T, HasTables>(linker, |t| t.tables())?;
    // The generated `batch.column` returns owned `Vec`s, which would copy
    // every column once on the host before the component model copies it
    // into the guest. Replace it with one that lends the Arrow buffers.
    linker.allow_shadowing(true);
    linker
        .instance("cleanroom:analysis/tables@0.1.0")?
        .func_wrap(
            "[method]batch.column",
            |mut store: wasmtime::StoreContextMut<'_, T>,
             (this, index): (Resource<BatchHandle>, u32)| {
                let mut view = store.data_mut().tables();
                Ok((column_lent(&mut view, this, index)?,))
            },
        )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// A batch's column as lent Arrow buffers.
fn column_lent(
    view: &mut TablesCtxView<'_>,
    this: Resource<BatchHandle>,
    index: u32,
) -> wasmtime::Result<Result<RawColumnOut, TableError>> {
    let batch = &view.table.get(&this)?.batch;
    let Some(array) = batch.columns().get(index as usize) else {
        return Ok(Err(TableError::InvalidColumn(format!(
            "column {index} is out of range: the batch has {} columns",
            batch.num_columns()
        ))));
    };
    let raw = match raw_column(array.as_ref()) {
        Ok(raw) => raw,
        Err(e) => return Ok(Err(TableError::InvalidColumn(e))),
    };
    view.ctx.bytes_read += raw.byte_len();
    Ok(Ok(raw))
}

impl tables::Host for TablesCtxView<'_> {
    fn granted(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.ctx.granted.keys().cloned().collect())
    }

    fn open(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Resource<TableHandle>, TableError>> {
        // An ungranted table and a missing one get the same answer.
        let Some(source) = self.ctx.granted.get(&name).cloned() else {
            return Ok(Err(TableError::NotFound(name)));
        };
        if self.ctx.unreadable.contains(&name) {
            return Ok(Err(TableError::ReadFailed(format!(
                "table {name} requires differential privacy: its rows are read only by the \
                 host, through the aggregate interface (or by sample and aggregate)"
            ))));
        }
        if self.ctx.opened >= self.ctx.max_open {
            return Ok(Err(TableError::TooManyOpen(self.ctx.max_open)));
        }
        self.ctx.opened += 1;
        let reader = source.batches();
        let handle = TableHandle {
            name,
            source,
            reader,
        };
        Ok(Ok(self.table.push(handle)?))
    }
}

impl tables::HostTable for TablesCtxView<'_> {
    fn name(&mut self, this: Resource<TableHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(&this)?.name.clone())
    }

    fn schema_ipc(&mut self, this: Resource<TableHandle>) -> wasmtime::Result<Vec<u8>> {
        let schema = self.table.get(&this)?.source.schema();
        // The schema message alone: no end-of-stream marker, since batch
        // messages follow in the guest's decoder.
        let mut writer = StreamWriter::try_new(Vec::new(), &schema)?;
        Ok(std::mem::take(writer.get_mut()))
    }

    fn columns(&mut self, this: Resource<TableHandle>) -> wasmtime::Result<Vec<Column>> {
        let schema = self.table.get(&this)?.source.schema();
        Ok(schema
            .fields()
            .iter()
            .map(|f| Column {
                name: f.name().clone(),
                data_type: wit_type(f.data_type()),
                nullable: f.is_nullable(),
            })
            .collect())
    }

    fn num_rows(&mut self, this: Resource<TableHandle>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&this)?.source.num_rows())
    }

    fn next_batch(
        &mut self,
        this: Resource<TableHandle>,
    ) -> wasmtime::Result<Result<Option<Resource<BatchHandle>>, TableError>> {
        if self.ctx.live_batches >= self.ctx.max_live_batches {
            // A guest hoarding batch handles would pin every decrypted batch in host memory.
            return Err(wasmtime::Error::new(crate::RunError::ResourceLimit {
                what: "batch handles held at once",
                limit: self.ctx.max_live_batches as u64,
            }));
        }
        let handle = self.table.get_mut(&this)?;
        match handle.reader.next() {
            None => Ok(Ok(None)),
            // The source's error text is host-written (decryption, I/O), not the guest's.
            Some(Err(e)) => Ok(Err(TableError::ReadFailed(e))),
            Some(Ok(batch)) => {
                self.ctx.live_batches += 1;
                Ok(Ok(Some(self.table.push(BatchHandle { batch })?)))
            }
        }
    }

    fn rewind(&mut self, this: Resource<TableHandle>) -> wasmtime::Result<()> {
        if self.ctx.rewinds >= self.ctx.max_rewinds {
            return Err(wasmtime::Error::new(crate::RunError::ResourceLimit {
                what: "rewinds",
                limit: self.ctx.max_rewinds as u64,
            }));
        }
        self.ctx.rewinds += 1;
        let handle = self.table.get_mut(&this)?;
        handle.reader = handle.source.batches();
        Ok(())
    }

    fn drop(&mut self, rep: Resource<TableHandle>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

impl tables::HostBatch for TablesCtxView<'_> {
    fn num_rows(&mut self, this: Resource<BatchHandle>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&this)?.batch.num_rows() as u64)
    }

    fn ipc(&mut self, this: Resource<BatchHandle>) -> wasmtime::Result<Vec<u8>> {
        let batch = &self.table.get(&this)?.batch;
        let bytes = encode_batch(batch)?;
        self.ctx.bytes_read += bytes.len() as u64;
        Ok(bytes)
    }

    fn column(
        &mut self,
        this: Resource<BatchHandle>,
        index: u32,
    ) -> wasmtime::Result<Result<RawColumn, TableError>> {
        // Shadowed in `add_to_linker` by `column_lent`, which lends the
        // Arrow buffers instead of copying them into a `Vec` first.
        Ok(column_lent(self, this, index)?.map(RawColumnOut::into_owned))
    }

    fn drop(&mut self, rep: Resource<BatchHandle>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        self.ctx.live_batches = self.ctx.live_batches.saturating_sub(1);
        Ok(())
    }
}

/// Encode one batch as an IPC record-batch message (stream framing).
fn encode_batch(batch: &RecordBatch) -> Result<Vec<u8>, arrow_schema::ArrowError> {
    let generator = IpcDataGenerator::default();
    let options = IpcWriteOptions::default();
    let mut tracker = DictionaryTracker::new(false);
    let mut compression = IpcWriteContext::default();
    let (dictionaries, message) =
        generator.encode(batch, &mut tracker, &options, &mut compression)?;
    let mut out = Vec::with_capacity(message.arrow_data.len() + message.ipc_message.len() + 16);
    for dictionary in dictionaries {
        arrow_ipc::writer::write_message(&mut out, dictionary, &options)?;
    }
    arrow_ipc::writer::write_message(&mut out, message, &options)?;
    Ok(out)
}

/// A granted table whose batches pass through an identifier collector on their way to the
/// guest: every identifier value a guest could have seen is known to the egress check.
#[derive(Debug)]
pub struct Tapped {
    inner: std::sync::Arc<dyn TableSource>,
    columns: std::sync::Arc<Vec<String>>,
    sink: std::sync::Arc<cleanroom_policy::IdentifierCollector>,
}

impl Tapped {
    /// Tap `inner`'s `columns` into `sink`.
    pub fn new(
        inner: std::sync::Arc<dyn TableSource>,
        columns: Vec<String>,
        sink: std::sync::Arc<cleanroom_policy::IdentifierCollector>,
    ) -> Self {
        Self {
            inner,
            columns: std::sync::Arc::new(columns),
            sink,
        }
    }
}

impl TableSource for Tapped {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn num_rows(&self) -> u64 {
        self.inner.num_rows()
    }

    fn batches(&self) -> Box<dyn Iterator<Item = Result<RecordBatch, String>> + Send> {
        let (columns, sink) = (self.columns.clone(), self.sink.clone());
        Box::new(self.inner.batches().inspect(move |batch| {
            if let Ok(batch) = batch {
                sink.collect(batch, &columns);
            }
        }))
    }
}
