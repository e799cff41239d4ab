//! Modules: researchers push a component with the source it was built from; owners read the
//! source and rebuild it to confirm the hash they are asked to grant.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use cleanroom_proto::api::{ModuleInfo, ModuleStored, SourceBundle, SourceKind};
use sha2::{Digest, Sha256};

use super::Conn;
use crate::failure::Failure;

/// `cleanroom module push`.
#[derive(Debug, clap::Args)]
pub(crate) struct PushArgs {
    /// The analysis component (.wasm).
    file: PathBuf,
    /// The project it was built from (`cleanroom build`): its source files are uploaded
    /// beside the component, for the owners to read and rebuild.
    #[arg(long, value_name = "DIR")]
    source: Option<PathBuf>,
}

/// What `module push` did.
#[derive(Debug, serde::Serialize)]
struct Pushed {
    #[serde(flatten)]
    stored: ModuleStored,
    source: Option<cleanroom_proto::api::SourceSummary>,
}

pub(crate) fn push(conn: &Conn, args: PushArgs) -> Result<()> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    // Collected before anything is uploaded: a bad source directory loses nothing.
    let bundle = args
        .source
        .as_deref()
        .map(|dir| crate::build::collect_source(dir, crate::build::detect(dir)?))
        .transpose()?;
    let client = conn.client()?;
    let stored: ModuleStored = client.signed("PUT", "/v1/modules", &bytes)?;
    let source = match &bundle {
        Some(bundle) => {
            let info: ModuleInfo = client.signed(
                "PUT",
                &format!("/v1/modules/{}/source", stored.module),
                &serde_json::to_vec(bundle)?,
            )?;
            info.source
        }
        None => None,
    };
    let pushed = Pushed { stored, source };
    conn.print(&pushed, || {
        let mut out = format!(
            "uploaded {} ({} bytes)\nmodule {}",
            args.file.display(),
            pushed.stored.bytes,
            pushed.stored.module
        );
        match &pushed.source {
            Some(s) => out.push_str(&format!(
                "\nsource: {} files ({} bytes, {}), digest {}",
                s.files, s.bytes, s.kind, s.digest
            )),
            None => out
                .push_str("\nno source attached: owners cannot read or rebuild it (--source DIR)"),
        }
        out.push_str("\nask the data owners to grant this hash");
        out
    });
    Ok(())
}

/// `cleanroom module show`.
#[derive(Debug, clap::Args)]
pub(crate) struct ShowArgs {
    /// The module id (SHA-256 hex).
    module: String,
    /// Also write its source files into this new directory.
    #[arg(long, value_name = "DIR")]
    source: Option<PathBuf>,
}

pub(crate) fn show(conn: &Conn, args: ShowArgs) -> Result<()> {
    let client = conn.client()?;
    let info: ModuleInfo = client.signed("GET", &format!("/v1/modules/{}", args.module), b"")?;
    if let Some(dir) = &args.source {
        let bundle = fetch_source(&client, &info)?;
        new_dir(dir)?;
        crate::build::write_source(&bundle, dir)?;
    }
    conn.print(&info, || {
        let mut out = format!(
            "module {}\n{} bytes, uploaded by {} at {}",
            info.module, info.bytes, info.uploader, info.uploaded
        );
        match &info.source {
            Some(s) => {
                out.push_str(&format!(
                    "\nsource: {} ({} files, {} bytes), digest {}",
                    s.kind, s.files, s.bytes, s.digest
                ));
                if let Some(dir) = &args.source {
                    out.push_str(&format!("\nwritten to {}", dir.display()));
                }
            }
            None => out.push_str("\nno source attached"),
        }
        out
    });
    Ok(())
}

/// The module's source as the server holds it, checked against the digest it names.
fn fetch_source(client: &super::client::Client, info: &ModuleInfo) -> Result<SourceBundle> {
    let summary = info.source.as_ref().with_context(|| {
        format!(
            "module {} has no source attached: ask its researcher to push it with --source",
            info.module
        )
    })?;
    let bundle: SourceBundle =
        client.signed("GET", &format!("/v1/modules/{}/source", info.module), b"")?;
    if bundle.digest() != summary.digest {
        return Err(Failure::verification(
            "the server's source bundle does not match the digest it names",
        )
        .into());
    }
    Ok(bundle)
}

fn new_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        bail!("{} already exists: pick a new directory", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

/// `cleanroom module verify`.
#[derive(Debug, clap::Args)]
pub(crate) struct VerifyArgs {
    /// The module id (SHA-256 hex) you are asked to grant.
    module: String,
    /// The source to rebuild (default: the source attached to the module on the server,
    /// fetched into a temporary directory).
    source_dir: Option<PathBuf>,
    /// Rust: Cargo's target directory for the rebuild (default: one under
    /// `~/.cache/cleanroom`, kept so later rebuilds reuse compiled dependencies).
    #[arg(long, value_name = "DIR")]
    target_dir: Option<PathBuf>,
}

/// Where `module verify` builds by default.
fn verify_target() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(".cache/cleanroom/verify-target")
}

/// What `module verify` found.
#[derive(Debug, serde::Serialize)]
struct Verified {
    module: String,
    kind: SourceKind,
    rebuilt: String,
    matches: bool,
}

pub(crate) fn verify(conn: &Conn, args: VerifyArgs) -> Result<()> {
    let (_tmp, dir) = match &args.source_dir {
        Some(dir) => (None, dir.clone()),
        None => {
            let client = conn.client()?;
            let info: ModuleInfo =
                client.signed("GET", &format!("/v1/modules/{}", args.module), b"")?;
            let bundle = fetch_source(&client, &info)?;
            let tmp = tempfile::tempdir()?;
            // The project's own name: a Rust crate's name is part of its bytes.
            let dir = tmp.path().join("source");
            crate::build::write_source(&bundle, &dir)?;
            (Some(tmp), dir)
        }
    };
    let kind = crate::build::detect(&dir)?;
    if kind == SourceKind::Python {
        return Err(Failure::verification(
            "Python modules cannot be rebuilt byte for byte: componentize-py snapshots the \
             interpreter's heap after start-up, and that snapshot holds per-build random seeds \
             and file times. Read the source (`module show --source DIR`) and review outputs \
             instead; see docs/guide/python.md",
        )
        .into());
    }
    let scratch = tempfile::tempdir()?;
    let built = crate::build::build(
        &dir,
        Some(&scratch.path().join("rebuilt.wasm")),
        Some(&args.target_dir.clone().unwrap_or_else(verify_target)),
    )?;
    let rebuilt = hex::encode(Sha256::digest(std::fs::read(&built.wasm)?));
    let result = Verified {
        module: args.module.clone(),
        kind,
        matches: rebuilt == args.module,
        rebuilt,
    };
    conn.print(&result, || {
        if result.matches {
            format!(
                "verified: the {} source in {} rebuilds to module {}",
                kind,
                dir.display(),
                result.module
            )
        } else {
            format!(
                "MISMATCH: the source rebuilds to {}, not {}",
                result.rebuilt, result.module
            )
        }
    });
    if !result.matches {
        return Err(Failure::verification(format!(
            "module {} is not what its source builds (rebuilt: {}); do not grant it. For SQL, \
             the module is the SQL engine: rebuild it with scripts/build-sql.sh from the \
             cleanroom release the researcher names",
            result.module, result.rebuilt
        ))
        .into());
    }
    Ok(())
}
