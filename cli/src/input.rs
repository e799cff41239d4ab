//! Reading researchers' test tables: CSV, Parquet and Arrow IPC (file or stream).

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow_array::{RecordBatch, RecordBatchReader};
use arrow_schema::SchemaRef;
use cleanroom_runtime::MemTable;

use crate::progress;

/// Rows per batch handed to the guest.
pub(crate) const BATCH_ROWS: usize = 64 * 1024;
/// Rows read to infer a CSV file's schema.
const CSV_INFER_ROWS: usize = 100_000;

/// The formats `run-local` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Csv,
    Parquet,
    ArrowFile,
    ArrowStream,
}

/// Decide a file's format from its magic bytes, then its extension.
pub(crate) fn detect(path: &Path) -> Result<Format> {
    let mut head = [0u8; 6];
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let n = file.read(&mut head)?;
    let head = &head[..n];
    if head.starts_with(b"PAR1") {
        return Ok(Format::Parquet);
    }
    if head.starts_with(b"ARROW1") {
        return Ok(Format::ArrowFile);
    }
    if head.starts_with(&[0xff, 0xff, 0xff, 0xff]) {
        return Ok(Format::ArrowStream);
    }
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("csv") | Some("txt") => Ok(Format::Csv),
        Some(other) => bail!(
            "{}: unsupported format {other:?}; use CSV (.csv), Parquet or Arrow IPC",
            path.display()
        ),
        None => Ok(Format::Csv),
    }
}

/// A streaming reader of record batches.
pub(crate) type Batches = Box<dyn Iterator<Item = Result<RecordBatch>>>;

/// Open a table for streaming, batch by batch, with a progress bar on large
/// files. Memory stays bounded by one batch (Parquet: one row group).
pub(crate) fn open_batches(path: &Path) -> Result<(SchemaRef, Batches, indicatif::ProgressBar)> {
    let format = detect(path)?;
    let len = std::fs::metadata(path)?.len();
    let bar = progress::bytes(format!("reading {}", path.display()), len);
    if len < 8 << 20 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let name = path.display().to_string();
    let ctx =
        move |e: arrow_schema::ArrowError| anyhow::anyhow!("cannot read {name} as {format:?}: {e}");
    let (schema, batches): (SchemaRef, Batches) = match format {
        Format::Csv => {
            let csv = arrow_csv::reader::Format::default().with_header(true);
            let mut file = File::open(path)?;
            let (schema, _) = csv
                .infer_schema(BufReader::new(&mut file), Some(CSV_INFER_ROWS))
                .map_err(&ctx)?;
            file.seek(SeekFrom::Start(0))?;
            let schema = Arc::new(schema);
            let reader = arrow_csv::ReaderBuilder::new(schema.clone())
                .with_format(csv)
                .with_batch_size(BATCH_ROWS)
                .build(bar.wrap_read(file))
                .map_err(&ctx)?;
            (schema, Box::new(reader.map(move |b| b.map_err(&ctx))))
        }
        Format::Parquet => {
            let file = File::open(path)?;
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .map_err(|e| anyhow::anyhow!("cannot read {} as Parquet: {e}", path.display()))?
                    .with_batch_size(BATCH_ROWS)
                    .build()
                    .map_err(|e| {
                        anyhow::anyhow!("cannot read {} as Parquet: {e}", path.display())
                    })?;
            let schema = reader.schema();
            (schema, Box::new(reader.map(move |b| b.map_err(&ctx))))
        }
        Format::ArrowFile => {
            let reader =
                arrow_ipc::reader::FileReader::try_new(BufReader::new(File::open(path)?), None)
                    .map_err(&ctx)?;
            let schema = reader.schema();
            (schema, Box::new(reader.map(move |b| b.map_err(&ctx))))
        }
        Format::ArrowStream => {
            let reader =
                arrow_ipc::reader::StreamReader::try_new(bar.wrap_read(File::open(path)?), None)
                    .map_err(&ctx)?;
            let schema = reader.schema();
            (schema, Box::new(reader.map(move |b| b.map_err(&ctx))))
        }
    };
    Ok((schema, batches, bar))
}

/// Read a whole table into memory.
pub(crate) fn read_table(path: &Path) -> Result<MemTable> {
    let (schema, batches, bar) = open_batches(path)?;
    let batches = batches.collect::<Result<Vec<_>>>()?;
    bar.finish_and_clear();
    Ok(MemTable::new(schema, batches))
}
