//! Signed requests: RFC 9421 HTTP Message Signatures with Ed25519 over
//! method, path, content digest, created time and a nonce. Unsigned, stale
//! or replayed requests are refused and audited.

use cleanroom_proto::PartyId;
use cleanroom_proto::httpsig;
use hyper::Request;
use hyper::body::Incoming;
use hyper::http::request::Parts;
use serde_json::json;

use crate::app::{Metrics, Service};
use crate::error::{ApiError, ApiResult};
use crate::events::Audience;
use crate::http::{MAX_JSON_BODY, read_body};

/// Read a signed JSON request: body (bounded), signature, then the parsed value.
pub(crate) async fn signed_json<T: serde::de::DeserializeOwned>(
    service: &Service,
    req: Request<Incoming>,
    what: &str,
) -> ApiResult<(PartyId, T)> {
    let (parts, body) = req.into_parts();
    let body = read_body(body, MAX_JSON_BODY).await?;
    let party = authenticate(service, &parts, &body)?;
    let value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid {what}: {e}")))?;
    Ok((party, value))
}

/// Authenticate a signed request without a body (GET).
pub(crate) fn signed_get(service: &Service, req: Request<Incoming>) -> ApiResult<PartyId> {
    let (parts, _) = req.into_parts();
    authenticate(service, &parts, b"")
}

/// Authenticate a request whose whole body is `body`.
pub(crate) fn authenticate(service: &Service, parts: &Parts, body: &[u8]) -> ApiResult<PartyId> {
    let digest = httpsig::content_digest(body);
    authenticate_digest(service, parts, &digest)
}

/// Authenticate a request whose body digest was computed while streaming it.
pub(crate) fn authenticate_digest(
    service: &Service,
    parts: &Parts,
    digest: &str,
) -> ApiResult<PartyId> {
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let verified = httpsig::verify_request_with_digest(
        parts.method.as_str(),
        path,
        header,
        digest,
        crate::now(),
    )
    .map_err(|e| refuse(service, parts, None, e.kind(), &e))?;
    let fresh = service.storage.remember_nonce(
        &verified.party.to_string(),
        &verified.nonce,
        verified.created,
    )?;
    if !fresh {
        return Err(refuse(
            service,
            parts,
            Some(verified.party),
            "replayed",
            &"this request was already received (nonce reused); sign each request afresh",
        ));
    }
    Ok(verified.party)
}

fn refuse(
    service: &Service,
    parts: &Parts,
    party: Option<PartyId>,
    kind: &str,
    err: &dyn std::fmt::Display,
) -> ApiError {
    Metrics::inc(&service.metrics.refused);
    let audience = party.map_or(Audience::Parties(vec![]), |p| Audience::Parties(vec![p]));
    let _ = service.record(
        audience,
        party,
        "request.refused",
        &format!("{} {}", parts.method, parts.uri.path()),
        json!({ "reason": kind, "message": err.to_string() }),
    );
    ApiError::Unauthenticated(err.to_string())
}
