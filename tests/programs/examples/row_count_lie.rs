//! Publishes a table whose batch declares 2^31 rows backed by no buffers
//! (params `"columns"`: zero columns; `"null"`: one Null-typed column). The
//! host must refuse it before sizing anything by that row count.
use std::sync::Arc;

use arrow_array::{ArrayRef, NullArray, RecordBatch, RecordBatchOptions};
use arrow_schema::{DataType, Field, Schema};

fn run(params: &str) -> cleanroom_guest::Result<()> {
    // As many as a 32-bit guest can name: a host sizing a mask by it would allocate 2 GiB.
    let rows = 1usize << 31;
    let batch = if params.contains("null") {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Null, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(NullArray::new(rows)) as ArrayRef])?
    } else {
        RecordBatch::try_new_with_options(
            Arc::new(Schema::empty()),
            vec![],
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?
    };
    cleanroom_guest::publish_table("lie", &batch)
}
cleanroom_guest::analysis!(run);
