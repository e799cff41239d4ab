//! Our wrapper around `sev`'s attestation report: raw bytes kept, strict parsing.
//!
//! `sev` marks its eagerly parsed `AttestationReport` for replacement, and it verifies a
//! re-encoding of the report rather than the bytes the firmware signed. This type keeps the
//! raw bytes, checks that re-encoding reproduces them, and exposes only what we verify.

use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser as _;

use crate::error::{Check, Error, Result};
use crate::tcb::{Generation, Tcb};

/// Size of an SEV-SNP attestation report.
pub const REPORT_LEN: usize = 1184;
/// The report bytes covered by the signature (everything before the signature).
const SIGNED_LEN: usize = 0x2A0;
/// Report versions this verifier knows the layout of.
const KNOWN_VERSIONS: [u32; 4] = [2, 3, 4, 5];
/// The only signature algorithm SNP uses: ECDSA P-384 with SHA-384.
const SIG_ALGO_ECDSA_P384_SHA384: u32 = 1;
/// P-384 scalars are 48 bytes; the report stores each in a 72-byte little-endian field.
pub(crate) const SCALAR_LEN: usize = 48;
const SCALAR_FIELD_LEN: usize = 72;

/// Which key signed a report (the report's KEY_INFO.SIGNING_KEY).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SigningKey {
    /// Versioned Chip Endorsement Key: unique to the chip and its TCB.
    Vcek,
    /// Versioned Loaded Endorsement Key: loaded by a cloud provider, not chip-unique.
    Vlek,
}

/// A parsed SEV-SNP attestation report whose encoding has been checked (not its signature).
#[derive(Debug, Clone)]
pub struct Report {
    raw: Box<[u8; REPORT_LEN]>,
    parsed: AttestationReport,
}

impl Report {
    /// Parses raw report bytes; fails with [`Check::Version`], [`Check::SignaturePadding`]
    /// or [`Check::ReencodedBytes`] on anything this verifier does not understand exactly.
    pub fn from_bytes(raw: &[u8]) -> Result<Self> {
        let raw: Box<[u8; REPORT_LEN]> =
            raw.to_vec()
                .into_boxed_slice()
                .try_into()
                .map_err(|raw: Box<[u8]>| {
                    Error::malformed(
                        "attestation report",
                        format!("expected {REPORT_LEN} bytes, got {}", raw.len()),
                    )
                })?;
        let version = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
        if !KNOWN_VERSIONS.contains(&version) {
            return Err(Error::check(
                Check::Version,
                format!("report version {version} is unknown (known: {KNOWN_VERSIONS:?})"),
            ));
        }
        check_signature_padding(&raw[SIGNED_LEN..])?;
        let parsed = AttestationReport::from_bytes(&raw[..])
            .map_err(|e| Error::malformed("attestation report", e))?;
        if parsed.sig_algo != SIG_ALGO_ECDSA_P384_SHA384 {
            return Err(Error::check(
                Check::Version,
                format!("signature algorithm {} is unknown", parsed.sig_algo),
            ));
        }
        let reencoded = parsed
            .to_bytes()
            .map_err(|e| Error::check(Check::ReencodedBytes, format!("cannot re-encode: {e}")))?;
        if reencoded[..] != raw[..] {
            let first = reencoded
                .iter()
                .zip(raw.iter())
                .position(|(a, b)| a != b)
                .unwrap_or_default();
            return Err(Error::check(
                Check::ReencodedBytes,
                format!(
                    "re-encoding differs from the raw report at offset {first:#x} (reserved bytes set?)"
                ),
            ));
        }
        Ok(Self { raw, parsed })
    }

    /// The raw report bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw[..]
    }

    /// The bytes the signature covers.
    pub(crate) fn signed_bytes(&self) -> &[u8] {
        &self.raw[..SIGNED_LEN]
    }

    /// The signature as big-endian (r, s) scalars.
    pub(crate) fn signature_scalars(&self) -> ([u8; SCALAR_LEN], [u8; SCALAR_LEN]) {
        let sig = &self.raw[SIGNED_LEN..];
        let be = |le: &[u8]| {
            let mut out = [0u8; SCALAR_LEN];
            for (dst, src) in out.iter_mut().zip(le[..SCALAR_LEN].iter().rev()) {
                *dst = *src;
            }
            out
        };
        (be(&sig[..SCALAR_FIELD_LEN]), be(&sig[SCALAR_FIELD_LEN..]))
    }

    /// Report format version.
    pub fn version(&self) -> u32 {
        self.parsed.version
    }

    /// Which key signed the report.
    pub fn signing_key(&self) -> Result<SigningKey> {
        match self.parsed.key_info.signing_key() {
            0 => Ok(SigningKey::Vcek),
            1 => Ok(SigningKey::Vlek),
            other => Err(Error::check(
                Check::Signature,
                format!("report signing key {other} is neither VCEK (0) nor VLEK (1)"),
            )),
        }
    }

    /// The CPU generation per CPUID (reports of version 3 and later only).
    pub(crate) fn cpuid_generation(&self) -> Option<Generation> {
        let (family, model) = (self.parsed.cpuid_fam_id?, self.parsed.cpuid_mod_id?);
        sev::Generation::identify_cpu(family, model)
            .ok()
            .and_then(Generation::from_sev)
    }

    /// The guest policy bits.
    pub fn policy(&self) -> u64 {
        self.parsed.policy.into()
    }

    /// Whether the guest policy allows debugging.
    pub fn debug_allowed(&self) -> bool {
        self.parsed.policy.debug_allowed()
    }

    /// Whether the guest policy allows a migration agent.
    pub fn migration_agent_allowed(&self) -> bool {
        self.parsed.policy.migrate_ma_allowed()
    }

    /// The VMPL that requested the report.
    pub fn vmpl(&self) -> u32 {
        self.parsed.vmpl
    }

    /// The 64 bytes of guest-supplied data.
    pub fn report_data(&self) -> [u8; 64] {
        self.parsed.report_data
    }

    /// The launch measurement.
    pub fn measurement(&self) -> [u8; 48] {
        self.parsed.measurement
    }

    /// The host-supplied data fixed at launch.
    pub fn host_data(&self) -> [u8; 32] {
        self.parsed.host_data
    }

    /// The TCB the VCEK was derived for.
    pub fn reported_tcb(&self) -> Tcb {
        self.parsed.reported_tcb.into()
    }

    /// The chip identifier.
    pub fn chip_id(&self) -> [u8; 64] {
        self.parsed.chip_id
    }
}

/// The unused high bytes of r and s and the reserved tail of the signature must be zero.
fn check_signature_padding(signature: &[u8]) -> Result<()> {
    let padding = [
        &signature[SCALAR_LEN..SCALAR_FIELD_LEN],
        &signature[SCALAR_FIELD_LEN + SCALAR_LEN..2 * SCALAR_FIELD_LEN],
        &signature[2 * SCALAR_FIELD_LEN..],
    ];
    if padding.iter().any(|bytes| bytes.iter().any(|b| *b != 0)) {
        return Err(Error::check(
            Check::SignaturePadding,
            "the report signature has non-zero padding bytes",
        ));
    }
    Ok(())
}
