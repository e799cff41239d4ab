//! Analysis modules on hostile disk: the component bytes are checked against
//! their SHA-256 id before use, and the precompiled native code is cached
//! sealed (`Purpose::Artifact`, bound to the module id and the engine) so a
//! modified artifact is refused, never loaded.

use std::sync::Arc;

use cleanroom_runtime::Module;
use cleanroom_trust::Purpose;
use sha2::{Digest, Sha256};

use crate::app::Service;
use crate::error::{ApiError, ApiResult};

/// Associated data of a sealed artifact: module id and the runtime's version.
fn artifact_aad(module: &str) -> Vec<u8> {
    format!(
        "cleanroom/artifact/v1\nmodule={module}\nruntime={}\n",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes()
}

/// Compile freshly uploaded bytes and cache their sealed native code.
pub fn compile_and_cache(service: &Service, module: &str, bytes: &[u8]) -> ApiResult<Arc<Module>> {
    let compiled = service
        .runtime
        .load(bytes)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    match compiled.serialize() {
        Ok(native) => {
            let sealed = service
                .sealer
                .seal(Purpose::Artifact, &artifact_aad(module), &native)
                .map_err(|e| ApiError::Internal(format!("sealing artifact: {e}")))?;
            service.blobs.put("artifacts", module, &sealed)?;
        }
        Err(e) => tracing::warn!(module, "cannot serialize compiled module: {e}"),
    }
    Ok(compiled)
}

/// The compiled module for `module`: from the sealed artifact if it opens,
/// else recompiled from the component bytes after checking their hash.
pub fn load(service: &Service, module: &str) -> ApiResult<Arc<Module>> {
    let digest: [u8; 32] = hex::decode(module)
        .ok()
        .and_then(|d| d.try_into().ok())
        .ok_or_else(|| ApiError::Internal(format!("invalid module id {module}")))?;
    // Loaded before (by bytes checked against the hash, or sealed native code): no storage
    // round trip, which on object storage costs tens of milliseconds.
    if let Some(loaded) = service.runtime.cached(&digest) {
        return Ok(loaded);
    }
    if let Ok(Some(sealed)) = service.blobs.get("artifacts", module) {
        match service
            .sealer
            .open(Purpose::Artifact, &artifact_aad(module), &sealed)
        {
            // SAFETY: the native code was produced by this runtime's
            // `serialize` and sealed by this enclave; a modified artifact
            // does not open (AEAD), so it is never deserialized.
            #[allow(unsafe_code)]
            Ok(native) => match unsafe { service.runtime.load_precompiled(digest, &native) } {
                Ok(m) => return Ok(m),
                Err(e) => {
                    tracing::warn!(module, "sealed artifact does not load ({e}); recompiling")
                }
            },
            Err(e) => tracing::error!(
                module,
                "refusing a sealed artifact that does not open ({e}); recompiling"
            ),
        }
    }
    let bytes = service
        .blobs
        .get("modules", module)?
        .ok_or_else(|| ApiError::Internal(format!("module {module} is missing from storage")))?;
    if hex::encode(Sha256::digest(&bytes)) != module {
        return Err(ApiError::Internal(format!(
            "stored module {module} does not match its hash: refusing to run tampered code"
        )));
    }
    compile_and_cache(service, module, &bytes)
}
