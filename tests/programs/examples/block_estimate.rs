//! For sample and aggregate: publishes `estimate` = [rows, mean of `column`] of the table it
//! sees. A module that counts "the whole table" this way sees only its block.
fn run(text: &str) -> cleanroom_guest::Result<()> {
    let p: serde_json::Value = cleanroom_guest::params(text)?;
    let t = cleanroom_guest::Table::open(p["table"].as_str().unwrap_or("data"))?;
    let index = t.column_index(p["column"].as_str().unwrap_or("x"))?;
    let (mut rows, mut sum) = (0u64, 0.0);
    for batch in t.raw_batches() {
        let batch = batch?;
        rows += batch.num_rows();
        sum += batch.column(index)?.to_f64()?.iter().sum::<f64>();
    }
    let mean = if rows == 0 { 0.0 } else { sum / rows as f64 };
    cleanroom_guest::publish_json("estimate", &[rows as f64, mean])
}
cleanroom_guest::analysis!(run);
