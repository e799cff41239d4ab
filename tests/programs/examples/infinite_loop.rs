//! Never returns.
fn run(_params: &str) -> cleanroom_guest::Result<()> {
    let mut x = 0u64;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}
cleanroom_guest::analysis!(run);
