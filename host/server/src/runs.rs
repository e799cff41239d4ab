//! Admission and execution of runs: a bounded queue, workers on blocking
//! threads, output rules, review, encryption to the researcher, receipts.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use cleanroom_proto::PartyId;
use cleanroom_proto::policy::{GrantDecision, OutputRules, SignedPolicy};
use cleanroom_proto::receipt::{Receipt, ReceiptInput, ReceiptOutput, SignedReceipt};
use cleanroom_proto::run::{RunRequest, RunState, params_digest};
use cleanroom_runtime::{CancelToken, Grants, Limits, RunError, TableSource};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, mpsc};

use cleanroom_trust::Purpose;

use crate::app::{Metrics, Service};
use crate::error::{ApiError, ApiResult};
use crate::events::Audience;
use crate::rules::{self, Released};
use crate::store::RunRow;
use crate::tables::EnvelopeTable;

/// Outputs held for review are host state, sealed under the state subkey
/// with the run id as associated data.
const HELD_PURPOSE: Purpose = Purpose::State;

/// Check a request against every input owner's current policy. The outer
/// error is the service's; the inner one is a rejection with its reason.
pub fn admit(
    service: &Service,
    researcher: &PartyId,
    request: &RunRequest,
) -> ApiResult<Result<(serde_json::Value, BTreeSet<PartyId>), String>> {
    if request.inputs.is_empty() {
        return Ok(Err(
            "a run needs at least one input dataset: nothing runs without an owner's grant".into(),
        ));
    }
    if !service.storage.has_module(&request.module)? {
        return Ok(Err(format!(
            "module {} was not uploaded; push it first",
            request.module
        )));
    }
    match hex::decode(&request.researcher_hpke) {
        Ok(k) if k.len() == 32 => {}
        _ => {
            return Ok(Err(
                "researcher_hpke must be a 32-byte X25519 public key in hex".into(),
            ));
        }
    }
    let digest = params_digest(&request.params);
    let mut inputs = Vec::new();
    let mut owners = BTreeSet::new();
    for (name, dataset) in &request.inputs {
        if cleanroom_runtime::output::validate_name(name).is_err() {
            return Ok(Err(format!(
                "input name {name:?} must be letters, digits, '-', '_' or '.'"
            )));
        }
        let Some(row) = service.storage.dataset(dataset)? else {
            return Ok(Err(format!("no dataset {dataset}")));
        };
        let Some(policy) = policy_of(service, dataset)? else {
            return Ok(Err(format!(
                "dataset {dataset} has no policy: its owner has granted nothing yet"
            )));
        };
        let runs = service.storage.count_admitted_runs(
            dataset,
            &request.module,
            &researcher.to_string(),
        )?;
        match policy
            .policy
            .decide(&request.module, researcher, &digest, crate::now(), runs)
        {
            GrantDecision::Allow { .. } => {}
            GrantDecision::Deny(reason) => {
                tracing::info!(
                    dataset,
                    version = policy.policy.version,
                    "run denied: {reason}"
                );
                return Ok(Err(format!(
                    "dataset {dataset} (policy v{}): {reason}",
                    policy.policy.version
                )));
            }
        }
        owners.insert(policy.owner);
        inputs.push(json!({
            "name": name, "dataset": dataset, "owner": row.owner, "manifest_digest": row.manifest_digest,
            "policy_version": policy.policy.version, "policy_digest": policy.digest(),
        }));
    }
    Ok(Ok((serde_json::Value::Array(inputs), owners)))
}

fn policy_of(service: &Service, dataset: &str) -> ApiResult<Option<SignedPolicy>> {
    service
        .storage
        .policy(dataset)?
        .map(|v| {
            serde_json::from_value(v)
                .map_err(|e| ApiError::Internal(format!("corrupt policy: {e}")))
        })
        .transpose()
}

/// Start the workers, after re-queuing runs a crash interrupted.
pub fn start(service: Arc<Service>, rx: mpsc::Receiver<String>) -> ApiResult<()> {
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..service.config.workers {
        let (service, rx) = (service.clone(), rx.clone());
        tokio::spawn(async move {
            loop {
                let next = rx.lock().await.recv().await;
                let Some(id) = next else { break };
                let svc = service.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || execute(&svc, &id)).await {
                    tracing::error!("run worker panicked: {e}");
                }
            }
        });
    }
    let mut pending: Vec<RunRow> = service
        .storage
        .runs()?
        .into_iter()
        .filter(|r| {
            r.state == RunState::Queued.to_string() || r.state == RunState::Running.to_string()
        })
        .collect();
    pending.sort_by_key(|r| r.created);
    for run in pending {
        tracing::info!(run = run.id, "re-queuing a run interrupted by a restart");
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
    Ok(())
}

fn execute(service: &Service, id: &str) {
    if let Err(e) = execute_inner(service, id) {
        tracing::error!(run = id, "run failed inside the service: {e}");
        if let Ok(Some(mut run)) = service.storage.run(id) {
            let _ = finalize(
                service,
                &mut run,
                RunState::Failed,
                Some(format!("internal error: {e}")),
                vec![],
            );
        }
    }
}

fn execute_inner(service: &Service, id: &str) -> ApiResult<()> {
    let Some(mut run) = service.storage.run(id)? else {
        return Ok(());
    };
    if run.state != RunState::Queued.to_string() && run.state != RunState::Running.to_string() {
        return Ok(());
    }
    let token = service
        .cancels
        .lock()
        .expect("cancel map lock")
        .entry(id.to_string())
        .or_default()
        .clone();
    let request: RunRequest = serde_json::from_value(run.request.clone())
        .map_err(|e| ApiError::Internal(format!("corrupt run request: {e}")))?;
    let researcher: PartyId = run
        .researcher
        .parse()
        .map_err(|_| ApiError::Internal("corrupt researcher".into()))?;
    if token.is_cancelled() {
        return finalize(
            service,
            &mut run,
            RunState::Cancelled,
            Some("cancelled before it started".into()),
            vec![],
        );
    }
    // Policies are checked again at start: a revocation stops queued runs too.
    // (The grant's run counter already includes this run.)
    let recheck = admit_for_execution(service, &researcher, &request)?;
    let (rules, identifiers, grants) = match recheck {
        Ok(x) => x,
        Err(reason) => {
            return finalize(service, &mut run, RunState::Rejected, Some(reason), vec![]);
        }
    };
    set_state(service, &mut run, RunState::Running, None, "run.started")?;
    let module = crate::modules::load(service, &request.module)?;
    let limits = Limits {
        max_output_bytes: rules
            .max_output_bytes
            .min(Limits::default().max_output_bytes),
        timeout: Duration::from_secs(service.config.run_timeout_secs),
        ..Limits::default()
    };
    match service
        .runtime
        .run(&module, grants, &request.params, &limits, Some(&token))
    {
        Err(RunError::Cancelled) => finalize(
            service,
            &mut run,
            RunState::Cancelled,
            Some("cancelled by the researcher".into()),
            vec![],
        ),
        Err(e) => finalize(
            service,
            &mut run,
            RunState::Failed,
            Some(e.to_string()),
            vec![],
        ),
        Ok(output) => match rules::apply(output, &rules, &identifiers) {
            Err(reason) => finalize(service, &mut run, RunState::Withheld, Some(reason), vec![]),
            Ok(applied) => {
                if applied.suppressed > 0 {
                    tracing::info!(
                        run = id,
                        suppressed = applied.suppressed,
                        "small groups suppressed"
                    );
                }
                let reviewers = reviewers(service, &request)?;
                if reviewers.is_empty() {
                    release(service, &mut run, &request, applied.outputs)
                } else {
                    hold(service, &mut run, applied.outputs, reviewers)
                }
            }
        },
    }
}

type Admitted = (OutputRules, BTreeSet<String>, Grants);

fn admit_for_execution(
    service: &Service,
    researcher: &PartyId,
    request: &RunRequest,
) -> ApiResult<Result<Admitted, String>> {
    let mut rules = Vec::new();
    let mut identifiers = BTreeSet::new();
    let mut grants = Grants::new();
    for (name, dataset) in &request.inputs {
        let Some(policy) = policy_of(service, dataset)? else {
            return Ok(Err(format!("dataset {dataset} has no policy")));
        };
        // `runs_so_far` excludes this run, which is already counted.
        let runs = service
            .storage
            .count_admitted_runs(dataset, &request.module, &researcher.to_string())?
            .saturating_sub(1);
        if let GrantDecision::Deny(reason) = policy.policy.decide(
            &request.module,
            researcher,
            &params_digest(&request.params),
            crate::now(),
            runs,
        ) {
            return Ok(Err(format!(
                "dataset {dataset} (policy v{}): {reason}",
                policy.policy.version
            )));
        }
        identifiers.extend(policy.policy.identifier_columns.iter().cloned());
        let owner = policy
            .owner
            .verifying_key()
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let table = EnvelopeTable::open(
            service.storage.blob_path("datasets", dataset),
            *service.identity.hpke_secret(),
            owner,
            &policy.policy.hidden_columns,
        )
        .map_err(|e| ApiError::Internal(format!("dataset {dataset}: {e}")))?;
        grants.insert(name.clone(), Arc::new(table) as Arc<dyn TableSource>);
        rules.push(policy.policy.output);
    }
    Ok(Ok((
        OutputRules::strictest(rules.iter()),
        identifiers,
        grants,
    )))
}

/// Owners whose policy requires review of this run's outputs.
fn reviewers(service: &Service, request: &RunRequest) -> ApiResult<Vec<String>> {
    let mut out = BTreeSet::new();
    for dataset in request.inputs.values() {
        if let Some(p) = policy_of(service, dataset)?
            && p.policy.output.review_required
        {
            out.insert(p.owner.to_string());
        }
    }
    Ok(out.into_iter().collect())
}

fn set_state(
    service: &Service,
    run: &mut RunRow,
    state: RunState,
    reason: Option<String>,
    action: &str,
) -> ApiResult<()> {
    run.state = state.to_string();
    run.reason = reason.clone();
    run.updated = crate::now();
    let detail = json!({ "state": run.state, "reason": reason });
    service.record_run(run, audience(run), None, action, detail)
}

fn audience(run: &RunRow) -> Audience {
    let mut parties: Vec<PartyId> = owners_of(run)
        .iter()
        .filter_map(|o| o.parse().ok())
        .collect();
    if let Ok(r) = run.researcher.parse() {
        parties.push(r);
    }
    Audience::Parties(parties)
}

/// Owners of a run's inputs (from its admission record).
pub(crate) fn owners_of(run: &RunRow) -> BTreeSet<String> {
    run.inputs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["owner"].as_str().map(str::to_string))
        .collect()
}

/// Put a run in a final state with a signed receipt.
fn finalize(
    service: &Service,
    run: &mut RunRow,
    state: RunState,
    reason: Option<String>,
    outputs: Vec<ReceiptOutput>,
) -> ApiResult<()> {
    let request: RunRequest = serde_json::from_value(run.request.clone())
        .map_err(|e| ApiError::Internal(format!("corrupt run request: {e}")))?;
    let inputs: Vec<ReceiptInput> = run
        .inputs
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| ReceiptInput {
            name: i["name"].as_str().unwrap_or_default().to_string(),
            dataset: i["dataset"].as_str().unwrap_or_default().to_string(),
            manifest_digest: i["manifest_digest"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            policy_version: i["policy_version"].as_u64().unwrap_or_default(),
            policy_digest: i["policy_digest"].as_str().unwrap_or_default().to_string(),
        })
        .collect();
    let receipt = Receipt {
        run_id: run.id.clone(),
        module: request.module.clone(),
        researcher: run
            .researcher
            .parse()
            .map_err(|_| ApiError::Internal("corrupt researcher".into()))?,
        inputs,
        params_digest: params_digest(&request.params),
        outputs,
        state,
        measurement: service.measurement.clone(),
        enclave_key: service.enclave_party(),
        issued_at: crate::now(),
    };
    let signed = SignedReceipt::sign(receipt, service.identity.signing_key());
    run.receipt =
        Some(serde_json::to_value(&signed).map_err(|e| ApiError::Internal(e.to_string()))?);
    run.pending_reviews.clear();
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

fn release(
    service: &Service,
    run: &mut RunRow,
    request: &RunRequest,
    outputs: Vec<Released>,
) -> ApiResult<()> {
    let recipient: [u8; 32] = hex::decode(&request.researcher_hpke)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| ApiError::Internal("researcher key was validated at admission".into()))?;
    let mut sealed = Vec::new();
    let mut receipt_outputs = Vec::new();
    for o in &outputs {
        let context = format!("{}/{}", run.id, o.name);
        let ct = cleanroom_proto::sealed::seal_to(&recipient, &context, &o.bytes)
            .map_err(|e| ApiError::Internal(format!("encrypting output: {e}")))?;
        sealed.push(json!({ "name": o.name, "kind": o.kind, "sealed": B64.encode(ct) }));
        receipt_outputs.push(ReceiptOutput {
            name: o.name.clone(),
            kind: o.kind.clone(),
            sha256: hex::encode(Sha256::digest(&o.bytes)),
            bytes: o.bytes.len() as u64,
        });
    }
    finalize(service, run, RunState::Released, None, receipt_outputs)?;
    let result = json!({ "run": run.id, "receipt": run.receipt, "outputs": sealed });
    let bytes = serde_json::to_vec(&result).map_err(|e| ApiError::Internal(e.to_string()))?;
    service.storage.write_blob("results", &run.id, &bytes)?;
    Ok(())
}

fn hold(
    service: &Service,
    run: &mut RunRow,
    outputs: Vec<Released>,
    reviewers: Vec<String>,
) -> ApiResult<()> {
    let plain = serde_json::to_vec(&outputs).map_err(|e| ApiError::Internal(e.to_string()))?;
    let sealed = service
        .sealer
        .seal(HELD_PURPOSE, run.id.as_bytes(), &plain)
        .map_err(|e| ApiError::Internal(format!("sealing held outputs: {e}")))?;
    service.storage.write_blob("held", &run.id, &sealed)?;
    run.pending_reviews = reviewers;
    set_state(
        service,
        run,
        RunState::HeldForReview,
        None,
        "run.held_for_review",
    )
}

fn held_outputs(service: &Service, run: &RunRow) -> ApiResult<Vec<Released>> {
    let sealed = std::fs::read(service.storage.blob_path("held", &run.id))?;
    let plain = service
        .sealer
        .open(HELD_PURPOSE, run.id.as_bytes(), &sealed)
        .map_err(|e| ApiError::Internal(format!("held outputs do not unseal (tampered?): {e}")))?;
    serde_json::from_slice(&plain).map_err(|e| ApiError::Internal(e.to_string()))
}

/// What owners reviewing a held run are asked to release.
pub fn held_preview(service: &Service, run: &RunRow) -> ApiResult<serde_json::Value> {
    let outputs = held_outputs(service, run)?;
    serde_json::to_value(outputs).map_err(|e| ApiError::Internal(e.to_string()))
}

/// An owner's review decision; the run is released once every reviewer releases.
pub fn finish_review(
    service: &Service,
    id: &str,
    owner: PartyId,
    release_it: bool,
    reason: Option<String>,
) -> ApiResult<RunRow> {
    let mut run = service
        .storage
        .run(id)?
        .ok_or_else(|| ApiError::NotFound(format!("no run {id}")))?;
    let me = owner.to_string();
    if !run.pending_reviews.contains(&me) {
        return Err(ApiError::Conflict(format!(
            "run {id} does not await your review"
        )));
    }
    service.record(
        audience(&run),
        Some(owner),
        if release_it {
            "review.released"
        } else {
            "review.withheld"
        },
        id,
        json!({ "reason": reason }),
    )?;
    if !release_it {
        let _ = std::fs::remove_file(service.storage.blob_path("held", id));
        let why = format!(
            "withheld by owner {}{}",
            owner.short(),
            reason.map(|r| format!(": {r}")).unwrap_or_default()
        );
        finalize(service, &mut run, RunState::Withheld, Some(why), vec![])?;
        return Ok(run);
    }
    run.pending_reviews.retain(|p| p != &me);
    if run.pending_reviews.is_empty() {
        let outputs = held_outputs(service, &run)?;
        let request: RunRequest = serde_json::from_value(run.request.clone())
            .map_err(|e| ApiError::Internal(format!("corrupt run request: {e}")))?;
        release(service, &mut run, &request, outputs)?;
        let _ = std::fs::remove_file(service.storage.blob_path("held", id));
    } else {
        run.updated = crate::now();
        service.storage.put_run(&run)?;
    }
    Ok(run)
}
