//! Sleeps for `Duration::MAX` in WASI's poll, where epoch interruption cannot
//! reach it: the run must still end at its deadline, or on cancel.
fn run(_params: &str) -> cleanroom_guest::Result<()> {
    std::thread::sleep(std::time::Duration::MAX);
    Ok(())
}
cleanroom_guest::analysis!(run);
