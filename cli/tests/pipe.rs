//! The installed binary as a shell uses it.

use std::process::{Command, Stdio};

/// `cleanroom keygen -o K | head -c0`: the reader is gone before the CLI prints; the CLI must
/// end quietly (killed by SIGPIPE, as `yes | head` is), never with a "failed printing to
/// stdout" panic.
#[cfg(unix)]
#[test]
fn a_closed_pipe_ends_the_cli_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cleanroom"))
        .args(["keygen", "-o"])
        .arg(dir.path().join("k.json"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        out.status.success() || out.status.signal() == Some(13),
        "{:?}: {stderr}",
        out.status
    );
}

/// Usage errors exit 2; an unreachable server exits 7 (docs/cli.md lists every code).
#[test]
fn exit_codes_say_what_kind_of_failure() {
    let usage = Command::new(env!("CARGO_BIN_EXE_cleanroom"))
        .args(["run", "submit", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
    // Port 9 on loopback: nothing listens there.
    let network = Command::new(env!("CARGO_BIN_EXE_cleanroom"))
        .args([
            "dataset",
            "list",
            "--server",
            "https://127.0.0.1:9",
            "--measurement",
            &"00".repeat(48),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&network.stderr);
    assert_eq!(network.status.code(), Some(7), "{stderr}");
    assert!(stderr.contains("cannot reach"), "{stderr}");
}
