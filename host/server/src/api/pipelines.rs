//! Pipelines (stored by digest, granted like modules) and the derived datasets their runs keep.

use std::sync::Arc;

use cleanroom_proto::api::{DerivedList, PipelineStored};
use cleanroom_proto::pipeline::Pipeline;
use hyper::{Response, StatusCode};
use serde_json::json;

use crate::app::Service;
use crate::error::{ApiError, ApiResult};
use crate::events::Audience;
use crate::store::{PipelineRow, RowWrite};
use crate::wire::{Body, Req, typed_response};

/// `PUT /v1/pipelines`: check the pipeline's shape and that its modules were uploaded, and
/// store it under its digest (idempotent).
pub(super) async fn put(service: Arc<Service>, req: Req) -> ApiResult<Response<Body>> {
    let (party, pipeline): (_, Pipeline) =
        crate::auth::signed_json(&service, req, "pipeline").await?;
    pipeline
        .validate()
        .map_err(|e| ApiError::BadRequest(format!("pipeline: {e}")))?;
    for step in &pipeline.steps {
        if !service.storage.has_module(&step.module)? {
            return Err(ApiError::BadRequest(format!(
                "step {:?}: module {} was not uploaded; push it first",
                step.id, step.module
            )));
        }
    }
    let id = pipeline.digest();
    let steps = pipeline.steps.len() as u32;
    if service.storage.pipeline(&id)?.is_none() {
        let row = PipelineRow {
            id: id.clone(),
            pipeline,
            uploader: party,
            uploaded: crate::now(),
        };
        service.record_write(
            Audience::Everyone,
            Some(party),
            cleanroom_proto::Action::PipelineStored,
            &id,
            json!({ "steps": steps }),
            RowWrite::Pipeline(&row),
        )?;
    }
    Ok(typed_response(
        StatusCode::CREATED,
        &PipelineStored {
            pipeline: id,
            steps,
        },
    ))
}

/// `GET /v1/pipelines/{id}`: the pipeline, to its uploader and to the owners who granted it
/// or were asked to, as modules are; to anyone else it looks missing.
pub(super) async fn get(service: &Service, id: &str, req: Req) -> ApiResult<Response<Body>> {
    let party = crate::auth::signed_get(service, &req)?;
    match service.storage.pipeline(id)? {
        Some(row) if super::datasets::may_read_upload(service, &party, &row.uploader, id)? => {
            Ok(typed_response(StatusCode::OK, &row.pipeline))
        }
        _ => Err(ApiError::NotFound(format!("no pipeline {id}"))),
    }
}

/// `GET /v1/derived`: derived datasets with their provenance and whether they are usable.
pub(super) async fn derived(service: &Service, req: Req) -> ApiResult<Response<Body>> {
    let party = crate::auth::signed_get(service, &req)?;
    let derived = crate::pipelines::visible(service, &party)?;
    Ok(typed_response(StatusCode::OK, &DerivedList { derived }))
}
