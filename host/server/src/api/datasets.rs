//! Dataset envelopes (streamed to disk with bounded memory), owner policies
//! and analysis modules.

use std::io::Write;
use std::sync::Arc;

use cleanroom_envelope::EnvelopeReader;
use cleanroom_proto::PartyId;
use cleanroom_proto::httpsig::DigestWriter;
use cleanroom_proto::policy::SignedPolicy;
use http_body_util::BodyExt;
use hyper::{Response, StatusCode};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::app::Service;
use crate::error::{ApiError, ApiResult};
use crate::events::Audience;
use crate::store::{DatasetRow, ModuleRow, RowWrite};
use crate::wire::{Body, Req, read_body, typed_response};
use cleanroom_proto::api::{MAX_SOURCE_BYTES, ModuleStored, PolicyStored, SourceBundle};

/// Whether `party` may see `dataset`'s schema: its owner, or a researcher one of its grants
/// names (or any researcher, for an `any` grant).
fn may_see_schema(
    service: &Service,
    owner: &str,
    dataset: &str,
    party: &PartyId,
) -> ApiResult<bool> {
    let Ok(owner) = owner.parse::<PartyId>() else {
        return Ok(false);
    };
    let stored = service.storage.policy(dataset)?;
    Ok(cleanroom_policy::may_see_schema(
        &owner,
        stored.as_ref(),
        dataset,
        party,
    ))
}

/// `dataset`'s stored policy if its owner signed it for it (the store is the operator's).
fn trusted_policy(
    service: &Service,
    owner: &str,
    dataset: &str,
) -> ApiResult<Option<cleanroom_proto::policy::SignedPolicy>> {
    let Ok(owner) = owner.parse::<PartyId>() else {
        return Ok(None);
    };
    Ok(service
        .storage
        .policy(dataset)?
        .filter(|p| cleanroom_policy::trusted(p, dataset, &owner).is_some()))
}

pub(super) async fn list(service: &Service, req: Req) -> ApiResult<Response<Body>> {
    let party = crate::auth::signed_get(service, &req)?;
    let datasets = service.storage.datasets()?;
    let mut out = Vec::new();
    for d in datasets {
        let policy = trusted_policy(service, &d.owner, &d.id)?;
        let is_owner = d.owner == party.to_string();
        let columns: Option<Vec<(String, String)>> =
            if may_see_schema(service, &d.owner, &d.id, &party)? {
                let hidden: Vec<String> = policy
                    .as_ref()
                    .map(|p| p.policy.hidden_columns.clone())
                    .unwrap_or_default();
                // Hidden column names are the owner's alone.
                Some(
                    d.columns
                        .iter()
                        .filter(|(name, _)| {
                            is_owner || !hidden.iter().any(|h| h.eq_ignore_ascii_case(name))
                        })
                        .cloned()
                        .collect(),
                )
            } else {
                None
            };
        out.push(cleanroom_proto::run::DatasetInfo {
            rows: columns.as_ref().map(|_| d.rows),
            columns,
            id: d.id,
            owner: d.owner,
            manifest_digest: d.manifest_digest,
            policy_version: policy.map(|p| p.policy.version),
            created: d.created,
        });
    }
    Ok(typed_response(
        StatusCode::OK,
        &cleanroom_proto::run::DatasetList { datasets: out },
    ))
}

/// Stream the body to a temporary file, hashing as it goes (the caller has already
/// authenticated the headers; the digest is compared with the signed one after).
async fn spool(
    service: &Service,
    body: axum::body::Body,
    limit: u64,
) -> ApiResult<(std::path::PathBuf, String, u64)> {
    let tmp = service.blobs.tmp_path();
    let mut file = std::fs::File::create(&tmp)?;
    // Removed on every early return; kept once the upload is whole.
    let guard = tempfile::TempPath::try_from_path(tmp.clone())?;
    let mut digest = DigestWriter::new();
    let mut total = 0u64;
    let mut body = body;
    loop {
        let frame = tokio::time::timeout(crate::wire::BODY_IDLE_TIMEOUT, body.frame())
            .await
            .map_err(|_| ApiError::BadRequest("the upload stalled; send it promptly".into()))?;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| ApiError::BadRequest(format!("upload interrupted: {e}")))?;
        if let Some(chunk) = frame.data_ref() {
            total += chunk.len() as u64;
            if total > limit {
                drop(file);
                let _ = std::fs::remove_file(&tmp);
                return Err(ApiError::TooLarge(format!(
                    "upload is larger than {limit} bytes"
                )));
            }
            digest.update(chunk);
            file.write_all(chunk)?;
        }
    }
    file.sync_all()?;
    // The file stays (the caller owns it now).
    let _kept = guard.keep();
    Ok((tmp, digest.finish(), total))
}

pub(super) async fn upload(service: Arc<Service>, id: &str, req: Req) -> ApiResult<Response<Body>> {
    let (parts, body) = req.into_parts();
    // Who is uploading is known from the signed headers before a byte is spooled.
    let (owner, claimed) = crate::auth::authenticate_headers(&service, &parts)?;
    if service.storage.dataset(id)?.is_some() {
        return Err(ApiError::Conflict(format!(
            "dataset {id} already exists; datasets are immutable, upload a new id"
        )));
    }
    let _slot = service.uploads.take(owner).map_err(ApiError::Busy)?;
    let (tmp, digest, bytes) = spool(&service, body, service.config.max_upload_bytes).await?;
    let cleanup = tempfile::TempPath::try_from_path(tmp.clone())?;
    crate::auth::check_digest(&service, &parts, owner, &claimed, &digest)?;
    // Open the envelope as the enclave will: manifest signature, owner, key unwrap.
    let file = std::fs::File::open(&tmp)?;
    let owner_key = owner
        .verifying_key()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let reader = EnvelopeReader::open(file, service.identity.hpke_secret(), Some(&owner_key))
        .map_err(|e| ApiError::BadRequest(format!("envelope refused: {e}")))?;
    let manifest = reader.manifest();
    if manifest.dataset_id().to_string() != id {
        return Err(ApiError::BadRequest(format!(
            "the envelope is for dataset {}, not {id}",
            manifest.dataset_id()
        )));
    }
    let columns = reader
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().to_string()))
        .collect();
    let row = DatasetRow {
        id: id.to_string(),
        owner: owner.to_string(),
        manifest_digest: hex::encode(manifest.digest()),
        rows: reader.num_rows(),
        columns,
        created: crate::now(),
    };
    service.blobs.put_file("datasets", id, &tmp)?;
    // Moved into the blob store: nothing to remove.
    let _kept = cleanup.keep();
    service.record_write(
        Audience::Parties(vec![owner]),
        Some(owner),
        cleanroom_proto::Action::DatasetUploaded,
        id,
        json!({ "rows": row.rows, "bytes": bytes, "manifest_digest": row.manifest_digest }),
        RowWrite::Dataset(&row),
    )?;
    service.metrics.upload_bytes.inc_by(bytes);
    Ok(typed_response(
        StatusCode::CREATED,
        &cleanroom_proto::run::DatasetInfo {
            id: row.id,
            owner: row.owner,
            rows: Some(row.rows),
            columns: Some(row.columns),
            manifest_digest: row.manifest_digest,
            policy_version: None,
            created: row.created,
        },
    ))
}

pub(super) async fn policy(service: &Service, id: &str, req: Req) -> ApiResult<Response<Body>> {
    let party = crate::auth::signed_get(service, &req)?;
    let dataset = service.storage.dataset(id)?;
    let visible = match &dataset {
        Some(d) => may_see_schema(service, &d.owner, id, &party)?,
        None => false,
    };
    match service.storage.policy(id)? {
        Some(p) if visible => Ok(typed_response(StatusCode::OK, &p)),
        _ => Err(ApiError::NotFound(format!(
            "dataset {id} has no policy you may read"
        ))),
    }
}

/// The DP ledger of a dataset, to its owner and the researchers its policy grants: what the
/// whole budget is, what every run spent, and (for a researcher) their own share.
pub(super) async fn budget(service: &Service, id: &str, req: Req) -> ApiResult<Response<Body>> {
    let party = crate::auth::signed_get(service, &req)?;
    let policy = match service.storage.dataset(id)? {
        Some(d) if may_see_schema(service, &d.owner, id, &party)? => {
            trusted_policy(service, &d.owner, id)?
        }
        _ => None,
    };
    let Some(dp) = policy.and_then(|p| p.policy.dp) else {
        return Err(ApiError::NotFound(format!(
            "dataset {id} has no differential-privacy budget you may read"
        )));
    };
    let spent = service.ledger.spent(id, &party.to_string(), None);
    let remaining = dp.epsilon.minus(spent.total);
    let owner = service
        .storage
        .dataset(id)?
        .is_some_and(|d| d.owner == party.to_string());
    let yours = (!owner).then(|| cleanroom_proto::dp::DpShare {
        spent: spent.researcher,
        remaining: match dp.max_epsilon_per_researcher {
            Some(share) => share.minus(spent.researcher).min(remaining),
            None => remaining,
        },
    });
    let answer = cleanroom_proto::dp::DpBudget {
        dataset: id.to_string(),
        epsilon: dp.epsilon,
        spent: spent.total,
        remaining,
        max_epsilon_per_run: dp.max_epsilon_per_run,
        yours,
    };
    Ok(typed_response(StatusCode::OK, &answer))
}

/// `GET /v1/datasets/{id}/preview`: previews are differentially private and meant for anyone
/// deciding whether to ask for access, so any party with a key may read one.
pub(super) async fn preview(service: &Service, id: &str, req: Req) -> ApiResult<Response<Body>> {
    crate::auth::signed_get(service, &req)?;
    match service.storage.preview(id)? {
        Some(row) => Ok(typed_response(StatusCode::OK, &row.preview)),
        None => Err(ApiError::NotFound(format!(
            "dataset {id} has no preview; its owner may publish one"
        ))),
    }
}

/// `PUT /v1/datasets/{id}/preview`: the owner publishes (or replaces) the preview.
pub(super) async fn put_preview(
    service: Arc<Service>,
    id: &str,
    req: Req,
) -> ApiResult<Response<Body>> {
    let (signer, request): (_, cleanroom_proto::dp::PreviewRequest) =
        crate::auth::signed_json(&service, req, "preview request").await?;
    let dataset = id.to_string();
    let preview = tokio::task::spawn_blocking(move || {
        crate::previews::publish(&service, signer, &dataset, &request)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(typed_response(StatusCode::OK, &preview))
}

pub(super) async fn put_policy(
    service: Arc<Service>,
    id: &str,
    req: Req,
) -> ApiResult<Response<Body>> {
    let (signer, signed): (_, SignedPolicy) =
        crate::auth::signed_json(&service, req, "policy").await?;
    let dataset = service
        .storage
        .dataset(id)?
        .ok_or_else(|| ApiError::NotFound(format!("no dataset {id}")))?;
    if dataset.owner != signer.to_string() || signed.owner != signer {
        return Err(ApiError::Forbidden(format!(
            "only dataset {id}'s owner may set its policy"
        )));
    }
    signed
        .verify()
        .map_err(|e| ApiError::BadRequest(format!("policy signature: {e}")))?;
    signed
        .policy
        .validate()
        .map_err(|e| ApiError::BadRequest(format!("invalid policy: {e}")))?;
    if signed.policy.dataset != id {
        return Err(ApiError::BadRequest(format!(
            "the policy is for dataset {}, not {id}",
            signed.policy.dataset
        )));
    }
    let current = service
        .storage
        .policy(id)?
        .map(|p| p.policy.version)
        .unwrap_or(0);
    if signed.policy.version <= current {
        return Err(ApiError::Conflict(format!(
            "policy version {} is not newer than the current version {current}",
            signed.policy.version
        )));
    }
    let action = if signed.policy.grants.is_empty() {
        cleanroom_proto::Action::PolicyRevoked
    } else {
        cleanroom_proto::Action::PolicyGranted
    };
    service.record_write(
        Audience::Everyone,
        Some(signer),
        action,
        id,
        json!({
            "version": signed.policy.version,
            "digest": signed.digest(),
            "modules": signed.policy.grants.iter().map(|g| g.module.clone()).collect::<Vec<_>>(),
        }),
        RowWrite::Policy(&signed),
    )?;
    // Revocation reaches running and held runs, not only the queue.
    let svc = service.clone();
    let dataset = id.to_string();
    tokio::task::spawn_blocking(move || crate::runs::on_policy_change(&svc, &dataset))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(typed_response(
        StatusCode::OK,
        &PolicyStored {
            dataset: id.to_string(),
            version: signed.policy.version,
            digest: signed.digest(),
        },
    ))
}

pub(super) async fn upload_module(service: Arc<Service>, req: Req) -> ApiResult<Response<Body>> {
    let (parts, body) = req.into_parts();
    let (uploader, claimed) = crate::auth::authenticate_headers(&service, &parts)?;
    let _slot = service.uploads.take(uploader).map_err(ApiError::Busy)?;
    let limit = usize::try_from(service.config.max_module_bytes).unwrap_or(usize::MAX);
    let body = read_body(body, limit).await?;
    crate::auth::check_digest(
        &service,
        &parts,
        uploader,
        &claimed,
        &cleanroom_proto::httpsig::content_digest(&body),
    )?;
    let hash = hex::encode(Sha256::digest(&body));
    // Compile now so a malformed module is refused at upload with a clear
    // error, and cache its native code sealed.
    let svc = service.clone();
    let bytes = body.clone();
    let module = hash.clone();
    tokio::task::spawn_blocking(move || crate::modules::compile_and_cache(&svc, &module, &bytes))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    if !service.storage.has_module(&hash)? {
        service.blobs.put("modules", &hash, &body)?;
        let row = ModuleRow {
            module: hash.clone(),
            uploader,
            bytes: body.len() as u64,
            uploaded: crate::now(),
            source: None,
        };
        service.record_write(
            Audience::Everyone,
            Some(uploader),
            cleanroom_proto::Action::ModuleUploaded,
            &hash,
            json!({ "bytes": body.len() }),
            RowWrite::Module(&row),
        )?;
    }
    Ok(typed_response(
        StatusCode::CREATED,
        &ModuleStored {
            module: hash,
            bytes: body.len() as u64,
        },
    ))
}

/// Whether `party` may read what `uploader` uploaded for approval (a module, a pipeline): the
/// uploader, and the owner of any dataset here (owners read what they are asked to approve).
pub(super) fn may_read_upload(
    service: &Service,
    party: &PartyId,
    uploader: &PartyId,
    id: &str,
) -> ApiResult<bool> {
    if party == uploader {
        return Ok(true);
    }
    let me = party.to_string();
    let mut granted = false;
    for d in service.storage.datasets()?.iter().filter(|d| d.owner == me) {
        if trusted_policy(service, &d.owner, &d.id)?
            .is_some_and(|p| p.policy.grants.iter().any(|g| g.module == id))
        {
            granted = true;
            break;
        }
    }
    let requested = !granted && requested_of(service, party, id)?;
    Ok(cleanroom_policy::may_read_upload(
        party, uploader, granted, requested,
    ))
}

/// Whether a researcher asked `party` (as an input's owner) to grant `module`: an
/// `access.requested` entry about it addressed to them. A walk of the log: reading another
/// party's upload is rare.
fn requested_of(service: &Service, party: &PartyId, module: &str) -> ApiResult<bool> {
    const PAGE: u64 = 1000;
    let mut from = 0;
    loop {
        let page = service.storage.audit(from, PAGE)?;
        if page.iter().any(|s| {
            s.entry.action() == Some(cleanroom_proto::Action::AccessRequested)
                && s.entry.subject == module
                && s.entry.parties.as_ref().is_some_and(|p| p.contains(party))
        }) {
            return Ok(true);
        }
        if (page.len() as u64) < PAGE {
            return Ok(false);
        }
        from += PAGE;
    }
}

/// The module, if the signer of `req` may see it ([`may_read_upload`]). To anyone else it
/// looks missing.
fn visible_module(service: &Service, id: &str, req: &Req) -> ApiResult<ModuleRow> {
    let party = crate::auth::signed_get(service, req)?;
    match service.storage.module(id)? {
        Some(m) if may_read_upload(service, &party, &m.uploader, id)? => Ok(m),
        _ => Err(ApiError::NotFound(format!("no module {id}"))),
    }
}

pub(super) async fn module_info(
    service: &Service,
    id: &str,
    req: Req,
) -> ApiResult<Response<Body>> {
    let module = visible_module(service, id, &req)?;
    Ok(typed_response(StatusCode::OK, &module.info()))
}

pub(super) async fn module_source(
    service: &Service,
    id: &str,
    req: Req,
) -> ApiResult<Response<Body>> {
    match visible_module(service, id, &req)?.source {
        Some(source) => Ok(typed_response(StatusCode::OK, &source)),
        None => Err(ApiError::NotFound(format!(
            "module {id} has no source: its uploader has not attached one"
        ))),
    }
}

/// `PUT /v1/modules/{id}/source`: the uploader attaches the source once; it cannot be changed
/// afterwards (owners may already have approved the module having read it).
pub(super) async fn put_module_source(
    service: Arc<Service>,
    id: &str,
    req: Req,
) -> ApiResult<Response<Body>> {
    let (party, bundle): (_, SourceBundle) =
        crate::auth::signed_json(&service, req, "source bundle").await?;
    let mut module = service
        .storage
        .module(id)?
        .filter(|m| m.uploader == party)
        .ok_or_else(|| ApiError::NotFound(format!("no module {id} uploaded by you")))?;
    bundle
        .validate()
        .map_err(|e| ApiError::BadRequest(format!("source bundle: {e}")))?;
    if bundle.bytes() > MAX_SOURCE_BYTES {
        return Err(ApiError::TooLarge(format!(
            "the source bundle holds more than {MAX_SOURCE_BYTES} bytes of files"
        )));
    }
    let summary = bundle.summary();
    match &module.source {
        Some(existing) if *existing == bundle => {
            return Ok(typed_response(StatusCode::OK, &module.info()));
        }
        Some(_) => {
            return Err(ApiError::Conflict(format!(
                "module {id} already has a different source; a module's source never changes"
            )));
        }
        None => {}
    }
    module.source = Some(bundle);
    service.record_write(
        Audience::Everyone,
        Some(party),
        cleanroom_proto::Action::ModuleSource,
        id,
        json!({ "kind": summary.kind, "digest": summary.digest, "files": summary.files, "bytes": summary.bytes }),
        RowWrite::Module(&module),
    )?;
    Ok(typed_response(StatusCode::CREATED, &module.info()))
}
