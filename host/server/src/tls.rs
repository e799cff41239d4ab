//! The server's attested TLS identity: a key generated inside the enclave at every start,
//! a self-signed certificate for it (no CA: clients authenticate the key through
//! attestation, see `cleanroom_trust::tls`), and the enclave identity's endorsement of it.

use std::sync::Arc;

use anyhow::{Context, Result};
use cleanroom_trust::EnclaveIdentity;
use cleanroom_trust::tls::{TlsEndorsement, spki_sha256};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// What the server needs to serve attested TLS.
pub struct TlsIdentity {
    /// Accepts TLS 1.3 connections with the key.
    pub acceptor: TlsAcceptor,
    /// The enclave's endorsement of the key, served with every attestation.
    pub endorsement: TlsEndorsement,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("endorsement", &self.endorsement)
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// A fresh ECDSA P-256 key and certificate, endorsed by `identity`.
    pub fn generate(identity: &EnclaveIdentity) -> Result<Self> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("cannot generate the TLS key")?;
        let mut params = rcgen::CertificateParams::new(vec!["cleanroomd.invalid".to_string()])
            .context("certificate parameters")?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "cleanroomd (attested; no CA)");
        let cert = params
            .self_signed(&key)
            .context("cannot self-sign the TLS certificate")?;
        let cert_der: CertificateDer<'static> = cert.der().clone();
        let endorsement = TlsEndorsement::sign(identity, spki_sha256(&cert_der)?);
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("TLS 1.3 with ring")?
            .with_no_client_auth()
            .with_single_cert(vec![cert_der], key_der)
            .context("the TLS certificate and key do not match")?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            endorsement,
        })
    }
}
