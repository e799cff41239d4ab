//! Reports any environment, arguments or stdin it can see.
use std::io::Read;
fn run(_params: &str) -> cleanroom_guest::Result<()> {
    let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    let args: Vec<String> = std::env::args().collect();
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    if vars.is_empty() && args.is_empty() && stdin.is_empty() {
        Err("no environment, no arguments, empty stdin".into())
    } else {
        Err(format!(
            "LEAK: env={vars:?} args={args:?} stdin={} bytes",
            stdin.len()
        )
        .into())
    }
}
cleanroom_guest::analysis!(run);
