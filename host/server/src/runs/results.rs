//! Results and receipts: outputs sealed to the researcher, the enclave-signed receipt, held
//! outputs sealed for reviewers.

use super::*;

/// Seal what leaves to the researcher: `Release` outputs, and `Hold` ones once reviewed.
pub(super) fn seal_for_researcher(
    run: &RunRow,
    decided: &[Decided],
    reviewed: bool,
) -> ApiResult<Vec<SealedOutput>> {
    let recipient = run.request.researcher_hpke_key().map_err(|e| {
        ApiError::Internal(format!("researcher key was validated at admission: {e}"))
    })?;
    let mut sealed = Vec::new();
    for d in decided {
        let leaves = match d.report.disposition {
            Disposition::Release => true,
            Disposition::Hold => reviewed,
            Disposition::Refuse => false,
        };
        if !leaves {
            continue;
        }
        let context = output_context(&run.id, "result", d.report.index);
        let ct = seal_output(&recipient, &context, &d.output)
            .map_err(|e| ApiError::Internal(format!("encrypting an output: {e}")))?;
        sealed.push(SealedOutput {
            index: d.report.index,
            sealed: B64.encode(ct),
        });
    }
    Ok(sealed)
}

/// Write the researcher's result bundle durably (before any state says it exists) and
/// return the receipt's view of it: digests over ciphertext only.
pub(super) fn write_result(
    service: &Service,
    run: &RunRow,
    sealed: Vec<SealedOutput>,
) -> ApiResult<Vec<ReceiptOutput>> {
    if sealed.is_empty() {
        return Ok(vec![]);
    }
    let kinds: BTreeMap<u32, OutputKind> = run.outputs.iter().map(|r| (r.index, r.kind)).collect();
    let receipt_outputs = sealed
        .iter()
        .map(|s| ReceiptOutput {
            index: s.index,
            kind: kinds.get(&s.index).copied().unwrap_or(OutputKind::File),
            ciphertext_sha256: ciphertext_digest(&s.sealed),
        })
        .collect();
    let blob = StoredResult { outputs: sealed };
    let bytes = serde_json::to_vec(&blob).map_err(|e| ApiError::Internal(e.to_string()))?;
    service.blobs.put("results", &run.id, &bytes)?;
    Ok(receipt_outputs)
}

/// SHA-256 hex of a sealed output's ciphertext (given base64).
pub(super) fn ciphertext_digest(sealed_b64: &str) -> String {
    hex::encode(Sha256::digest(B64.decode(sealed_b64).unwrap_or_default()))
}

/// The result blob: sealed outputs; the receipt comes from the run row.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StoredResult {
    pub(super) outputs: Vec<SealedOutput>,
}

/// The researcher's bundle of a released (or failed, with released error text) run.
pub fn result_bundle(service: &Service, run: &RunRow) -> ApiResult<ResultBundle> {
    let receipt = run
        .receipt
        .clone()
        .ok_or_else(|| ApiError::Internal("a final run has a receipt".into()))?;
    // A receipt that names no outputs has no result blob to read (one a fenced-out worker
    // left behind is nobody's).
    let stored = if receipt.receipt.outputs.is_empty() {
        None
    } else {
        service.blobs.get("results", &run.id)?
    };
    let outputs = match stored {
        Some(bytes) => {
            let stored: StoredResult = serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::Internal(format!("corrupt result: {e}")))?;
            stored.outputs
        }
        None if receipt.receipt.outputs.is_empty() => vec![],
        None => {
            return Err(ApiError::Tampered(format!(
                "the result of run {} is missing from storage",
                run.id
            )));
        }
    };
    // The receipt names the ciphertext of every output: a swapped or edited blob is refused.
    let expected: Vec<&str> = receipt
        .receipt
        .outputs
        .iter()
        .map(|o| o.ciphertext_sha256.as_str())
        .collect();
    let found: Vec<String> = outputs
        .iter()
        .map(|o| ciphertext_digest(&o.sealed))
        .collect();
    if expected != found.iter().map(String::as_str).collect::<Vec<_>>() {
        return Err(ApiError::Internal(
            "the stored result does not match the receipt (tampered storage?)".into(),
        ));
    }
    let entry = service
        .storage
        .last_write(&crate::store::RowWrite::Run(run).row())?
        .ok_or_else(|| ApiError::Internal(format!("run {} was never logged", run.id)))?;
    let logged = service
        .audit
        .logged(entry, service.identity.signing_key())?;
    Ok(ResultBundle {
        run: run.id.clone(),
        receipt,
        outputs,
        logged,
    })
}

/// A held output, sealed at rest under the enclave's state key.
#[serde_with::serde_as]
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HeldOutput {
    pub(super) report: OutputReport,
    pub(super) name: String,
    #[serde_as(as = "serde_with::base64::Base64")]
    pub(super) bytes: Vec<u8>,
    pub(super) reviewable: bool,
}

pub(super) fn held_outputs(service: &Service, run: &RunRow) -> ApiResult<Vec<Decided>> {
    let sealed = service.blobs.get("held", &run.id)?.ok_or_else(|| {
        ApiError::Tampered(format!("the held outputs of run {} are missing", run.id))
    })?;
    let plain = service
        .sealer
        .open(HELD_PURPOSE, run.id.as_bytes(), &sealed)
        .map_err(|e| ApiError::Internal(format!("held outputs do not unseal (tampered?): {e}")))?;
    let held: Vec<HeldOutput> =
        serde_json::from_slice(&plain).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(held
        .into_iter()
        .map(|h| Decided {
            output: PlainOutput {
                name: h.name,
                kind: h.report.kind,
                bytes: h.bytes,
            },
            report: h.report,
            reviewable: h.reviewable,
        })
        .collect())
}

/// What a pending reviewer is asked to release, sealed to the key they signed for.
pub fn held_bundle(
    service: &Service,
    run: &RunRow,
    reviewer_hpke: &[u8; 32],
) -> ApiResult<HeldBundle> {
    let decided = held_outputs(service, run)?;
    let mut outputs = Vec::new();
    for d in decided.iter().filter(|d| d.reviewable) {
        let context = output_context(&run.id, "review", d.report.index);
        let ct = seal_output(reviewer_hpke, &context, &d.output)
            .map_err(|e| ApiError::Internal(format!("encrypting for review: {e}")))?;
        outputs.push(SealedOutput {
            index: d.report.index,
            sealed: B64.encode(ct),
        });
    }
    Ok(HeldBundle {
        run: run.id.clone(),
        reports: decided.into_iter().map(|d| d.report).collect(),
        outputs,
        signature: String::new(),
    }
    .sign(service.identity.signing_key()))
}
