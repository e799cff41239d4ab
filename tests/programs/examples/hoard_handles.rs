//! Reads every batch of `data` and never drops one: each handle pins a
//! decrypted batch in host memory. It must hit the live-handle limit.
fn run(_params: &str) -> cleanroom_guest::Result<()> {
    let table = cleanroom_guest::Table::open("data")?;
    let mut hoard = Vec::new();
    loop {
        // Each pass rewinds; the hoard grows until the host says no.
        for batch in table.raw_batches() {
            hoard.push(batch?);
        }
    }
}
cleanroom_guest::analysis!(run);
