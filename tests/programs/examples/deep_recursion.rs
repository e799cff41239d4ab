//! Recurses without bound.
fn depth(n: u64) -> u64 {
    if n == u64::MAX {
        return 0;
    }
    1 + depth(std::hint::black_box(n + 1))
}
fn run(_params: &str) -> cleanroom_guest::Result<()> {
    Err(format!("returned from depth {}", depth(0)).into())
}
cleanroom_guest::analysis!(run);
