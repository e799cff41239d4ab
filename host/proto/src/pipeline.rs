//! Pipelines: a chain of analyses whose intermediate tables stay inside the enclave, approved
//! once by every owner upstream of them (a grant whose `module` is [`Pipeline::digest`]).
//!
//! A pipeline names its inputs (bound to datasets when a run is submitted) and its steps, in
//! order. A step runs one module with its params on tables that are pipeline inputs or tables
//! an earlier step *kept*. Kept outputs never leave: they become derived datasets, sealed by
//! the enclave, with their provenance. Every other output of a step is a final output of the
//! run, decided by the owners' rules like any run's.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::canonical::{canonical_bytes, sha256_hex};
use crate::keys::is_hex64;

/// Domain-separation prefix of a pipeline's digest.
pub const PIPELINE_DOMAIN: &[u8] = b"cleanroom/pipeline/v1\n";

/// Most steps in one pipeline.
pub const MAX_STEPS: usize = 32;

/// A pipeline, as approved (by digest) and run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// A name for humans.
    pub name: String,
    /// The input table names, bound to datasets by the run request.
    pub inputs: Vec<String>,
    /// The steps, in the order they run.
    pub steps: Vec<Step>,
}

/// One step of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Unique within the pipeline: letters, digits, `-`, `_`.
    pub id: String,
    /// The module id (SHA-256 hex of the component).
    pub module: String,
    /// The module's params, verbatim.
    #[serde(default)]
    pub params: String,
    /// Table name the step's module sees -> a pipeline input (`name`) or a table an earlier
    /// step kept (`step.output`).
    pub inputs: BTreeMap<String, String>,
    /// Outputs kept inside as derived tables (they must be tables); the rest are final.
    #[serde(default)]
    pub keep: Vec<String>,
}

/// Where a step's table comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// A pipeline input.
    Input(&'a str),
    /// A table kept by an earlier step.
    Kept {
        /// The step.
        step: &'a str,
        /// Its output.
        output: &'a str,
    },
}

impl Step {
    /// The step's inputs, parsed.
    pub fn sources(&self) -> impl Iterator<Item = (&str, Source<'_>)> {
        self.inputs.iter().map(|(name, from)| {
            let source = match from.split_once('.') {
                Some((step, output)) => Source::Kept { step, output },
                None => Source::Input(from),
            };
            (name.as_str(), source)
        })
    }
}

fn simple_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

impl Pipeline {
    /// SHA-256 hex of [`PIPELINE_DOMAIN`] and the canonical JSON: the id owners grant.
    pub fn digest(&self) -> String {
        sha256_hex(&canonical_bytes(PIPELINE_DOMAIN, self))
    }

    /// Checks the shape: names, module ids, and that every step reads only pipeline inputs
    /// and tables that an *earlier* step keeps (so the steps run in order, with no cycle).
    pub fn validate(&self) -> Result<(), String> {
        if self.steps.is_empty() || self.steps.len() > MAX_STEPS {
            return Err(format!("a pipeline has 1 to {MAX_STEPS} steps"));
        }
        if self.name.is_empty() || self.name.len() > 200 {
            return Err("the pipeline needs a name of at most 200 characters".into());
        }
        let inputs: BTreeSet<&str> = self.inputs.iter().map(String::as_str).collect();
        if inputs.len() != self.inputs.len() || inputs.iter().any(|i| !simple_name(i)) {
            return Err(
                "pipeline inputs must be distinct names of letters, digits, '-' and '_'".into(),
            );
        }
        let mut kept: BTreeSet<(&str, &str)> = BTreeSet::new();
        let mut used_inputs = BTreeSet::new();
        let mut ids = BTreeSet::new();
        for step in &self.steps {
            let id = step.id.as_str();
            if !simple_name(id) || !ids.insert(id) {
                return Err(format!(
                    "step {id:?}: step ids must be distinct names of letters, digits, '-' and '_'"
                ));
            }
            if !is_hex64(&step.module) {
                return Err(format!(
                    "step {id:?}: module must be a module id (64 lowercase hex)"
                ));
            }
            if step.inputs.is_empty() {
                return Err(format!("step {id:?} reads no table"));
            }
            for (name, source) in step.sources() {
                if !simple_name(name) {
                    return Err(format!(
                        "step {id:?}: table name {name:?} is not a simple name"
                    ));
                }
                match source {
                    Source::Input(input) if inputs.contains(input) => {
                        used_inputs.insert(input);
                    }
                    Source::Input(input) => {
                        return Err(format!(
                            "step {id:?} reads {input:?}, which is not a pipeline input"
                        ));
                    }
                    Source::Kept { step: from, output } if kept.contains(&(from, output)) => {}
                    Source::Kept { step: from, output } => {
                        return Err(format!(
                            "step {id:?} reads {from}.{output}, which no earlier step keeps"
                        ));
                    }
                }
            }
            let mut names = BTreeSet::new();
            for output in &step.keep {
                if !simple_name(output) || !names.insert(output.as_str()) {
                    return Err(format!(
                        "step {id:?}: kept outputs must be distinct simple names"
                    ));
                }
                kept.insert((id, output));
            }
        }
        if used_inputs.len() != inputs.len() {
            return Err("every pipeline input must be read by some step".into());
        }
        crate::canonical::check_exact(self)
    }

    /// The step with `id`.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }
}

/// Where a derived table came from: what every upstream owner is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// The pipeline (its digest) that produced it.
    pub pipeline: String,
    /// The step and the output it kept.
    pub step: String,
    /// The kept output's name.
    pub output: String,
    /// The step's module.
    pub module: String,
    /// SHA-256 hex of the step's params.
    pub params_digest: String,
    /// The step's tables: name -> what they were.
    pub inputs: BTreeMap<String, Lineage>,
    /// The researcher whose run produced it.
    pub researcher: crate::PartyId,
    /// The run that produced it.
    pub run: String,
}

/// One input of a step, by content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Lineage {
    /// A sealed dataset, at one version.
    Dataset {
        /// The dataset id.
        id: String,
        /// Its manifest digest (the version of its content).
        manifest_digest: String,
        /// The policy version the run was admitted under.
        policy_version: u64,
        /// The columns the step never saw (the policy's hidden columns, lowercase, sorted).
        hidden_columns: Vec<String>,
        /// The identifier columns tapped while it read (lowercase, sorted).
        identifier_columns: Vec<String>,
    },
    /// Another derived table.
    Derived {
        /// Its id.
        id: String,
    },
}

/// A derived dataset as the API shows it to upstream owners and the researcher who made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DerivedInfo {
    /// The derived dataset's id: a digest of the step, its params and its inputs' content.
    pub id: String,
    /// Where it came from.
    pub provenance: Provenance,
    /// The sealed datasets upstream of it (all the way up).
    pub roots: Vec<String>,
    /// Whether every upstream owner still allows the pipeline that produced it.
    pub usable: bool,
    /// When it was kept (Unix seconds).
    pub created: u64,
}

/// The id of a kept table: a digest of the step's module, params and inputs (by content, and
/// for datasets the hidden and identifier columns in force, which shape what the step saw and
/// what is scanned for downstream) and the output's name. The same step on the same content
/// under the same column rules keeps the same id, which is how a re-run reuses it; a new
/// dataset version, or an owner hiding or marking another column, does not.
pub fn derived_id(
    module: &str,
    params_digest: &str,
    inputs: &BTreeMap<String, Lineage>,
    output: &str,
) -> String {
    #[derive(Serialize)]
    struct Key<'a> {
        module: &'a str,
        params_digest: &'a str,
        inputs: BTreeMap<&'a str, String>,
        output: &'a str,
    }
    let inputs = inputs
        .iter()
        .map(|(name, l)| {
            let content = match l {
                Lineage::Dataset {
                    id,
                    manifest_digest,
                    hidden_columns,
                    identifier_columns,
                    ..
                } => format!(
                    "dataset:{id}:{manifest_digest}:{}:{}",
                    hidden_columns.join(","),
                    identifier_columns.join(",")
                ),
                Lineage::Derived { id } => format!("derived:{id}"),
            };
            (name.as_str(), content)
        })
        .collect();
    let key = Key {
        module,
        params_digest,
        inputs,
        output,
    };
    sha256_hex(&canonical_bytes(b"cleanroom/derived/v1\n", &key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(id: &str, inputs: &[(&str, &str)], keep: &[&str]) -> Step {
        Step {
            id: id.into(),
            module: "ab".repeat(32),
            params: String::new(),
            inputs: inputs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            keep: keep.iter().map(|k| k.to_string()).collect(),
        }
    }

    fn pipeline(steps: Vec<Step>) -> Pipeline {
        Pipeline {
            name: "p".into(),
            inputs: vec!["a".into(), "b".into()],
            steps,
        }
    }

    #[test]
    fn steps_read_inputs_and_earlier_kept_tables_only() {
        let ok = pipeline(vec![
            step("h", &[("a", "a"), ("b", "b")], &["result"]),
            step("link", &[("t", "h.result")], &["links"]),
        ]);
        ok.validate().unwrap();
        let later = pipeline(vec![
            step("link", &[("t", "h.result")], &[]),
            step("h", &[("a", "a"), ("b", "b")], &["result"]),
        ]);
        assert!(
            later
                .validate()
                .unwrap_err()
                .contains("no earlier step keeps")
        );
        let unkept = pipeline(vec![
            step("h", &[("a", "a"), ("b", "b")], &[]),
            step("link", &[("t", "h.result")], &[]),
        ]);
        assert!(unkept.validate().is_err());
        let stranger = pipeline(vec![step("h", &[("a", "a"), ("b", "c")], &[])]);
        assert!(
            stranger
                .validate()
                .unwrap_err()
                .contains("not a pipeline input")
        );
        let unused = pipeline(vec![step("h", &[("a", "a")], &[])]);
        assert!(unused.validate().is_err());
        // The digest names the exact pipeline: any change is another pipeline.
        let mut changed = ok.clone();
        changed.steps[1].params = "{}".into();
        assert_ne!(ok.digest(), changed.digest());
    }

    #[test]
    fn derived_ids_follow_content() {
        let input = |manifest: &str| {
            BTreeMap::from([(
                "a".to_string(),
                Lineage::Dataset {
                    id: "d1".into(),
                    manifest_digest: manifest.into(),
                    policy_version: 1,
                    hidden_columns: vec![],
                    identifier_columns: vec!["mrn".into()],
                },
            )])
        };
        let one = derived_id("m", "p", &input("v1"), "result");
        assert_eq!(one, derived_id("m", "p", &input("v1"), "result"));
        assert_ne!(one, derived_id("m", "p", &input("v2"), "result"));
        assert_ne!(one, derived_id("m", "p", &input("v1"), "other"));
        // The policy version is provenance, not content.
        let mut later = input("v1");
        if let Some(Lineage::Dataset { policy_version, .. }) = later.get_mut("a") {
            *policy_version = 2;
        }
        assert_eq!(one, derived_id("m", "p", &later, "result"));
        // An owner hiding a column, or marking another identifier, is new content: a table
        // computed while the column was visible is never reused.
        let mut hidden = input("v1");
        if let Some(Lineage::Dataset { hidden_columns, .. }) = hidden.get_mut("a") {
            hidden_columns.push("postcode".into());
        }
        assert_ne!(one, derived_id("m", "p", &hidden, "result"));
        let mut marked = input("v1");
        if let Some(Lineage::Dataset {
            identifier_columns, ..
        }) = marked.get_mut("a")
        {
            identifier_columns.push("name".into());
        }
        assert_ne!(one, derived_id("m", "p", &marked, "result"));
    }
}
