//! Hostile: reads every granted table row by row and publishes its row count (what a
//! researcher would try on a table whose rows only the host may read).
fn run(_: &str) -> cleanroom_guest::Result<()> {
    for name in cleanroom_guest::table_names() {
        let t = cleanroom_guest::Table::open(&name)?;
        cleanroom_guest::publish_json(&format!("rows_{name}"), &t.num_rows())?;
    }
    Ok(())
}
cleanroom_guest::analysis!(run);
