//! Attested TLS for the client: rustls with a certificate verifier that trusts no CA and no
//! name, only the key the attested enclave endorsed (see `cleanroom_trust::tls`).
//!
//! A session starts with one bootstrap connection whose verifier records the certificate
//! key it is shown; over it the client fetches fresh evidence for its own nonce and the
//! enclave's endorsement of its TLS key, verifies both, and requires the endorsed key to be
//! the recorded one. Every later connection accepts that key alone.
//!
//! The connector plugs rustls into ureq through ureq's `unversioned` transport API (ureq's
//! own rustls connector cannot take a custom verifier); Cargo.lock pins the ureq version.

use std::fmt;
use std::io::{Read as _, Write as _};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, Transport,
    TransportAdapter,
};

/// Which certificate keys a connection accepts.
#[derive(Debug)]
pub(crate) enum KeyCheck {
    /// Bootstrap: accept any key, remember it (the evidence fetched over this connection
    /// must then endorse it).
    Record(Mutex<Option<[u8; 32]>>),
    /// Accept exactly this key (SHA-256 of its SubjectPublicKeyInfo).
    Pinned([u8; 32]),
}

#[derive(Debug)]
struct AttestedKeyVerifier {
    check: Arc<KeyCheck>,
    provider: Arc<CryptoProvider>,
}

fn tls_error(message: String) -> rustls::Error {
    rustls::Error::General(message)
}

impl ServerCertVerifier for AttestedKeyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // No CA and no name: the server is whoever holds the key the attested enclave
        // endorsed. The handshake signature (checked below) proves the peer holds it.
        let spki = cleanroom_trust::tls::spki_sha256(end_entity)
            .map_err(|e| tls_error(format!("the server's certificate: {e}")))?;
        match &*self.check {
            KeyCheck::Record(seen) => {
                *seen.lock().expect("verifier lock") = Some(spki);
                Ok(ServerCertVerified::assertion())
            }
            KeyCheck::Pinned(pinned) if *pinned == spki => Ok(ServerCertVerified::assertion()),
            KeyCheck::Pinned(_) => Err(tls_error(
                "the server's TLS key is not the one the attested enclave endorsed for this \
                 session"
                    .into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The config allows TLS 1.3 only.
        Err(tls_error("TLS 1.2 is not accepted".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A ureq connector that wraps the TCP transport in rustls with [`KeyCheck`].
pub(crate) struct AttestedTls {
    config: Arc<ClientConfig>,
}

impl fmt::Debug for AttestedTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttestedTls").finish_non_exhaustive()
    }
}

impl AttestedTls {
    pub(crate) fn new(check: Arc<KeyCheck>) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = AttestedKeyVerifier {
            check,
            provider: provider.clone(),
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(Self {
            config: Arc::new(config),
        })
    }
}

impl<In: Transport> Connector<In> for AttestedTls {
    type Out = Either<In, TlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        // The name is not checked (the verifier ignores it); SNI carries it only.
        let host = details
            .uri
            .host()
            .unwrap_or("cleanroomd.invalid")
            .trim_matches(|c| c == '[' || c == ']')
            .to_string();
        let name = ServerName::try_from(host)
            .map_err(|_| ureq::Error::Tls("the server's host is not a valid TLS name"))?;
        let mut conn = ClientConnection::new(self.config.clone(), name)
            .map_err(|e| ureq::Error::Io(std::io::Error::other(e)))?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        conn.complete_io(&mut sock)?;
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(Either::B(TlsTransport {
            buffers,
            stream: StreamOwned { conn, sock },
        })))
    }
}

/// One TLS connection as a ureq transport.
pub(crate) struct TlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport").finish_non_exhaustive()
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

/// An agent whose HTTPS connections use [`AttestedTls`] with `check`.
pub(crate) fn agent(check: Arc<KeyCheck>, pool: bool) -> anyhow::Result<ureq::Agent> {
    use ureq::unversioned::resolver::DefaultResolver;
    use ureq::unversioned::transport::TcpConnector;
    // Unusual methods reach the server, which refuses them itself.
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .allow_non_standard_methods(true);
    if !pool {
        config = config.max_idle_connections(0);
    }
    let connector = ().chain(TcpConnector::default()).chain(AttestedTls::new(check)?);
    Ok(ureq::Agent::with_parts(
        config.build(),
        connector,
        DefaultResolver::default(),
    ))
}
