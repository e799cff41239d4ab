//! Panics (a Rust panic is a wasm trap).
fn run(_params: &str) -> cleanroom_guest::Result<()> {
    panic!("deliberate panic in analysis");
}
cleanroom_guest::analysis!(run);
