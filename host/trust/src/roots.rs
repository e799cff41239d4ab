//! The pinned trust anchors: AMD's ARK and ASK per CPU generation, and the simulation root.

use std::sync::OnceLock;

use sev::certs::snp::builtin;

use crate::certs::Cert;
use crate::error::Result;
use crate::tcb::Generation;

/// The simulation test PKI's root (public; its private key is committed and worthless).
pub(crate) const SIMULATION_ARK_PEM: &[u8] = include_bytes!("../simulation-pki/ark.pem");
/// The simulation test PKI's ASK.
pub(crate) const SIMULATION_ASK_PEM: &[u8] = include_bytes!("../simulation-pki/ask.pem");
/// The generation the simulation PKI poses as.
pub(crate) const SIMULATION_GENERATION: Generation = Generation::Milan;

/// A root of trust for one CPU generation, with its (embedded) ASK.
#[derive(Debug, Clone)]
pub(crate) struct Anchor {
    pub(crate) generation: Generation,
    pub(crate) ark: Cert,
    pub(crate) ask: Cert,
    /// True for the insecure simulation PKI.
    pub(crate) simulated: bool,
    /// SHA-256 over everything above: what a cached chain verification was checked against.
    pub(crate) digest: [u8; 32],
}

impl Anchor {
    /// Builds an anchor from PEM certificates, checking ARK is self-signed and signs ASK.
    pub(crate) fn from_pem(
        generation: Generation,
        ark: &[u8],
        ask: &[u8],
        simulated: bool,
    ) -> Result<Self> {
        let ark = Cert::from_pem(ark, "ARK")?;
        let ask = Cert::from_pem(ask, "ASK")?;
        ark.verify_signed_by(&ark, "ARK")?;
        ask.verify_signed_by(&ark, "ASK")?;
        let digest = {
            use sha2::Digest as _;
            let mut h = sha2::Sha256::new();
            h.update(generation.to_string().as_bytes());
            h.update([u8::from(simulated)]);
            for der in [ark.der(), ask.der()] {
                h.update((der.len() as u64).to_le_bytes());
                h.update(der);
            }
            h.finalize().into()
        };
        Ok(Self {
            generation,
            ark,
            ask,
            simulated,
            digest,
        })
    }
}

/// AMD's real roots (Milan, Genoa, Turin) followed by the simulation root, verified once.
pub(crate) fn pinned() -> &'static [Anchor] {
    static ANCHORS: OnceLock<Vec<Anchor>> = OnceLock::new();
    ANCHORS.get_or_init(|| {
        let table = [
            (
                Generation::Milan,
                builtin::milan::ARK,
                builtin::milan::ASK,
                false,
            ),
            (
                Generation::Genoa,
                builtin::genoa::ARK,
                builtin::genoa::ASK,
                false,
            ),
            (
                Generation::Turin,
                builtin::turin::ARK,
                builtin::turin::ASK,
                false,
            ),
            (
                SIMULATION_GENERATION,
                SIMULATION_ARK_PEM,
                SIMULATION_ASK_PEM,
                true,
            ),
        ];
        table
            .into_iter()
            .map(|(generation, ark, ask, simulated)| {
                Anchor::from_pem(generation, ark, ask, simulated).unwrap_or_else(|e| {
                    panic!("invariant: the embedded {generation} certificates are valid: {e}")
                })
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_roots_are_self_consistent() {
        let anchors = pinned();
        assert_eq!(anchors.iter().filter(|a| !a.simulated).count(), 3);
        for anchor in anchors {
            let subject = anchor.ark.subject();
            assert_eq!(
                anchor.simulated,
                subject.contains("SIMULATION-INSECURE"),
                "{subject}"
            );
            if !anchor.simulated {
                assert!(
                    subject.contains(&format!("ARK-{}", anchor.generation)),
                    "{subject}"
                );
            }
        }
    }
}
