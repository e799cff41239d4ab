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
    let mut files: Vec<(&str, String)> = vec![("data/patients.csv", PATIENTS_CSV.to_string())];
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
                "Cargo.toml",
                include_str!("../templates/rust/Cargo.toml.in")
                    .replace("{name}", &name)
                    .replace("{sdk}", &sdk.display().to_string()),
            ));
            files.push((
                "rust-toolchain.toml",
                include_str!("../../rust-toolchain.toml").to_string(),
            ));
            files.push((
                "src/lib.rs",
                include_str!("../templates/rust/lib.rs").to_string(),
            ));
            files.push((
                "README.md",
                include_str!("../templates/rust/README.md")
                    .replace("{name}", &name)
                    .replace("{lib}", &name.replace('-', "_")),
            ));
        }
        Language::Python => {
            files.push((
                "analysis.py",
                include_str!("../templates/python/analysis.py").to_string(),
            ));
            files.push((
                "README.md",
                include_str!("../templates/python/README.md").replace("{name}", &name),
            ));
        }
        Language::Sql => {
            files.push((
                "query.sql",
                include_str!("../templates/sql/query.sql").to_string(),
            ));
            files.push((
                "README.md",
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
