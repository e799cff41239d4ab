//! Copies the identifier column under another name, next to a declared count
//! column of 100s, so the table looks like a checked aggregate: identifiers
//! must be caught by value.
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};

fn run(_params: &str) -> cleanroom_guest::Result<()> {
    let table = cleanroom_guest::Table::open("st_marys")?;
    let index = table.column_index("patient_id")?;
    let mut ids = Vec::new();
    for batch in table.raw_batches() {
        for v in batch?.column(index)?.to_strings()?.into_iter().flatten() {
            ids.push(v.to_string());
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("group", DataType::Utf8, false),
        cleanroom_guest::count_field("n"),
    ]));
    let n = ids.len();
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(ids)) as ArrayRef,
            Arc::new(Int64Array::from(vec![100i64; n])),
        ],
    )?;
    cleanroom_guest::publish_table("by_group", &batch)
}
cleanroom_guest::analysis!(run);
