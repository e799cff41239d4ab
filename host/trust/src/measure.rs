//! The SEV-SNP launch measurement of a direct-boot image, computed from its inputs: the
//! firmware (OVMF built for SEV-SNP with a kernel-hashes table), the kernel, initramfs and
//! command line (measured through that table), and each vCPU's initial state. The calculation
//! is the `sev` crate's (virtee), which implements what the reference tool `sev-snp-measure`
//! does; a test compares the two on the same inputs.

use std::path::Path;

use sev::measurement::snp::{SnpMeasurementArgs, snp_calc_launch_digest};
use sev::measurement::vcpu_types::CpuType;
use sev::measurement::vmsa::{GuestFeatures, VMMType};

use crate::error::{Error, Result};
use crate::policy::Measurement;

/// What a launch measures.
#[derive(Debug, Clone, Copy)]
pub struct LaunchInputs<'a> {
    /// The firmware volume.
    pub firmware: &'a Path,
    /// The kernel (bzImage) booted directly, if any.
    pub kernel: Option<&'a Path>,
    /// The initramfs, if any (needs a kernel).
    pub initrd: Option<&'a Path>,
    /// The kernel command line, if any (needs a kernel).
    pub cmdline: Option<&'a str>,
    /// vCPUs at launch.
    pub vcpus: u32,
    /// The vCPU model as QEMU names it, lowercase (`epyc-v4`, `epyc-milan`, `epyc-genoa`...).
    pub vcpu_type: &'a str,
    /// SEV features in each VMSA (bit 0: SNP active).
    pub guest_features: u64,
}

/// The launch measurement QEMU's `sev-snp-guest` (with `kernel-hashes=on`) produces for
/// `inputs`.
pub fn launch_measurement(inputs: &LaunchInputs<'_>) -> Result<Measurement> {
    if inputs.kernel.is_none() && (inputs.initrd.is_some() || inputs.cmdline.is_some()) {
        return Err(Error::malformed(
            "launch inputs",
            "an initrd or command line is only measured with a kernel",
        ));
    }
    if inputs.vcpus == 0 {
        return Err(Error::malformed("launch inputs", "at least one vCPU"));
    }
    let vcpu_type = CpuType::try_from(inputs.vcpu_type)
        .map_err(|e| Error::malformed("vCPU type", format!("{}: {e}", inputs.vcpu_type)))?;
    let digest = snp_calc_launch_digest(SnpMeasurementArgs {
        vcpus: inputs.vcpus,
        vcpu_type,
        ovmf_file: inputs.firmware.to_path_buf(),
        guest_features: GuestFeatures(inputs.guest_features),
        kernel_file: inputs.kernel.map(Path::to_path_buf),
        initrd_file: inputs.initrd.map(Path::to_path_buf),
        append: inputs.cmdline,
        ovmf_hash_str: None,
        vmm_type: Some(VMMType::QEMU),
    })
    .map_err(|e| Error::malformed("launch inputs", e))?;
    let bytes: [u8; 48] = digest_bytes(&digest);
    Ok(Measurement(bytes))
}

/// The digest's 48 bytes.
fn digest_bytes(digest: &sev::measurement::snp::SnpLaunchDigest) -> [u8; 48] {
    let hex = digest.get_hex_ld();
    let mut out = [0u8; 48];
    hex::decode_to_slice(hex, &mut out).expect("a launch digest is 48 bytes of hex");
    out
}
