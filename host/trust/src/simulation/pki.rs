//! Building and signing certificates of the simulation PKI.

use std::str::FromStr as _;
use std::time::Duration;

use der::Encode as _;
use der::asn1::{BitString, Ia5StringRef, OctetString};
use rand_core::OsRng;
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _};
use sha2::Sha384;
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::certificate::{Certificate, TbsCertificate, Version};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Validity;

use crate::certs::{
    OID_BOOTLOADER, OID_FMC, OID_HWID, OID_MICROCODE, OID_PRODUCT_NAME, OID_SNP, OID_TEE,
};
use crate::error::{Error, Result};
use crate::roots::{SIMULATION_ASK_PEM, SIMULATION_GENERATION};
use crate::tcb::Tcb;

/// The committed, deliberately public private key of the simulation ASK.
const ASK_PRIVATE_KEY_PEM: &str = include_str!("../../simulation-pki/ask-INSECURE-private-key.pem");
/// The organisation in every simulation subject name.
pub(crate) const ORGANIZATION: &str = "SIMULATION-INSECURE cleanroom test PKI";
const VCEK_VALIDITY: Duration = Duration::from_secs(7 * 365 * 24 * 3600);

fn crypto(context: &str) -> impl Fn(String) -> Error + '_ {
    move |e| Error::Crypto(format!("simulation pki: {context}: {e}"))
}

/// The subject/issuer name of a simulation certificate.
pub(crate) fn name(common_name: &str) -> Result<Name> {
    Name::from_str(&format!("CN={common_name},O={ORGANIZATION}"))
        .map_err(|e| crypto("name")(e.to_string()))
}

/// Signs `tbs` with RSA-PSS SHA-384 (salt 48), as AMD does.
pub(crate) fn sign_rsa_pss(
    mut tbs: TbsCertificate,
    issuer_key: &rsa::RsaPrivateKey,
) -> Result<Certificate> {
    let algorithm = rsa::pss::get_default_pss_signature_algo_id::<Sha384>()
        .map_err(|e| crypto("algorithm")(e.to_string()))?;
    tbs.signature = algorithm.clone();
    let message = tbs.to_der().map_err(|e| crypto("encode")(e.to_string()))?;
    let key = rsa::pss::BlindedSigningKey::<Sha384>::new(issuer_key.clone());
    let signature = key.sign_with_rng(&mut OsRng, &message).to_vec();
    Ok(Certificate {
        tbs_certificate: tbs,
        signature_algorithm: algorithm,
        signature: BitString::from_bytes(&signature).map_err(|e| crypto("sign")(e.to_string()))?,
    })
}

/// An unsigned TBS certificate with the given names, key and extensions.
pub(crate) fn tbs(
    serial: u8,
    issuer: Name,
    subject: Name,
    spki: SubjectPublicKeyInfoOwned,
    validity: Duration,
    extensions: Vec<Extension>,
) -> Result<TbsCertificate> {
    let placeholder = rsa::pss::get_default_pss_signature_algo_id::<Sha384>()
        .map_err(|e| crypto("algorithm")(e.to_string()))?;
    Ok(TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&[serial]).map_err(|e| crypto("serial")(e.to_string()))?,
        signature: placeholder,
        issuer,
        validity: Validity::from_now(validity).map_err(|e| crypto("validity")(e.to_string()))?,
        subject,
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: (!extensions.is_empty()).then_some(extensions),
    })
}

fn extension(oid: spki::ObjectIdentifier, value: Vec<u8>) -> Result<Extension> {
    Ok(Extension {
        extn_id: oid,
        critical: false,
        extn_value: OctetString::new(value).map_err(|e| crypto("extension")(e.to_string()))?,
    })
}

fn der_value(value: impl der::Encode) -> Result<Vec<u8>> {
    value
        .to_der()
        .map_err(|e| crypto("extension")(e.to_string()))
}

/// A freshly issued simulation VCEK: its DER certificate and its P-384 signing key.
#[derive(Debug, Clone)]
pub(crate) struct SimulatedVcek {
    pub(crate) der: Vec<u8>,
    pub(crate) key: p384::ecdsa::SigningKey,
}

/// Issues a VCEK for `chip_id` at `tcb`, signed by the committed simulation ASK.
pub(crate) fn issue_vcek(chip_id: &[u8; 64], tcb: Tcb) -> Result<SimulatedVcek> {
    let ask = Certificate::from_pem_bytes(SIMULATION_ASK_PEM)?;
    let ask_key = rsa::RsaPrivateKey::from_pkcs8_pem(ASK_PRIVATE_KEY_PEM)
        .map_err(|e| crypto("ask key")(e.to_string()))?;
    let key = p384::ecdsa::SigningKey::random(&mut OsRng);
    let public = p384::PublicKey::from(key.verifying_key());
    let spki = SubjectPublicKeyInfoOwned::from_key(public)
        .map_err(|e| crypto("vcek key")(e.to_string()))?;
    let product = format!("{SIMULATION_GENERATION}-SIMULATION-INSECURE");
    let product = Ia5StringRef::new(&product).map_err(|e| crypto("product name")(e.to_string()))?;
    let mut extensions = vec![
        extension(OID_PRODUCT_NAME, der_value(product)?)?,
        extension(OID_BOOTLOADER, der_value(tcb.bootloader)?)?,
        extension(OID_TEE, der_value(tcb.tee)?)?,
        extension(OID_SNP, der_value(tcb.snp)?)?,
        extension(OID_MICROCODE, der_value(tcb.microcode)?)?,
        extension(OID_HWID, chip_id.to_vec())?,
    ];
    if let Some(fmc) = tcb.fmc {
        extensions.push(extension(OID_FMC, der_value(fmc)?)?);
    }
    let tbs = tbs(
        1,
        ask.tbs_certificate.subject.clone(),
        name("SEV-VCEK")?,
        spki,
        VCEK_VALIDITY,
        extensions,
    )?;
    let cert = sign_rsa_pss(tbs, &ask_key)?;
    let der = cert.to_der().map_err(|e| crypto("vcek")(e.to_string()))?;
    Ok(SimulatedVcek { der, key })
}

/// PEM parsing for the committed certificates.
trait FromPemBytes: Sized {
    fn from_pem_bytes(pem: &[u8]) -> Result<Self>;
}

impl FromPemBytes for Certificate {
    fn from_pem_bytes(pem: &[u8]) -> Result<Self> {
        use der::DecodePem as _;
        Self::from_pem(pem).map_err(|e| crypto("certificate")(e.to_string()))
    }
}

#[cfg(test)]
mod generator {
    //! Regenerates the committed simulation ARK/ASK (slow: two RSA-4096 keys). Run with
    //! `cargo test -p cleanroom-trust regenerate_simulation_pki -- --ignored`.

    use std::path::Path;

    use der::EncodePem as _;
    use rsa::pkcs8::{EncodePrivateKey as _, LineEnding};

    use super::*;

    /// Encodes a certificate as PEM.
    fn to_pem(cert: &Certificate) -> Result<String> {
        cert.to_pem(der::pem::LineEnding::LF)
            .map_err(|e| crypto("pem")(e.to_string()))
    }

    const ROOT_VALIDITY: Duration = Duration::from_secs(25 * 365 * 24 * 3600);

    #[test]
    #[ignore = "writes simulation-pki/; run by hand to rotate the test PKI"]
    fn regenerate_simulation_pki() -> anyhow::Result<()> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("simulation-pki");
        let ark_key = rsa::RsaPrivateKey::new(&mut OsRng, 4096)?;
        let ask_key = rsa::RsaPrivateKey::new(&mut OsRng, 4096)?;
        let generation = SIMULATION_GENERATION;
        let ark_name = name(&format!("ARK-{generation}"))?;
        let ark_tbs = tbs(
            1,
            ark_name.clone(),
            ark_name.clone(),
            SubjectPublicKeyInfoOwned::from_key(ark_key.to_public_key())?,
            ROOT_VALIDITY,
            Vec::new(),
        )?;
        let ark = sign_rsa_pss(ark_tbs, &ark_key)?;
        let ask_tbs = tbs(
            2,
            ark_name,
            name(&format!("SEV-{generation}"))?,
            SubjectPublicKeyInfoOwned::from_key(ask_key.to_public_key())?,
            ROOT_VALIDITY,
            Vec::new(),
        )?;
        let ask = sign_rsa_pss(ask_tbs, &ark_key)?;
        std::fs::write(dir.join("ark.pem"), to_pem(&ark)?)?;
        std::fs::write(dir.join("ask.pem"), to_pem(&ask)?)?;
        std::fs::write(
            dir.join("ark-INSECURE-private-key.pem"),
            ark_key.to_pkcs8_pem(LineEnding::LF)?.as_bytes(),
        )?;
        std::fs::write(
            dir.join("ask-INSECURE-private-key.pem"),
            ask_key.to_pkcs8_pem(LineEnding::LF)?.as_bytes(),
        )?;
        Ok(())
    }
}
