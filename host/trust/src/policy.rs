//! The verifier's policy and what it returns on success.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::evidence::EnclaveKeys;
use crate::report::SigningKey;
use crate::tcb::{Generation, Tcb};
use serde_with::hex::Hex;

/// Simulation evidence is refused by default.
pub const DEFAULT_ACCEPT_SIMULATION: bool = false;

/// A launch measurement (SHA-384), hex in JSON.
#[serde_with::serde_as]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Measurement(#[serde_as(as = "Hex")] pub [u8; 48]);

/// What a client accepts: the images it trusts, the firmware it requires, the deployment.
#[serde_with::serde_as]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Launch measurements of the host images the operator published.
    pub allowed_measurements: Vec<Measurement>,
    /// The lowest acceptable `reported_tcb`, component by component.
    pub minimum_tcb: Tcb,
    /// The expected `host_data`: SHA-256 of the deployment configuration.
    #[serde_as(as = "Hex")]
    pub host_data: [u8; 32],
    /// Accept evidence from the INSECURE simulation backend (development and CI only).
    #[serde(default)]
    pub accept_simulation: bool,
}

impl Policy {
    /// SHA-256 of the policy's JSON, logged with every decision made under it.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(json))
    }
}

/// What verified evidence proves about the enclave.
#[serde_with::serde_as]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifiedClaims {
    /// The CPU generation whose pinned root vouched for the report.
    pub generation: Generation,
    /// Which endorsement key signed the report.
    pub signing_key: SigningKey,
    /// True if the insecure simulation backend produced the evidence.
    pub simulated: bool,
    /// The report format version.
    pub report_version: u32,
    /// The launch measurement.
    pub measurement: Measurement,
    /// The guest policy bits.
    pub guest_policy: u64,
    /// The VMPL that requested the report.
    pub vmpl: u32,
    /// The TCB the endorsement key was issued for.
    pub reported_tcb: Tcb,
    /// The chip identifier (zero-padded for generations with shorter ids).
    #[serde_as(as = "Hex")]
    pub chip_id: [u8; 64],
    /// The guest-supplied report data.
    #[serde_as(as = "Hex")]
    pub report_data: [u8; 64],
    /// The host data fixed at launch.
    #[serde_as(as = "Hex")]
    pub host_data: [u8; 32],
    /// The enclave keys bound into `report_data` (full evidence verification only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enclave_keys: Option<EnclaveKeys>,
}
