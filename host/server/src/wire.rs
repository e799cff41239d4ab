//! What the handlers read and write: request and body types, bounded body reads, JSON and
//! text responses. Below every handler and the error type; knows nothing of the service.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};

use crate::error::{ApiError, ApiResult};

/// A request as the handlers see it (the router's body type).
pub(crate) type Req = hyper::Request<axum::body::Body>;

/// Response body type.
pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

/// Largest JSON request body.
pub(crate) const MAX_JSON_BODY: usize = 4 << 20;

/// Longest a request body may stall between two chunks.
pub(crate) const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A JSON response from a typed value.
pub(crate) fn typed_response<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let bytes = serde_json::to_vec_pretty(value).expect("wire types always serialise");
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A plain-text response.
pub(crate) fn text_response(content_type: &'static str, text: String) -> Response<Body> {
    let mut resp = Response::new(full(text.into_bytes()));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// A complete body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Read a whole (small) body, refusing more than `limit` bytes or a stall of
/// [`BODY_IDLE_TIMEOUT`] between chunks.
pub(crate) async fn read_body(body: axum::body::Body, limit: usize) -> ApiResult<Bytes> {
    let mut body = Limited::new(body, limit);
    let mut out = bytes::BytesMut::new();
    loop {
        let frame = tokio::time::timeout(BODY_IDLE_TIMEOUT, body.frame())
            .await
            .map_err(|_| {
                ApiError::BadRequest("the request body stalled; send it promptly".into())
            })?;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                ApiError::TooLarge(format!("request body is larger than {limit} bytes"))
            } else {
                ApiError::BadRequest(format!("cannot read request body: {e}"))
            }
        })?;
        if let Some(data) = frame.data_ref() {
            out.extend_from_slice(data);
        }
    }
    Ok(out.freeze())
}
