//! Executing an admitted run: its inputs opened (tapped for identifiers unless under DP), the
//! engine chosen (component, R, pipeline, sample and aggregate), a DP run held to its fixed
//! schedule, and its outputs decided by the policy crate.

use super::*;

/// Run a sample-and-aggregate analysis and release its noisy vector as a checked table.
pub(super) fn sample_aggregate(
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
pub(super) fn sample_aggregate_table(
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

pub(super) fn execute_inner(service: &Service, id: &str) -> ApiResult<()> {
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
pub(super) enum Held {
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
pub(super) fn hold_to_schedule(
    started: std::time::Instant,
    duration: Duration,
    token: &CancelToken,
) -> Held {
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
pub(super) fn open_inputs(
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
pub(super) fn stop_reason(service: &Service, id: &str, otherwise: &str) -> Reason {
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
