//! Runs: submit (admission against every input owner's policy), status,
//! cancel, review, the held outputs (sealed to the reviewer) and the
//! encrypted result.

use std::sync::Arc;

use cleanroom_policy::Decision;
use cleanroom_proto::PartyId;
use cleanroom_proto::api::{CancelAccepted, RunAccepted, RunList};
use cleanroom_proto::run::{Review, ReviewDecision, RunRequest, RunState};
use hyper::{Response, StatusCode};
use serde_json::json;

use crate::app::{Metrics, Service};
use crate::error::{ApiError, ApiResult};
use crate::events::Audience;
use crate::runs::{admission, finish_review, held_bundle, new_row, result_bundle};
use crate::store::RunRow;
use crate::wire::{Body, MAX_JSON_BODY, Req, read_body, typed_response};

pub(super) async fn submit(service: Arc<Service>, req: Req) -> ApiResult<Response<Body>> {
    let (researcher, request): (_, RunRequest) =
        crate::auth::signed_json(&service, req, "run request").await?;
    Metrics::inc(&service.metrics.runs_submitted);
    if let Some(row) = service.storage.pipeline(&request.module)? {
        let names: Vec<&String> = request.inputs.keys().collect();
        let mut expected: Vec<&String> = row.pipeline.inputs.iter().collect();
        expected.sort();
        if !request.params.is_empty() || names != expected {
            return Err(ApiError::BadRequest(format!(
                "pipeline {} takes no params and exactly the inputs {:?}",
                row.id, row.pipeline.inputs
            )));
        }
    }
    let id = new_run_id();
    // Admission and insertion are one step: two simultaneous submissions cannot both take a
    // grant's last run.
    let svc = service.clone();
    let (req_c, id_c) = (request.clone(), id.clone());
    let admitted = tokio::task::spawn_blocking(move || -> ApiResult<Result<_, _>> {
        let queue = crate::runs::queue::of(&svc);
        let slot = queue.reserve()?;
        let _one_at_a_time = crate::cluster::serial(&svc, crate::cluster::LockKey::Admissions)?;
        let admitted = match admission(&svc, &researcher, &req_c, None)? {
            Decision::Allow(admitted) => admitted,
            Decision::Deny(reason) => return Ok(Err(reason)),
        };
        let mut run = new_row(id_c, researcher, req_c, &admitted);
        let audience: Vec<PartyId> = run.parties();
        let detail = json!({
            "module": run.request.module,
            "inputs": run.inputs,
            "params_digest": run.request.params_digest(),
        });
        svc.record_run(
            &mut run,
            Audience::Parties(audience),
            Some(researcher),
            cleanroom_proto::Action::RunQueued,
            detail,
        )?;
        // The cancel token exists before any worker can take the run; the push is the
        // embedded channel's send or the shared queue's insert, on this same blocking hop.
        svc.cancels
            .lock()
            .expect("cancel map lock")
            .insert(run.id.clone(), Default::default());
        queue.push(slot, &run.id)?;
        Ok(Ok(()))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    if let Err(reason) = admitted {
        Metrics::inc(&service.metrics.runs_withheld);
        service.record(
            Audience::Parties(vec![researcher]),
            Some(researcher),
            cleanroom_proto::Action::RunFinished(cleanroom_proto::RunState::Rejected),
            &id,
            json!({ "module": request.module, "params_digest": request.params_digest(), "code": reason.code }),
        )?;
        return Err(ApiError::Denied(reason));
    }
    Ok(typed_response(
        StatusCode::ACCEPTED,
        &RunAccepted {
            run: id,
            state: RunState::Queued,
        },
    ))
}

fn new_run_id() -> String {
    let mut bytes = [0u8; 12];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    format!("run-{}", hex::encode(bytes))
}

/// The run, if `party` is its researcher or owns one of its inputs.
fn visible_run(service: &Service, id: &str, party: &PartyId) -> ApiResult<RunRow> {
    match service.storage.run(id)? {
        Some(run) if run.visible_to(party) => Ok(run),
        // Someone else's run looks exactly like a missing one.
        _ => Err(ApiError::NotFound(format!("no run {id}"))),
    }
}

/// The longest a status request may wait for its run to change.
pub(crate) const MAX_STATUS_WAIT_SECS: u64 = 30;

/// The query of `GET /v1/runs/{id}`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusQuery {
    /// Seconds to wait for the run to leave the state it is in (at most 30).
    wait: Option<u64>,
}

/// A run's status; with `?wait=N`, answered as soon as the run leaves the state it was in when
/// the request arrived (or at once if that state is final, or after N seconds), so a client
/// follows a run with one request per change instead of polling.
pub(super) async fn status(service: Arc<Service>, id: &str, req: Req) -> ApiResult<Response<Body>> {
    let party = crate::auth::signed_get(&service, &req)?;
    let StatusQuery { wait } = super::info::query(&req)?;
    let wait = std::time::Duration::from_secs(wait.unwrap_or(0).min(MAX_STATUS_WAIT_SECS));
    // Listen before reading, so a change between the read and the wait is not missed.
    let mut changes = service.run_changes.subscribe();
    let run = visible_run(&service, id, &party)?;
    let started = run.state;
    let deadline = tokio::time::Instant::now() + wait;
    let mut current = run;
    while !current.state.is_final() && current.state == started {
        match tokio::time::timeout_at(deadline, changes.recv()).await {
            Err(_elapsed) => break,
            Ok(Ok(changed)) if changed != id => continue,
            // This run changed, or changes were missed: read it again.
            Ok(Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {
                current = visible_run(&service, id, &party)?;
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => break,
        }
    }
    Ok(typed_response(StatusCode::OK, &current.status_for(&party)))
}

pub(super) async fn list(service: Arc<Service>, req: Req) -> ApiResult<Response<Body>> {
    let party = crate::auth::signed_get(&service, &req)?;
    let runs: Vec<_> = service
        .storage
        .runs()?
        .iter()
        .filter(|r| r.visible_to(&party))
        .map(|r| r.status_for(&party))
        .collect();
    Ok(typed_response(StatusCode::OK, &RunList { runs }))
}

pub(super) async fn cancel(service: Arc<Service>, id: &str, req: Req) -> ApiResult<Response<Body>> {
    let (parts, body) = req.into_parts();
    let (party, claimed) = crate::auth::authenticate_headers(&service, &parts)?;
    let body = read_body(body, MAX_JSON_BODY).await?;
    crate::auth::check_digest(
        &service,
        &parts,
        party,
        &claimed,
        &cleanroom_proto::httpsig::content_digest(&body),
    )?;
    let run = visible_run(&service, id, &party)?;
    if run.researcher != party {
        return Err(ApiError::Forbidden(
            "only the researcher who submitted a run may cancel it".into(),
        ));
    }
    if run.state.is_final() || run.state == RunState::HeldForReview {
        return Err(ApiError::Conflict(format!(
            "run {id} is {}: it can no longer be cancelled",
            run.state
        )));
    }
    let token = service
        .cancels
        .lock()
        .expect("cancel map lock")
        .get(id)
        .cloned();
    if service.storage.cluster().is_some() {
        // Another worker may be running it: the request goes into the log, and the worker
        // running the run stops it when it reads the entry (`Service::apply_missed`).
        if let Some(token) = &token {
            token.cancel();
        }
        let svc = service.clone();
        let (run_id, parties) = (id.to_string(), run.parties());
        tokio::task::spawn_blocking(move || {
            svc.record(
                crate::events::Audience::Parties(parties),
                Some(party),
                cleanroom_proto::Action::RunCancelRequested,
                &run_id,
                serde_json::Value::Null,
            )
        })
        .await
        .map_err(|e| ApiError::Internal(format!("recording a cancel: {e}")))??;
        return Ok(typed_response(
            StatusCode::ACCEPTED,
            &CancelAccepted {
                run: id.to_string(),
                cancelling: true,
            },
        ));
    }
    match token {
        Some(token) => {
            token.cancel();
            Ok(typed_response(
                StatusCode::ACCEPTED,
                &CancelAccepted {
                    run: id.to_string(),
                    cancelling: true,
                },
            ))
        }
        None => Err(ApiError::Conflict(format!(
            "run {id} is already {}",
            run.state
        ))),
    }
}

pub(super) async fn review(service: Arc<Service>, id: &str, req: Req) -> ApiResult<Response<Body>> {
    let (reviewer, review): (_, Review) = crate::auth::signed_json(&service, req, "review").await?;
    let run = visible_run(&service, id, &reviewer)?;
    if !run.pending_reviews().contains(&reviewer) {
        return Err(ApiError::Conflict(format!(
            "run {id} is {} and does not await your review",
            run.state
        )));
    }
    let release = review.decision == ReviewDecision::Release;
    let svc = service.clone();
    let id = id.to_string();
    let run = tokio::task::spawn_blocking(move || {
        finish_review(&svc, &id, reviewer, release, review.reason)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(typed_response(StatusCode::OK, &run.status_for(&reviewer)))
}

/// `GET /v1/runs/{id}/held?hpke=<hex>`: the outputs awaiting this reviewer, sealed to the
/// X25519 key in the (signed) query. Never plaintext, and only to a pending reviewer.
pub(super) async fn held(service: Arc<Service>, id: &str, req: Req) -> ApiResult<Response<Body>> {
    let party = crate::auth::signed_get(&service, &req)?;
    let key = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("hpke=")))
        .ok_or_else(|| {
            ApiError::BadRequest("give your X25519 public key as ?hpke=<64 hex>".into())
        })?;
    let key: [u8; 32] = hex::decode(key)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| ApiError::BadRequest("hpke must be 64 hex characters".into()))?;
    let run = visible_run(&service, id, &party)?;
    if !run.pending_reviews().contains(&party) {
        return Err(ApiError::Forbidden(format!(
            "run {id} does not await your review: held outputs go only to pending reviewers"
        )));
    }
    let svc = service.clone();
    let bundle = tokio::task::spawn_blocking(move || held_bundle(&svc, &run, &key))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(typed_response(StatusCode::OK, &bundle))
}

pub(super) async fn result(service: Arc<Service>, id: &str, req: Req) -> ApiResult<Response<Body>> {
    let party = crate::auth::signed_get(&service, &req)?;
    let run = visible_run(&service, id, &party)?;
    if run.researcher != party {
        return Err(ApiError::Forbidden(
            "results are for the researcher who submitted the run".into(),
        ));
    }
    let has_result = run.state == RunState::Released
        || (run.state == RunState::Failed
            && run
                .receipt
                .as_ref()
                .is_some_and(|r| !r.receipt.outputs.is_empty()));
    if !has_result {
        return Err(ApiError::Conflict(format!(
            "run {id} is {}{}",
            run.state,
            run.reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        )));
    }
    let bundle = result_bundle(&service, &run)?;
    Ok(typed_response(StatusCode::OK, &bundle))
}
