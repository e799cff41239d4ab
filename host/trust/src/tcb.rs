//! TCB versions and CPU generations.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The security version numbers of the AMD-SP firmware components (a TCB version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tcb {
    /// PSP bootloader SVN.
    pub bootloader: u8,
    /// PSP OS (TEE) SVN.
    pub tee: u8,
    /// SNP firmware SVN.
    pub snp: u8,
    /// Lowest microcode patch level of all cores.
    pub microcode: u8,
    /// FMC firmware SVN (Turin and later only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fmc: Option<u8>,
}

impl Tcb {
    /// The lowest TCB: every component at zero (accepts any reported TCB).
    pub const ZERO: Self = Self {
        bootloader: 0,
        tee: 0,
        snp: 0,
        microcode: 0,
        fmc: None,
    };
}

impl Tcb {
    /// Whether every component is at or above `minimum`'s. A minimum FMC applies only when
    /// both sides carry one.
    pub fn meets(&self, minimum: &Self) -> bool {
        let fmc_ok = match (self.fmc, minimum.fmc) {
            (Some(have), Some(need)) => have >= need,
            _ => true,
        };
        self.bootloader >= minimum.bootloader
            && self.tee >= minimum.tee
            && self.snp >= minimum.snp
            && self.microcode >= minimum.microcode
            && fmc_ok
    }
}

impl From<sev::firmware::host::TcbVersion> for Tcb {
    fn from(tcb: sev::firmware::host::TcbVersion) -> Self {
        Self {
            bootloader: tcb.bootloader,
            tee: tcb.tee,
            snp: tcb.snp,
            microcode: tcb.microcode,
            fmc: tcb.fmc,
        }
    }
}

impl fmt::Display for Tcb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bootloader={} tee={} snp={} microcode={}",
            self.bootloader, self.tee, self.snp, self.microcode
        )?;
        if let Some(fmc) = self.fmc {
            write!(f, " fmc={fmc}")?;
        }
        Ok(())
    }
}

/// The EPYC generation whose AMD root vouches for a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Generation {
    /// 3rd generation EPYC (Zen 3).
    Milan,
    /// 4th generation EPYC (Zen 4).
    Genoa,
    /// 5th generation EPYC (Zen 5).
    Turin,
}

impl Generation {
    /// The generation named by a VCEK/VLEK product-name extension ("Milan-B0", "Genoa", ...).
    pub(crate) fn from_product_name(name: &str) -> Option<Self> {
        let family = name.split('-').next().unwrap_or_default();
        match family {
            "Milan" => Some(Self::Milan),
            "Genoa" => Some(Self::Genoa),
            "Turin" => Some(Self::Turin),
            _ => None,
        }
    }

    /// The generation identified by the CPUID family/model in a v3+ report.
    pub(crate) fn from_sev(generation: sev::Generation) -> Option<Self> {
        match generation {
            sev::Generation::Milan => Some(Self::Milan),
            sev::Generation::Genoa => Some(Self::Genoa),
            sev::Generation::Turin => Some(Self::Turin),
            _ => None,
        }
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Milan => "Milan",
            Self::Genoa => "Genoa",
            Self::Turin => "Turin",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meets_is_componentwise() {
        let have = Tcb {
            bootloader: 3,
            tee: 0,
            snp: 8,
            microcode: 115,
            fmc: None,
        };
        assert!(have.meets(&have));
        assert!(have.meets(&Tcb::default()));
        assert!(!have.meets(&Tcb { snp: 9, ..have }));
        assert!(!have.meets(&Tcb {
            microcode: 116,
            ..have
        }));
        assert!(!have.meets(&Tcb {
            bootloader: 4,
            ..have
        }));
    }
}
