//! Health, metrics, the OpenAPI document, the audit log and live events.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};

use crate::app::Service;
use cleanroom_proto::audit::{AuditItem, AuditPage};

use crate::error::{ApiError, ApiResult};
use crate::wire::{Body, Req, text_response, typed_response};

pub(super) fn health(service: &Service) -> Response<Body> {
    typed_response(
        StatusCode::OK,
        &cleanroom_proto::api::Health {
            status: "ok".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            r_engine: service.r_engine.as_ref().map(|r| r.id().to_string()),
        },
    )
}

pub(super) fn metrics(service: &Service, req: &Req) -> ApiResult<Response<Body>> {
    crate::auth::signed_get(service, req)?;
    Ok(text_response(
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        service.metrics.encode(),
    ))
}

/// Largest page of `GET /v1/audit`.
pub(crate) const AUDIT_PAGE: u64 = 1000;

/// The query of `GET /v1/audit`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    from: Option<u64>,
    limit: Option<u64>,
}

/// The query of `GET /v1/audit/consistency`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsistencyQuery {
    /// The size of a tree head the caller saw before.
    old: u64,
}

/// A request's query string as `T` (unknown parameters refused).
pub(super) fn query<T: serde::de::DeserializeOwned>(req: &Req) -> ApiResult<T> {
    serde_urlencoded::from_str(req.uri().query().unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(format!("query: {e}")))
}

/// `GET /v1/audit?from=SEQ&limit=N`: the log as the signer may see it. Entries that concern
/// the signer come whole; the others as their leaf hash, so the whole tree still verifies
/// against the signed head.
pub(super) async fn audit(service: &Service, req: Req) -> ApiResult<Response<Body>> {
    let party = crate::auth::signed_get(service, &req)?;
    let query: AuditQuery = query(&req)?;
    let from = query.from.unwrap_or(0);
    let limit = query.limit.unwrap_or(AUDIT_PAGE).clamp(1, AUDIT_PAGE);
    // The head first: every item served is covered by it.
    let head = service.audit.head(service.identity.signing_key());
    let end = head.size;
    let entries = service
        .storage
        .audit(from, limit.min(end.saturating_sub(from)))?;
    let items: Vec<AuditItem> = entries
        .iter()
        .map(|e| AuditItem::view(&e.entry, &party))
        .collect();
    let next = items.last().map(|i| i.seq + 1).filter(|n| *n < end);
    let page = AuditPage { items, head, next };
    Ok(crate::wire::typed_response(StatusCode::OK, &page))
}

/// `GET /v1/audit/consistency?old=SIZE`: the current signed head and a proof that it extends
/// the log of `SIZE` entries (a head the caller saw before).
pub(super) async fn audit_consistency(service: &Service, req: Req) -> ApiResult<Response<Body>> {
    crate::auth::signed_get(service, &req)?;
    let ConsistencyQuery { old } = query(&req)?;
    let answer = service
        .audit
        .consistency(old, service.identity.signing_key())?;
    Ok(crate::wire::typed_response(StatusCode::OK, &answer))
}

/// Server-Sent Events of everything that concerns the signer.
pub(super) async fn events(service: Arc<Service>, req: Req) -> ApiResult<Response<Body>> {
    let party = crate::auth::signed_get(&service, &req)?;
    let rx = service.events.subscribe();
    let stream = futures_util::stream::unfold(rx, move |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(event) if event.audience.includes(&party) => {
                    let line = format!("data: {}\n\n", event.payload);
                    return Some((Ok::<_, std::io::Error>(Frame::data(Bytes::from(line))), rx));
                }
                Ok(_) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    let line = format!("event: lagged\ndata: {{\"missed\":{n}}}\n\n");
                    return Some((Ok(Frame::data(Bytes::from(line))), rx));
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let hello = futures_util::stream::once(async {
        Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b": connected\n\n")))
    });
    let body = BodyExt::boxed(StreamBody::new(hello.chain(stream)));
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
