//! Reads the first value of the first string column of every granted table
//! and returns it as its error text: a module's error message must be an
//! output governed by the owners' rules, never a status, event or audit line.
fn run(_params: &str) -> cleanroom_guest::Result<()> {
    let mut secrets = Vec::new();
    for name in cleanroom_guest::table_names() {
        let table = cleanroom_guest::Table::open(&name)?;
        if let Some(batch) = table.raw_batches().next() {
            let batch = batch?;
            for (i, col) in table.columns().iter().enumerate() {
                if col.name.contains("id") || col.name == "mrn" {
                    let raw = batch.column(i as u32)?;
                    if let Some(Some(v)) = raw.to_strings()?.first() {
                        secrets.push(v.to_string());
                    }
                }
            }
        }
    }
    Err(cleanroom_guest::Error::msg(format!(
        "KeyError: {}",
        secrets.join(",")
    )))
}
cleanroom_guest::analysis!(run);
