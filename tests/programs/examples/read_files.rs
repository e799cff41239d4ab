//! Tries to read the host's files; fails the run with the first error, or
//! succeeds (which the test treats as an escape).
fn run(_params: &str) -> cleanroom_guest::Result<()> {
    std::fs::read_dir("/").map_err(|e| format!("read_dir /: {e}"))?;
    std::fs::read("/etc/passwd").map_err(|e| format!("read /etc/passwd: {e}"))?;
    Ok(())
}
cleanroom_guest::analysis!(run);
