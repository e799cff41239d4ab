//! Routing: every endpoint of the JSON API, on axum, each documented where it is routed. The
//! OpenAPI document (`GET /openapi.json`, and `cleanroomd openapi`) is generated from these
//! declarations and the wire types' schemas (utoipa), so it cannot drift from the router.

mod attestation;
mod datasets;
mod info;
mod pipelines;
mod requests;
mod runs;

use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::extract::{Path, State};
use hyper::Response;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::Service;
use crate::error::{ApiError, ApiResult};
use crate::wire::{Body, Req};
use cleanroom_proto::api::{
    AccessRequest, AccessRequested, CancelAccepted, DerivedList, ErrorBody, Health, ModuleInfo,
    ModuleStored, PipelineStored, PolicyStored, RunAccepted, RunList, SourceBundle,
};
use cleanroom_proto::audit::{AuditPage, ConsistencyAnswer};
use cleanroom_proto::pipeline::Pipeline;
use cleanroom_proto::policy::SignedPolicy;
use cleanroom_proto::run::{
    DatasetInfo, DatasetList, HeldBundle, ResultBundle, Review, RunRequest, RunStatus,
};

type Svc = State<Arc<Service>>;
type Answer = ApiResult<Response<Body>>;

/// The document's fixed parts; the paths come from the routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "cleanroomd",
        description = "Confidential data clean room governance API. Every endpoint except \
            /health, /openapi.json, /v1/attestation, /v1/upgrade/handover and /v1/cluster/join needs an RFC 9421 \
            HTTP Message Signature (Ed25519) over @method, @path, @query and content-digest \
            with created and nonce parameters, verified from the headers before any body is \
            read; unsigned, stale (>300 s skew) and replayed requests are refused (401). \
            Policy denials are 403 with the stable `code` of the decision; every refusal is an \
            ErrorBody."
    ),
    modifiers(&SignedRequests),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// The `httpsig` security scheme that signed endpoints name.
struct SignedRequests;

impl utoipa::Modify for SignedRequests {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "httpsig",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Signature",
                "RFC 9421: Signature-Input: sig1=(\"@method\" \"@path\" \"@query\" \
                 \"content-digest\");created=..;nonce=..;keyid=<ed25519 hex>;alg=\"ed25519\", \
                 Signature: sig1=:b64:, Content-Digest: sha-256=:b64:",
            ))),
        );
    }
}

/// Unknown paths and methods get the API's JSON error, like every other refusal.
async fn no_endpoint(req: Req) -> ApiError {
    ApiError::NotFound(format!("no endpoint {} {}", req.method(), req.uri().path()))
}

/// Every endpoint, documented: the router and its OpenAPI document come from this one list.
fn routes() -> OpenApiRouter<Arc<Service>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(metrics))
        .routes(routes!(openapi))
        .routes(routes!(attestation))
        .routes(routes!(handover))
        .routes(routes!(cluster_join))
        .routes(routes!(list_datasets))
        .routes(routes!(upload_dataset))
        .routes(routes!(get_policy, put_policy))
        .routes(routes!(get_budget))
        .routes(routes!(get_preview, put_preview))
        .routes(routes!(upload_module))
        .routes(routes!(module_info))
        .routes(routes!(get_module_source, put_module_source))
        .routes(routes!(put_pipeline))
        .routes(routes!(get_pipeline))
        .routes(routes!(list_derived))
        .routes(routes!(request_access))
        .routes(routes!(submit_run, list_runs))
        .routes(routes!(run_status))
        .routes(routes!(cancel_run))
        .routes(routes!(review_run))
        .routes(routes!(held_outputs))
        .routes(routes!(run_result))
        .routes(routes!(audit_log))
        .routes(routes!(audit_consistency))
        .routes(routes!(events))
}

/// The OpenAPI document, generated from [`routes`].
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

/// Every endpoint of the JSON API (axum on hyper). Handlers take the whole request: signed
/// endpoints verify the signature over the method, path and body themselves.
pub(crate) fn router(service: Arc<Service>) -> Router {
    let (router, _) = routes().split_for_parts();
    router
        .fallback(no_endpoint)
        .method_not_allowed_fallback(no_endpoint)
        .with_state(service)
}

#[utoipa::path(get, path = "/health", tag = "service",
    responses((status = 200, description = "the server is up", body = Health)))]
async fn health(State(s): Svc) -> Response<Body> {
    info::health(&s)
}

#[utoipa::path(get, path = "/metrics", tag = "service", security(("httpsig" = [])),
    responses(
        (status = 200, description = "OpenMetrics text: request, run, upload and refusal counters", content_type = "application/openmetrics-text", body = String),
        (status = "4XX", description = "refused", body = ErrorBody)))]
async fn metrics(State(s): Svc, req: Req) -> Answer {
    info::metrics(&s, &req)
}

#[utoipa::path(get, path = "/openapi.json", tag = "service",
    responses((status = 200, description = "this document", content_type = "application/json")))]
async fn openapi() -> Response<Body> {
    static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
        openapi_document()
            .to_pretty_json()
            .expect("the OpenAPI document serialises")
    });
    crate::wire::text_response("application/json", DOCUMENT.clone())
}

#[utoipa::path(get, path = "/v1/attestation", tag = "attestation",
    params(("nonce" = Option<String>, Query, description = "hex client nonce (at most 64 bytes), bound into report_data for fresh evidence")),
    responses(
        (status = 200, description = "evidence, the deployment it binds and the TLS key endorsement", body = attestation::AttestationAnswer),
        (status = "4XX", description = "refused", body = ErrorBody)))]
async fn attestation(State(s): Svc, req: Req) -> Answer {
    attestation::evidence(&s, req).await
}

#[utoipa::path(post, path = "/v1/upgrade/handover", tag = "attestation",
    request_body = crate::upgrade::HandoverRequest,
    responses(
        (status = 200, description = "the state key, sealed to the new image; this server stops accepting changes", body = crate::upgrade::HandoverAnswer),
        (status = "4XX", description = "refused: evidence, measurement, statement or SVN not accepted", body = ErrorBody)))]
async fn handover(State(s): Svc, req: Req) -> Answer {
    attestation::handover(s, req).await
}

#[utoipa::path(post, path = "/v1/cluster/join", tag = "attestation",
    request_body = crate::cluster::JoinRequest,
    responses(
        (status = 200, description = "the cluster's state key, sealed to the new worker's attested one-time key, with this member's evidence", body = crate::cluster::JoinAnswer),
        (status = "4XX", description = "refused: not a cluster, or the worker's evidence or deployment is not this member's", body = ErrorBody)))]
async fn cluster_join(State(s): Svc, req: Req) -> Answer {
    attestation::join(s, req).await
}

#[utoipa::path(get, path = "/v1/datasets", tag = "datasets", security(("httpsig" = [])),
    responses(
        (status = 200, description = "datasets; schema and rows only to their owner and granted researchers", body = DatasetList),
        (status = "4XX", description = "refused", body = ErrorBody)))]
async fn list_datasets(State(s): Svc, req: Req) -> Answer {
    datasets::list(&s, req).await
}

#[utoipa::path(put, path = "/v1/datasets/{id}", tag = "datasets", security(("httpsig" = [])),
    params(("id" = String, Path, description = "dataset id (lowercase hex), as in the envelope's manifest")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "a sealed dataset envelope (streamed); the signer must be the manifest's owner"),
    responses(
        (status = 201, description = "stored", body = DatasetInfo),
        (status = "4XX", description = "refused", body = ErrorBody)))]
async fn upload_dataset(State(s): Svc, Path(id): Path<String>, req: Req) -> Answer {
    datasets::upload(s, &id, req).await
}

#[utoipa::path(get, path = "/v1/datasets/{id}/policy", tag = "datasets", security(("httpsig" = [])),
    params(("id" = String, Path, description = "dataset id")),
    responses(
        (status = 200, description = "the current signed policy, to its owner and the researchers it grants", body = SignedPolicy),
        (status = "4XX", description = "refused", body = ErrorBody)))]
async fn get_policy(State(s): Svc, Path(id): Path<String>, req: Req) -> Answer {
    datasets::policy(&s, &id, req).await
}

#[utoipa::path(get, path = "/v1/datasets/{id}/budget", tag = "datasets", security(("httpsig" = [])),
    params(("id" = String, Path, description = "dataset id")),
    responses(
        (status = 200, description = "the differential-privacy budget: total, spent, left, and the asking researcher's share", body = cleanroom_proto::dp::DpBudget),
        (status = "4XX", description = "refused, or the dataset does not require differential privacy", body = ErrorBody)))]
async fn get_budget(State(s): Svc, Path(id): Path<String>, req: Req) -> Answer {
    datasets::budget(&s, &id, req).await
}

#[utoipa::path(get, path = "/v1/datasets/{id}/preview", tag = "datasets", security(("httpsig" = [])),
    params(("id" = String, Path, description = "dataset id")),
    responses(
        (status = 200, description = "the dataset's DP preview (schema, summaries, synthetic rows); to any party, at no cost to the budget", body = cleanroom_proto::dp::Preview),
        (status = "4XX", description = "refused, or no preview was published", body = ErrorBody)))]
async fn get_preview(State(s): Svc, Path(id): Path<String>, req: Req) -> Answer {
    datasets::preview(&s, &id, req).await
}

#[utoipa::path(put, path = "/v1/datasets/{id}/preview", tag = "datasets", security(("httpsig" = [])),
    params(("id" = String, Path, description = "dataset id")),
    request_body = cleanroom_proto::dp::PreviewRequest,
    responses(
        (status = 200, description = "the preview, computed and charged once to the dataset's budget", body = cleanroom_proto::dp::Preview),
        (status = "4XX", description = "refused: not the owner, no DP terms, or not enough budget", body = ErrorBody)))]
async fn put_preview(State(s): Svc, Path(id): Path<String>, req: Req) -> Answer {
    datasets::put_preview(s, &id, req).await
}

#[utoipa::path(put, path = "/v1/datasets/{id}/policy", tag = "datasets", security(("httpsig" = [])),
    params(("id" = String, Path, description = "dataset id")),
    request_body = SignedPolicy,
    responses(
        (status = 200, description = "the new version is in force (no grants = revoked)", body = PolicyStored),
        (status = "4XX", description = "refused", body = ErrorBody)))]
async fn put_policy(State(s): Svc, Path(id): Path<String>, req: Req) -> Answer {
    datasets::put_policy(s, &id, req).await
}

#[utoipa::path(post, path = "/v1/requests", tag = "runs", security(("httpsig" = [])),
    request_body = AccessRequest,
    responses(
        (status = 201, description = "recorded (`access.requested`) for the researcher and the owners of the inputs; it grants nothing", body = AccessRequested),
        (status = "4XX", description = "refused: malformed, unknown module or dataset", body = ErrorBody)))]
async fn request_access(State(s): Svc, req: Req) -> Answer {
    requests::file(s, req).await
}

#[utoipa::path(put, path = "/v1/modules", tag = "modules", security(("httpsig" = [])),
    request_body(content = Vec<u8>, content_type = "application/wasm", description = "a WebAssembly component of the analysis world"),
    responses(
        (status = 201, description = "compiled and stored; its id is its SHA-256", body = ModuleStored),
        (status = "4XX", description = "refused", body = ErrorBody)))]
async fn upload_module(State(s): Svc, req: Req) -> Answer {
    datasets::upload_module(s, req).await
}

#[utoipa::path(get, path = "/v1/modules/{id}", tag = "modules", security(("httpsig" = [])),
    params(("id" = String, Path, description = "module id (SHA-256 hex)")),
    responses(
        (status = 200, description = "the module, to its uploader and to dataset owners", body = ModuleInfo),
        (status = "4XX", description = "refused", body = ErrorBody)))]
async fn module_info(State(s): Svc, Path(id): Path<String>, req: Req) -> Answer {
    datasets::module_info(&s, &id, req).await
}

#[utoipa::path(get, path = "/v1/modules/{id}/source", tag = "modules", security(("httpsig" = [])),
    params(("id" = String, Path, description = "module id (SHA-256 hex)")),
    responses(
        (status = 200, description = "the source the module was built from, to its uploader and to dataset owners", body = SourceBundle),
        (status = "4XX", description = "refused", body = ErrorBody)))]
async fn get_module_source(State(s): Svc, Path(id): Path<String>, req: Req) -> Answer {
    datasets::module_source(&s, &id, req).await
}

#[utoipa::path(put, path = "/v1/modules/{id}/source", tag = "modules", security(("httpsig" = [])),
    params(("id" = String, Path, description = "module id (SHA-256 hex)")),
    request_body = SourceBundle,
    responses(
        (status = 201, description = "attached (once: a module's source never changes)", body = ModuleInfo),
        (status = "4XX", description = "refused", body = ErrorBody)))]
async fn put_module_source(State(s): Svc, Path(id): Path<String>, req: Req) -> Answer {
    datasets::put_module_source(s, &id, req).await
}

#[utoipa::path(put, path = "/v1/pipelines", tag = "pipelines", security(("httpsig" = [])),
    request_body = Pipeline,
    responses(
        (status = 201, description = "stored under its digest, which owners grant as the module of a pipeline run", body = PipelineStored),
        (status = "4XX", description = "refused: malformed, or a step's module was not uploaded", body = ErrorBody)))]
async fn put_pipeline(State(s): Svc, req: Req) -> Answer {
    pipelines::put(s, req).await
}

#[utoipa::path(get, path = "/v1/pipelines/{id}", tag = "pipelines", security(("httpsig" = [])),
    params(("id" = String, Path, description = "pipeline digest")),
    responses(
        (status = 200, description = "the pipeline", body = Pipeline),
        (status = "4XX", description = "refused", body = ErrorBody)))]
async fn get_pipeline(State(s): Svc, Path(id): Path<String>, req: Req) -> Answer {
    pipelines::get(&s, &id, req).await
}

#[utoipa::path(get, path = "/v1/derived", tag = "pipelines", security(("httpsig" = [])),
    responses(
        (status = 200, description = "derived datasets upstream of which the signer owns a dataset, or that the signer's runs produced: provenance and whether every upstream owner still allows them", body = DerivedList),
        (status = "4XX", description = "refused", body = ErrorBody)))]
async fn list_derived(State(s): Svc, req: Req) -> Answer {
    pipelines::derived(&s, req).await
}

#[utoipa::path(post, path = "/v1/runs", tag = "runs", security(("httpsig" = [])),
    request_body = RunRequest,
    responses(
        (status = 202, description = "admitted with a grant from every input's owner, and queued", body = RunAccepted),
        (status = "4XX", description = "refused; 403 denials carry the decision's code", body = ErrorBody)))]
async fn submit_run(State(s): Svc, req: Req) -> Answer {
    runs::submit(s, req).await
}

#[utoipa::path(get, path = "/v1/runs", tag = "runs", security(("httpsig" = [])),
    responses(
        (status = 200, description = "runs that concern the signer", body = RunList),
        (status = "4XX", description = "refused", body = ErrorBody)))]
async fn list_runs(State(s): Svc, req: Req) -> Answer {
    runs::list(s, req).await
}

#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs", security(("httpsig" = [])),
    params(("id" = String, Path, description = "run id"),
        ("wait" = Option<u64>, Query, description = "seconds (at most 30) to hold the answer until the run leaves the state it is in")),
    responses(
        (status = 200, description = "the run, to its researcher, input owners and reviewers", body = RunStatus),
        (status = "4XX", description = "refused", body = ErrorBody)))]
async fn run_status(State(s): Svc, Path(id): Path<String>, req: Req) -> Answer {
    runs::status(s, &id, req).await
}

#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs", security(("httpsig" = [])),
    params(("id" = String, Path, description = "run id")),
    request_body(content = String, content_type = "application/json", description = "empty or {}"),
    responses(
        (status = 202, description = "the researcher's run is being cancelled", body = CancelAccepted),
        (status = "4XX", description = "refused", body = ErrorBody)))]
async fn cancel_run(State(s): Svc, Path(id): Path<String>, req: Req) -> Answer {
    runs::cancel(s, &id, req).await
}

#[utoipa::path(post, path = "/v1/runs/{id}/review", tag = "runs", security(("httpsig" = [])),
    params(("id" = String, Path, description = "run id")),
    request_body = Review,
    responses(
        (status = 200, description = "a pending reviewer's decision, recorded", body = RunStatus),
        (status = "4XX", description = "refused", body = ErrorBody)))]
async fn review_run(State(s): Svc, Path(id): Path<String>, req: Req) -> Answer {
    runs::review(s, &id, req).await
}

#[utoipa::path(get, path = "/v1/runs/{id}/held", tag = "runs", security(("httpsig" = [])),
    params(("id" = String, Path, description = "run id")),
    responses(
        (status = 200, description = "the outputs awaiting review, HPKE-sealed to the reviewer", body = HeldBundle),
        (status = "4XX", description = "refused", body = ErrorBody)))]
async fn held_outputs(State(s): Svc, Path(id): Path<String>, req: Req) -> Answer {
    runs::held(s, &id, req).await
}

#[utoipa::path(get, path = "/v1/runs/{id}/result", tag = "runs", security(("httpsig" = [])),
    params(("id" = String, Path, description = "run id")),
    responses(
        (status = 200, description = "the receipt and the released outputs, HPKE-sealed to the researcher", body = ResultBundle),
        (status = "4XX", description = "refused", body = ErrorBody)))]
async fn run_result(State(s): Svc, Path(id): Path<String>, req: Req) -> Answer {
    runs::result(s, &id, req).await
}

#[utoipa::path(get, path = "/v1/audit", tag = "audit", security(("httpsig" = [])),
    params(
        ("from" = Option<u64>, Query, description = "first sequence number (default 0)"),
        ("limit" = Option<u64>, Query, description = "page size (1 to 1000, default 1000)")),
    responses(
        (status = 200, description = "a page of the RFC 6962 Merkle log as the signer may see it, under a signed tree head", body = AuditPage),
        (status = "4XX", description = "refused", body = ErrorBody)))]
async fn audit_log(State(s): Svc, req: Req) -> Answer {
    info::audit(&s, req).await
}

#[utoipa::path(get, path = "/v1/audit/consistency", tag = "audit", security(("httpsig" = [])),
    params(("old" = u64, Query, description = "the size of a tree head the caller saw before")),
    responses(
        (status = 200, description = "the current signed head and an RFC 6962 consistency proof from the old size", body = ConsistencyAnswer),
        (status = "4XX", description = "refused", body = ErrorBody)))]
async fn audit_consistency(State(s): Svc, req: Req) -> Answer {
    info::audit_consistency(&s, req).await
}

#[utoipa::path(get, path = "/v1/events", tag = "audit", security(("httpsig" = [])),
    responses(
        (status = 200, description = "Server-Sent Events: each `data:` line is an audit entry that concerns the signer", content_type = "text/event-stream", body = String),
        (status = "4XX", description = "refused", body = ErrorBody)))]
async fn events(State(s): Svc, req: Req) -> Answer {
    info::events(s, req).await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// `(method, path)` pairs.
    type Routes = BTreeSet<(String, String)>;

    /// Every documented operation, and those documented without a signature.
    fn documented() -> (Routes, Routes) {
        let doc = super::openapi_document();
        let mut all = Routes::new();
        let mut public = Routes::new();
        for (path, item) in &doc.paths.paths {
            for (m, op) in [
                ("get", &item.get),
                ("put", &item.put),
                ("post", &item.post),
                ("delete", &item.delete),
                ("patch", &item.patch),
            ] {
                let Some(op) = op else { continue };
                all.insert((m.to_string(), path.clone()));
                if op.security.as_ref().is_none_or(|s| s.is_empty()) {
                    public.insert((m.to_string(), path.clone()));
                }
            }
        }
        (all, public)
    }

    /// `(method, /path/{id})` for every `#[utoipa::path(METHOD, path = "...")]` in this file:
    /// the handlers the router is built from. A handler routed by hand (not through
    /// `routes!`) would be missing from the document; this reads the declarations instead.
    fn declared() -> Routes {
        let source = include_str!("mod.rs");
        let routing = &source[..source.find("#[cfg(test)]").expect("tests follow routing")];
        let mut routes = Routes::new();
        for piece in routing.split("#[utoipa::path(").skip(1) {
            let (method, rest) = piece.split_once(',').expect("a method");
            let rest = rest.trim_start().strip_prefix("path = \"").expect("a path");
            let (path, _) = rest.split_once('"').expect("a quoted path");
            routes.insert((method.trim().to_string(), path.to_string()));
        }
        routes
    }

    #[test]
    fn every_route_is_documented_and_every_documented_route_exists() {
        let declared = declared();
        assert!(declared.len() > 20, "the scanner found {declared:?}");
        let (documented, _) = documented();
        let missing: Vec<_> = declared.difference(&documented).collect();
        let stale: Vec<_> = documented.difference(&declared).collect();
        assert!(
            missing.is_empty(),
            "handlers missing from the document: {missing:?}"
        );
        assert!(
            stale.is_empty(),
            "documented routes with no handler: {stale:?}"
        );
        // Nothing is routed outside the documented list.
        let source = include_str!("mod.rs");
        let routing = &source[..source.find("#[cfg(test)]").expect("tests follow routing")];
        assert!(
            !routing.contains(".route("),
            "a route bypasses the OpenAPI document"
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
            ("post", "/v1/cluster/join"),
        ]
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
        assert_eq!(public, expected);
    }

    #[test]
    fn request_and_answer_bodies_have_schemas() {
        let doc = serde_json::to_value(super::openapi_document()).expect("serialises");
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for name in [
            "RunRequest",
            "RunStatus",
            "SignedPolicy",
            "Policy",
            "Grant",
            "OutputRules",
            "ResultBundle",
            "AuditPage",
            "SourceBundle",
            "ErrorBody",
            "AttestationAnswer",
            "Evidence",
        ] {
            assert!(schemas.contains_key(name), "no schema for {name}");
        }
        // A signed write names its body's schema.
        let submit = &doc["paths"]["/v1/runs"]["post"];
        assert_eq!(
            submit["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/RunRequest"
        );
        assert_eq!(
            submit["responses"]["202"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/RunAccepted"
        );
    }

    /// `host/server/openapi.json` is the generated document, checked in so that it can be
    /// read without running the server. Regenerate: `CLEANROOM_BLESS=1 cargo test -p cleanroomd openapi`.
    #[test]
    fn the_checked_in_openapi_json_is_the_generated_one() {
        let generated = super::openapi_document()
            .to_pretty_json()
            .expect("serialises")
            + "\n";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
        if std::env::var_os("CLEANROOM_BLESS").is_some() {
            std::fs::write(path, &generated).expect("write openapi.json");
        }
        let checked_in = std::fs::read_to_string(path).expect("openapi.json");
        assert!(
            checked_in == generated,
            "host/server/openapi.json is stale: regenerate it with \
             CLEANROOM_BLESS=1 cargo test -p cleanroomd openapi"
        );
    }
}
