//! Opens the table named in params (one it was not granted).
fn run(params: &str) -> cleanroom_guest::Result<()> {
    cleanroom_guest::Table::open(params)?;
    Ok(())
}
cleanroom_guest::analysis!(run);
