//! Publishes 1 MiB files until stopped, ignoring errors.
fn run(_params: &str) -> cleanroom_guest::Result<()> {
    let chunk = vec![7u8; 1 << 20];
    for i in 0.. {
        let _ = cleanroom_guest::publish_file(&format!("flood-{i}"), &chunk);
    }
    Ok(())
}
cleanroom_guest::analysis!(run);
