//! Prints to stdout without end.
fn run(_params: &str) -> cleanroom_guest::Result<()> {
    let line = "y".repeat(1000);
    loop {
        println!("{line}");
    }
}
cleanroom_guest::analysis!(run);
