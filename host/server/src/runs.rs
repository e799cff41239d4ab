//! Runs: admission and execution through the policy decision point
//! (`cleanroom-policy`), a bounded queue, workers on blocking threads, review,
//! revocation, encryption to the researcher, receipts.
//!
//! Nothing a module controls reaches a run row, an event or the audit log:
//! failures are reported by code with the limit in force, and the module's
//! own error text is an output like its log, decided by the same rules.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use cleanroom_policy::{
    AdmissionRequest, Admitted, Candidate, Content, DatasetFacts, Decided, Decision, EgressInput,
    Facts, IdentifierCollector,
};
use cleanroom_proto::dp::SampleAggregate;
use cleanroom_proto::policy::SignedPolicy;
use cleanroom_proto::receipt::{Receipt, ReceiptOutput, SignedReceipt};
use cleanroom_proto::run::{
    Disposition, HeldBundle, OutputKind, OutputReport, PlainOutput, ResultBundle, RunRequest,
    RunState, SealedOutput, output_context, seal_output,
};
use cleanroom_proto::{Code, PartyId, Reason};
use cleanroom_runtime::blocks::BlockPlan;
use cleanroom_runtime::tables::Tapped;
use cleanroom_runtime::{
    Aggregation, CancelToken, Grants, Limits, RunError, TableMode, TableSource, TableTerms,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, mpsc};

use cleanroom_trust::Purpose;

use crate::app::{Metrics, Service};
use crate::error::{ApiError, ApiResult};
use crate::events::Audience;
use crate::store::{DpCharge, ReviewGroupRow, RunRow};
use crate::tables::EnvelopeTable;

/// Outputs held for review are host state, sealed under the state subkey
/// with the run id as associated data.
const HELD_PURPOSE: Purpose = Purpose::State;

/// The service's storage, as the policy crate's facts.
struct StoreFacts<'a>(&'a Service);

impl Facts for StoreFacts<'_> {
    type Error = ApiError;

    fn module_exists(&self, module: &str) -> ApiResult<bool> {
        Ok(self.0.is_r_engine(module) || self.0.storage.has_module_or_pipeline(module)?)
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
        },
    )?;
    let Decision::Allow(admitted) = &decision else {
        return Ok(decision);
    };
    let sample_aggregate = request
        .dp
        .as_ref()
        .is_some_and(|dp| dp.sample_aggregate.is_some());
    let refuse = |message: &str| Ok(Decision::Deny(Reason::new(Code::DpRequired, message)));
    if admitted.epsilon.is_none() && sample_aggregate {
        return refuse(
            "sample and aggregate splits the people of an input that requires differential \
             privacy, and no input of this run does",
        );
    }
    if let (Some(_), Some(dp)) = (admitted.epsilon, &request.dp) {
        let secs = dp.duration().as_secs();
        if secs == 0 || secs > service.config.run_timeout_secs {
            return Ok(Decision::Deny(Reason::new(
                Code::DpRunLimit,
                format!(
                    "a DP run's fixed duration must be 1 to {} s (this enclave's run time                      limit), not {secs} s",
                    service.config.run_timeout_secs
                ),
            )));
        }
    }
    if admitted.epsilon.is_some() && service.storage.pipeline(&request.module)?.is_some() {
        return refuse(
            "an input requires differential privacy, and a pipeline's steps read their tables \
             row by row: run a module with the aggregate interface or sample and aggregate",
        );
    }
    Ok(decision)
}

/// The aggregation terms of an admitted run: per input, who a row is about (the DP unit
/// column, else the first identifier column) and its disclosure rules or DP terms.
fn aggregation(admitted: &Admitted) -> Aggregation {
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

/// Run a sample-and-aggregate analysis and release its noisy vector as a checked table.
fn sample_aggregate(
    service: &Service,
    run: &RunRow,
    admitted: &Admitted,
    grants: &Grants,
    limits: &Limits,
    token: &CancelToken,
    sa: &SampleAggregate,
) -> Result<Vec<Candidate>, RunError> {
    let mut key = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut key);
    let units = admitted
        .inputs
        .iter()
        .filter_map(|i| Some((i.receipt.name.clone(), i.dp.as_ref()?.unit_column.clone())))
        .collect();
    let plan = BlockPlan {
        blocks: sa.blocks,
        key,
        units,
        output: sa.output.clone(),
        dimensions: sa.bounds.len(),
    };
    let module = crate::modules::load(service, &run.request.module)
        .map_err(|e| RunError::Internal(e.to_string()))?;
    let blocks = service.runtime.run_blocks(
        &module,
        grants,
        &run.request.params,
        limits,
        Some(token),
        &plan,
    )?;
    let bounds: Vec<(f64, f64)> = sa.bounds.iter().map(|(l, h)| (l.get(), h.get())).collect();
    let epsilon = admitted.epsilon.unwrap_or_default();
    let values = cleanroom_policy::dp::sample_aggregate_release(&blocks, &bounds, epsilon)
        .map_err(|e| RunError::Internal(e.to_string()))?;
    let batch = sample_aggregate_table(&values, epsilon, sa.blocks)
        .map_err(|e| RunError::Internal(e.to_string()))?;
    Ok(vec![Candidate {
        name: sa.output.clone(),
        kind: cleanroom_proto::run::OutputKind::Table,
        content: Content::Checked {
            schema: batch.schema(),
            batches: vec![batch],
            codes: vec![Code::DpNoised],
            refused: false,
            private: true,
        },
    }])
}

/// The released vector: one row per coordinate.
fn sample_aggregate_table(
    values: &[f64],
    epsilon: cleanroom_proto::dp::Epsilon,
    blocks: u32,
) -> Result<arrow_array::RecordBatch, arrow_schema::ArrowError> {
    use arrow_array::{ArrayRef, Float64Array, Int64Array};
    let schema = arrow_schema::Schema::new(vec![
        arrow_schema::Field::new("coordinate", arrow_schema::DataType::Int64, false),
        arrow_schema::Field::new("value", arrow_schema::DataType::Float64, false),
    ])
    .with_metadata(
        [
            (
                "cleanroom:aggregate".to_string(),
                "sample_aggregate".to_string(),
            ),
            ("cleanroom:epsilon".to_string(), epsilon.to_string()),
            ("cleanroom:blocks".to_string(), blocks.to_string()),
        ]
        .into_iter()
        .collect::<std::collections::HashMap<String, String>>(),
    );
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(0..values.len() as i64)),
        Arc::new(Float64Array::from(values.to_vec())),
    ];
    arrow_array::RecordBatch::try_new(Arc::new(schema), columns)
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

/// Start the workers. Queued runs are re-queued; runs a restart interrupted are failed
/// ("interrupted by restart"), never re-run: a module must not get a second go at its
/// inputs behind the owners' backs.
pub fn start(service: Arc<Service>, rx: mpsc::Receiver<String>) -> ApiResult<()> {
    if service.storage.cluster().is_some() {
        return start_cluster(service);
    }
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..service.config.workers {
        let (service, rx) = (service.clone(), rx.clone());
        tokio::spawn(async move {
            loop {
                let next = rx.lock().await.recv().await;
                let Some(id) = next else { break };
                let svc = service.clone();
                let run = id.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || execute(&svc, &run)).await {
                    // The panic message may carry module-influenced text: not for the log.
                    let _ = e;
                    tracing::error!(run = id, "run worker panicked");
                    let svc = service.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        fail_stuck(
                            &svc,
                            &id,
                            Code::Internal,
                            "the service failed while running the analysis",
                        )
                    })
                    .await;
                }
            }
        });
    }
    let mut runs = service.storage.runs()?;
    runs.sort_by_key(|r| r.created);
    for run in runs {
        match run.state {
            RunState::Running => {
                tracing::warn!(run = run.id, "failing a run interrupted by a restart");
                fail_stuck(
                    &service,
                    &run.id,
                    Code::Interrupted,
                    "interrupted by restart; submit it again",
                )?;
            }
            RunState::Queued => {
                service
                    .cancels
                    .lock()
                    .expect("cancel map lock")
                    .insert(run.id.clone(), CancelToken::new());
                let queue = service.queue.clone();
                tokio::spawn(async move {
                    let _ = queue.send(run.id).await;
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// Start a cluster worker: `config.workers` loops that claim runs from the shared queue.
/// Every queued or running run is put (back) on the queue: a running run whose worker is
/// alive keeps its claim; one whose worker is gone is claimed by a live worker, which fails
/// it as interrupted.
fn start_cluster(service: Arc<Service>) -> ApiResult<()> {
    let cluster = service.storage.cluster().expect("checked by the caller");
    for run in service.storage.runs()? {
        if matches!(run.state, RunState::Queued | RunState::Running) {
            cluster.enqueue(&run.id)?;
        }
    }
    for _ in 0..service.config.workers {
        tokio::spawn(claim_loop(service.clone()));
    }
    crate::cluster::spawn_housekeeping(service);
    Ok(())
}

/// Claim runs from the shared queue and execute them, one at a time.
async fn claim_loop(service: Arc<Service>) {
    const BUSY: Duration = Duration::from_millis(10);
    const IDLE: Duration = Duration::from_millis(200);
    let worker = service.config.cluster.worker_id();
    let mut wait = BUSY;
    loop {
        let (svc, me) = (service.clone(), worker.clone());
        let claimed = tokio::task::spawn_blocking(move || {
            let cluster = svc.storage.cluster().expect("a cluster worker");
            cluster.claim(&me, crate::cluster::lease(&svc))
        })
        .await;
        let id = match claimed {
            Ok(Ok(Some(id))) => id,
            Ok(Ok(None)) => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(IDLE);
                continue;
            }
            Ok(Err(e)) => {
                tracing::warn!("claiming a run: {e}");
                tokio::time::sleep(IDLE).await;
                continue;
            }
            Err(_) => continue,
        };
        wait = BUSY;
        let (svc, run) = (service.clone(), id.clone());
        let outcome = tokio::task::spawn_blocking(move || run_claimed(&svc, &run)).await;
        let (svc, me) = (service.clone(), worker.clone());
        // Whatever happened, the claim is given up: a run left claimed would have its lease
        // renewed by this worker for ever.
        let _ = tokio::task::spawn_blocking(move || {
            let stopped = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                // The panic message may carry module-influenced text: not for the log.
                Err(_) => Some("the run worker panicked".to_string()),
            };
            if let Some(why) = stopped {
                tracing::error!(run = id, "a claimed run stopped inside the service: {why}");
                let _ = fail_stuck(
                    &svc,
                    &id,
                    Code::Internal,
                    "the service failed while running the analysis",
                );
            }
            let cluster = svc.storage.cluster().expect("a cluster worker");
            if let Err(e) = cluster.done(&id, &me) {
                tracing::warn!(run = id, "giving up a claim: {e}");
            }
        })
        .await;
    }
}

/// Run a claimed run, or fail it if the worker that claimed it before stopped mid-run.
fn run_claimed(service: &Service, id: &str) -> ApiResult<()> {
    match service.storage.run(id)? {
        // Claimed from a worker that stopped while running it: never run twice.
        Some(run) if run.state == RunState::Running => fail_stuck(
            service,
            id,
            Code::Interrupted,
            "the worker running it stopped; submit it again",
        ),
        Some(_) => {
            execute(service, id);
            Ok(())
        }
        None => Ok(()),
    }
}

/// Finalise a run that cannot continue (a worker panic, a restart) as failed.
fn fail_stuck(service: &Service, id: &str, code: Code, message: &str) -> ApiResult<()> {
    let _guard = transitions(service)?;
    if let Some(mut run) = service.storage.run(id)?
        && !run.state.is_final()
        && run.state != RunState::HeldForReview
    {
        finalize(
            service,
            &mut run,
            RunState::Failed,
            Some(Reason::new(code, message)),
            vec![],
        )?;
    }
    Ok(())
}

fn execute(service: &Service, id: &str) {
    if let Err(e) = execute_inner(service, id) {
        tracing::error!(run = id, "run failed inside the service: {e}");
        let _ = fail_stuck(
            service,
            id,
            Code::Internal,
            "the service failed while running the analysis",
        );
    }
}

fn execute_inner(service: &Service, id: &str) -> ApiResult<()> {
    let Some(mut run) = service.storage.run(id)? else {
        return Ok(());
    };
    if run.state != RunState::Queued {
        return Ok(());
    }
    let token = service
        .cancels
        .lock()
        .expect("cancel map lock")
        .entry(id.to_string())
        .or_default()
        .clone();
    if token.is_cancelled() {
        let reason = stop_reason(service, id, "cancelled before it started");
        return finalize(service, &mut run, RunState::Cancelled, Some(reason), vec![]);
    }
    // The same decision as at submission, on the policies in force now; under the transition
    // lock, so a policy change either sees this run running or is seen by this decision.
    let (admitted, started) = {
        let _guard = transitions(service)?;
        // Read again under the lock: where workers share the queue, only the current row
        // decides (a run another worker started or stopped is not started here).
        match service.storage.run(id)? {
            Some(current) if current.state == RunState::Queued => run = current,
            _ => return Ok(()),
        }
        match admission(service, &run.researcher, &run.request, Some(id))? {
            Decision::Allow(admitted) => {
                run.inputs = admitted.inputs.iter().map(|i| i.receipt.clone()).collect();
                // The charge is written with the start, before any guest code runs: a crash
                // or a failure later never gives ε back.
                run.charge = admitted.epsilon.map(|epsilon| DpCharge {
                    epsilon,
                    datasets: admitted
                        .inputs
                        .iter()
                        .filter(|i| i.dp.is_some())
                        .map(|i| i.receipt.dataset.clone())
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .collect(),
                });
                set_state(service, &mut run, RunState::Running, None, "run.started")?;
                (admitted, std::time::Instant::now())
            }
            Decision::Deny(reason) => {
                return finalize(service, &mut run, RunState::Rejected, Some(reason), vec![]);
            }
        }
    };
    let pipeline = service.storage.pipeline(&run.request.module)?;
    let collector = Arc::new(IdentifierCollector::new());
    let grants = open_inputs(service, &admitted, &collector)?;
    let defaults = Limits::default();
    let limits = Limits {
        max_output_bytes: admitted
            .rules
            .max_output_bytes
            .min(defaults.max_output_bytes),
        max_outputs: admitted.rules.max_outputs.min(defaults.max_outputs),
        timeout: Duration::from_secs(service.config.run_timeout_secs),
        ..defaults
    };
    // A run that reads a table under DP keeps a fixed schedule: its analysis may compute for
    // the duration the request named, and its outcome is shown only when that has passed.
    let schedule = admitted
        .epsilon
        .map(|_| run.request.dp.as_ref().map(|dp| dp.duration()))
        .map(|d| {
            d.unwrap_or(Duration::from_secs(u64::from(
                cleanroom_proto::dp::DpRun::DEFAULT_DURATION_SECS,
            )))
        });
    let limits = Limits {
        timeout: schedule.unwrap_or(limits.timeout),
        ..limits
    };
    let sample = run
        .request
        .dp
        .as_ref()
        .and_then(|dp| dp.sample_aggregate.clone());
    let result = match (&pipeline, sample) {
        (None, Some(sa)) => {
            sample_aggregate(service, &run, &admitted, &grants, &limits, &token, &sa)
        }
        (None, None) if service.is_r_engine(&run.request.module) => {
            let r = service.r_engine.as_ref().expect("is_r_engine");
            if admitted.epsilon.is_some() {
                Err(RunError::Failed(
                    "R analyses cannot read tables that require differential privacy yet".into(),
                ))
            } else {
                r.run(&grants, &run.request.params, &limits, Some(&token))
                    .map(cleanroom_runtime::RunOutput::candidates)
            }
        }
        (None, None) => {
            let module = crate::modules::load(service, &run.request.module)?;
            service
                .runtime
                .run_with(
                    &module,
                    grants,
                    &run.request.params,
                    &limits,
                    Some(&token),
                    aggregation(&admitted),
                )
                .map(cleanroom_runtime::RunOutput::candidates)
        }
        (Some(row), _) => {
            let mut steps =
                crate::pipelines::EnclaveSteps::new(service, &run, &admitted, collector.clone())?;
            let chain = cleanroom_runtime::pipeline::run_chain(
                &service.runtime,
                &row.pipeline,
                &grants,
                &limits,
                Some(&token),
                &mut steps,
            );
            match chain {
                Ok(out) => {
                    run.steps = steps.receipt_steps(&row.pipeline, &out.steps);
                    Ok(out.finals)
                }
                Err(failed) => {
                    tracing::info!(run = id, step = failed.step, "a pipeline step failed");
                    Err(failed.error)
                }
            }
        }
    };
    let result = match schedule {
        Some(duration) if !matches!(result, Err(RunError::Cancelled)) => {
            match hold_to_schedule(started, duration, &token) {
                Held::OnTime => result,
                Held::Cancelled => Err(RunError::Cancelled),
            }
        }
        _ => result,
    };
    let identifiers = collector.build();
    let reviewed = admitted.review.required();
    let identifier_columns = admitted.identifier_columns();
    let egress = |outputs: Vec<Candidate>| {
        cleanroom_policy::decide(EgressInput {
            outputs,
            rules: &admitted.rules,
            identifier_columns: &identifier_columns,
            identifiers: &identifiers,
            reviewed,
        })
    };
    match result {
        Err(RunError::Cancelled) => {
            let reason = stop_reason(service, id, "cancelled by the researcher");
            let state = if reason.code == Code::RevokedDuringRun {
                RunState::Withheld
            } else {
                RunState::Cancelled
            };
            finalize(service, &mut run, state, Some(reason), vec![])
        }
        Err(e) => {
            let reason = failure_reason(&e);
            if let RunError::Internal(detail) = &e {
                tracing::error!(run = id, "internal error in a run: {detail}");
            }
            let outputs = e.error_output();
            // A failed run is not reviewed: its error text leaves only where every owner
            // releases logs and nobody reviews.
            let decided: Vec<Decided> = egress(outputs)
                .into_iter()
                .map(|mut d| {
                    if d.report.disposition == Disposition::Hold {
                        d.report.disposition = Disposition::Refuse;
                        d.report.codes.push(Code::LogsWithheld);
                    }
                    d
                })
                .collect();
            run.outputs = decided.iter().map(|d| d.report.clone()).collect();
            let _guard = transitions(service)?;
            // Error text leaves only under the terms in force (and unchanged) now.
            let receipt_outputs = if still_allowed(service, &run)? {
                let sealed = seal_for_researcher(&run, &decided, false)?;
                write_result(service, &run, sealed)?
            } else {
                vec![]
            };
            finalize(
                service,
                &mut run,
                RunState::Failed,
                Some(reason),
                receipt_outputs,
            )
        }
        Ok(candidates) => {
            let decided = egress(candidates);
            run.outputs = decided.iter().map(|d| d.report.clone()).collect();
            let _guard = transitions(service)?;
            if !still_allowed(service, &run)? {
                withhold(
                    service,
                    &mut run,
                    Code::RevokedDuringRun,
                    "an input's policy changed while the run was running; nothing was released",
                )
            } else if reviewed
                || decided
                    .iter()
                    .any(|d| d.report.disposition == Disposition::Hold)
            {
                // A reviewed run goes to its reviewers also when every output was refused:
                // which rules refused what is theirs to see first, not the researcher's.
                hold(service, &mut run, decided)
            } else {
                release(service, &mut run, decided, false)
            }
        }
    }
}

/// How a DP run's wait for its scheduled end ended.
enum Held {
    /// The schedule came.
    OnTime,
    /// The researcher cancelled (or an owner revoked) before it came.
    Cancelled,
}

/// Wait until `started + k·duration` for the least k ≥ 1 not yet passed: the time at which a
/// DP run's outcome becomes observable depends on nothing but the schedule the request named
/// (and, only if the host's own work outran a whole period, on how many periods it took; see
/// docs/security.md). A cancellation while waiting ends the run as cancelled, as it would
/// have while computing, so the outcome does not tell whether the computation had finished.
fn hold_to_schedule(started: std::time::Instant, duration: Duration, token: &CancelToken) -> Held {
    let elapsed = started.elapsed();
    let periods = elapsed
        .as_nanos()
        .div_ceil(duration.as_nanos().max(1))
        .max(1);
    let periods = u32::try_from(periods).unwrap_or(u32::MAX);
    let end = started + duration.saturating_mul(periods);
    loop {
        if token.is_cancelled() {
            return Held::Cancelled;
        }
        let now = std::time::Instant::now();
        if now >= end {
            return Held::OnTime;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

/// Open each admitted input as a tapped envelope table, hidden columns projected away.
fn open_inputs(
    service: &Service,
    admitted: &Admitted,
    collector: &Arc<IdentifierCollector>,
) -> ApiResult<Grants> {
    let mut grants = Grants::new();
    for input in &admitted.inputs {
        if let Some(derived) = &input.receipt.via {
            // Read through a derived dataset: opened once, under the strictest identifier
            // columns of the roots admitted for it.
            if grants.contains_key(&input.receipt.name) {
                continue;
            }
            let row = service.storage.derived(derived)?.ok_or_else(|| {
                ApiError::Internal(format!(
                    "derived dataset {derived} was admitted but is gone"
                ))
            })?;
            let roots = admitted
                .inputs
                .iter()
                .filter(|i| i.receipt.name == input.receipt.name);
            let now = crate::pipelines::ColumnRules {
                hidden: roots
                    .clone()
                    .flat_map(|i| i.hidden_columns.clone())
                    .collect(),
                identifiers: roots.flat_map(|i| i.identifier_columns.clone()).collect(),
            };
            // A derived table with a root that requires DP is read only by the host (its
            // aggregates): its identifier values are never compared with anything a guest
            // publishes, or the comparison would answer "is this person in the table".
            let private = admitted
                .inputs
                .iter()
                .any(|i| i.receipt.name == input.receipt.name && i.dp.is_some());
            let sink = if private {
                Arc::new(IdentifierCollector::new())
            } else {
                collector.clone()
            };
            let table = crate::pipelines::open_derived(service, &row, &sink, &now)?;
            grants.insert(input.receipt.name.clone(), table);
            continue;
        }
        let owner = input
            .owner
            .verifying_key()
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let dataset = &input.receipt.dataset;
        let table = EnvelopeTable::open(
            service.blobs.clone(),
            *service.identity.hpke_secret(),
            owner,
            &input.hidden_columns,
            dataset,
            &input.receipt.manifest_digest,
        )
        .map_err(|e| ApiError::Internal(format!("dataset {dataset}: {e}")))?;
        if input.dp.is_some() {
            // A table under differential privacy is not tapped for identifier values: no
            // exact rule may decide on its rows (an output named after a patient would be
            // refused exactly when that patient is in the table). Its rows reach nothing but
            // the host's noised aggregates; see "Observables of a DP run" in docs/security.md.
            grants.insert(
                input.receipt.name.clone(),
                Arc::new(table) as Arc<dyn TableSource>,
            );
            continue;
        }
        let tapped = Tapped::new(
            Arc::new(table),
            input.identifier_columns.clone(),
            collector.clone(),
        );
        grants.insert(
            input.receipt.name.clone(),
            Arc::new(tapped) as Arc<dyn TableSource>,
        );
    }
    Ok(grants)
}

/// Why a cancelled run stopped: a revocation, or the researcher.
fn stop_reason(service: &Service, id: &str, otherwise: &str) -> Reason {
    if service.revoked.lock().expect("revoked lock").remove(id) {
        Reason::new(
            Code::RevokedDuringRun,
            "an input's policy was revoked while the run was queued or running",
        )
    } else {
        Reason::new(Code::Cancelled, otherwise)
    }
}

/// The status reason for a run error: a code and the limit in force, never module text.
pub fn failure_reason(e: &RunError) -> Reason {
    match e {
        RunError::Failed(_) => Reason::new(
            Code::AnalysisError,
            "the analysis returned an error; its text is an output, released only where every \
             owner releases logs",
        ),
        RunError::Timeout(limit) => Reason::new(
            Code::Timeout,
            format!(
                "the analysis ran past its time limit of {} s",
                limit.as_secs()
            ),
        ),
        RunError::MemoryLimit { limit_bytes } => Reason::new(
            Code::MemoryLimit,
            format!("the analysis exceeded its memory limit of {limit_bytes} bytes"),
        ),
        RunError::StackOverflow => {
            Reason::new(Code::StackOverflow, "the analysis overflowed its stack")
        }
        RunError::OutputLimit(limit) => Reason::new(
            Code::OutputLimit,
            format!("the analysis exceeded its output limit of {limit} bytes"),
        ),
        RunError::LogLimit(limit) => Reason::new(
            Code::LogLimit,
            format!("the analysis exceeded its log limit of {limit} bytes"),
        ),
        RunError::ParamsTooLarge { limit, .. } => Reason::new(
            Code::ParamsTooLarge,
            format!("the params exceed the limit of {limit} bytes"),
        ),
        RunError::ResourceLimit { what, limit } => Reason::new(
            Code::ResourceLimit,
            format!("the analysis exceeded the sandbox's limit of {limit} {what}"),
        ),
        RunError::Trap(_) => Reason::new(
            Code::Trap,
            "the analysis crashed (a trap); its details are an output, like its log",
        ),
        RunError::Cancelled => Reason::new(Code::Cancelled, "cancelled"),
        RunError::Internal(_) => Reason::new(
            Code::Internal,
            "the service failed while running the analysis; the analysis is not at fault",
        ),
    }
}

fn set_state(
    service: &Service,
    run: &mut RunRow,
    state: RunState,
    reason: Option<Reason>,
    action: &str,
) -> ApiResult<()> {
    run.state = state;
    run.reason = reason.clone();
    run.updated = crate::now();
    // Every decision is audited with the policies it used.
    let policies: Vec<&str> = run
        .inputs
        .iter()
        .map(|i| i.policy_digest.as_str())
        .collect();
    // A final state's entry names the receipt, so the receipt's inclusion proof covers it.
    let receipt = run.receipt.as_ref().map(|r| r.digest());
    // The start of a run that spends ε is the ledger's entry: the log says what was charged.
    let charged = (state == RunState::Running)
        .then_some(run.charge.as_ref())
        .flatten()
        .map(|c| json!({ "epsilon": c.epsilon, "datasets": c.datasets }));
    let mut detail = json!({
        "state": state, "code": reason.map(|r| r.code), "policies": policies, "receipt": receipt,
    });
    if let Some(charged) = charged {
        detail["dp_charge"] = charged;
    }
    let parties = audience(run);
    service.record_run(run, parties, None, action, detail)
}

/// The run's researcher, input owners and reviewers.
pub(crate) fn audience(run: &RunRow) -> Audience {
    Audience::Parties(run.parties())
}

/// Put a run in a final state with a signed receipt.
fn finalize(
    service: &Service,
    run: &mut RunRow,
    state: RunState,
    reason: Option<Reason>,
    outputs: Vec<ReceiptOutput>,
) -> ApiResult<()> {
    let receipt = Receipt {
        run_id: run.id.clone(),
        module: run.request.module.clone(),
        researcher: run.researcher,
        inputs: run.inputs.clone(),
        params_digest: run.request.params_digest(),
        outputs,
        state,
        measurement: service.measurement.clone(),
        enclave_key: service.enclave_party(),
        issued_at: crate::now(),
        steps: run.steps.clone(),
    };
    run.receipt = Some(SignedReceipt::sign(receipt, service.identity.signing_key()));
    match state {
        RunState::Released => Metrics::inc(&service.metrics.runs_released),
        RunState::Failed | RunState::Cancelled => Metrics::inc(&service.metrics.runs_failed),
        _ => Metrics::inc(&service.metrics.runs_withheld),
    }
    service
        .cancels
        .lock()
        .expect("cancel map lock")
        .remove(&run.id);
    let action = format!("run.{state}");
    set_state(service, run, state, reason, &action)
}

/// Seal what leaves to the researcher: `Release` outputs, and `Hold` ones once reviewed.
fn seal_for_researcher(
    run: &RunRow,
    decided: &[Decided],
    reviewed: bool,
) -> ApiResult<Vec<SealedOutput>> {
    let recipient = run.request.researcher_hpke_key().map_err(|e| {
        ApiError::Internal(format!("researcher key was validated at admission: {e}"))
    })?;
    let mut sealed = Vec::new();
    for d in decided {
        let leaves = match d.report.disposition {
            Disposition::Release => true,
            Disposition::Hold => reviewed,
            Disposition::Refuse => false,
        };
        if !leaves {
            continue;
        }
        let context = output_context(&run.id, "result", d.report.index);
        let ct = seal_output(&recipient, &context, &d.output)
            .map_err(|e| ApiError::Internal(format!("encrypting an output: {e}")))?;
        sealed.push(SealedOutput {
            index: d.report.index,
            sealed: B64.encode(ct),
        });
    }
    Ok(sealed)
}

/// Write the researcher's result bundle durably (before any state says it exists) and
/// return the receipt's view of it: digests over ciphertext only.
fn write_result(
    service: &Service,
    run: &RunRow,
    sealed: Vec<SealedOutput>,
) -> ApiResult<Vec<ReceiptOutput>> {
    if sealed.is_empty() {
        return Ok(vec![]);
    }
    let kinds: BTreeMap<u32, OutputKind> = run.outputs.iter().map(|r| (r.index, r.kind)).collect();
    let receipt_outputs = sealed
        .iter()
        .map(|s| ReceiptOutput {
            index: s.index,
            kind: kinds.get(&s.index).copied().unwrap_or(OutputKind::File),
            ciphertext_sha256: ciphertext_digest(&s.sealed),
        })
        .collect();
    let blob = StoredResult { outputs: sealed };
    let bytes = serde_json::to_vec(&blob).map_err(|e| ApiError::Internal(e.to_string()))?;
    service.blobs.put("results", &run.id, &bytes)?;
    Ok(receipt_outputs)
}

/// SHA-256 hex of a sealed output's ciphertext (given base64).
fn ciphertext_digest(sealed_b64: &str) -> String {
    hex::encode(Sha256::digest(B64.decode(sealed_b64).unwrap_or_default()))
}

/// The result blob: sealed outputs; the receipt comes from the run row.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredResult {
    outputs: Vec<SealedOutput>,
}

/// The researcher's bundle of a released (or failed, with released error text) run.
pub fn result_bundle(service: &Service, run: &RunRow) -> ApiResult<ResultBundle> {
    let receipt = run
        .receipt
        .clone()
        .ok_or_else(|| ApiError::Internal("a final run has a receipt".into()))?;
    let outputs = match service.blobs.get("results", &run.id)? {
        Some(bytes) => {
            let stored: StoredResult = serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::Internal(format!("corrupt result: {e}")))?;
            stored.outputs
        }
        None if receipt.receipt.outputs.is_empty() => vec![],
        None => {
            return Err(ApiError::Tampered(format!(
                "the result of run {} is missing from storage",
                run.id
            )));
        }
    };
    // The receipt names the ciphertext of every output: a swapped or edited blob is refused.
    let expected: Vec<&str> = receipt
        .receipt
        .outputs
        .iter()
        .map(|o| o.ciphertext_sha256.as_str())
        .collect();
    let found: Vec<String> = outputs
        .iter()
        .map(|o| ciphertext_digest(&o.sealed))
        .collect();
    if expected != found.iter().map(String::as_str).collect::<Vec<_>>() {
        return Err(ApiError::Internal(
            "the stored result does not match the receipt (tampered storage?)".into(),
        ));
    }
    let entry = service
        .storage
        .last_write(&crate::store::RowWrite::Run(run).row())?
        .ok_or_else(|| ApiError::Internal(format!("run {} was never logged", run.id)))?;
    let logged = service
        .audit
        .logged(entry, service.identity.signing_key())?;
    Ok(ResultBundle {
        run: run.id.clone(),
        receipt,
        outputs,
        logged,
    })
}

/// Release: re-check every policy, make the result durable, then commit `Released`.
/// Callers hold `service.transitions`.
fn release(
    service: &Service,
    run: &mut RunRow,
    decided: Vec<Decided>,
    reviewed: bool,
) -> ApiResult<()> {
    if !still_allowed(service, run)? {
        return withhold(
            service,
            run,
            Code::RevokedDuringRun,
            "an input's policy changed or no longer allows this run; nothing was released",
        );
    }
    let sealed = seal_for_researcher(run, &decided, reviewed)?;
    if sealed.is_empty() && !decided.is_empty() {
        // The rule that refused the first output (the last code it gathered).
        let code = decided
            .iter()
            .find(|d| d.report.disposition == Disposition::Refuse)
            .and_then(|d| d.report.codes.last().copied())
            .unwrap_or(Code::UncheckedRefused);
        return withhold(
            service,
            run,
            code,
            "the owners' rules released none of the run's outputs; see each output's codes",
        );
    }
    let receipt_outputs = write_result(service, run, sealed)?;
    finalize(service, run, RunState::Released, None, receipt_outputs)?;
    let _ = service.blobs.delete("held", &run.id);
    Ok(())
}

/// The transition lock (across the cluster, where workers share state, with the books
/// caught up); a panic elsewhere does not wedge every later transition.
pub(crate) fn transitions(service: &Service) -> ApiResult<crate::cluster::Serial<'_>> {
    crate::cluster::serial(service, crate::cluster::LockKey::Transitions)
}

/// Whether the run may still release: admitted now, under exactly the terms it ran under (a
/// new version that keeps the grant but tightens the rules, or adds review, must not be
/// bypassed by a run decided under the old one; one that only adds another grant may).
fn still_allowed(service: &Service, run: &RunRow) -> ApiResult<bool> {
    Ok(
        match admission(service, &run.researcher, &run.request, Some(&run.id))? {
            Decision::Allow(now) => now
                .inputs
                .iter()
                .map(|i| (&i.receipt.dataset, &i.receipt.terms_digest))
                .eq(run.inputs.iter().map(|i| (&i.dataset, &i.terms_digest))),
            Decision::Deny(_) => false,
        },
    )
}

/// End a run withheld: nothing leaves, and any held outputs are deleted.
fn withhold(service: &Service, run: &mut RunRow, code: Code, message: &str) -> ApiResult<()> {
    let _ = service.blobs.delete("held", &run.id);
    finalize(
        service,
        run,
        RunState::Withheld,
        Some(Reason::new(code, message)),
        vec![],
    )
}

/// A held output, sealed at rest under the enclave's state key.
#[serde_with::serde_as]
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeldOutput {
    report: OutputReport,
    name: String,
    #[serde_as(as = "serde_with::base64::Base64")]
    bytes: Vec<u8>,
    reviewable: bool,
}

fn hold(service: &Service, run: &mut RunRow, decided: Vec<Decided>) -> ApiResult<()> {
    // A held run is the reviewers' to decide; nothing is left to cancel.
    service
        .cancels
        .lock()
        .expect("cancel map lock")
        .remove(&run.id);
    let held: Vec<HeldOutput> = decided
        .into_iter()
        .map(|d| HeldOutput {
            report: d.report,
            name: d.output.name,
            bytes: d.output.bytes,
            reviewable: d.reviewable,
        })
        .collect();
    let mut plain = serde_json::to_vec(&held).map_err(|e| ApiError::Internal(e.to_string()))?;
    // Padded (JSON ignores trailing spaces) so the sealed blob's size on the operator's disk
    // shows only the order of magnitude of what the module published.
    plain.resize(cleanroom_proto::run::padded_len(plain.len()), b' ');
    let sealed = service
        .sealer
        .seal(HELD_PURPOSE, run.id.as_bytes(), &plain)
        .map_err(|e| ApiError::Internal(format!("sealing held outputs: {e}")))?;
    service.blobs.put("held", &run.id, &sealed)?;
    set_state(
        service,
        run,
        RunState::HeldForReview,
        None,
        "run.held_for_review",
    )
}

fn held_outputs(service: &Service, run: &RunRow) -> ApiResult<Vec<Decided>> {
    let sealed = service.blobs.get("held", &run.id)?.ok_or_else(|| {
        ApiError::Tampered(format!("the held outputs of run {} are missing", run.id))
    })?;
    let plain = service
        .sealer
        .open(HELD_PURPOSE, run.id.as_bytes(), &sealed)
        .map_err(|e| ApiError::Internal(format!("held outputs do not unseal (tampered?): {e}")))?;
    let held: Vec<HeldOutput> =
        serde_json::from_slice(&plain).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(held
        .into_iter()
        .map(|h| Decided {
            output: PlainOutput {
                name: h.name,
                kind: h.report.kind,
                bytes: h.bytes,
            },
            report: h.report,
            reviewable: h.reviewable,
        })
        .collect())
}

/// What a pending reviewer is asked to release, sealed to the key they signed for.
pub fn held_bundle(
    service: &Service,
    run: &RunRow,
    reviewer_hpke: &[u8; 32],
) -> ApiResult<HeldBundle> {
    let decided = held_outputs(service, run)?;
    let mut outputs = Vec::new();
    for d in decided.iter().filter(|d| d.reviewable) {
        let context = output_context(&run.id, "review", d.report.index);
        let ct = seal_output(reviewer_hpke, &context, &d.output)
            .map_err(|e| ApiError::Internal(format!("encrypting for review: {e}")))?;
        outputs.push(SealedOutput {
            index: d.report.index,
            sealed: B64.encode(ct),
        });
    }
    Ok(HeldBundle {
        run: run.id.clone(),
        reports: decided.into_iter().map(|d| d.report).collect(),
        outputs,
        signature: String::new(),
    }
    .sign(service.identity.signing_key()))
}

/// A reviewer's decision; the run is released once every review group has its releases,
/// and withheld by any pending reviewer's withhold.
pub fn finish_review(
    service: &Service,
    id: &str,
    reviewer: PartyId,
    release_it: bool,
    reason: Option<String>,
) -> ApiResult<RunRow> {
    let _guard = transitions(service)?;
    let mut run = service
        .storage
        .run(id)?
        .ok_or_else(|| ApiError::NotFound(format!("no run {id}")))?;
    if !run.pending_reviews().contains(&reviewer) {
        return Err(ApiError::Conflict(format!(
            "run {id} does not await your review"
        )));
    }
    let reason: Option<String> = reason.map(|r| r.chars().take(1000).collect());
    let action = if release_it {
        run.released_by.push(reviewer);
        "review.released"
    } else {
        "review.withheld"
    };
    run.updated = crate::now();
    // The review and the row that remembers it are one write.
    let parties = audience(&run);
    service.record_run(
        &mut run,
        parties,
        Some(reviewer),
        action,
        json!({ "reason": reason }),
    )?;
    if !release_it {
        let why = format!(
            "withheld by reviewer {}{}",
            reviewer.short(),
            reason.map(|r| format!(": {r}")).unwrap_or_default()
        );
        withhold(service, &mut run, Code::WithheldByReviewer, &why)?;
        return Ok(run);
    }
    if run.route().satisfied(&run.released_by) {
        let decided = held_outputs(service, &run)?;
        release(service, &mut run, decided, true)?;
    }
    Ok(run)
}

/// A dataset's policy changed: every run on it that is queued, running or held is decided
/// again, and stopped or withheld if the new policy no longer allows it.
pub fn on_policy_change(service: &Service, dataset: &str) -> ApiResult<()> {
    let _guard = transitions(service)?;
    let runs = service.storage.runs()?;
    for run in runs {
        if !matches!(
            run.state,
            RunState::Queued | RunState::Running | RunState::HeldForReview
        ) || !run.inputs.iter().any(|i| i.dataset == dataset)
        {
            continue;
        }
        // Queued runs are decided again when they start; running and held ones must still be
        // allowed under exactly the policies they ran under.
        let allowed = match run.state {
            RunState::Queued => matches!(
                admission(service, &run.researcher, &run.request, Some(&run.id))?,
                Decision::Allow(_)
            ),
            _ => still_allowed(service, &run)?,
        };
        if allowed {
            continue;
        }
        match run.state {
            RunState::HeldForReview => {
                let mut run = run;
                withhold(
                    service,
                    &mut run,
                    Code::RevokedDuringRun,
                    "an input's policy was revoked while the outputs awaited review",
                )?;
            }
            RunState::Running => {
                service
                    .revoked
                    .lock()
                    .expect("revoked lock")
                    .insert(run.id.clone());
                if let Some(token) = service
                    .cancels
                    .lock()
                    .expect("cancel map lock")
                    .get(&run.id)
                {
                    token.cancel();
                }
            }
            // A queued run is decided again when it starts.
            _ => {}
        }
    }
    Ok(())
}
