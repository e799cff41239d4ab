//! Does nothing: measures instantiation and call overhead.
fn run(_params: &str) -> cleanroom_guest::Result<()> {
    Ok(())
}
cleanroom_guest::analysis!(run);
