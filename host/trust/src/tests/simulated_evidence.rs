//! Simulated evidence runs the same verification code; every policy check has a failing case.

use super::assert_check;
use crate::attester::Attester as _;
use crate::attester::simulation::{SIMULATED_TCB, SimulationAttester, SimulationConfig};
use crate::endorsement::{self, Certs};
use crate::error::{Check, Error};
use crate::evidence::{EnclaveKeys, Evidence};
use crate::policy::{Measurement, Policy};
use crate::report::Report;
use crate::roots;
use crate::simulation::pki;
use crate::simulation::report::{ReportFields, SIMULATED_GUEST_POLICY, sign_report};
use crate::tcb::Tcb;
use crate::verifier::{Verifier, verify_report};

const NONCE: &[u8] = b"client nonce 42";
const KEYS: EnclaveKeys = EnclaveKeys {
    hpke_public_key: [0x11; 32],
    signing_public_key: [0x22; 32],
};

fn config() -> SimulationConfig {
    SimulationConfig {
        measurement: [0x5a; 48],
        host_data: crate::binding::host_data(b"deployment config"),
        local_secret: [0x42; 32],
        tcb: crate::attester::simulation::SIMULATED_TCB,
    }
}

fn attester() -> SimulationAttester {
    SimulationAttester::new(config(), true).expect("opted in")
}

fn policy() -> Policy {
    Policy {
        allowed_measurements: vec![Measurement(config().measurement)],
        minimum_tcb: SIMULATED_TCB,
        host_data: config().host_data,
        accept_simulation: true,
    }
}

fn evidence() -> Evidence {
    attester()
        .evidence(&KEYS, Some(NONCE))
        .expect("simulated evidence")
}

fn verify(policy: Policy, evidence: &Evidence) -> Result<crate::VerifiedClaims, Error> {
    Verifier::new(policy).verify(evidence, Some(NONCE))
}

#[test]
fn simulated_evidence_verifies_when_accepted() {
    let evidence = Evidence::from_json(&evidence().to_json().expect("json")).expect("round trip");
    let claims = verify(policy(), &evidence).expect("accepted");
    assert!(claims.simulated);
    assert_eq!(claims.enclave_keys, Some(KEYS));
    assert_eq!(claims.measurement, Measurement(config().measurement));
    assert_eq!(claims.reported_tcb, SIMULATED_TCB);
}

#[test]
fn simulated_evidence_is_refused_unless_accepted() {
    let policy = Policy {
        accept_simulation: false,
        ..policy()
    };
    assert_check(verify(policy, &evidence()), Check::Simulation);
    let evidence = evidence();
    assert_check(
        verify_report(&evidence.report, &evidence.vek_cert, None, false),
        Check::Simulation,
    );
}

#[test]
fn amd_roots_alone_do_not_vouch_for_simulated_evidence() {
    let evidence = evidence();
    let report = Report::from_bytes(&evidence.report).expect("parses");
    let amd_only: Vec<_> = roots::pinned()
        .iter()
        .filter(|a| !a.simulated)
        .cloned()
        .collect();
    let certs = Certs {
        vek: &evidence.vek_cert,
        ask: None,
        ark: None,
    };
    assert_check(
        endorsement::verify(&report, certs, &amd_only, true),
        Check::CertChain,
    );
}

#[test]
fn simulation_attester_needs_the_runtime_opt_in() {
    assert!(matches!(
        SimulationAttester::new(config(), false),
        Err(Error::SimulationNotOptedIn)
    ));
}

#[test]
fn measurement_not_allowed() {
    let policy = Policy {
        allowed_measurements: vec![Measurement([0; 48])],
        ..policy()
    };
    assert_check(verify(policy, &evidence()), Check::Measurement);
}

#[test]
fn minimum_tcb_too_high() {
    let policy = Policy {
        minimum_tcb: Tcb {
            snp: SIMULATED_TCB.snp + 1,
            ..SIMULATED_TCB
        },
        ..policy()
    };
    assert_check(verify(policy, &evidence()), Check::MinimumTcb);
}

#[test]
fn wrong_host_data() {
    let other = Policy {
        host_data: crate::binding::host_data(b"another deployment"),
        ..policy()
    };
    assert_check(verify(other, &evidence()), Check::HostData);
    let mut evidence = evidence();
    evidence.deployment_digest[0] ^= 1;
    assert_check(verify(policy(), &evidence), Check::HostData);
}

#[test]
fn wrong_keys_fail_report_data() {
    let mut evidence = evidence();
    evidence.keys.hpke_public_key[0] ^= 1;
    assert_check(verify(policy(), &evidence), Check::ReportData);
    let mut evidence = self::evidence();
    evidence.keys.signing_public_key[31] ^= 0x80;
    assert_check(verify(policy(), &evidence), Check::ReportData);
}

#[test]
fn replayed_nonce_fails() {
    let evidence = evidence();
    let verifier = Verifier::new(policy());
    assert_check(
        verifier.verify(&evidence, Some(b"fresh nonce")),
        Check::Nonce,
    );
    assert_check(verifier.verify(&evidence, None), Check::Nonce);
    // Rewriting the nonce to the client's does not help: report_data binds the old one.
    let mut rewritten = evidence.clone();
    rewritten.nonce = Some(b"fresh nonce".to_vec());
    assert_check(
        verifier.verify(&rewritten, Some(b"fresh nonce")),
        Check::ReportData,
    );
}

#[test]
fn debug_policy_is_refused() {
    let attester = attester().with_report_overrides(0, SIMULATED_GUEST_POLICY | 1 << 19);
    let evidence = attester.evidence(&KEYS, Some(NONCE)).expect("evidence");
    assert_check(verify(policy(), &evidence), Check::Debug);
}

#[test]
fn migration_agent_is_refused() {
    let attester = attester().with_report_overrides(0, SIMULATED_GUEST_POLICY | 1 << 18);
    let evidence = attester.evidence(&KEYS, Some(NONCE)).expect("evidence");
    assert_check(verify(policy(), &evidence), Check::MigrationAgent);
}

#[test]
fn vmpl_other_than_zero_is_refused() {
    let attester = attester().with_report_overrides(1, SIMULATED_GUEST_POLICY);
    let evidence = attester.evidence(&KEYS, Some(NONCE)).expect("evidence");
    assert_check(verify(policy(), &evidence), Check::Vmpl);
}

fn report_signed_by(vcek: &pki::SimulatedVcek, chip_id: [u8; 64], tcb: Tcb) -> Evidence {
    let mut evidence = evidence();
    let fields = ReportFields {
        report_data: crate::binding::report_data(&KEYS, Some(NONCE)),
        measurement: config().measurement,
        host_data: config().host_data,
        chip_id,
        tcb,
        vmpl: 0,
        guest_policy: SIMULATED_GUEST_POLICY,
    };
    evidence.report = sign_report(&fields, &vcek.key).expect("signed");
    evidence.vek_cert = vcek.der.clone();
    evidence
}

#[test]
fn vcek_for_another_tcb_is_refused() {
    let chip_id = Report::from_bytes(&evidence().report)
        .expect("parses")
        .chip_id();
    let older = Tcb {
        microcode: SIMULATED_TCB.microcode - 1,
        ..SIMULATED_TCB
    };
    let vcek = pki::issue_vcek(&chip_id, older).expect("vcek");
    let evidence = report_signed_by(&vcek, chip_id, SIMULATED_TCB);
    assert_check(verify(policy(), &evidence), Check::VcekTcb);
}

#[test]
fn vcek_for_another_chip_is_refused() {
    let chip_id = Report::from_bytes(&evidence().report)
        .expect("parses")
        .chip_id();
    let mut other_chip = chip_id;
    other_chip[63] ^= 1;
    let vcek = pki::issue_vcek(&other_chip, SIMULATED_TCB).expect("vcek");
    let evidence = report_signed_by(&vcek, chip_id, SIMULATED_TCB);
    assert_check(verify(policy(), &evidence), Check::VcekHwId);
}

#[test]
fn evidence_json_refuses_unknown_fields() {
    let mut json: serde_json::Value =
        serde_json::from_slice(&evidence().to_json().expect("json")).expect("value");
    json["extra"] = serde_json::Value::Bool(true);
    let bytes = serde_json::to_vec(&json).expect("bytes");
    assert!(Evidence::from_json(&bytes).is_err());
}

#[test]
fn sealing_key_is_stable_and_bound_to_secret_and_measurement() {
    let key = attester().sealing_key().expect("key");
    assert_eq!(key, attester().sealing_key().expect("key"));
    let other_secret = SimulationConfig {
        local_secret: [0x43; 32],
        ..config()
    };
    let other_measurement = SimulationConfig {
        measurement: [0x5b; 48],
        ..config()
    };
    for config in [other_secret, other_measurement] {
        let other = SimulationAttester::new(config, true).expect("opted in");
        assert_ne!(key, other.sealing_key().expect("key"));
    }
}
