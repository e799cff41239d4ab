//! Publishes a CSV file (and a JSON document) holding every identifier it
//! read, under innocent names: identifiers must be caught by value.
fn run(_params: &str) -> cleanroom_guest::Result<()> {
    let mut csv = String::from("ref\n");
    for name in cleanroom_guest::table_names() {
        let table = cleanroom_guest::Table::open(&name)?;
        let index = table
            .columns()
            .iter()
            .position(|c| c.name == "patient_id" || c.name == "mrn");
        let Some(index) = index else { continue };
        for batch in table.raw_batches() {
            for v in batch?
                .column(index as u32)?
                .to_strings()?
                .into_iter()
                .flatten()
            {
                csv.push_str(v);
                csv.push('\n');
            }
        }
    }
    cleanroom_guest::publish_file("notes.csv", csv.as_bytes())
}
cleanroom_guest::analysis!(run);
