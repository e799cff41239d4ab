//! The SEV-SNP backend: `/dev/sev-guest` reports, extended-report certificates and the
//! firmware-derived sealing key.

use std::sync::Mutex;

use sev::firmware::guest::{DerivedKey, Firmware, GuestFieldSelect};
use sev::firmware::host::{CertTableEntry, CertType};

use crate::attester::{Attester, expand_sealing_key};
use crate::binding;
use crate::error::{Error, Result};
use crate::evidence::{EVIDENCE_FORMAT_VERSION, EnclaveKeys, Evidence};
use crate::report::{Report, SigningKey};

/// The guest-request message version (`None` fails without a launch mitigation vector).
const MESSAGE_VERSION: Option<u32> = Some(1);
/// Reports and keys are requested for VMPL 0, the only level the verifier accepts.
const VMPL: u32 = 0;
/// Salt separating the SNP sealing key from other uses of the derived key.
const SEALING_SALT: &[u8] = b"cleanroom/snp-derived-key";

/// Attests with the SEV-SNP guest device.
#[derive(Debug)]
pub struct SnpAttester {
    firmware: Mutex<Firmware>,
    vek_cert: Option<Vec<u8>>,
}

impl SnpAttester {
    /// Opens `/dev/sev-guest`. A missing device is an error: this host is not an SNP guest.
    pub fn open() -> Result<Self> {
        let firmware = Firmware::open().map_err(|e| Error::Device {
            context: "cannot open /dev/sev-guest: run cleanroomd in an SEV-SNP guest with the \
                      sev-guest driver loaded (simulation needs its own feature and flag)"
                .to_owned(),
            source: Box::new(e),
        })?;
        Ok(Self {
            firmware: Mutex::new(firmware),
            vek_cert: None,
        })
    }

    /// Uses this VCEK/VLEK (DER) when the host's extended report carries none
    /// (e.g. fetched by the operator from AMD's KDS).
    pub fn with_vek_cert(mut self, der: Vec<u8>) -> Self {
        self.vek_cert = Some(der);
        self
    }

    fn firmware(&self) -> std::sync::MutexGuard<'_, Firmware> {
        // A poisoned lock only means another request panicked; the device handle is still fine.
        self.firmware.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Attester for SnpAttester {
    fn evidence(&self, keys: &EnclaveKeys, nonce: Option<&[u8]>) -> Result<Evidence> {
        let report_data = binding::report_data(keys, nonce);
        let (report, table) = self
            .firmware()
            .get_ext_report(MESSAGE_VERSION, Some(report_data), Some(VMPL))
            .map_err(|e| Error::Device {
                context: "the SNP extended report request failed".to_owned(),
                source: Box::new(e),
            })?;
        assemble_evidence(
            report,
            table.unwrap_or_default(),
            self.vek_cert.as_deref(),
            keys,
            nonce,
        )
    }

    fn sealing_key(&self) -> Result<[u8; 32]> {
        let key = self
            .firmware()
            .get_derived_key(MESSAGE_VERSION, sealing_key_request())
            .map_err(|e| Error::Device {
                context: "the SNP derived-key request failed".to_owned(),
                source: Box::new(e),
            })?;
        Ok(expand_sealing_key(&key, SEALING_SALT))
    }
}

/// The derived-key request: rooted in the VCEK (chip-unique), mixing in the guest policy and
/// the launch measurement, for VMPL 0.
pub(crate) fn sealing_key_request() -> DerivedKey {
    let mut fields = GuestFieldSelect::default();
    fields.set_guest_policy(true);
    fields.set_measurement(true);
    DerivedKey::new(false, fields, VMPL, 0, 0, None)
}

/// Builds evidence from a firmware report and its certificate table.
pub(crate) fn assemble_evidence(
    report: Vec<u8>,
    table: Vec<CertTableEntry>,
    vek_override: Option<&[u8]>,
    keys: &EnclaveKeys,
    nonce: Option<&[u8]>,
) -> Result<Evidence> {
    let parsed = Report::from_bytes(&report)?;
    if parsed.report_data() != binding::report_data(keys, nonce) {
        return Err(Error::Crypto(
            "the firmware returned a report for other report_data".to_owned(),
        ));
    }
    let find = |kind: CertType| {
        table
            .iter()
            .find(|entry| entry.cert_type == kind)
            .map(|entry| entry.data().to_vec())
    };
    let (kind, name) = match parsed.signing_key()? {
        SigningKey::Vcek => (CertType::VCEK, "VCEK"),
        SigningKey::Vlek => (CertType::VLEK, "VLEK"),
    };
    let vek_cert = find(kind)
        .or_else(|| vek_override.map(<[u8]>::to_vec))
        .ok_or_else(|| {
            Error::Crypto(format!(
                "the extended report carries no {name} certificate; have the operator load it \
                 into the host's certificate table or pass it to cleanroomd"
            ))
        })?;
    Ok(Evidence {
        format: EVIDENCE_FORMAT_VERSION,
        report,
        vek_cert,
        ask_cert: find(CertType::ASK),
        ark_cert: find(CertType::ARK),
        keys: *keys,
        deployment_digest: parsed.host_data(),
        nonce: nonce.map(<[u8]>::to_vec),
    })
}
