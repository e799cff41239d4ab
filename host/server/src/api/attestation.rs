//! Attestation evidence, fresh for a client's nonce.

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::app::Service;
use crate::error::{ApiError, ApiResult};
use crate::http::{Body, json_response};

/// Longest client nonce.
const MAX_NONCE_BYTES: usize = 64;

pub(super) async fn evidence(
    service: &Service,
    req: &Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let nonce = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("nonce=")))
        .map(|hex_nonce| {
            hex::decode(hex_nonce)
                .map_err(|_| ApiError::BadRequest("nonce must be hex".into()))
                .and_then(|n| {
                    if n.len() > MAX_NONCE_BYTES {
                        Err(ApiError::BadRequest(format!(
                            "nonce longer than {MAX_NONCE_BYTES} bytes"
                        )))
                    } else {
                        Ok(n)
                    }
                })
        })
        .transpose()?;
    let evidence = service
        .attester
        .evidence(&service.identity.public_keys(), nonce.as_deref())
        .map_err(|e| ApiError::Internal(format!("attestation failed: {e}")))?;
    let evidence: serde_json::Value = serde_json::from_slice(
        &evidence
            .to_json()
            .map_err(|e| ApiError::Internal(e.to_string()))?,
    )
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    // The deployment config travels beside the evidence so a client can
    // check that its digest is what `host_data` binds.
    // The enclave's endorsement of its TLS key: a client checks it names the key of the
    // connection this answer came over.
    let body = serde_json::json!({
        "evidence": evidence,
        "deployment": String::from_utf8_lossy(&service.config.deployment_bytes()),
        "tls": service.tls.as_ref().map(|t| &t.endorsement),
    });
    Ok(json_response(StatusCode::OK, &body))
}
