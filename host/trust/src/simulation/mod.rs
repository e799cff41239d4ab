//! The INSECURE simulation PKI and report signer, for development and CI only.
//!
//! Its ARK and ASK (RSA-4096, RSA-PSS SHA-384) are committed under `simulation-pki/` with their
//! private keys: anyone can forge evidence under this root, which is why verifiers refuse it
//! unless explicitly told to accept simulation. Subject names say SIMULATION-INSECURE.

pub(crate) mod pki;
pub(crate) mod report;
