//! Signed requests: RFC 9421 HTTP Message Signatures with Ed25519 over
//! method, path, query, content digest, created time and a nonce.
//!
//! The signature is checked from the headers alone, against the *claimed*
//! `content-digest`, before a byte of the body is read: an unauthenticated
//! client cannot make the service spool or buffer anything. The body is then
//! read (bounded, with an idle timeout) and its digest compared with the claim.
//! Refusals are counted in metrics and audited compactly: the first of each
//! kind per minute gets an entry, carrying how many were folded into it.

use cleanroom_proto::PartyId;
use cleanroom_proto::httpsig;
use hyper::http::request::Parts;
use serde_json::json;

use crate::app::{Metrics, Service};
use crate::error::{ApiError, ApiResult};
use crate::events::Audience;
use crate::wire::{MAX_JSON_BODY, Req, read_body};

/// Read a signed JSON request: signature first, then the body (bounded), then the value.
pub(crate) async fn signed_json<T: serde::de::DeserializeOwned>(
    service: &Service,
    req: Req,
    what: &str,
) -> ApiResult<(PartyId, T)> {
    let (parts, body) = req.into_parts();
    let (party, claimed) = authenticate_headers(service, &parts)?;
    let body = read_body(body, MAX_JSON_BODY).await?;
    check_digest(
        service,
        &parts,
        party,
        &claimed,
        &httpsig::content_digest(&body),
    )?;
    let value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid {what}: {e}")))?;
    Ok((party, value))
}

/// Authenticate a signed request without a body (GET).
pub(crate) fn signed_get(service: &Service, req: &Req) -> ApiResult<PartyId> {
    let (party, claimed) =
        authenticate_headers_of(service, req.method(), req.uri(), req.headers())?;
    let empty = httpsig::content_digest(b"");
    if claimed != empty {
        return Err(refuse_parts(
            service,
            req.method(),
            req.uri(),
            Some(party),
            "digest-mismatch",
            &"a GET request must sign the digest of an empty body",
        ));
    }
    Ok(party)
}

/// Verify the signature over the headers (with the claimed content digest) and the nonce.
/// Returns the signer and the claimed digest, which the body must match.
pub(crate) fn authenticate_headers(
    service: &Service,
    parts: &Parts,
) -> ApiResult<(PartyId, String)> {
    authenticate_headers_of(service, &parts.method, &parts.uri, &parts.headers)
}

fn authenticate_headers_of(
    service: &Service,
    method: &hyper::Method,
    uri: &hyper::Uri,
    headers: &hyper::HeaderMap,
) -> ApiResult<(PartyId, String)> {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let claimed = header("content-digest").unwrap_or_default();
    let verified =
        httpsig::verify_request_with_digest(method.as_str(), path, header, &claimed, crate::now())
            .map_err(|e| refuse_parts(service, method, uri, None, e.kind(), &e))?;
    let fresh = service.storage.remember_nonce(
        &verified.party.to_string(),
        &verified.nonce,
        verified.created,
    )?;
    if !fresh {
        return Err(refuse_parts(
            service,
            method,
            uri,
            Some(verified.party),
            "replayed",
            &"this request was already received (nonce reused); sign each request afresh",
        ));
    }
    service.clock.observe(verified.created, &service.sealer)?;
    Ok((verified.party, claimed))
}

/// The body that arrived must be the one that was signed.
pub(crate) fn check_digest(
    service: &Service,
    parts: &Parts,
    party: PartyId,
    claimed: &str,
    computed: &str,
) -> ApiResult<()> {
    if claimed != computed {
        return Err(refuse_parts(
            service,
            &parts.method,
            &parts.uri,
            Some(party),
            "digest-mismatch",
            &"the body does not match its signed content-digest",
        ));
    }
    Ok(())
}

fn refuse_parts(
    service: &Service,
    method: &hyper::Method,
    uri: &hyper::Uri,
    party: Option<PartyId>,
    kind: &str,
    err: &dyn std::fmt::Display,
) -> ApiError {
    Metrics::inc(&service.metrics.refused);
    if let Some(folded) = service.refusals.admit(kind, crate::now()) {
        let audience = party.map_or(Audience::Parties(vec![]), |p| Audience::Parties(vec![p]));
        let _ = service.record(
            audience,
            party,
            cleanroom_proto::Action::RequestRefused,
            &format!(
                "{method} {}",
                uri.path().chars().take(128).collect::<String>()
            ),
            json!({ "reason": kind, "folded": folded }),
        );
    }
    ApiError::Unauthenticated(err.to_string())
}
