//! Answers of the JSON API that are not signed objects themselves: one type per answer, shared
//! by the server that writes them and the CLI that reads them (and described by the server's
//! generated OpenAPI document).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::canonical::{canonical_bytes, sha256_hex};
use crate::codes::Code;
use crate::run::{RunState, RunStatus};

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Always `ok` when the server answers.
    pub status: String,
    /// The server's version.
    pub version: String,
    /// The R engine's module id, when the server runs R analyses (grant it, and pin the
    /// script as the params).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r_engine: Option<String>,
}

/// Every refusal: `{"type", "message"}`, plus the stable `code` of a policy denial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// Stable machine-readable kind: `unauthenticated`, `forbidden`, `denied`, `not-found`,
    /// `bad-request`, `conflict`, `too-large`, `busy`, `tampered` or `internal`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The policy decision point's code, for `denied`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<Code>,
    /// What went wrong and what to do about it, for humans.
    pub message: String,
}

/// `PUT /v1/datasets/{id}/policy`: the version now in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PolicyStored {
    /// The dataset.
    pub dataset: String,
    /// The policy version now in force.
    pub version: u64,
    /// SHA-256 hex of the signed policy.
    pub digest: String,
}

/// `PUT /v1/modules`: the stored component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ModuleStored {
    /// The module id: SHA-256 hex of the component bytes.
    pub module: String,
    /// The component's size.
    pub bytes: u64,
}

/// `PUT /v1/pipelines`: the stored pipeline's id, which owners grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PipelineStored {
    /// [`crate::pipeline::Pipeline::digest`].
    pub pipeline: String,
    /// How many steps it has.
    pub steps: u32,
}

/// `GET /v1/derived`: derived datasets the signer may see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DerivedList {
    /// Upstream of which the signer owns a dataset, or that the signer's runs produced.
    pub derived: Vec<crate::pipeline::DerivedInfo>,
}

/// `GET /v1/modules/{id}`: what is known of a module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ModuleInfo {
    /// The module id: SHA-256 hex of the component bytes.
    pub module: String,
    /// The component's size.
    pub bytes: u64,
    /// The party that uploaded it first.
    pub uploader: String,
    /// Upload time (Unix seconds).
    pub uploaded: u64,
    /// The source bundle attached to it, if any.
    pub source: Option<SourceSummary>,
}

/// A source bundle as [`ModuleInfo`] names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SourceSummary {
    /// The language.
    pub kind: SourceKind,
    /// [`SourceBundle::digest`].
    pub digest: String,
    /// How many files.
    pub files: u64,
    /// Their total size in bytes.
    pub bytes: u64,
}

/// The language a module was built from, which decides how it is rebuilt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A Cargo package built for `wasm32-wasip2`.
    Rust,
    /// Python files built with componentize-py.
    Python,
    /// SQL text run by the SQL engine component (the module is the engine).
    Sql,
}

impl SourceKind {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rust => "rust",
            Self::Python => "python",
            Self::Sql => "sql",
        }
    }
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Domain-separation prefix of [`SourceBundle::digest`].
pub const SOURCE_DOMAIN: &[u8] = b"cleanroom/source/v1\n";

/// Largest source bundle the server keeps.
pub const MAX_SOURCE_BYTES: u64 = 4 << 20;

/// The source a module was built from: text files by relative path. It travels with the
/// component so that owners can read what they approve and rebuild it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SourceBundle {
    /// The language, which decides how the module is rebuilt.
    pub kind: SourceKind,
    /// File contents (UTF-8) by `/`-separated relative path.
    pub files: BTreeMap<String, String>,
}

impl SourceBundle {
    /// SHA-256 hex over [`SOURCE_DOMAIN`] and the bundle's canonical JSON.
    pub fn digest(&self) -> String {
        sha256_hex(&canonical_bytes(SOURCE_DOMAIN, self))
    }

    /// Total size of the files.
    pub fn bytes(&self) -> u64 {
        self.files.values().map(|f| f.len() as u64).sum()
    }

    /// The summary [`ModuleInfo`] shows.
    pub fn summary(&self) -> SourceSummary {
        SourceSummary {
            kind: self.kind,
            digest: self.digest(),
            files: self.files.len() as u64,
            bytes: self.bytes(),
        }
    }

    /// Refuses paths that could escape the directory the bundle is written to (absolute,
    /// `..`, empty or backslashed components), and empty bundles.
    pub fn validate(&self) -> Result<(), String> {
        if self.files.is_empty() {
            return Err("the source bundle has no files".into());
        }
        for path in self.files.keys() {
            let safe = !path.is_empty()
                && !path.starts_with('/')
                && !path.contains('\\')
                && !path.contains('\0')
                && path
                    .split('/')
                    .all(|part| !part.is_empty() && part != "." && part != "..");
            if !safe {
                return Err(format!(
                    "source path {path:?} is not a plain relative path (no leading /, no .., no \\)"
                ));
            }
        }
        Ok(())
    }
}

/// `POST /v1/runs`: the run was admitted and queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RunAccepted {
    /// The run id.
    pub run: String,
    /// Always `queued`.
    pub state: RunState,
}

/// `GET /v1/runs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RunList {
    /// Every run that concerns the signer, as they may see it.
    pub runs: Vec<RunStatus>,
}

/// `POST /v1/requests`: a researcher asks the owners of `inputs` to grant `module` (with these
/// exact params). Nothing is granted by it: it is an audit entry (`access.requested`) that the
/// owners see in their log and console, where approving it means signing a new policy version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AccessRequest {
    /// The module (or pipeline) id to be granted.
    pub module: String,
    /// The run's inputs, name → dataset id (every owner among them is asked).
    pub inputs: BTreeMap<String, String>,
    /// The exact params text the run will send (for the SQL engine: the query's params);
    /// owners pin its digest when they grant.
    #[serde(default)]
    pub params: String,
    /// What the analysis is for, to the owners (at most 1,000 characters).
    #[serde(default)]
    pub note: Option<String>,
}

impl AccessRequest {
    /// The most params text a request may carry.
    pub const MAX_PARAMS: usize = 16 * 1024;
    /// The longest note.
    pub const MAX_NOTE: usize = 1000;

    /// Refuse a request no owner could act on.
    pub fn validate(&self) -> Result<(), String> {
        if self.module.len() != 64 || !self.module.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("module must be a SHA-256 in hex".into());
        }
        if self.inputs.is_empty() {
            return Err("name at least one input dataset".into());
        }
        if self.params.len() > Self::MAX_PARAMS {
            return Err(format!("params are over {} bytes", Self::MAX_PARAMS));
        }
        if self
            .note
            .as_ref()
            .is_some_and(|n| n.chars().count() > Self::MAX_NOTE)
        {
            return Err(format!("the note is over {} characters", Self::MAX_NOTE));
        }
        Ok(())
    }
}

/// The detail of an `access.requested` audit entry, as owners read it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AccessRequested {
    /// The request as the researcher sent it.
    pub request: AccessRequest,
    /// SHA-256 hex of its params (what a grant pins).
    pub params_digest: String,
}

/// `POST /v1/runs/{id}/cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CancelAccepted {
    /// The run id.
    pub run: String,
    /// Always true: the run stops at its next check.
    pub cancelling: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(paths: &[&str]) -> SourceBundle {
        SourceBundle {
            kind: SourceKind::Python,
            files: paths
                .iter()
                .map(|p| (p.to_string(), "x = 1\n".to_string()))
                .collect(),
        }
    }

    #[test]
    fn paths_that_could_escape_are_refused() {
        assert!(bundle(&["analysis.py", "pkg/util.py"]).validate().is_ok());
        for bad in [
            "/etc/passwd",
            "../x.py",
            "pkg/../../x.py",
            "a//b.py",
            "a\\b.py",
            "./a.py",
            "",
        ] {
            assert!(bundle(&[bad]).validate().is_err(), "{bad:?} was accepted");
        }
        assert!(bundle(&[]).validate().is_err());
    }

    #[test]
    fn the_digest_names_the_contents() {
        let a = bundle(&["analysis.py"]);
        let mut b = a.clone();
        assert_eq!(a.digest(), b.digest());
        b.files.insert("analysis.py".into(), "x = 2\n".into());
        assert_ne!(a.digest(), b.digest());
        let mut c = a.clone();
        c.kind = SourceKind::Rust;
        assert_ne!(a.digest(), c.digest());
    }
}
