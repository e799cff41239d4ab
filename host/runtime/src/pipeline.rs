//! Running a pipeline's steps in order, each in a fresh instance like any run, with kept
//! tables handed from step to step inside the host. The enclave and `cleanroom pipeline
//! run-local` share this loop; what differs (where modules come from, how kept tables are
//! sealed, reused and tapped) is theirs, through [`Steps`].

use std::collections::BTreeMap;
use std::sync::Arc;

use cleanroom_policy::Candidate;
use cleanroom_proto::pipeline::{Pipeline, Source, Step};

use crate::output::TableOutput;
use crate::{CancelToken, Grants, Limits, Module, RunError, Runtime, TableSource};

/// How a step is carried out.
#[derive(Debug)]
pub enum Plan {
    /// Run this module.
    Run(Arc<Module>),
    /// Skip it: the tables it keeps exist from an earlier run on the same content.
    Reuse(BTreeMap<String, Arc<dyn TableSource>>),
}

/// The caller's part of running a chain.
pub trait Steps {
    /// How to carry out `step`, given what its inputs are.
    fn plan(&mut self, step: &Step) -> Result<Plan, RunError>;
    /// `step` kept `table`: store it (the enclave seals it as a derived dataset) and return
    /// what later steps read in its place.
    fn keep(&mut self, step: &Step, table: TableOutput) -> Result<Arc<dyn TableSource>, RunError>;
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepReport {
    /// The step id.
    pub id: String,
    /// Whether it was skipped because its kept tables already existed.
    pub reused: bool,
}

/// A chain that ran to the end.
#[derive(Debug)]
pub struct ChainOutput {
    /// Every step's outputs that are not kept, named `step.output`, in step order.
    pub finals: Vec<Candidate>,
    /// Per step, in order.
    pub steps: Vec<StepReport>,
}

/// A step that failed, and why.
#[derive(Debug)]
pub struct ChainError {
    /// The step.
    pub step: String,
    /// How it failed.
    pub error: RunError,
}

/// Run `pipeline`'s steps over `inputs` (pipeline input name -> table).
pub fn run_chain(
    runtime: &Runtime,
    pipeline: &Pipeline,
    inputs: &Grants,
    limits: &Limits,
    cancel: Option<&CancelToken>,
    steps: &mut dyn Steps,
) -> Result<ChainOutput, ChainError> {
    let mut kept: BTreeMap<(String, String), Arc<dyn TableSource>> = BTreeMap::new();
    let mut finals = Vec::new();
    let mut reports = Vec::new();
    for step in &pipeline.steps {
        let fail = |error: RunError| ChainError {
            step: step.id.clone(),
            error,
        };
        if cancel.is_some_and(CancelToken::is_cancelled) {
            return Err(fail(RunError::Cancelled));
        }
        let mut grants = Grants::new();
        for (name, source) in step.sources() {
            let table = match source {
                Source::Input(input) => inputs.get(input),
                Source::Kept { step, output } => kept.get(&(step.to_string(), output.to_string())),
            };
            let table = table.ok_or_else(|| {
                fail(RunError::Internal(format!(
                    "step {}: input {name} is not bound (the pipeline was validated)",
                    step.id
                )))
            })?;
            grants.insert(name.to_string(), table.clone());
        }
        let plan = steps.plan(step).map_err(fail)?;
        let reused = matches!(plan, Plan::Reuse(_));
        match plan {
            Plan::Reuse(tables) => {
                for (output, table) in tables {
                    kept.insert((step.id.clone(), output), table);
                }
            }
            Plan::Run(module) => {
                let mut out = runtime
                    .run(&module, grants, &step.params, limits, cancel)
                    .map_err(fail)?;
                for name in &step.keep {
                    let Some(at) = out.outputs.tables.iter().position(|t| &t.name == name) else {
                        return Err(fail(RunError::Failed(format!(
                            "step {} did not publish table {name:?}, which the pipeline keeps",
                            step.id
                        ))));
                    };
                    let table = out.outputs.tables.remove(at);
                    let source = steps.keep(step, table).map_err(fail)?;
                    kept.insert((step.id.clone(), name.clone()), source);
                }
                for mut candidate in out.candidates() {
                    if step.keep.contains(&candidate.name) {
                        // Kept under this name but published again as JSON or a file: it
                        // would leave under a kept table's name; refuse the step.
                        return Err(fail(RunError::Failed(format!(
                            "step {} published {:?} twice; a kept table's name is not an output",
                            step.id, candidate.name
                        ))));
                    }
                    candidate.name = format!("{}.{}", step.id, candidate.name);
                    finals.push(candidate);
                }
            }
        }
        reports.push(StepReport {
            id: step.id.clone(),
            reused,
        });
    }
    Ok(ChainOutput {
        finals,
        steps: reports,
    })
}
