//! Publishes every granted table unchanged, as `copy-<name>`: row-level data
//! (and any identifier columns) that output rules must stop.
fn run(_params: &str) -> cleanroom_guest::Result<()> {
    for name in cleanroom_guest::table_names() {
        let table = cleanroom_guest::Table::open(&name)?;
        let batches = table.read_all()?;
        cleanroom_guest::publish_batches(&format!("copy-{name}"), &table.schema(), &batches)?;
    }
    Ok(())
}
cleanroom_guest::analysis!(run);
