//! Executing an admitted run: its inputs opened (tapped for identifiers unless under DP), the
//! engine chosen (component, R, pipeline, sample and aggregate), a DP run held to its fixed
//! schedule, and its outputs decided by the policy crate.

use super::*;

pub(super) fn execute_inner(service: &Service, id: &str) -> ApiResult<()> {
    let Some(Started {
        mut run,
        admitted,
        started,
        token,
    }) = start(service, id)?
    else {
        return Ok(());
    };
    let collector = Arc::new(IdentifierCollector::new());
    let grants = open_inputs(service, &admitted, &collector)?;
    let (limits, schedule) = limits(service, &run, &admitted);
    let (result, steps) = {
        let mut engine = engines::choose(service, &run, &admitted, &collector)?;
        let result = engine.run(&grants, &limits, &token);
        (result, engine.receipt_steps())
    };
    if !steps.is_empty() {
        run.steps = steps;
    }
    let result = match schedule {
        Some(duration) if !matches!(result, Err(RunError::Cancelled)) => {
            match hold_to_schedule(started, duration, &token) {
                Held::OnTime => result,
                Held::Cancelled => Err(RunError::Cancelled),
            }
        }
        _ => result,
    };
    conclude(service, &mut run, &admitted, &collector, result)
}

/// A run taken off the queue and admitted again on the policies in force.
struct Started {
    run: RunRow,
    admitted: Admitted,
    started: std::time::Instant,
    token: CancelToken,
}

/// Start `id`: admitted again on the policies in force now and marked running, with its DP
/// charge written before any guest code runs; `None` if it is not (any longer) to run here
/// (finalised as cancelled or rejected where that is why).
fn start(service: &Service, id: &str) -> ApiResult<Option<Started>> {
    let Some(mut run) = service.storage.run(id)? else {
        return Ok(None);
    };
    if run.state != RunState::Queued {
        return Ok(None);
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
        finalize(service, &mut run, RunState::Cancelled, Some(reason), vec![])?;
        return Ok(None);
    }
    // The same decision as at submission, on the policies in force now; under the transition
    // lock, so a policy change either sees this run running or is seen by this decision.
    let (admitted, started) = {
        let _guard = transitions(service)?;
        // Read again under the lock: where workers share the queue, only the current row
        // decides (a run another worker started or stopped is not started here).
        match service.storage.run(id)? {
            Some(current) if current.state == RunState::Queued => run = current,
            _ => return Ok(None),
        }
        // A cancel another worker logged is folded in by now (the lock caught up).
        if token.is_cancelled() {
            let reason = stop_reason(service, id, "cancelled before it started");
            finalize(service, &mut run, RunState::Cancelled, Some(reason), vec![])?;
            return Ok(None);
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
                set_state(
                    service,
                    &mut run,
                    RunState::Running,
                    None,
                    cleanroom_proto::Action::RunStarted,
                )?;
                (admitted, std::time::Instant::now())
            }
            Decision::Deny(reason) => {
                finalize(service, &mut run, RunState::Rejected, Some(reason), vec![])?;
                return Ok(None);
            }
        }
    };
    Ok(Some(Started {
        run,
        admitted,
        started,
        token,
    }))
}

/// The run's limits (the owners' output bounds, the enclave's run limit) and, for a run that
/// reads a table under DP, its fixed schedule: its analysis may compute for the duration the
/// request named, and its outcome is shown only when that has passed.
fn limits(service: &Service, run: &RunRow, admitted: &Admitted) -> (Limits, Option<Duration>) {
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
    (limits, schedule)
}

/// Decide the outcome's outputs at the one decision point and move the run to its final (or
/// held) state: cancelled, failed with its error text decided like any output, withheld when
/// an input's terms changed meanwhile, held for review, or released.
fn conclude(
    service: &Service,
    run: &mut RunRow,
    admitted: &Admitted,
    collector: &IdentifierCollector,
    result: Result<Vec<Candidate>, RunError>,
) -> ApiResult<()> {
    let id = run.id.clone();
    let id = id.as_str();
    let identifiers = collector.build();
    let reviewed = admitted.review.required();
    let identifier_columns = admitted.identifier_columns();
    let input = |outputs: Vec<Candidate>| EgressInput {
        outputs,
        rules: &admitted.rules,
        identifier_columns: &identifier_columns,
        identifiers: &identifiers,
        reviewed,
    };
    match result {
        Err(RunError::Cancelled) => {
            let reason = stop_reason(service, id, "cancelled by the researcher");
            let state = if reason.code == Code::RevokedDuringRun {
                RunState::Withheld
            } else {
                RunState::Cancelled
            };
            finalize(service, run, state, Some(reason), vec![])
        }
        Err(e) => {
            let reason = failure_reason(&e);
            if let RunError::Internal(detail) = &e {
                tracing::error!(run = id, "internal error in a run: {detail}");
            }
            let decided = cleanroom_policy::decide_failed(input(e.error_output()));
            run.outputs = decided.iter().map(|d| d.report.clone()).collect();
            let _guard = transitions(service)?;
            still_ours(service, run)?;
            // Error text leaves only under the terms in force (and unchanged) now.
            let receipt_outputs = if still_allowed(service, run)? {
                let sealed = seal_for_researcher(run, &decided, false)?;
                write_result(service, run, sealed)?
            } else {
                vec![]
            };
            finalize(
                service,
                run,
                RunState::Failed,
                Some(reason),
                receipt_outputs,
            )
        }
        Ok(candidates) => {
            let decided = cleanroom_policy::decide(input(candidates));
            run.outputs = decided.iter().map(|d| d.report.clone()).collect();
            let _guard = transitions(service)?;
            still_ours(service, run)?;
            if !still_allowed(service, run)? {
                withhold(
                    service,
                    run,
                    Code::RevokedDuringRun,
                    "an input's policy changed while the run was running; nothing was released",
                )
            } else {
                match cleanroom_policy::verdict(&decided, reviewed) {
                    Verdict::Hold => hold(service, run, decided),
                    Verdict::Release | Verdict::Withhold(_) => {
                        release(service, run, decided, false)
                    }
                }
            }
        }
    }
}

/// Under the transition lock (caught up with the log): whether the run is still the running
/// version this worker started. Where workers share the queue, a worker that stalled past its
/// lease finds its run failed as interrupted by another; it then writes nothing at all — no
/// result or held blob (which would sit beside a failed run the log records), no state.
fn still_ours(service: &Service, run: &RunRow) -> ApiResult<()> {
    match service.storage.run(&run.id)? {
        Some(current) if current.version == run.version && current.state == RunState::Running => {
            Ok(())
        }
        current => Err(ApiError::Conflict(format!(
            "run {} was concluded by another worker (it is {}): this worker writes nothing",
            run.id,
            current.map_or("gone".to_string(), |r| r.state.to_string())
        ))),
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
