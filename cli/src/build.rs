//! `cleanroom build [DIR]`: build an analysis project into a component, reproducibly, and
//! collect the source bundle that travels with it (`cleanroom module push --source`).
//!
//! Rust builds are byte-reproducible across directories, clones and machines with the same
//! pinned toolchain: every absolute path that could reach the binary (the project, path
//! dependencies such as the SDK, Cargo's registry, the target directory) is remapped to a
//! fixed name, and the lock file is required. SQL analyses run the SQL engine component, which
//! `scripts/build-sql.sh` builds the same way. Python components are built by componentize-py,
//! whose pre-initialisation snapshot is not reproducible (see `docs/guide/python.md`).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use cleanroom_proto::api::{SourceBundle, SourceKind};
use sha2::{Digest, Sha256};

/// `cleanroom build`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The project directory (as `cleanroom new` writes it).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Where to write the component (default: `NAME.wasm` in the project).
    #[arg(long, short = 'o')]
    out: Option<PathBuf>,
    /// Rust: Cargo's target directory (default: Cargo's own choice). It does not change
    /// the bytes built.
    #[arg(long, value_name = "DIR")]
    target_dir: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// A built module.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Built {
    /// The language.
    pub kind: SourceKind,
    /// The component.
    pub wasm: PathBuf,
    /// Its module id (SHA-256 hex of the bytes).
    pub module: String,
    /// Whether a rebuild elsewhere gives the same bytes.
    pub reproducible: bool,
}

pub(crate) fn run(args: Args) -> Result<()> {
    let built = build(&args.dir, args.out.as_deref(), args.target_dir.as_deref())?;
    crate::report(args.json, &built, || {
        let mut out = format!(
            "built {} ({})\nmodule {}",
            built.wasm.display(),
            built.kind,
            built.module
        );
        if !built.reproducible {
            out.push_str(&format!(
                "\nnote: {} builds are not byte-reproducible; owners cannot rebuild this hash",
                built.kind
            ));
        }
        out
    });
    Ok(())
}

/// The language of the project in `dir`: `Cargo.toml` is Rust, a `.sql` file SQL, a `.py`
/// file Python.
pub(crate) fn detect(dir: &Path) -> Result<SourceKind> {
    if dir.join("Cargo.toml").is_file() {
        return Ok(SourceKind::Rust);
    }
    let has = |ext: &str| -> Result<bool> {
        Ok(std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .filter_map(|e| e.ok())
            .any(|e| e.path().extension().is_some_and(|x| x == ext)))
    };
    if has("sql")? {
        return Ok(SourceKind::Sql);
    }
    if has("py")? {
        return Ok(SourceKind::Python);
    }
    bail!(
        "{} is not an analysis project: no Cargo.toml, .sql or .py file (start one with \
         `cleanroom new rust|python|sql NAME`)",
        dir.display()
    )
}

/// Build the project in `dir`.
pub(crate) fn build(dir: &Path, out: Option<&Path>, target_dir: Option<&Path>) -> Result<Built> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("no project at {}", dir.display()))?;
    let kind = detect(&dir)?;
    let (wasm, reproducible) = match kind {
        SourceKind::Rust => (build_rust(&dir, out, target_dir)?, true),
        SourceKind::Python => (build_python(&dir, out)?, false),
        SourceKind::Sql => (crate::run_local::find_engine()?, true),
    };
    let bytes = std::fs::read(&wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
    Ok(Built {
        kind,
        wasm,
        module: hex::encode(Sha256::digest(&bytes)),
        reproducible,
    })
}

/// What `cargo metadata` says that the build needs.
#[derive(Debug, serde::Deserialize)]
struct Metadata {
    packages: Vec<Package>,
    target_directory: PathBuf,
    resolve: Option<Resolve>,
}

#[derive(Debug, serde::Deserialize)]
struct Package {
    id: String,
    name: String,
    /// `None` for path packages (the project and path dependencies).
    source: Option<String>,
    manifest_path: PathBuf,
    targets: Vec<Target>,
}

#[derive(Debug, serde::Deserialize)]
struct Target {
    name: String,
    crate_types: Vec<String>,
}

#[derive(Debug, serde::Deserialize)]
struct Resolve {
    root: Option<String>,
}

fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// `cargo build --release --locked --target wasm32-wasip2` with every absolute path that could
/// reach the binary remapped to a fixed name.
fn build_rust(dir: &Path, out: Option<&Path>, target_dir: Option<&Path>) -> Result<PathBuf> {
    if !dir.join("Cargo.lock").is_file() {
        // A reproducible build pins every dependency: the first build writes the lock file,
        // which then travels with the source.
        eprintln!(
            "pinning dependencies in {}",
            dir.join("Cargo.lock").display()
        );
        let status = Command::new(cargo())
            .arg("generate-lockfile")
            .current_dir(dir)
            .status()
            .context("cannot run cargo: install Rust with rustup")?;
        if !status.success() {
            bail!("cargo generate-lockfile failed in {}", dir.display());
        }
    }
    let output = Command::new(cargo())
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--filter-platform",
            "wasm32-wasip2",
        ])
        .current_dir(dir)
        .output()
        .context("cannot run cargo: install Rust with rustup (the project pins its toolchain)")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed in {}:\n{}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let meta: Metadata =
        serde_json::from_slice(&output.stdout).context("cargo metadata answered unexpectedly")?;
    let root_id = meta
        .resolve
        .as_ref()
        .and_then(|r| r.root.clone())
        .context("the project is a virtual workspace: build one analysis crate")?;
    let root = meta
        .packages
        .iter()
        .find(|p| p.id == root_id)
        .context("cargo metadata has no root package")?;
    let lib = root
        .targets
        .iter()
        .find(|t| t.crate_types.iter().any(|c| c == "cdylib"))
        .with_context(|| {
            format!(
                "{} has no cdylib target: add `[lib] crate-type = [\"cdylib\"]` to Cargo.toml",
                root.name
            )
        })?;
    let target = match target_dir {
        Some(t) => {
            std::fs::create_dir_all(t).with_context(|| format!("cannot create {}", t.display()))?;
            t.canonicalize()?
        }
        None => {
            std::fs::create_dir_all(&meta.target_directory)?;
            meta.target_directory.clone()
        }
    };
    // The project is built through a fixed link in the target directory, so the remapping
    // flags (which Cargo's cache is keyed on) are the same wherever the project lives, and a
    // rebuild in a new directory reuses the compiled dependencies. One build per target
    // directory at a time.
    let link = target.join("cleanroom-src");
    let manifest = source_link(dir, &link)?.join("Cargo.toml");
    // Longer prefixes last: rustc applies the last mapping that matches.
    let mut remaps: Vec<(PathBuf, String)> = vec![(link.clone(), format!("/build/{}", root.name))];
    for p in meta
        .packages
        .iter()
        .filter(|p| p.source.is_none() && p.id != root_id)
    {
        if let Some(pkg_dir) = p.manifest_path.parent() {
            remaps.push((pkg_dir.to_path_buf(), format!("/build/deps/{}", p.name)));
        }
    }
    remaps.push((cargo_home(), "/cargo".into()));
    remaps.push((target.clone(), "/target".into()));
    remaps.sort_by_key(|(from, _)| from.as_os_str().len());
    let mut flags: Vec<String> = remaps
        .iter()
        .map(|(from, to)| format!("--remap-path-prefix={}={to}", from.display()))
        .collect();
    // These flags replace any target rustflags of a config file, so the one feature every
    // cleanroom guest is built with is repeated here: wasm SIMD (wasmtime compiles it to SSE/AVX).
    flags.push("-Ctarget-feature=+simd128".into());
    let status = Command::new(cargo())
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .current_dir(dir)
        .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\u{1f}"))
        .env_remove("RUSTFLAGS")
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("the build failed (cargo's messages are above)");
    }
    let built = target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", lib.name.replace('-', "_")));
    let dest = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.join(format!("{}.wasm", lib.name.replace('-', "_"))));
    std::fs::copy(&built, &dest)
        .with_context(|| format!("cannot copy {} to {}", built.display(), dest.display()))?;
    Ok(dest)
}

/// Point `link` at `dir` (replacing an older link); where links are not available, build
/// `dir` in place.
fn source_link(dir: &Path, link: &Path) -> Result<PathBuf> {
    #[cfg(unix)]
    {
        if link.symlink_metadata().is_ok() {
            std::fs::remove_file(link)
                .with_context(|| format!("cannot replace {}", link.display()))?;
        }
        std::os::unix::fs::symlink(dir, link)
            .with_context(|| format!("cannot link {} to {}", link.display(), dir.display()))?;
        Ok(link.to_path_buf())
    }
    #[cfg(not(unix))]
    {
        let _ = link;
        Ok(dir.to_path_buf())
    }
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/nonexistent-cargo-home"))
}

/// The Python analysis: the one `.py` file that is not a helper (`analysis.py` if there are
/// several), built with the repository's script (componentize-py in a cached virtualenv).
fn build_python(dir: &Path, out: Option<&Path>) -> Result<PathBuf> {
    let entry = if dir.join("analysis.py").is_file() {
        dir.join("analysis.py")
    } else {
        let mut py: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "py"))
            .collect();
        if py.len() != 1 {
            bail!(
                "{} has several .py files and no analysis.py: name the entry point analysis.py",
                dir.display()
            );
        }
        py.remove(0)
    };
    let dest = out.map(Path::to_path_buf).unwrap_or_else(|| {
        dir.join(format!(
            "{}.wasm",
            dir.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("analysis")
        ))
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-python.sh");
    if !script.is_file() {
        bail!(
            "Python builds use scripts/build-python.sh from the cleanroom repository this CLI \
             was built from, and it is not at {}",
            script.display()
        );
    }
    let status = Command::new(&script)
        .arg(&entry)
        .arg(&dest)
        .status()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !status.success() {
        bail!("the Python build failed (its messages are above)");
    }
    Ok(dest)
}

/// Largest single source file collected.
const MAX_SOURCE_FILE: u64 = 1 << 20;

/// The source files of a project of `kind`: what a rebuild needs and an owner should read.
/// Only source extensions are collected (never data: no CSV, Parquet or Arrow), skipping
/// hidden entries and build, result and data directories.
pub(crate) fn collect_source(dir: &Path, kind: SourceKind) -> Result<SourceBundle> {
    let extensions: &[&str] = match kind {
        SourceKind::Rust => &["rs", "toml", "lock", "wit"],
        SourceKind::Python => &["py", "toml", "wit"],
        SourceKind::Sql => &["sql"],
    };
    let files = text_tree(dir, false, &|path, is_dir| {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        if name.starts_with('.') {
            return false;
        }
        if is_dir {
            return !matches!(
                name.as_ref(),
                "target" | "results" | "data" | "__pycache__" | "node_modules"
            );
        }
        path.extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| extensions.contains(&x))
    })?;
    let bundle = SourceBundle { kind, files };
    bundle
        .validate()
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    if kind == SourceKind::Rust && !bundle.files.contains_key("Cargo.lock") {
        bail!(
            "{} has no Cargo.lock: build it once with `cleanroom build` first",
            dir.display()
        );
    }
    Ok(bundle)
}

/// The text files under `root` by `/`-separated relative path: directories and files `keep`
/// (given the path and whether it is a directory) refuses are skipped. Symbolic links are
/// followed only with `follow_links` (never for a researcher's project: a link could reach
/// outside it). Each file must be UTF-8 and at most [`MAX_SOURCE_FILE`] bytes.
pub(crate) fn text_tree(
    root: &Path,
    follow_links: bool,
    keep: &dyn Fn(&Path, bool) -> bool,
) -> Result<BTreeMap<String, String>> {
    fn walk(
        root: &Path,
        dir: &Path,
        follow_links: bool,
        keep: &dyn Fn(&Path, bool) -> bool,
        files: &mut BTreeMap<String, String>,
    ) -> Result<()> {
        for entry in
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let path = entry?.path();
            let meta = if follow_links {
                std::fs::metadata(&path)
            } else {
                std::fs::symlink_metadata(&path)
            }
            .with_context(|| format!("cannot read {}", path.display()))?;
            if !keep(&path, meta.is_dir()) {
                continue;
            }
            if meta.is_dir() {
                walk(root, &path, follow_links, keep, files)?;
                continue;
            }
            if !meta.is_file() {
                continue;
            }
            if meta.len() > MAX_SOURCE_FILE {
                bail!(
                    "{} is larger than {MAX_SOURCE_FILE} bytes: source files only",
                    path.display()
                );
            }
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("{} is not UTF-8 text", path.display()))?;
            let rel = path
                .strip_prefix(root)
                .expect("walked from root")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            files.insert(rel, text);
        }
        Ok(())
    }
    let mut files = BTreeMap::new();
    walk(root, root, follow_links, keep, &mut files)?;
    Ok(files)
}

/// Write `bundle` into the directory `dir`.
pub(crate) fn write_source(bundle: &SourceBundle, dir: &Path) -> Result<()> {
    bundle.validate().map_err(|e| anyhow::anyhow!(e))?;
    for (rel, text) in &bundle.files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_source_files_are_collected_never_data() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("data")).unwrap();
        std::fs::create_dir_all(d.join("helpers")).unwrap();
        std::fs::create_dir_all(d.join("__pycache__")).unwrap();
        std::fs::write(d.join("analysis.py"), "import cleanroom\n").unwrap();
        std::fs::write(d.join("helpers/util.py"), "X = 1\n").unwrap();
        std::fs::write(d.join("data/patients.csv"), "patient_id\n1\n").unwrap();
        std::fs::write(d.join("patients.csv"), "patient_id\n1\n").unwrap();
        std::fs::write(d.join("__pycache__/analysis.py"), "stale\n").unwrap();
        std::fs::write(d.join(".secret.py"), "KEY = 1\n").unwrap();
        // A link out of the project is not followed.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keys.py"), "TOKEN = 1\n").unwrap();
        std::os::unix::fs::symlink(outside.path().join("keys.py"), d.join("keys.py")).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.join("elsewhere")).unwrap();
        let bundle = collect_source(d, SourceKind::Python).unwrap();
        let names: Vec<&str> = bundle.files.keys().map(String::as_str).collect();
        assert_eq!(names, ["analysis.py", "helpers/util.py"]);
    }

    #[test]
    fn a_rust_bundle_needs_its_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Cargo.toml"), "[package]\nname = \"a\"\n").unwrap();
        let err = collect_source(dir.path(), SourceKind::Rust).unwrap_err();
        assert!(format!("{err:#}").contains("Cargo.lock"), "{err:#}");
    }
}
