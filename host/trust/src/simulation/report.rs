//! Building and signing simulated SEV-SNP reports (same layout as real ones).

use p384::ecdsa::signature::Signer as _;
use sev::firmware::guest::{AttestationReport, GuestPolicy, Version};
use sev::firmware::host::TcbVersion;
use sev::parser::ByteParser as _;

use crate::error::{Error, Result};
use crate::report::REPORT_LEN;
use crate::tcb::Tcb;

/// Report version 3: has CPUID fields, so the generation is explicit.
const SIMULATED_VERSION: u32 = 3;
/// CPUID family/model/stepping of a Milan part (matches the simulation PKI's generation).
const SIMULATED_CPUID: (u8, u8, u8) = (0x19, 0x01, 0x01);
/// Guest policy: SMT allowed, reserved bit 17 set, debug and migration agent off.
pub(crate) const SIMULATED_GUEST_POLICY: u64 = 0x3_0000;
const SIGNED_LEN: usize = 0x2A0;
const SCALAR_FIELD_LEN: usize = 72;

/// The fields a simulated report is built from.
#[derive(Debug, Clone)]
pub(crate) struct ReportFields {
    pub(crate) report_data: [u8; 64],
    pub(crate) measurement: [u8; 48],
    pub(crate) host_data: [u8; 32],
    pub(crate) chip_id: [u8; 64],
    pub(crate) tcb: Tcb,
    pub(crate) vmpl: u32,
    pub(crate) guest_policy: u64,
}

/// Encodes the report and signs it with `key`, as the AMD-SP would with the VCEK.
pub(crate) fn sign_report(fields: &ReportFields, key: &p384::ecdsa::SigningKey) -> Result<Vec<u8>> {
    let tcb = TcbVersion::new(
        fields.tcb.fmc,
        fields.tcb.bootloader,
        fields.tcb.tee,
        fields.tcb.snp,
        fields.tcb.microcode,
    );
    let (family, model, stepping) = SIMULATED_CPUID;
    let report = AttestationReport {
        version: SIMULATED_VERSION,
        policy: GuestPolicy::from(fields.guest_policy),
        vmpl: fields.vmpl,
        sig_algo: 1,
        current_tcb: tcb,
        report_data: fields.report_data,
        measurement: fields.measurement,
        host_data: fields.host_data,
        reported_tcb: tcb,
        cpuid_fam_id: Some(family),
        cpuid_mod_id: Some(model),
        cpuid_step: Some(stepping),
        chip_id: fields.chip_id,
        committed_tcb: tcb,
        current: Version::new(1, 55, 0),
        committed: Version::new(1, 55, 0),
        launch_tcb: tcb,
        ..Default::default()
    };
    let mut raw = report
        .to_bytes()
        .map_err(|e| Error::Crypto(format!("simulation: cannot encode the report: {e}")))?
        .to_vec();
    debug_assert_eq!(raw.len(), REPORT_LEN);
    let signature: p384::ecdsa::Signature = key.sign(&raw[..SIGNED_LEN]);
    let (r, s) = signature.split_bytes();
    write_le(&mut raw[SIGNED_LEN..SIGNED_LEN + SCALAR_FIELD_LEN], &r);
    write_le(
        &mut raw[SIGNED_LEN + SCALAR_FIELD_LEN..SIGNED_LEN + 2 * SCALAR_FIELD_LEN],
        &s,
    );
    Ok(raw)
}

/// Writes a big-endian scalar into a zeroed little-endian field.
fn write_le(field: &mut [u8], big_endian: &[u8]) {
    for (dst, src) in field.iter_mut().zip(big_endian.iter().rev()) {
        *dst = *src;
    }
}
