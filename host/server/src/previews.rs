//! Dataset previews: computed once inside the enclave under the dataset's DP terms, charged
//! to its ledger, stored in a MAC'd row and served to any party without spending again.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use cleanroom_proto::PartyId;
use cleanroom_proto::dp::{Epsilon, Preview, PreviewRequest};
use cleanroom_runtime::TableSource;
use serde_json::json;

use crate::app::Service;
use crate::error::{ApiError, ApiResult};
use crate::events::Audience;
use crate::store::{PreviewRow, RowWrite};
use crate::tables::EnvelopeTable;

/// Compute and publish a preview of `dataset` for its owner `owner`.
pub fn publish(
    service: &Service,
    owner: PartyId,
    dataset: &str,
    request: &PreviewRequest,
) -> ApiResult<Preview> {
    let row = service
        .storage
        .dataset(dataset)?
        .ok_or_else(|| ApiError::NotFound(format!("no dataset {dataset}")))?;
    if row.owner != owner.to_string() {
        return Err(ApiError::Forbidden(format!(
            "only dataset {dataset}'s owner may publish its preview"
        )));
    }
    if request.epsilon == Epsilon::ZERO
        || !(1..=PreviewRequest::MAX_ROWS).contains(&request.synthetic_rows)
    {
        return Err(ApiError::BadRequest(format!(
            "a preview needs ε above zero and 1 to {} synthetic rows",
            PreviewRequest::MAX_ROWS
        )));
    }
    // The store is the operator's: only a policy the owner signed for this dataset counts.
    let signed = service
        .storage
        .policy(dataset)?
        .filter(|p| cleanroom_policy::trusted(p, dataset, &owner).is_some())
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "dataset {dataset} has no policy signed by its owner: publish one with DP terms \
                 first"
            ))
        })?;
    let Some(dp) = signed.policy.dp.clone() else {
        return Err(ApiError::BadRequest(format!(
            "dataset {dataset}'s policy has no DP terms: a preview needs the privacy unit, the \
             budget it is charged to and the columns' public domains (policy `dp`)"
        )));
    };
    // Check and charge under the transition lock, so no run starts on the same budget between.
    let _guard = crate::runs::transitions(service)?;
    let spent = service.ledger.spent(dataset, "", None);
    if spent.total.plus(request.epsilon) > dp.epsilon {
        return Err(ApiError::Forbidden(format!(
            "dataset {dataset} has ε = {} left of its {}; the preview asks for {} \
             (dp_budget_exhausted)",
            dp.epsilon.minus(spent.total),
            dp.epsilon,
            request.epsilon
        )));
    }
    let owner_key = owner
        .verifying_key()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let table = EnvelopeTable::open(
        service.blobs.clone(),
        *service.identity.hpke_secret(),
        owner_key,
        &signed.policy.hidden_columns,
        dataset,
        &row.manifest_digest,
    )
    .map_err(|e| ApiError::Internal(format!("dataset {dataset}: {e}")))?;
    let parts = cleanroom_policy::preview::compute(
        &table.schema(),
        table.batches(),
        &dp,
        request.epsilon,
        request.synthetic_rows as usize,
        &mut rand::thread_rng(),
    )
    .map_err(|e| ApiError::Internal(format!("preview of {dataset}: {e}")))?;
    let mut ipc = Vec::new();
    {
        let batch = &parts.synthetic;
        let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut ipc, &batch.schema())
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        w.write(batch)
            .and_then(|_| w.finish())
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    }
    let preview = Preview {
        dataset: dataset.to_string(),
        epsilon: request.epsilon,
        created: service.clock.now(),
        schema: parts.schema,
        people: parts.people,
        columns: parts.columns,
        pairs: parts.pairs,
        synthetic: B64.encode(&ipc),
    };
    // What earlier previews spent comes from the enclave's ledger (rebuilt at start from
    // rows the audit log binds), never from the stored row: the operator can delete or roll
    // back a row underneath a running server, and that must not give ε back.
    let before = service.ledger.preview_spent(dataset);
    let row = PreviewRow {
        preview,
        spent: before.plus(request.epsilon),
    };
    service.record_write(
        Audience::Everyone,
        Some(owner),
        cleanroom_proto::Action::PreviewPublished,
        dataset,
        json!({ "epsilon": request.epsilon, "synthetic_rows": request.synthetic_rows }),
        RowWrite::Preview(&row),
    )?;
    service.ledger.record_preview(&row);
    Ok(row.preview)
}
