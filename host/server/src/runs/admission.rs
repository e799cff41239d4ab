//! Admission of runs: the policy crate's facts from storage, the one admission function
//! (at submission, start, release and on policy changes) and the aggregation terms it implies.

use super::*;

/// The service's storage, as the policy crate's facts.
pub(super) struct StoreFacts<'a>(&'a Service);

impl Facts for StoreFacts<'_> {
    type Error = ApiError;

    fn module_exists(&self, module: &str) -> ApiResult<bool> {
        Ok(self.0.is_r_engine(module) || self.0.storage.has_module_or_pipeline(module)?)
    }

    fn module_kind(&self, module: &str) -> ApiResult<ModuleKind> {
        Ok(if self.0.is_r_engine(module) {
            ModuleKind::REngine
        } else if self.0.storage.pipeline(module)?.is_some() {
            ModuleKind::Pipeline
        } else {
            ModuleKind::Component
        })
    }

    fn derived(&self, id: &str) -> ApiResult<Option<cleanroom_policy::DerivedFacts>> {
        Ok(self
            .0
            .storage
            .derived(id)?
            .map(|row| crate::pipelines::derived_facts(&row)))
    }

    fn dataset(&self, id: &str) -> ApiResult<Option<DatasetFacts>> {
        let Some(row) = self.0.storage.dataset(id)? else {
            return Ok(None);
        };
        let owner = row
            .owner
            .parse()
            .map_err(|_| ApiError::Internal(format!("corrupt owner of dataset {id}")))?;
        Ok(Some(DatasetFacts {
            owner,
            manifest_digest: row.manifest_digest,
        }))
    }

    fn policy(&self, id: &str) -> ApiResult<Option<SignedPolicy>> {
        self.0.storage.policy(id)
    }

    fn grant_runs(&self, dataset: &str, grant: &str, exclude: Option<&str>) -> ApiResult<u64> {
        Ok(self.0.ledger.grant_runs(dataset, grant, exclude))
    }

    fn dp_spent(
        &self,
        dataset: &str,
        researcher: &PartyId,
        exclude: Option<&str>,
    ) -> ApiResult<cleanroom_policy::dp::Spent> {
        Ok(self
            .0
            .ledger
            .spent(dataset, &researcher.to_string(), exclude))
    }
}

/// The one admission function: at submission (`run = None`), at start, before release and
/// on revocation (`run = Some(id)`, which its grants already count).
pub fn admission(
    service: &Service,
    researcher: &PartyId,
    request: &RunRequest,
    run: Option<&str>,
) -> ApiResult<Decision> {
    let digest = request.params_digest();
    let decision = cleanroom_policy::admit(
        &StoreFacts(service),
        &AdmissionRequest {
            module: &request.module,
            researcher,
            params_digest: &digest,
            inputs: &request.inputs,
            researcher_hpke: &request.researcher_hpke,
            now: service.clock.now(),
            run,
            dp: request.dp.as_ref(),
            run_limit_secs: service.config.run_timeout_secs,
        },
    )?;
    Ok(decision)
}

/// The aggregation terms of an admitted run: per input, who a row is about (the DP unit
/// column, else the first identifier column) and its disclosure rules or DP terms.
pub(super) fn aggregation(admitted: &Admitted) -> Aggregation {
    let mut tables = BTreeMap::new();
    for input in &admitted.inputs {
        let unit = match &input.dp {
            Some(dp) => Some(dp.unit_column.clone()),
            None => input.identifier_columns.first().cloned(),
        };
        let mode = match &input.dp {
            Some(dp) => TableMode::Private(dp.clone()),
            None => TableMode::Disclosure(admitted.rules.clone()),
        };
        // A derived input has several roots: the private one wins.
        let private = matches!(mode, TableMode::Private(_));
        tables
            .entry(input.receipt.name.clone())
            .and_modify(|t: &mut TableTerms| {
                if private {
                    t.mode = mode.clone();
                    t.unit_column = unit.clone();
                }
            })
            .or_insert(TableTerms {
                unit_column: unit,
                mode,
            });
    }
    Aggregation {
        tables,
        epsilon: admitted.epsilon.unwrap_or_default(),
    }
}

/// A new run row for an admitted request.
pub fn new_row(
    id: String,
    researcher: PartyId,
    request: RunRequest,
    admitted: &Admitted,
) -> RunRow {
    let now = crate::now();
    RunRow {
        id,
        researcher,
        request,
        inputs: admitted.inputs.iter().map(|i| i.receipt.clone()).collect(),
        owners: admitted.owners().into_iter().collect(),
        state: RunState::Queued,
        reason: None,
        review: admitted
            .review
            .groups
            .iter()
            .map(|g| ReviewGroupRow {
                dataset: g.dataset.clone(),
                reviewers: g.reviewers.clone(),
                needed: g.needed,
            })
            .collect(),
        released_by: vec![],
        outputs: vec![],
        receipt: None,
        steps: vec![],
        charge: None,
        created: now,
        updated: now,
        version: 0,
    }
}
