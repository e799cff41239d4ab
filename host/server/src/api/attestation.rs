//! Attestation evidence, fresh for a client's nonce.

use hyper::{Response, StatusCode};

use crate::app::Service;
use crate::error::{ApiError, ApiResult};
use crate::wire::{Body, MAX_JSON_BODY, Req, read_body, typed_response};

/// `GET /v1/attestation`: evidence and what a client needs beside it to verify the server.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct AttestationAnswer {
    /// SEV-SNP evidence (or, in simulation, evidence from the simulated PKI).
    evidence: cleanroom_trust::Evidence,
    /// The deployment configuration (TOML); its SHA-256 is the report's `host_data`.
    deployment: String,
    /// The enclave's endorsement of its TLS key: a client checks it names the key of the
    /// connection this answer came over. Absent over loopback HTTP in simulation.
    tls: Option<cleanroom_trust::tls::TlsEndorsement>,
    /// The author-signed statement for this image, when it was released by an author key.
    upgrade_statement: Option<cleanroom_proto::upgrade::SignedUpgradeStatement>,
}

/// Longest client nonce.
const MAX_NONCE_BYTES: usize = 64;

/// The query of `GET /v1/attestation`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EvidenceQuery {
    /// Hex client nonce, bound into `report_data`.
    nonce: Option<String>,
}

pub(super) async fn evidence(service: &Service, req: Req) -> ApiResult<Response<Body>> {
    let EvidenceQuery { nonce } = super::info::query(&req)?;
    let nonce = nonce
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
    Ok(typed_response(
        StatusCode::OK,
        &AttestationAnswer {
            evidence,
            deployment: String::from_utf8_lossy(&service.config.deployment_bytes()).into_owned(),
            tls: service.tls.as_ref().map(|t| t.endorsement.clone()),
            upgrade_statement: service.upgrade_statement.clone(),
        },
    ))
}

/// `POST /v1/upgrade/handover`: give the state key to an upgraded image (see
/// `crate::upgrade`), audit it, and stop accepting changes. Unsigned like attestation: the
/// request's evidence and the author's statement are what is checked, and the key is sealed
/// to a key only the new enclave holds.
pub(super) async fn handover(
    service: std::sync::Arc<Service>,
    req: Req,
) -> ApiResult<Response<Body>> {
    let body = read_body(req.into_body(), MAX_JSON_BODY).await?;
    let request: crate::upgrade::HandoverRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("not a hand-over request: {e}")))?;
    let answer = tokio::task::spawn_blocking(move || {
        // No run changes state while the state changes hands.
        let _guard = service
            .transitions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let answer = crate::upgrade::hand_over(&service, &service.state_key, &request)?;
        service.record(
            crate::events::Audience::Everyone,
            None,
            cleanroom_proto::Action::EnclaveHandover,
            &answer.to_measurement,
            serde_json::json!({
                "from": answer.from_measurement, "to": answer.to_measurement, "svn": answer.svn,
            }),
        )?;
        *service.handed_over.lock().expect("hand-over lock") = Some(answer.to_measurement.clone());
        Ok::<_, ApiError>(answer)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(typed_response(StatusCode::OK, &answer))
}

/// `POST /v1/cluster/join`: release the cluster's state key to a new worker whose evidence
/// shows it runs this very image and deployment (see [`crate::cluster`]). Unsigned: the
/// evidence is the credential, and the answer is sealed to a key only that enclave holds.
pub(super) async fn join(service: std::sync::Arc<Service>, req: Req) -> ApiResult<Response<Body>> {
    let body = read_body(req.into_body(), MAX_JSON_BODY).await?;
    let request: crate::cluster::JoinRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("not a join request: {e}")))?;
    let answer = tokio::task::spawn_blocking(move || {
        // A refusal is not audited (anyone may ask, and the log is not theirs to fill); a
        // release is, before the key leaves.
        let answer = crate::cluster::release_key(&service, &request)
            .inspect_err(|e| tracing::warn!("refused a worker's join: {e}"))?;
        service.record(
            crate::events::Audience::Everyone,
            None,
            cleanroom_proto::Action::ClusterJoin,
            &service.measurement,
            serde_json::json!({ "evidence_digest": hex::encode(
                <sha2::Sha256 as sha2::Digest>::digest(&request.evidence.report)
            ) }),
        )?;
        Ok::<_, ApiError>(answer)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(typed_response(StatusCode::OK, &answer))
}
