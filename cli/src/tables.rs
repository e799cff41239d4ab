//! Released tables on disk: CSV for people and spreadsheets, Parquet for analysis tools (the
//! Arrow IPC bytes are written beside them by the callers).

use std::path::Path;

use anyhow::{Context, Result};
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

/// Write `NAME.csv` and `NAME.parquet` in `dir`.
pub(crate) fn write_copies(
    dir: &Path,
    name: &str,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<()> {
    let csv_path = dir.join(format!("{name}.csv"));
    let file = std::fs::File::create(&csv_path)
        .with_context(|| format!("cannot create {}", csv_path.display()))?;
    let mut csv = arrow_csv::WriterBuilder::new()
        .with_header(true)
        .build(file);
    for batch in batches {
        csv.write(batch)?;
    }
    let parquet_path = dir.join(format!("{name}.parquet"));
    let file = std::fs::File::create(&parquet_path)
        .with_context(|| format!("cannot create {}", parquet_path.display()))?;
    let mut parquet = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None)?;
    for batch in batches {
        parquet.write(batch)?;
    }
    parquet.close()?;
    Ok(())
}
