//! Access requests: a researcher asks the owners of a run's inputs to grant a module. The
//! request is only an audit entry (`access.requested`, to the researcher and those owners): it
//! grants nothing, and owners approve it by signing a new policy version like any other.

use std::sync::Arc;

use cleanroom_proto::PartyId;
use cleanroom_proto::api::{AccessRequest, AccessRequested};
use cleanroom_proto::run::params_digest;
use hyper::{Response, StatusCode};

use crate::app::Service;
use crate::error::{ApiError, ApiResult};
use crate::events::Audience;
use crate::wire::{Body, Req, typed_response};

/// `POST /v1/requests`.
pub(super) async fn file(service: Arc<Service>, req: Req) -> ApiResult<Response<Body>> {
    let (researcher, request): (_, AccessRequest) =
        crate::auth::signed_json(&service, req, "access request").await?;
    request
        .validate()
        .map_err(|e| ApiError::BadRequest(format!("access request: {e}")))?;
    if !service.is_r_engine(&request.module)
        && !service.storage.has_module_or_pipeline(&request.module)?
    {
        return Err(ApiError::BadRequest(format!(
            "module {} was not uploaded; push it first",
            request.module
        )));
    }
    let mut audience = vec![researcher];
    for dataset in request.inputs.values() {
        let row = service
            .storage
            .dataset(dataset)?
            .ok_or_else(|| ApiError::BadRequest(format!("no dataset {dataset}")))?;
        let owner: PartyId = row
            .owner
            .parse()
            .map_err(|_| ApiError::Internal(format!("dataset {dataset} has a malformed owner")))?;
        if !audience.contains(&owner) {
            audience.push(owner);
        }
    }
    let answer = AccessRequested {
        params_digest: params_digest(&request.params),
        request,
    };
    let detail = serde_json::to_value(&answer).map_err(|e| ApiError::Internal(e.to_string()))?;
    service.record(
        Audience::Parties(audience),
        Some(researcher),
        cleanroom_proto::Action::AccessRequested,
        &answer.request.module,
        detail,
    )?;
    Ok(typed_response(StatusCode::CREATED, &answer))
}
