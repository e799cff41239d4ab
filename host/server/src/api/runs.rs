//! Runs: submit (admission against every input owner's policy), status,
//! cancel, review, and the encrypted result.

use std::sync::Arc;

use cleanroom_proto::PartyId;
use cleanroom_proto::run::{RunRequest, RunState, params_digest};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::app::{Metrics, Service};
use crate::error::{ApiError, ApiResult};
use crate::events::Audience;
use crate::http::{Body, MAX_JSON_BODY, json_response, read_body};
use crate::runs::{admit, finish_review, owners_of};
use crate::store::RunRow;

pub(super) async fn submit(
    service: Arc<Service>,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let (researcher, request): (_, RunRequest) =
        crate::auth::signed_json(&service, req, "run request").await?;
    Metrics::inc(&service.metrics.runs_submitted);
    let id = new_run_id();
    let permit = service
        .queue
        .try_reserve()
        .map_err(|_| ApiError::Busy("the run queue is full; retry later".into()))?;
    let (inputs, owners) = match admit(&service, &researcher, &request)? {
        Ok(admitted) => admitted,
        Err(reason) => {
            Metrics::inc(&service.metrics.runs_withheld);
            service.record(Audience::Parties(vec![researcher]),
                Some(researcher),
                "run.rejected",
                &id,
                json!({ "module": request.module, "params_digest": params_digest(&request.params), "reason": reason }),
            )?;
            return Err(ApiError::Forbidden(reason));
        }
    };
    let now = crate::now();
    let run = RunRow {
        id: id.clone(),
        researcher: researcher.to_string(),
        request: serde_json::to_value(&request).map_err(|e| ApiError::Internal(e.to_string()))?,
        inputs,
        state: RunState::Queued.to_string(),
        reason: None,
        pending_reviews: vec![],
        receipt: None,
        created: now,
        updated: now,
    };
    let mut audience: Vec<PartyId> = owners.into_iter().collect();
    audience.push(researcher);
    let detail = json!({ "module": request.module, "inputs": request.inputs, "params_digest": params_digest(&request.params) });
    service.record_run(
        &run,
        Audience::Parties(audience),
        Some(researcher),
        "run.queued",
        detail,
    )?;
    service
        .cancels
        .lock()
        .expect("cancel map lock")
        .insert(id.clone(), Default::default());
    permit.send(id.clone());
    Ok(json_response(
        StatusCode::ACCEPTED,
        &json!({ "run": id, "state": "queued" }),
    ))
}

fn new_run_id() -> String {
    let mut bytes = [0u8; 12];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    format!("run-{}", hex::encode(bytes))
}

/// The run, if `party` is its researcher or owns one of its inputs.
fn visible_run(service: &Service, id: &str, party: &PartyId) -> ApiResult<RunRow> {
    let run = service
        .storage
        .run(id)?
        .ok_or_else(|| ApiError::NotFound(format!("no run {id}")))?;
    if run.researcher == party.to_string() || owners_of(&run).contains(&party.to_string()) {
        Ok(run)
    } else {
        // Someone else's run looks exactly like a missing one.
        Err(ApiError::NotFound(format!("no run {id}")))
    }
}

fn run_json(run: &RunRow) -> serde_json::Value {
    json!({
        "run": run.id, "state": run.state, "reason": run.reason, "researcher": run.researcher,
        "module": run.request["module"], "inputs": run.inputs, "params_digest": params_digest(run.request["params"].as_str().unwrap_or("")),
        "pending_reviews": run.pending_reviews, "receipt": run.receipt, "created": run.created, "updated": run.updated,
    })
}

pub(super) async fn status(
    service: Arc<Service>,
    id: &str,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let party = crate::auth::signed_get(&service, req)?;
    let run = visible_run(&service, id, &party)?;
    let mut body = run_json(&run);
    // Owners reviewing a held run see what they are asked to release.
    if run.state == RunState::HeldForReview.to_string()
        && owners_of(&run).contains(&party.to_string())
    {
        body["review"] = crate::runs::held_preview(&service, &run)?;
    }
    Ok(json_response(StatusCode::OK, &body))
}

pub(super) async fn list(
    service: Arc<Service>,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let party = crate::auth::signed_get(&service, req)?.to_string();
    let runs: Vec<_> = service
        .storage
        .runs()?
        .iter()
        .filter(|r| r.researcher == party || owners_of(r).contains(&party))
        .map(run_json)
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "runs": runs })))
}

pub(super) async fn cancel(
    service: Arc<Service>,
    id: &str,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let (parts, body) = req.into_parts();
    let body = read_body(body, MAX_JSON_BODY).await?;
    let party = crate::auth::authenticate(&service, &parts, &body)?;
    let run = visible_run(&service, id, &party)?;
    if run.researcher != party.to_string() {
        return Err(ApiError::Forbidden(
            "only the researcher who submitted a run may cancel it".into(),
        ));
    }
    let token = service
        .cancels
        .lock()
        .expect("cancel map lock")
        .get(id)
        .cloned();
    match token {
        Some(token) => {
            token.cancel();
            Ok(json_response(
                StatusCode::ACCEPTED,
                &json!({ "run": id, "cancelling": true }),
            ))
        }
        None => Err(ApiError::Conflict(format!(
            "run {id} is already {}",
            run.state
        ))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum Decision {
    Release,
    Withhold,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Review {
    decision: Decision,
    #[serde(default)]
    reason: Option<String>,
}

pub(super) async fn review(
    service: Arc<Service>,
    id: &str,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let (owner, review): (_, Review) = crate::auth::signed_json(&service, req, "review").await?;
    let run = visible_run(&service, id, &owner)?;
    if !run.pending_reviews.contains(&owner.to_string()) {
        return Err(ApiError::Conflict(format!(
            "run {id} is {} and does not await your review",
            run.state
        )));
    }
    let release = matches!(review.decision, Decision::Release);
    let svc = service.clone();
    let id = id.to_string();
    let run = tokio::task::spawn_blocking(move || {
        finish_review(&svc, &id, owner, release, review.reason)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(json_response(StatusCode::OK, &run_json(&run)))
}

pub(super) async fn result(
    service: Arc<Service>,
    id: &str,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let party = crate::auth::signed_get(&service, req)?;
    let run = visible_run(&service, id, &party)?;
    if run.researcher != party.to_string() {
        return Err(ApiError::Forbidden(
            "results are for the researcher who submitted the run".into(),
        ));
    }
    if run.state != RunState::Released.to_string() {
        return Err(ApiError::Conflict(format!(
            "run {id} is {}{}",
            run.state,
            run.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        )));
    }
    let bytes = std::fs::read(service.storage.blob_path("results", id))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::Internal(format!("corrupt result: {e}")))?;
    Ok(json_response(StatusCode::OK, &value))
}
