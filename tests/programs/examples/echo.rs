//! Publishes its params length and every granted table's row count; a
//! well-behaved program to run right after a hostile one.
fn run(params: &str) -> cleanroom_guest::Result<()> {
    let mut tables = serde_json::Map::new();
    for name in cleanroom_guest::table_names() {
        let t = cleanroom_guest::Table::open(&name)?;
        let rows: usize = t
            .batches()
            .map(|b| b.map(|b| b.num_rows()))
            .sum::<Result<_, _>>()?;
        tables.insert(name, rows.into());
    }
    println!("echo saw {} bytes of params", params.len());
    cleanroom_guest::publish_json(
        "echo",
        &serde_json::json!({ "params_len": params.len(), "tables": tables }),
    )
}
cleanroom_guest::analysis!(run);
