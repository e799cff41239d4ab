//! Sums a float64 column read as raw buffers; params: `{"table": .., "column": ..}`.
fn run(params: &str) -> cleanroom_guest::Result<()> {
    let p: serde_json::Value = cleanroom_guest::params(params)?;
    let table = cleanroom_guest::Table::open(p["table"].as_str().unwrap_or("data"))?;
    let index = table.column_index(p["column"].as_str().unwrap_or("x"))?;
    let (mut sum, mut rows) = (0.0, 0u64);
    for batch in table.raw_batches() {
        let batch = batch?;
        rows += batch.num_rows();
        sum += batch.column(index)?.sum_f64()?;
    }
    cleanroom_guest::publish_json("sum", &serde_json::json!({ "sum": sum, "rows": rows }))
}
cleanroom_guest::analysis!(run);
