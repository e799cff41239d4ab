//! The INSECURE simulation backend: same evidence format and verification code as SNP, but
//! signed by a test PKI whose private keys are public. Needs the `simulation` cargo feature
//! *and* an explicit runtime opt-in; prints a loud warning when created.

use sha2::{Digest as _, Sha512};

use crate::attester::{Attester, expand_sealing_key};
use crate::binding;
use crate::endorsement::SIMULATION_CHIP_ID_PREFIX;
use crate::error::{Error, Result};
use crate::evidence::{EVIDENCE_FORMAT_VERSION, EnclaveKeys, Evidence};
use crate::simulation::pki::{self, SimulatedVcek};
use crate::simulation::report::{ReportFields, SIMULATED_GUEST_POLICY, sign_report};
use crate::tcb::Tcb;

/// The TCB simulated reports claim.
pub const SIMULATED_TCB: Tcb = Tcb {
    bootloader: 3,
    tee: 0,
    snp: 8,
    microcode: 115,
    fmc: None,
};
/// Salt separating simulated sealing keys from anything else derived from the local secret.
const SEALING_SALT: &[u8] = b"cleanroom/simulation-sealing-key";

/// What a simulated enclave reports about itself.
#[derive(Debug, Clone)]
pub struct SimulationConfig {
    /// The launch measurement to report (e.g. the hash of the host binary in development).
    pub measurement: [u8; 48],
    /// The deployment-configuration digest to report as `host_data`.
    pub host_data: [u8; 32],
    /// A secret kept by the developer's machine; the sealing key is derived from it.
    pub local_secret: [u8; 32],
    /// The TCB to report (and to issue the simulated VCEK at): [`SIMULATED_TCB`] unless a
    /// test stands for an older platform.
    pub tcb: Tcb,
}

/// Produces INSECURE evidence under the simulation PKI.
#[derive(Debug)]
pub struct SimulationAttester {
    config: SimulationConfig,
    chip_id: [u8; 64],
    vcek: SimulatedVcek,
    vmpl: u32,
    guest_policy: u64,
}

impl SimulationAttester {
    /// Creates the simulation attester. `accept_insecure` is the runtime opt-in (a command-line
    /// flag); without it this fails, so the feature alone never enables simulation.
    pub fn new(config: SimulationConfig, accept_insecure: bool) -> Result<Self> {
        if !accept_insecure {
            return Err(Error::SimulationNotOptedIn);
        }
        let warning = "SIMULATION-INSECURE attester in use: this host is NOT confidential and \
                       its evidence is forgeable; never use it with real data";
        tracing::warn!("{warning}");
        eprintln!("WARNING: {warning}");
        let chip_id = simulated_chip_id(&config.local_secret);
        let vcek = pki::issue_vcek(&chip_id, config.tcb)?;
        Ok(Self {
            config,
            chip_id,
            vcek,
            vmpl: 0,
            guest_policy: SIMULATED_GUEST_POLICY,
        })
    }

    /// Tests only: report from another VMPL or under another guest policy.
    #[cfg(test)]
    pub(crate) fn with_report_overrides(mut self, vmpl: u32, guest_policy: u64) -> Self {
        self.vmpl = vmpl;
        self.guest_policy = guest_policy;
        self
    }
}

impl Attester for SimulationAttester {
    fn evidence(&self, keys: &EnclaveKeys, nonce: Option<&[u8]>) -> Result<Evidence> {
        let fields = ReportFields {
            report_data: binding::report_data(keys, nonce),
            measurement: self.config.measurement,
            host_data: self.config.host_data,
            chip_id: self.chip_id,
            tcb: self.config.tcb,
            vmpl: self.vmpl,
            guest_policy: self.guest_policy,
        };
        Ok(Evidence {
            format: EVIDENCE_FORMAT_VERSION,
            report: sign_report(&fields, &self.vcek.key)?,
            vek_cert: self.vcek.der.clone(),
            ask_cert: None,
            ark_cert: None,
            keys: *keys,
            deployment_digest: self.config.host_data,
            nonce: nonce.map(<[u8]>::to_vec),
        })
    }

    fn sealing_key(&self) -> Result<[u8; 32]> {
        let mut ikm = self.config.local_secret.to_vec();
        ikm.extend_from_slice(&self.config.measurement);
        ikm.extend_from_slice(&self.guest_policy.to_le_bytes());
        Ok(expand_sealing_key(&ikm, SEALING_SALT))
    }
}

/// The marker followed by a stable per-secret id, so restarts keep the same "chip".
fn simulated_chip_id(local_secret: &[u8; 32]) -> [u8; 64] {
    let mut chip_id = [0u8; 64];
    let digest = Sha512::digest(local_secret);
    let (marker, rest) = chip_id.split_at_mut(SIMULATION_CHIP_ID_PREFIX.len());
    marker.copy_from_slice(SIMULATION_CHIP_ID_PREFIX);
    rest.copy_from_slice(&digest[..rest.len()]);
    chip_id
}
