//! Routing: every endpoint of the JSON API (documented in `openapi.json`).

mod attestation;
mod datasets;
mod info;
mod runs;

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response};

use crate::app::Service;
use crate::error::{ApiError, ApiResult};
use crate::http::Body;

/// Dispatch a request.
pub(crate) async fn route(
    service: Arc<Service>,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let path: Vec<String> = req
        .uri()
        .path()
        .trim_matches('/')
        .split('/')
        .map(str::to_string)
        .collect();
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    let method = req.method().clone();
    // After a hand-over the upgraded image owns the state: this one changes nothing more.
    if method != Method::GET
        && let Some(to) = service.handed_over.lock().expect("hand-over lock").clone()
    {
        return Err(ApiError::Busy(format!(
            "this enclave handed its state to the upgraded image {to}; use that one"
        )));
    }
    match (&method, p.as_slice()) {
        (&Method::POST, ["v1", "upgrade", "handover"]) => {
            attestation::handover(service.clone(), req).await
        }
        (&Method::GET, ["health"]) => Ok(info::health()),
        (&Method::GET, ["metrics"]) => info::metrics(&service, &req),
        (&Method::GET, ["openapi.json"]) => Ok(info::openapi()),
        (&Method::GET, ["v1", "attestation"]) => attestation::evidence(&service, &req).await,
        (&Method::GET, ["v1", "datasets"]) => datasets::list(&service, &req).await,
        (&Method::PUT, ["v1", "datasets", id]) => datasets::upload(service.clone(), id, req).await,
        (&Method::GET, ["v1", "datasets", id, "policy"]) => {
            datasets::policy(&service, id, &req).await
        }
        (&Method::PUT, ["v1", "datasets", id, "policy"]) => {
            datasets::put_policy(service.clone(), id, req).await
        }
        (&Method::PUT, ["v1", "modules"]) => datasets::upload_module(service.clone(), req).await,
        (&Method::POST, ["v1", "runs"]) => runs::submit(service.clone(), req).await,
        (&Method::GET, ["v1", "runs"]) => runs::list(service.clone(), req).await,
        (&Method::GET, ["v1", "runs", id]) => runs::status(service.clone(), id, req).await,
        (&Method::POST, ["v1", "runs", id, "cancel"]) => {
            runs::cancel(service.clone(), id, req).await
        }
        (&Method::POST, ["v1", "runs", id, "review"]) => {
            runs::review(service.clone(), id, req).await
        }
        (&Method::GET, ["v1", "runs", id, "held"]) => runs::held(service.clone(), id, req).await,
        (&Method::GET, ["v1", "runs", id, "result"]) => {
            runs::result(service.clone(), id, req).await
        }
        (&Method::GET, ["v1", "audit"]) => info::audit(&service, &req).await,
        (&Method::GET, ["v1", "audit", "consistency"]) => {
            info::audit_consistency(&service, &req).await
        }
        (&Method::GET, ["v1", "events"]) => info::events(service.clone(), req).await,
        _ => Err(ApiError::NotFound(format!(
            "no endpoint {method} {}",
            req.uri().path()
        ))),
    }
}
