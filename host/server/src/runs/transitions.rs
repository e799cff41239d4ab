//! State transitions under the transition lock: start, hold for review, release, withhold,
//! finalise, reviews and policy changes, each re-checking that the run is still allowed.

use super::*;

pub(super) fn set_state(
    service: &Service,
    run: &mut RunRow,
    state: RunState,
    reason: Option<Reason>,
    action: cleanroom_proto::Action,
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
pub(super) fn finalize(
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
    set_state(
        service,
        run,
        state,
        reason,
        cleanroom_proto::Action::RunFinished(state),
    )
}

/// Release: re-check every policy, make the result durable, then commit `Released`.
/// Callers hold `service.transitions`.
pub(super) fn release(
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
    if let Verdict::Withhold(code) = cleanroom_policy::release_verdict(&decided, reviewed) {
        return withhold(
            service,
            run,
            code,
            "the owners' rules released none of the run's outputs; see each output's codes",
        );
    }
    let sealed = seal_for_researcher(run, &decided, reviewed)?;
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
pub(super) fn still_allowed(service: &Service, run: &RunRow) -> ApiResult<bool> {
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
pub(super) fn withhold(
    service: &Service,
    run: &mut RunRow,
    code: Code,
    message: &str,
) -> ApiResult<()> {
    let _ = service.blobs.delete("held", &run.id);
    finalize(
        service,
        run,
        RunState::Withheld,
        Some(Reason::new(code, message)),
        vec![],
    )
}

pub(super) fn hold(service: &Service, run: &mut RunRow, decided: Vec<Decided>) -> ApiResult<()> {
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
        cleanroom_proto::Action::RunHeldForReview,
    )
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
        cleanroom_proto::Action::ReviewReleased
    } else {
        cleanroom_proto::Action::ReviewWithheld
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

/// Another worker logged a policy change of `datasets`: stop the runs this worker runs on
/// them that the new policy no longer allows (each then ends withheld, as a revocation here
/// would end it). Called while catching up with the log, inside whatever section caught up:
/// it takes no lock and only cancels; the run's own conclusion decides under the lock.
pub(crate) fn stop_revoked_here(service: &Service, datasets: &[String]) -> ApiResult<()> {
    let here: Vec<String> = service
        .cancels
        .lock()
        .expect("cancel map lock")
        .keys()
        .cloned()
        .collect();
    for id in here {
        let Some(run) = service.storage.run(&id)? else {
            continue;
        };
        if run.state != RunState::Running
            || !run.inputs.iter().any(|i| datasets.contains(&i.dataset))
            || still_allowed(service, &run)?
        {
            continue;
        }
        service
            .revoked
            .lock()
            .expect("revoked lock")
            .insert(run.id.clone());
        if let Some(token) = service.cancels.lock().expect("cancel map lock").get(&id) {
            token.cancel();
        }
    }
    Ok(())
}

/// The researcher's cancel of `id`, logged by another worker: stop it if it runs here, and
/// make sure it never starts here if it has not.
pub(crate) fn cancel_here(service: &Service, id: &str) -> ApiResult<()> {
    if let Some(token) = service.cancels.lock().expect("cancel map lock").get(id) {
        token.cancel();
        return Ok(());
    }
    // Not here (yet): a queued run gets a cancelled token, which `start` finds.
    if service
        .storage
        .run(id)?
        .is_some_and(|r| r.state == RunState::Queued)
    {
        service
            .cancels
            .lock()
            .expect("cancel map lock")
            .entry(id.to_string())
            .or_default()
            .cancel();
    }
    Ok(())
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
