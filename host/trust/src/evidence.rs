//! The evidence a host sends to a client: everything needed to verify it offline.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use serde_with::base64::Base64;
use serde_with::hex::Hex;

/// The current evidence format version.
pub const EVIDENCE_FORMAT_VERSION: u32 = 1;

/// The enclave's public identity, bound into the report's `report_data`.
#[serde_with::serde_as]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnclaveKeys {
    /// X25519 public key (HPKE, RFC 9180) that data keys are wrapped to.
    #[serde_as(as = "Hex")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = "hex"))]
    pub hpke_public_key: [u8; 32],
    /// Ed25519 verifying key that signs receipts and the audit log.
    #[serde_as(as = "Hex")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = "hex"))]
    pub signing_public_key: [u8; 32],
}

/// SEV-SNP attestation evidence, serialised as JSON.
#[serde_with::serde_as]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// Evidence format version, [`EVIDENCE_FORMAT_VERSION`].
    pub format: u32,
    /// The raw attestation report as the firmware returned it (1184 bytes, base64).
    #[serde_as(as = "Base64")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub report: Vec<u8>,
    /// The endorsement key certificate that signed the report: VCEK or VLEK (DER, base64).
    #[serde_as(as = "Base64")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub vek_cert: Vec<u8>,
    /// The intermediate certificate (ASK for a VCEK, ASVK for a VLEK; DER, base64).
    /// Optional for a VCEK: the verifier embeds AMD's ASKs.
    #[serde_as(as = "Option<Base64>")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Byte))]
    #[serde(default)]
    pub ask_cert: Option<Vec<u8>>,
    /// The root certificate (DER, base64). Optional: if present it must equal the pinned ARK.
    #[serde_as(as = "Option<Base64>")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Byte))]
    #[serde(default)]
    pub ark_cert: Option<Vec<u8>>,
    /// The enclave public keys bound into `report_data`.
    pub keys: EnclaveKeys,
    /// SHA-256 of the deployment configuration, which the report carries as `host_data`.
    #[serde_as(as = "Hex")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = "hex"))]
    pub deployment_digest: [u8; 32],
    /// The client's freshness nonce, bound into `report_data` (base64).
    #[serde_as(as = "Option<Base64>")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Byte))]
    #[serde(default)]
    pub nonce: Option<Vec<u8>>,
}

impl Evidence {
    /// Parses evidence from JSON, refusing unknown fields and unknown format versions.
    pub fn from_json(json: &[u8]) -> Result<Self> {
        let evidence: Self =
            serde_json::from_slice(json).map_err(|e| Error::malformed("evidence json", e))?;
        if evidence.format != EVIDENCE_FORMAT_VERSION {
            return Err(Error::malformed(
                "evidence json",
                format!(
                    "format {} is not supported (expected {EVIDENCE_FORMAT_VERSION}); upgrade the client",
                    evidence.format
                ),
            ));
        }
        Ok(evidence)
    }

    /// Serialises the evidence as JSON.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self).map_err(|e| Error::malformed("evidence json", e))
    }
}
