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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// `(METHOD, /path/{id})` for every arm of [`super::route`], read from this file's
    /// source: the match is the routing table, so the documentation is checked against it.
    fn routed() -> Routes {
        let source = include_str!("mod.rs");
        let routing = &source[..source.find("#[cfg(test)]").expect("tests follow routing")];
        routing
            .lines()
            .filter_map(|line| {
                let rest = line.trim().strip_prefix("(&Method::")?;
                let (method, rest) = rest.split_once(", [")?;
                let (segments, _) = rest.split_once("])")?;
                let path: Vec<String> = segments
                    .split(", ")
                    .map(
                        |s| match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                            Some(literal) => literal.to_string(),
                            None => format!("{{{s}}}"),
                        },
                    )
                    .collect();
                Some((method.to_lowercase(), format!("/{}", path.join("/"))))
            })
            .collect()
    }

    /// `(method, path)` pairs.
    type Routes = BTreeSet<(String, String)>;

    /// Every documented route, and those documented without a signature.
    fn documented() -> (Routes, Routes) {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../openapi.json")).expect("openapi.json");
        let mut all = BTreeSet::new();
        let mut public = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().expect("paths") {
            for (method, op) in ops.as_object().expect("operations") {
                all.insert((method.clone(), path.clone()));
                if op.get("security").is_none() {
                    public.insert((method.clone(), path.clone()));
                }
            }
        }
        (all, public)
    }

    #[test]
    fn every_route_is_documented_and_every_documented_route_exists() {
        let routed = routed();
        assert!(routed.len() > 15, "the route scanner found {routed:?}");
        let (documented, _) = documented();
        let missing: Vec<_> = routed.difference(&documented).collect();
        let stale: Vec<_> = documented.difference(&routed).collect();
        assert!(
            missing.is_empty(),
            "routes missing from openapi.json: {missing:?}"
        );
        assert!(
            stale.is_empty(),
            "openapi.json documents routes that do not exist: {stale:?}"
        );
    }

    #[test]
    fn exactly_the_unsigned_endpoints_are_documented_without_a_signature() {
        let (_, public) = documented();
        let expected: Routes = [
            ("get", "/health"),
            ("get", "/openapi.json"),
            ("get", "/v1/attestation"),
            ("post", "/v1/upgrade/handover"),
        ]
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
        assert_eq!(public, expected);
    }
}
