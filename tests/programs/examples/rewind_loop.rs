//! Rewinds a table forever (each rewind re-reads, and in the enclave
//! re-decrypts, the table): it must hit the rewind limit.
fn run(_params: &str) -> cleanroom_guest::Result<()> {
    let table = cleanroom_guest::Table::open("data")?;
    loop {
        // Starting a pass rewinds the table.
        let _pass = table.raw_batches();
    }
}
cleanroom_guest::analysis!(run);
