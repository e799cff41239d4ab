//! Logs without end.
fn run(_params: &str) -> cleanroom_guest::Result<()> {
    let line = "x".repeat(1000);
    loop {
        cleanroom_guest::info(&line);
    }
}
cleanroom_guest::analysis!(run);
