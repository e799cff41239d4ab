//! Routing: every endpoint of the JSON API (documented in `openapi.json`), on axum.

mod attestation;
mod datasets;
mod info;
mod runs;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post, put};

use crate::app::Service;
use crate::error::ApiError;
use crate::http::Req;

type Svc = State<Arc<Service>>;

/// Unknown paths and methods get the API's JSON error, like every other refusal.
async fn no_endpoint(req: Req) -> ApiError {
    ApiError::NotFound(format!("no endpoint {} {}", req.method(), req.uri().path()))
}

/// Every endpoint of the JSON API (axum on hyper). Handlers take the whole request: signed
/// endpoints verify the signature over the method, path and body themselves.
pub(crate) fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/health", get(|| async { info::health() }))
        .route(
            "/metrics",
            get(|State(s): Svc, req: Req| async move { info::metrics(&s, &req) }),
        )
        .route("/openapi.json", get(|| async { info::openapi() }))
        .route(
            "/v1/attestation",
            get(|State(s): Svc, req: Req| async move { attestation::evidence(&s, req).await }),
        )
        .route(
            "/v1/upgrade/handover",
            post(|State(s): Svc, req: Req| attestation::handover(s, req)),
        )
        .route(
            "/v1/datasets",
            get(|State(s): Svc, req: Req| async move { datasets::list(&s, req).await }),
        )
        .route(
            "/v1/datasets/{id}",
            put(
                |State(s): Svc, Path(id): Path<String>, req: Req| async move {
                    datasets::upload(s, &id, req).await
                },
            ),
        )
        .route(
            "/v1/datasets/{id}/policy",
            get(
                |State(s): Svc, Path(id): Path<String>, req: Req| async move {
                    datasets::policy(&s, &id, req).await
                },
            ),
        )
        .route(
            "/v1/datasets/{id}/policy",
            put(
                |State(s): Svc, Path(id): Path<String>, req: Req| async move {
                    datasets::put_policy(s, &id, req).await
                },
            ),
        )
        .route(
            "/v1/modules",
            put(|State(s): Svc, req: Req| datasets::upload_module(s, req)),
        )
        .route(
            "/v1/runs",
            post(|State(s): Svc, req: Req| runs::submit(s, req)),
        )
        .route(
            "/v1/runs",
            get(|State(s): Svc, req: Req| runs::list(s, req)),
        )
        .route(
            "/v1/runs/{id}",
            get(
                |State(s): Svc, Path(id): Path<String>, req: Req| async move {
                    runs::status(s, &id, req).await
                },
            ),
        )
        .route(
            "/v1/runs/{id}/cancel",
            post(
                |State(s): Svc, Path(id): Path<String>, req: Req| async move {
                    runs::cancel(s, &id, req).await
                },
            ),
        )
        .route(
            "/v1/runs/{id}/review",
            post(
                |State(s): Svc, Path(id): Path<String>, req: Req| async move {
                    runs::review(s, &id, req).await
                },
            ),
        )
        .route(
            "/v1/runs/{id}/held",
            get(
                |State(s): Svc, Path(id): Path<String>, req: Req| async move {
                    runs::held(s, &id, req).await
                },
            ),
        )
        .route(
            "/v1/runs/{id}/result",
            get(
                |State(s): Svc, Path(id): Path<String>, req: Req| async move {
                    runs::result(s, &id, req).await
                },
            ),
        )
        .route(
            "/v1/audit",
            get(|State(s): Svc, req: Req| async move { info::audit(&s, req).await }),
        )
        .route(
            "/v1/audit/consistency",
            get(|State(s): Svc, req: Req| async move { info::audit_consistency(&s, req).await }),
        )
        .route(
            "/v1/events",
            get(|State(s): Svc, req: Req| info::events(s, req)),
        )
        .fallback(no_endpoint)
        .method_not_allowed_fallback(no_endpoint)
        .with_state(service)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// `(method, path)` pairs.
    type Routes = BTreeSet<(String, String)>;

    /// `(method, /path/{id})` for every `.route(PATH, METHOD(...))` of [`super::router`],
    /// read from this file's source: the router is the routing table, so the documentation
    /// is checked against it.
    fn routed() -> Routes {
        let source = include_str!("mod.rs");
        let routing = &source[..source.find("#[cfg(test)]").expect("tests follow routing")];
        let mut routes = Routes::new();
        for piece in routing.split(".route(").skip(1) {
            let piece = piece.trim_start();
            let Some(rest) = piece.strip_prefix('"') else {
                continue;
            };
            let (path, rest) = rest.split_once('"').expect("a quoted path");
            let rest = rest.trim_start().trim_start_matches(',').trim_start();
            let method: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase())
                .collect();
            routes.insert((method, path.to_string()));
        }
        routes
    }

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
