//! The SNP attester, except the device call itself.

use sev::firmware::host::{CertTableEntry, CertType};

use crate::attester::Attester as _;
use crate::attester::simulation::{SimulationAttester, SimulationConfig};
use crate::attester::snp::{SnpAttester, assemble_evidence, sealing_key_request};
use crate::error::Error;
use crate::evidence::EnclaveKeys;

const KEYS: EnclaveKeys = EnclaveKeys {
    hpke_public_key: [1; 32],
    signing_public_key: [2; 32],
};

/// A firmware-shaped report and VCEK, made by the simulation signer.
fn firmware_output(nonce: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let config = SimulationConfig {
        measurement: [9; 48],
        host_data: [3; 32],
        local_secret: [4; 32],
        tcb: crate::attester::simulation::SIMULATED_TCB,
    };
    let evidence = SimulationAttester::new(config, true)
        .expect("opted in")
        .evidence(&KEYS, Some(nonce))
        .expect("evidence");
    (evidence.report, evidence.vek_cert)
}

#[test]
fn evidence_takes_the_vcek_from_the_certificate_table() {
    let (report, vcek) = firmware_output(b"n");
    let table = vec![
        CertTableEntry::new(CertType::ASK, vec![0xAA]),
        CertTableEntry::new(CertType::VCEK, vcek.clone()),
    ];
    let evidence = assemble_evidence(report.clone(), table, None, &KEYS, Some(b"n")).expect("ok");
    assert_eq!(evidence.report, report);
    assert_eq!(evidence.vek_cert, vcek);
    assert_eq!(evidence.ask_cert, Some(vec![0xAA]));
    assert_eq!(evidence.ark_cert, None);
    assert_eq!(evidence.deployment_digest, [3; 32]);
    assert_eq!(evidence.nonce.as_deref(), Some(&b"n"[..]));
}

#[test]
fn evidence_without_a_vcek_needs_the_operator_supplied_one() {
    let (report, vcek) = firmware_output(b"n");
    let missing = assemble_evidence(report.clone(), Vec::new(), None, &KEYS, Some(b"n"));
    assert!(
        missing
            .expect_err("no VCEK")
            .to_string()
            .contains("no VCEK certificate")
    );
    let supplied = assemble_evidence(report, Vec::new(), Some(&vcek), &KEYS, Some(b"n"));
    assert_eq!(supplied.expect("supplied").vek_cert, vcek);
}

#[test]
fn evidence_refuses_a_report_for_other_report_data() {
    let (report, vcek) = firmware_output(b"n");
    let table = vec![CertTableEntry::new(CertType::VCEK, vcek)];
    assert!(assemble_evidence(report, table, None, &KEYS, Some(b"other")).is_err());
}

#[test]
fn sealing_key_is_bound_to_measurement_and_policy_at_vmpl0() {
    let request = sealing_key_request();
    assert_eq!(
        request.get_root_key_select(),
        0,
        "rooted in the chip-unique VCEK"
    );
    assert!(request.guest_field_select.get_guest_policy());
    assert!(request.guest_field_select.get_measurement());
    assert!(!request.guest_field_select.get_tcb_version());
    assert_eq!(request.vmpl, 0);
}

#[test]
fn a_missing_device_is_a_clear_start_up_error() {
    if std::path::Path::new("/dev/sev-guest").exists() {
        return; // On a real SNP guest the device opens; nothing to assert here.
    }
    match SnpAttester::open() {
        Err(error @ Error::Device { .. }) => {
            assert!(error.to_string().contains("/dev/sev-guest"), "{error}");
        }
        other => panic!("expected a device error, got {other:?}"),
    }
}
