//! The two verification entry points: raw report (offline inspection) and full evidence
//! against a [`Policy`].

use crate::binding;
use crate::endorsement::{self, Certs};
use crate::error::{Check, Error, Result};
use crate::evidence::{EVIDENCE_FORMAT_VERSION, Evidence};
use crate::policy::{Policy, VerifiedClaims};
use crate::report::Report;
use crate::roots::{self, Anchor};

/// Verifies a raw report and its VCEK/VLEK (DER) without any key-binding or policy check:
/// version, encoding, pinned chain, signature, TCB and hwID extensions, debug and migration
/// bits. `ask` is the intermediate (required for a VLEK: its ASVK).
///
/// For `cleanroom attest report`: the claims say what the hardware vouches for; whether that is
/// acceptable is for a [`Policy`] to decide.
pub fn verify_report(
    report: &[u8],
    vek_cert: &[u8],
    ask_cert: Option<&[u8]>,
    accept_simulation: bool,
) -> Result<VerifiedClaims> {
    let report = Report::from_bytes(report)?;
    let certs = Certs {
        vek: vek_cert,
        ask: ask_cert,
        ark: None,
    };
    endorsement::verify(&report, certs, roots::pinned(), accept_simulation)
}

/// Verifies evidence against a policy, with every check required.
#[derive(Debug, Clone)]
pub struct Verifier {
    policy: Policy,
    policy_digest: String,
    anchors: &'static [Anchor],
}

impl Verifier {
    /// A verifier with AMD's pinned roots (and the simulation root, which only vouches when
    /// `policy.accept_simulation` is set).
    pub fn new(policy: Policy) -> Self {
        Self::with_anchors(policy, roots::pinned())
    }

    pub(crate) fn with_anchors(policy: Policy, anchors: &'static [Anchor]) -> Self {
        let policy_digest = policy.digest();
        Self {
            policy,
            policy_digest,
            anchors,
        }
    }

    /// The policy this verifier enforces.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Verifies `evidence`. `expected_nonce` is the nonce this client sent (None if it sent
    /// none); evidence carrying any other nonce is a replay.
    pub fn verify(
        &self,
        evidence: &Evidence,
        expected_nonce: Option<&[u8]>,
    ) -> Result<VerifiedClaims> {
        let outcome = self.check(evidence, expected_nonce);
        match &outcome {
            Ok(claims) => tracing::info!(
                policy = %self.policy_digest,
                measurement = %hex::encode(claims.measurement.0),
                simulated = claims.simulated,
                "attestation evidence accepted"
            ),
            Err(error) => tracing::warn!(
                policy = %self.policy_digest,
                %error,
                "attestation evidence rejected"
            ),
        }
        outcome
    }

    fn check(&self, evidence: &Evidence, expected_nonce: Option<&[u8]>) -> Result<VerifiedClaims> {
        if evidence.format != EVIDENCE_FORMAT_VERSION {
            return Err(Error::check(
                Check::Version,
                format!("evidence format {} is unknown", evidence.format),
            ));
        }
        let report = Report::from_bytes(&evidence.report)?;
        let certs = Certs {
            vek: &evidence.vek_cert,
            ask: evidence.ask_cert.as_deref(),
            ark: evidence.ark_cert.as_deref(),
        };
        let mut claims =
            endorsement::verify(&report, certs, self.anchors, self.policy.accept_simulation)?;
        check_policy(&self.policy, evidence, expected_nonce, &claims)?;
        claims.enclave_keys = Some(evidence.keys);
        Ok(claims)
    }
}

fn check_policy(
    policy: &Policy,
    evidence: &Evidence,
    expected_nonce: Option<&[u8]>,
    claims: &VerifiedClaims,
) -> Result<()> {
    if claims.vmpl != 0 {
        return Err(Error::check(
            Check::Vmpl,
            format!("the report comes from VMPL {}, not VMPL 0", claims.vmpl),
        ));
    }
    let nonce = evidence.nonce.as_deref().unwrap_or_default();
    if nonce != expected_nonce.unwrap_or_default() {
        return Err(Error::check(
            Check::Nonce,
            "the evidence answers another nonce (a replay?); request fresh evidence",
        ));
    }
    if claims.report_data != binding::report_data(&evidence.keys, Some(nonce)) {
        return Err(Error::check(
            Check::ReportData,
            "report_data does not bind the evidence's enclave keys and nonce",
        ));
    }
    if claims.host_data != evidence.deployment_digest {
        return Err(Error::check(
            Check::HostData,
            "host_data differs from the evidence's deployment digest",
        ));
    }
    if claims.host_data != policy.host_data {
        return Err(Error::check(
            Check::HostData,
            format!(
                "host_data {} is not the expected deployment digest {}",
                hex::encode(claims.host_data),
                hex::encode(policy.host_data)
            ),
        ));
    }
    if !policy.allowed_measurements.contains(&claims.measurement) {
        return Err(Error::check(
            Check::Measurement,
            format!(
                "measurement {} is not in the allow-list; check the operator's published image",
                hex::encode(claims.measurement.0)
            ),
        ));
    }
    if !claims.reported_tcb.meets(&policy.minimum_tcb) {
        return Err(Error::check(
            Check::MinimumTcb,
            format!(
                "reported TCB {} is below the minimum {}; the platform needs a firmware update",
                claims.reported_tcb, policy.minimum_tcb
            ),
        ));
    }
    Ok(())
}
