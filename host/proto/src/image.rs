//! The image manifest: what an operator publishes beside a host image so that anyone can
//! recompute its SEV-SNP launch measurement from the inputs, and pin it
//! (`cleanroom attest verify --manifest FILE`).
//!
//! The operator is not trusted: the signature says who published the manifest, not that the
//! measurement is right. What makes it right is that the measurement is a function of the
//! listed inputs (`cleanroom image measure` recomputes it) and the inputs are reproducible.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::canonical::{canonical_bytes, sha256_hex};
use crate::error::{Error, Result};
use crate::keys::{Identity, PartyId, verify_signature};
use crate::policy::decode_signature;

/// Domain-separation prefix of a manifest's signed bytes.
pub const IMAGE_MANIFEST_DOMAIN: &[u8] = b"cleanroom/image-manifest/v1\n";

/// One input file of the launch: its name and digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FileDigest {
    /// The file name as published.
    pub name: String,
    /// SHA-256 hex of its bytes.
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
}

/// Everything the launch measurement is computed from, and the measurement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ImageManifest {
    /// The SNP launch measurement (96 lowercase hex): what owners and researchers pin.
    pub measurement: String,
    /// `production`, or `development` (boots the simulation backend: never trust it).
    pub variant: String,
    /// The firmware (OVMF built for SEV-SNP direct boot).
    pub firmware: FileDigest,
    /// The kernel, measured through the firmware's hash table.
    pub kernel: Option<FileDigest>,
    /// The initramfs, measured the same way.
    pub initrd: Option<FileDigest>,
    /// The kernel command line, measured the same way.
    pub cmdline: Option<String>,
    /// vCPUs at launch (each one's VMSA is measured).
    pub vcpus: u32,
    /// The vCPU model (`epyc-v4`, `epyc-milan`, ...), whose signature is in the VMSA.
    pub vcpu_type: String,
    /// SEV features enabled in the VMSA (`0x1` = SNP active).
    pub guest_features: u64,
    /// Versions of what built the inputs (toolchain, packages), for rebuilding them.
    #[serde(default)]
    pub built_with: BTreeMap<String, String>,
    /// When the manifest was written (Unix seconds).
    pub issued_at: u64,
}

impl ImageManifest {
    /// The bytes an operator signs: [`IMAGE_MANIFEST_DOMAIN`] and canonical JSON.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        canonical_bytes(IMAGE_MANIFEST_DOMAIN, self)
    }

    /// The measurement's 48 bytes, or an error naming what is wrong with the text.
    pub fn measurement_bytes(&self) -> Result<[u8; 48]> {
        let mut out = [0u8; 48];
        if self.measurement.len() != 96 || self.measurement.bytes().any(|b| b.is_ascii_uppercase())
        {
            return Err(Error::malformed(
                "measurement",
                "expected 96 lowercase hex characters",
            ));
        }
        hex::decode_to_slice(&self.measurement, &mut out)
            .map_err(|e| Error::malformed("measurement", e))?;
        Ok(out)
    }
}

/// A manifest with its publisher's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignedImageManifest {
    /// The manifest.
    pub manifest: ImageManifest,
    /// Who published it (the operator's party id).
    pub operator: PartyId,
    /// Hex Ed25519 signature over [`ImageManifest::canonical_bytes`].
    pub signature: String,
}

impl SignedImageManifest {
    /// Signs `manifest` as `operator`.
    pub fn sign(manifest: ImageManifest, operator: &Identity) -> Self {
        let signature = hex::encode(operator.sign(&manifest.canonical_bytes()));
        Self {
            manifest,
            operator: operator.party(),
            signature,
        }
    }

    /// Checks the signature against `operator` and the measurement's form.
    pub fn verify(&self) -> Result<()> {
        let sig = decode_signature(&self.signature)?;
        verify_signature(&self.operator, &self.manifest.canonical_bytes(), &sig).map_err(|_| {
            Error::BadSignature {
                what: "image manifest",
            }
        })?;
        self.manifest.measurement_bytes().map(|_| ())
    }

    /// SHA-256 hex of the signed bytes.
    pub fn digest(&self) -> String {
        sha256_hex(&self.manifest.canonical_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> ImageManifest {
        ImageManifest {
            measurement: "ab".repeat(48),
            variant: "production".into(),
            firmware: FileDigest {
                name: "OVMF.amdsev.fd".into(),
                sha256: "cd".repeat(32),
                bytes: 4 << 20,
            },
            kernel: None,
            initrd: None,
            cmdline: Some("console=ttyS0".into()),
            vcpus: 2,
            vcpu_type: "epyc-v4".into(),
            guest_features: 1,
            built_with: BTreeMap::new(),
            issued_at: 1_800_000_000,
        }
    }

    #[test]
    fn a_signed_manifest_verifies_and_any_change_breaks_it() {
        let operator = Identity::generate();
        let signed = SignedImageManifest::sign(manifest(), &operator);
        signed.verify().unwrap();
        let mut moved = signed.clone();
        moved.manifest.measurement = "ef".repeat(48);
        assert!(moved.verify().is_err(), "a swapped measurement verifies");
        let mut more = signed.clone();
        more.manifest.vcpus = 4;
        assert!(more.verify().is_err());
        let mut other = signed;
        other.operator = Identity::generate().party();
        assert!(other.verify().is_err());
    }

    #[test]
    fn a_malformed_measurement_is_refused() {
        let operator = Identity::generate();
        let mut m = manifest();
        m.measurement = "AB".repeat(48);
        assert!(SignedImageManifest::sign(m, &operator).verify().is_err());
    }
}
