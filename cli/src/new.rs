//! `cleanroom new rust|python|sql NAME`: a project that builds and runs locally as generated,
//! with synthetic data, so a researcher's first step is `run-local`, not reading the SDK.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Which language.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Language {
    /// A Rust crate built to a component (cargo, wasm32-wasip2).
    Rust,
    /// A Python analysis built to a component (componentize-py).
    Python,
    /// A SQL query run by the SQL engine component.
    Sql,
}

/// `cleanroom new`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// rust, python or sql.
    language: Language,
    /// The directory to create (its name names the project).
    name: PathBuf,
    /// Rust only: the cleanroom-guest SDK to depend on (default: the one this CLI was built
    /// from).
    #[arg(long)]
    sdk: Option<PathBuf>,
}

/// The Rust SDK of the cleanroom tree this CLI was built from.
pub(crate) fn sdk_dir() -> Result<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk/rust");
    sdk.canonicalize().with_context(|| {
        format!(
            "the Rust SDK is not at {}: pass --sdk PATH/TO/cleanroom/guest-sdk/rust",
            sdk.display()
        )
    })
}

/// Directory of the vendored SDK inside a Rust project.
pub(crate) const VENDORED_SDK: &str = "cleanroom-guest";

/// The SDK as files of a Rust project (`cleanroom-guest/`): its sources, the analysis world's
/// WIT, and a standalone manifest (the workspace's versions written out). Inside the project,
/// the SDK is part of the source owners read and rebuild, and its path is relative, so the
/// build does not depend on where the cleanroom repository is.
fn vendored_sdk(sdk: &Path) -> Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    for dir in ["src", "wit"] {
        // `wit` is a link to the repository's WIT in the SDK: followed, and copied as files.
        let tree = crate::build::text_tree(&sdk.join(dir), true, &|_, _| true)?;
        files.extend(
            tree.into_iter()
                .map(|(path, text)| (format!("{VENDORED_SDK}/{dir}/{path}"), text)),
        );
    }
    files.push((format!("{VENDORED_SDK}/Cargo.toml"), sdk_manifest(sdk)?));
    Ok(files)
}

/// The SDK's manifest with every `workspace = true` replaced by the workspace's value.
fn sdk_manifest(sdk: &Path) -> Result<String> {
    let read = |path: &Path| -> Result<toml::Table> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("{} does not parse", path.display()))
    };
    let sdk_manifest = read(&sdk.join("Cargo.toml"))?;
    let workspace = read(&sdk.join("../../Cargo.toml"))?;
    let ws = workspace
        .get("workspace")
        .and_then(|w| w.as_table())
        .context("the SDK is not inside the cleanroom workspace")?;
    let inherit = |section: &str, table: &toml::Table| -> Result<toml::Table> {
        let mut out = toml::Table::new();
        for (key, value) in table {
            let inherited = value
                .as_table()
                .and_then(|t| t.get("workspace"))
                .and_then(|w| w.as_bool())
                == Some(true);
            let value = if inherited {
                ws.get(section)
                    .and_then(|s| s.get(key))
                    .cloned()
                    .with_context(|| format!("the workspace has no {section}.{key}"))?
            } else {
                value.clone()
            };
            out.insert(key.clone(), value);
        }
        Ok(out)
    };
    let mut manifest = toml::Table::new();
    let package = sdk_manifest
        .get("package")
        .and_then(|p| p.as_table())
        .context("the SDK manifest has no [package]")?;
    manifest.insert(
        "package".into(),
        toml::Value::Table(inherit("package", package)?),
    );
    let deps = sdk_manifest
        .get("dependencies")
        .and_then(|d| d.as_table())
        .cloned()
        .unwrap_or_default();
    manifest.insert(
        "dependencies".into(),
        toml::Value::Table(inherit("dependencies", &deps)?),
    );
    Ok(format!(
        "# The cleanroom-guest SDK, vendored by `cleanroom new` from cleanroom {}.\n{}",
        env!("CARGO_PKG_VERSION"),
        toml::to_string(&manifest).context("cannot write the SDK manifest")?
    ))
}

/// Synthetic admissions (no real patient): the shape the examples and the guide use.
const PATIENTS_CSV: &str = include_str!("../templates/patients.csv");

pub(crate) fn run(args: Args) -> Result<()> {
    let dir = &args.name;
    if dir.exists() {
        bail!("{} already exists: pick a new directory", dir.display());
    }
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .context("the project name must be letters, digits, `-` and `_`")?
        .to_string();
    let mut files: Vec<(String, String)> =
        vec![("data/patients.csv".into(), PATIENTS_CSV.to_string())];
    match args.language {
        Language::Rust => {
            let sdk = match &args.sdk {
                Some(sdk) => sdk.canonicalize().with_context(|| {
                    format!(
                        "the Rust SDK is not at {}: pass --sdk PATH/TO/cleanroom/guest-sdk/rust",
                        sdk.display()
                    )
                })?,
                None => sdk_dir()?,
            };
            files.push((
                "Cargo.toml".into(),
                include_str!("../templates/rust/Cargo.toml.in").replace("{name}", &name),
            ));
            files.extend(vendored_sdk(&sdk)?);
            files.push((
                "rust-toolchain.toml".into(),
                include_str!("../../rust-toolchain.toml").to_string(),
            ));
            files.push((
                "src/lib.rs".into(),
                include_str!("../templates/rust/lib.rs").to_string(),
            ));
            files.push((
                "README.md".into(),
                include_str!("../templates/rust/README.md")
                    .replace("{name}", &name)
                    .replace("{lib}", &name.replace('-', "_")),
            ));
        }
        Language::Python => {
            files.push((
                "analysis.py".into(),
                include_str!("../templates/python/analysis.py").to_string(),
            ));
            files.push((
                "README.md".into(),
                include_str!("../templates/python/README.md").replace("{name}", &name),
            ));
        }
        Language::Sql => {
            files.push((
                "query.sql".into(),
                include_str!("../templates/sql/query.sql").to_string(),
            ));
            files.push((
                "README.md".into(),
                include_str!("../templates/sql/README.md").replace("{name}", &name),
            ));
        }
    }
    for (path, contents) in &files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("files are inside the project"))?;
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!(
        "created {} ({:?}); next: see {}/README.md",
        dir.display(),
        args.language,
        dir.display()
    );
    Ok(())
}
