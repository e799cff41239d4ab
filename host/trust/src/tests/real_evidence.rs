//! Genuine AMD-signed evidence verifies against AMD's pinned roots; any tampering fails with
//! the check that caught it; the simulation root cannot vouch for it.

use super::{VCEK_DER, VCEK_REPORT, VLEK_DER, VLEK_REPORT, assert_check, flip};
use crate::certs::Cert;
use crate::endorsement::{self, Certs};
use crate::error::Check;
use crate::evidence::{EVIDENCE_FORMAT_VERSION, EnclaveKeys, Evidence};
use crate::policy::{Measurement, Policy};
use crate::report::{Report, SigningKey};
use crate::roots;
use crate::tcb::{Generation, Tcb};
use crate::verifier::{Verifier, verify_report};

const MILAN_TCB: Tcb = Tcb {
    bootloader: 3,
    tee: 0,
    snp: 8,
    microcode: 115,
    fmc: None,
};

#[test]
fn genuine_vcek_report_verifies_against_amd_roots() {
    let claims = verify_report(VCEK_REPORT, VCEK_DER, None, false).expect("genuine report");
    assert_eq!(claims.generation, Generation::Milan);
    assert_eq!(claims.signing_key, SigningKey::Vcek);
    assert!(!claims.simulated);
    assert_eq!(claims.report_version, 2);
    assert_eq!(claims.reported_tcb, MILAN_TCB);
    assert_eq!(claims.vmpl, 0);
    assert_eq!(&claims.chip_id[..4], &[0xc3, 0x84, 0x27, 0xa3]);
}

#[test]
fn genuine_vcek_report_verifies_with_amd_ask_and_ark_in_evidence() {
    let milan = &roots::pinned()[0];
    let certs = Certs {
        vek: VCEK_DER,
        ask: Some(milan.ask.der()),
        ark: Some(milan.ark.der()),
    };
    let report = Report::from_bytes(VCEK_REPORT).expect("genuine report parses");
    endorsement::verify(&report, certs, roots::pinned(), false).expect("genuine chain");
}

#[test]
fn genuine_vlek_report_signature_and_tcb_verify() {
    let report = Report::from_bytes(VLEK_REPORT).expect("genuine VLEK report parses");
    assert_eq!(report.signing_key().expect("known key"), SigningKey::Vlek);
    let vlek = Cert::from_der(VLEK_DER, "VLEK").expect("VLEK decodes");
    assert!(vlek.subject().contains("CN=SEV-VLEK"));
    assert!(vlek.hwid().is_none(), "a VLEK has no hwID");
    let key = vlek.ecdsa_key().expect("P-384 key");
    endorsement::verify_signature(&report, &key, "VLEK").expect("VLEK signed the report");
    endorsement::check_tcb(&report, &vlek, "VLEK").expect("VLEK TCB matches");
    let tampered = Report::from_bytes(&flip(VLEK_REPORT, 0x90, 0)).expect("still parses");
    assert_check(
        endorsement::verify_signature(&tampered, &key, "VLEK"),
        Check::Signature,
    );
}

#[test]
fn vlek_report_without_its_asvk_fails_closed() {
    assert_check(
        verify_report(VLEK_REPORT, VLEK_DER, None, false),
        Check::CertChain,
    );
    // An ASK is not an ASVK: it did not sign the VLEK.
    let milan_ask = roots::pinned()[0].ask.der();
    assert_check(
        verify_report(VLEK_REPORT, VLEK_DER, Some(milan_ask), false),
        Check::CertChain,
    );
}

#[test]
fn flipped_bits_in_the_signed_report_fail() {
    let cases = [
        (0x00, 2, Check::Version),         // version 2 -> 6
        (0x30, 0, Check::Signature),       // vmpl
        (0x50, 0, Check::Signature),       // report_data
        (0x90, 7, Check::Signature),       // measurement
        (0xC0, 3, Check::Signature),       // host_data
        (0x187, 0, Check::Signature),      // reported_tcb microcode
        (0x182, 0, Check::ReencodedBytes), // reserved byte inside reported_tcb
        (0x1A0, 1, Check::Signature),      // chip_id
        (0x0A, 3, Check::Signature),       // guest policy bit 19: debug allowed
    ];
    for (offset, bit, check) in cases {
        let tampered = flip(VCEK_REPORT, offset, bit);
        let result = verify_report(&tampered, VCEK_DER, None, false);
        assert_eq!(
            result.as_ref().err().and_then(|e| e.failed_check()),
            Some(check),
            "offset {offset:#x}: {result:?}"
        );
    }
}

#[test]
fn non_zero_reserved_bytes_are_malformed() {
    // `sev` itself rejects non-zero skipped bytes before chip_id; we surface that as malformed.
    let tampered = flip(VCEK_REPORT, 0x190, 0);
    let error = verify_report(&tampered, VCEK_DER, None, false).expect_err("tampered");
    assert!(matches!(error, crate::Error::Malformed { .. }), "{error}");
}

#[test]
fn flipped_bits_in_the_signature_fail() {
    let sig = 0x2A0;
    let cases = [
        (sig, Check::Signature),                  // r, lowest byte
        (sig + 47, Check::Signature),             // r, highest used byte
        (sig + 72, Check::Signature),             // s, lowest byte
        (sig + 50, Check::SignaturePadding),      // r padding
        (sig + 72 + 60, Check::SignaturePadding), // s padding
        (sig + 300, Check::SignaturePadding),     // reserved tail
    ];
    for (offset, check) in cases {
        let tampered = flip(VCEK_REPORT, offset, 0);
        assert_check(verify_report(&tampered, VCEK_DER, None, false), check);
    }
}

#[test]
fn flipped_bits_in_the_vcek_fail() {
    for offset in [10, 200, 300, 450, 600, 720, VCEK_DER.len() - 1] {
        let tampered = flip(VCEK_DER, offset, 0);
        assert_check(
            verify_report(VCEK_REPORT, &tampered, None, false),
            Check::CertChain,
        );
    }
}

#[test]
fn the_simulation_root_cannot_vouch_for_real_evidence() {
    let report = Report::from_bytes(VCEK_REPORT).expect("genuine report parses");
    let simulation_only: Vec<_> = roots::pinned()
        .iter()
        .filter(|a| a.simulated)
        .cloned()
        .collect();
    let certs = Certs {
        vek: VCEK_DER,
        ask: None,
        ark: None,
    };
    assert_check(
        endorsement::verify(&report, certs, &simulation_only, true),
        Check::CertChain,
    );
    // Nor can a test root or ASK be smuggled in with the evidence.
    let simulation = &simulation_only[0];
    let smuggled_ark = Certs {
        ark: Some(simulation.ark.der()),
        ..certs
    };
    assert_check(
        endorsement::verify(&report, smuggled_ark, roots::pinned(), true),
        Check::CertChain,
    );
    let smuggled_ask = Certs {
        ask: Some(simulation.ask.der()),
        ..certs
    };
    assert_check(
        endorsement::verify(&report, smuggled_ask, roots::pinned(), true),
        Check::CertChain,
    );
}

/// A verified chain is remembered, but only for the exact certificate bytes and anchors it was
/// verified with: an adversary replaying a once-good VCEK with a tampered report, a tampered
/// VCEK, or asking a verifier that trusts other roots gets no benefit from the cache.
#[test]
fn a_cached_chain_vouches_only_for_what_it_verified() {
    let report = Report::from_bytes(VCEK_REPORT).expect("genuine report parses");
    let certs = Certs {
        vek: VCEK_DER,
        ask: None,
        ark: None,
    };
    for _ in 0..2 {
        endorsement::verify(&report, certs, roots::pinned(), false).expect("genuine chain");
    }
    let tampered = Report::from_bytes(&flip(VCEK_REPORT, 0x90, 0)).expect("still parses");
    assert_check(
        endorsement::verify(&tampered, certs, roots::pinned(), false),
        Check::Signature,
    );
    let forged_vcek = flip(VCEK_DER, VCEK_DER.len() - 10, 0);
    let forged = Certs {
        vek: &forged_vcek,
        ..certs
    };
    assert_check(
        endorsement::verify(&report, forged, roots::pinned(), false),
        Check::CertChain,
    );
    let simulation_only: Vec<_> = roots::pinned()
        .iter()
        .filter(|a| a.simulated)
        .cloned()
        .collect();
    assert_check(
        endorsement::verify(&report, certs, &simulation_only, true),
        Check::CertChain,
    );
    endorsement::verify(&report, certs, roots::pinned(), false).expect("still genuine");
}

#[test]
fn real_report_with_foreign_keys_fails_report_data() {
    let report = Report::from_bytes(VCEK_REPORT).expect("genuine report parses");
    let evidence = Evidence {
        format: EVIDENCE_FORMAT_VERSION,
        report: VCEK_REPORT.to_vec(),
        vek_cert: VCEK_DER.to_vec(),
        ask_cert: None,
        ark_cert: None,
        keys: EnclaveKeys {
            hpke_public_key: [7; 32],
            signing_public_key: [8; 32],
        },
        deployment_digest: report.host_data(),
        nonce: None,
    };
    let policy = Policy {
        allowed_measurements: vec![Measurement(report.measurement())],
        minimum_tcb: MILAN_TCB,
        host_data: report.host_data(),
        accept_simulation: false,
    };
    assert_check(
        Verifier::new(policy).verify(&evidence, None),
        Check::ReportData,
    );
}
