//! Builds every guest program (tests/programs/examples/*.rs) and the Rust
//! examples for wasm32-wasip2, and emits a path constant per program plus
//! `foreach_program!`, which the tests use to make sure each has a test.

#![allow(clippy::unwrap_used)] // tests and their helpers fail loudly by design

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf();
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    // OUT_DIR is <target>/<profile>/build/<pkg>/out: build guests beside it.
    let target_dir = out
        .ancestors()
        .nth(4)
        .expect("OUT_DIR is inside the target dir")
        .join("wasm-guests");

    for dir in [
        "wit",
        "guest-sdk/rust",
        "tests/programs",
        "examples/cohort-stats-rust",
        "guest-sdk/linkage",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    let programs = program_names(&root.join("tests/programs/examples"));
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--locked",
        ])
        .args([
            "-p",
            "cleanroom-test-programs",
            "-p",
            "cohort-stats",
            "-p",
            "cleanroom-linkage",
            "--lib",
            "--examples",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo to build the guest programs");
    assert!(
        status.success(),
        "building the guest programs for wasm32-wasip2 failed"
    );

    let wasm = target_dir.join("wasm32-wasip2/release");
    let mut code = String::new();
    for name in &programs {
        let path = wasm.join("examples").join(format!("{name}.wasm"));
        writeln!(code, "/// Path of the `{name}` guest program.").unwrap();
        writeln!(
            code,
            "pub const {}: &str = {:?};",
            name.to_uppercase(),
            path.display().to_string()
        )
        .unwrap();
    }
    for (constant, file, what) in [
        (
            "COHORT_STATS_RUST",
            "cohort_stats.wasm",
            "the Rust cohort-statistics example",
        ),
        (
            "LINKAGE_ENGINE",
            "cleanroom_linkage.wasm",
            "the linkage engine component",
        ),
    ] {
        let path = wasm.join(file).display().to_string();
        writeln!(
            code,
            "/// Path of {what}.\npub const {constant}: &str = {path:?};"
        )
        .unwrap();
    }
    writeln!(code, "/// Calls `$m!(name)` for every guest program.").unwrap();
    writeln!(
        code,
        "#[macro_export]\nmacro_rules! foreach_program {{ ($m:ident) => {{"
    )
    .unwrap();
    for name in &programs {
        writeln!(code, "    $m!({name});").unwrap();
    }
    writeln!(code, "}} }}").unwrap();
    std::fs::write(out.join("programs.rs"), code).expect("write programs.rs");
}

fn program_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("tests/programs/examples exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| {
            p.file_stem()
                .expect("file has a stem")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}
